"""The Live tab: the camera's frames with the Attention tab's model and view, as they come."""
from __future__ import annotations

import gradio as gr

from ..analysis_plots import method_label
from ..events import handler, message_of
from ..words import said, tr
from . import Tab

#: the camera resolution the Live tab asks for (the browser gives the nearest it has)
LIVE_SIZE = (320, 240)


def build(ui, services) -> None:
    said(gr.Markdown(), value="app.live.intro")
    with gr.Row():
        ui.live_cam = said(gr.Image(sources=["webcam"], streaming=True, type="numpy", elem_id="live-cam",
                                    height=360, webcam_options=gr.WebcamOptions(
                                        constraints={"video": {"width": {"ideal": LIVE_SIZE[0]},
                                                               "height": {"ideal": LIVE_SIZE[1]}}})),
                           label="app.live.camera")
        ui.live_img = said(gr.Image(interactive=False, format="jpeg", elem_id="live-heatmap", height=360),
                           label="app.live.heatmap")
    ui.live_md = gr.Markdown("", elem_classes=["caption"], elem_id="live-md")


@handler(inputs=("live_cam",), outputs=("live_img", "live_md"))
def on_live(ctx) -> dict:
    """A streamed camera frame: its heatmap, and the frame rate this session's stream gets. A failure is said
    in the caption (no toast per frame)."""
    frame, lang = ctx.values.live_cam, ctx.lang
    if frame is None:
        return {"live_md": tr(lang, "app.live.not_here", why=tr(lang, "app.live.no_frame"))}
    try:
        picture, analysis, shown = ctx.app.cb.live(ctx.page.model, frame, ctx.page.view)
    except Exception as e:  # noqa: BLE001 - the stream goes on; the caption says why
        return {"live_md": tr(lang, "app.live.not_here", why=message_of(e, lang))}
    fps = ctx.app.live_rate.tick(ctx.session)
    top = analysis.predictions[0] if analysis.predictions else None
    said_top = tr(lang, "app.live.top1", label=top["label"], p=top["probability"]) if top else ""
    return {"live_img": picture,
            "live_md": tr(lang, "app.live.caption", method=method_label(shown.method, lang),
                          top=said_top, fps=fps, width=frame.shape[1], height=frame.shape[0],
                          model=analysis.model_key)}


def wire(events, ui) -> None:
    # a frame every 0.1 s at most; small frames (LIVE_SIZE) keep the upload and the drawing cheap
    events.bind(ui.live_cam.stream, on_live, stream_every=0.1, time_limit=600, concurrency_limit=4,
                show_progress="hidden")


TAB = Tab("live", "Live", 60, build, wire)
