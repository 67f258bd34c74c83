"""The Live tab: the camera's frames with the Attention tab's model and view, as they come."""
from __future__ import annotations

import gradio as gr

from ..events import handler, message_of
from ..views import METHODS
from . import Tab

#: the camera resolution the Live tab asks for (the browser gives the nearest it has)
LIVE_SIZE = (320, 240)


def build(ui, services) -> None:
    gr.Markdown("The camera, live: the heatmap follows what it sees (the model and view of the Attention tab; a "
                "class-specific method falls back to rollout). Allow the camera, then press **Record**; press "
                "again to stop. Frames stay in this tab: nothing is stored.")
    with gr.Row():
        ui.live_cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="live-cam",
                               height=360, webcam_options=gr.WebcamOptions(
                                   constraints={"video": {"width": {"ideal": LIVE_SIZE[0]},
                                                          "height": {"ideal": LIVE_SIZE[1]}}}))
        ui.live_img = gr.Image(label="Attention, live", interactive=False, format="jpeg", elem_id="live-heatmap",
                               height=360)
    ui.live_md = gr.Markdown("", elem_classes=["caption"], elem_id="live-md")


@handler(inputs=("live_cam",), outputs=("live_img", "live_md"))
def on_live(ctx) -> dict:
    """A streamed camera frame: its heatmap, and the frame rate this session's stream gets. A failure is said
    in the caption (no toast per frame)."""
    frame = ctx.values.live_cam
    try:
        picture, analysis, shown = ctx.app.cb.live(ctx.page.model, frame, ctx.page.view)
    except Exception as e:  # noqa: BLE001 - the stream goes on; the caption says why
        return {"live_md": f"**Not available here.** {message_of(e)}"}
    fps = ctx.app.live_rate.tick(ctx.session)
    top = analysis.predictions[0] if analysis.predictions else None
    said = f" · top-1 **{top['label']}** ({top['probability']:.0%})" if top else ""
    return {"live_img": picture,
            "live_md": f"{METHODS[shown.method]}{said} · {fps:.1f} frames/s (server side)  \n"
                       f"camera frame {frame.shape[1]}×{frame.shape[0]} · model `{analysis.model_key}`"}


def wire(events, ui) -> None:
    # a frame every 0.1 s at most; small frames (LIVE_SIZE) keep the upload and the drawing cheap
    events.bind(ui.live_cam.stream, on_live, stream_every=0.1, time_limit=600, concurrency_limit=4,
                show_progress="hidden")


TAB = Tab("live", "Live", 60, build, wire)
