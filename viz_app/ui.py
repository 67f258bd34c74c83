"""The page: components and their wiring. All work happens in `viz_app.callbacks`; the handlers here only
translate between Gradio's values (updates, SelectData, Request, Progress) and the callbacks' plain ones."""
from __future__ import annotations

import logging
from typing import Optional

import gradio as gr

from .callbacks import Callbacks
from .handlers import DefaultModel, Handlers, warn
from .examples import example_files
from .learn_tab import LEARN_CSS, LEARN_JS, build_learn_tab
from .lesson import Lesson
from .training import TrainingRoom
from . import gradio_cache
from .models import CHECKPOINT_TYPES, CUSTOM_ARCHS, FROM_CHECKPOINT, DEFAULT_ONLINE, FALLBACK, LocalPath, ModelManager
from .state import SessionStore
from .views import COLORMAPS, METHODS, MODES, NORMS, View, method_help

gradio_cache.install()

log = logging.getLogger("viz_app")

CSS = """
#heatmap img, #grid img { image-rendering: auto; }
#intro h2 { margin: 0 0 4px 0; font-size: 1.5rem; }
#intro p { margin: 0; }
#notice { border-left: 4px solid #f59e0b; padding-left: 8px; }
.caption p { margin: 0.2em 0; }
""" + LEARN_CSS
JS = LEARN_JS

INTRO = """## What does the model look at?
Pick an image (upload, paste, webcam, or an example) and a model. The picture shows where the model's attention goes;
**click a patch** of it to see where that patch attends, **click a class** in the predictions to explain that class.
"""

API_HELP = """### Scripting the app (`gradio_client`)
Two named endpoints (see also "Use via API" at the bottom of the page):

* `/predict` (image, model) → top-5 predictions, the model's default heatmap (PNG), metadata
* `/attention_map` (image, model, method, layer, head, query, target, colormap, opacity, mode, mass_threshold)
  → picture, metadata. `method`: one of """ + " | ".join(METHODS) + """; `layer`: 0-based, -1 = last;
  `head`: mean | max | min | a head number; `query`: auto | cls | dist | cls+dist | reg0… | patch_mean | "row,col";
  `target`: class index, -1 = top-1; `model`: "" = the app's default.

The metadata's `input_sha256` is the sha256 of the decoded RGB pixels (uint8, H×W×3, EXIF rotation applied), so
each answer can be matched to its request. The same client session reuses the forward pass (`"cached": true`).

```python
from gradio_client import Client, handle_file
client = Client("http://127.0.0.1:7860/")
labels, heatmap_png, meta = client.predict(handle_file("cat.jpg"), "demo-vit", api_name="/predict")
picture_png, meta = client.predict(handle_file("cat.jpg"), model="demo-vit", method="raw", layer=3,
                                   head="1", query="4,5", api_name="/attention_map")
```
"""


#: the camera resolution the Live tab asks for (the browser gives the nearest it has)
LIVE_SIZE = (320, 240)


def photo_input(**kwargs) -> gr.Image:
    """A `gr.Image` that hands over the uploaded file untouched (its path), so that
    `attention.images.open_image` decodes it: EXIF rotation, 16-bit, transparency, and a clear message for
    files that are not images. (An instance override: a subclass would make Gradio write a .pyi stub.)"""
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    default = component.preprocess

    def preprocess(payload):
        if payload is not None and getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return default(payload)

    component.preprocess = preprocess
    return component


def build_demo(callbacks: Optional[Callbacks] = None, default_model: Optional[str] = None,
               notice: Optional[str] = None, examples_dir: Optional[str] = None) -> gr.Blocks:
    """The whole app. ``default_model=None``: decided at the first page load (no network at build time)."""
    cb = callbacks if callbacks is not None else Callbacks(ModelManager(), SessionStore())
    default = DefaultModel(default_model, notice)
    from attention.models.hub import offline
    initial_model = default_model or (FALLBACK if offline() else DEFAULT_ONLINE)
    examples = example_files(examples_dir)
    h = Handlers(cb, default, examples)
    u = h.ui                     # every component by name: the handlers return {component: update}

    # Gradio's uploads and served pictures: checked hourly, deleted 4 h after they were written, and at exit
    with gr.Blocks(title="Attention explorer", fill_width=True, delete_cache=(3600, 4 * 3600)) as demo:
        u.model_state = gr.State(initial_model)
        u.sha_state = gr.State(None)
        u.view_state = gr.State(View())
        u.layout_state = gr.State(None)
        u.key_state = gr.State(None)          # (model, image sha) the page shows: the lesson follows it
        u.page_tab = gr.State("attention")    # the top-level tab shown

        gr.Markdown(INTRO, elem_id="intro")
        u.notice_md = gr.Markdown(notice or "", visible=bool(notice), elem_id="notice")

        with gr.Row(equal_height=False):
            # ------------------------------------------------------------ input, model, predictions
            with gr.Column(scale=3, min_width=300, elem_id="input-column"):
                u.image_in = photo_input(sources=["upload", "clipboard", "webcam"],
                                         label="Image (upload, paste or webcam)", elem_id="input-image", height=280)
                u.gallery = gr.Gallery(value=[(p, c) for p, c in examples], label="Examples (click one)",
                                       columns=5, rows=2, height=170, allow_preview=False, object_fit="cover",
                                       elem_id="examples", buttons=[])
                u.model_dd = gr.Dropdown(cb.manager.choice_pairs(), value=initial_model, label="Model",
                                         allow_custom_value=True, elem_id="model",
                                         info="ImageNet models download once; demo-* models are bundled "
                                              "(synthetic shapes)")
                u.classes_tb = gr.Textbox(label="Classes (zero-shot model: type them, comma-separated, then Enter)",
                                          placeholder="cat, dog, teapot", lines=1, elem_id="classes",
                                          visible=cb.manager.classes_box(initial_model)[0])
                u.status_md = gr.Markdown("", elem_classes=["caption"], elem_id="status")
                with gr.Accordion("Your own model (checkpoint + labels)", open=False):
                    u.arch_dd = gr.Dropdown([FROM_CHECKPOINT, *CUSTOM_ARCHS], value=FROM_CHECKPOINT,
                                            allow_custom_value=True,
                                            label="Architecture (from the checkpoint, or a timm name, "
                                                  "torchvision:vit_b_16, demo-*)",
                                            elem_id="arch")
                    u.ckpt_file = gr.File(label="Checkpoint (.safetensors, .pth, .pt, .bin, .ckpt, .pth.tar, .onnx; up to 4 GB)",
                                          file_types=list(CHECKPOINT_TYPES), type="filepath",
                                          elem_id="ckpt-file")
                    u.ckpt_path = gr.Textbox(label="... or its path on this machine (no upload): a checkpoint, a "
                                                   "save_pretrained folder or an .onnx file", lines=1,
                                             elem_id="ckpt-path")
                    u.labels_file = gr.File(label="Class names (optional: .txt one per line, or a .json list)",
                                            file_types=[".txt", ".json"], type="filepath", elem_id="labels-file")
                    u.live_cb = gr.Checkbox(False, label="Live weights, not the EMA ones (a checkpoint with both; "
                                                         "the EMA weights are the default, as in timm)",
                                            elem_id="live-weights")
                    u.custom_btn = gr.Button("Load my model", elem_id="custom-btn")
                u.preds = gr.Label(num_top_classes=5, label="Top-5 predictions (click a class to explain it)",
                                   elem_id="predictions")
                u.target_md = gr.Markdown("", elem_classes=["caption"])
                u.reset_target = gr.Button("Explain the top-1 class again", size="sm")
                u.notes_md = gr.Markdown("", elem_classes=["caption"], elem_id="notes")

            # ------------------------------------------------------------ views
            with gr.Column(scale=7, min_width=480):
                # short tab names: all of them fit at 1024 px, the lesson is never behind an overflow menu
                with gr.Tabs(elem_id="main-tabs") as u.tabs:
                    with gr.Tab("Attention", id="attention") as attention_tab:
                        u.heatmap = gr.Image(label="Attention on the photo (click a patch: where does it attend?)",
                                             interactive=False, format="png", elem_id="heatmap", height=440,
                                             buttons=["download", "fullscreen"])
                        u.caption = gr.Markdown("", elem_classes=["caption"], elem_id="caption")
                        with gr.Row():
                            u.method = gr.Radio([(v, k) for k, v in METHODS.items()], value="rollout",
                                                label="Method", elem_id="method")
                        with gr.Row():
                            u.layer = gr.Slider(0, 11, value=11, step=1, label="Layer (0 = first)", elem_id="layer")
                            u.start_layer = gr.Slider(0, 11, value=0, step=1, label="Chain from layer (rollout)",
                                                      elem_id="start-layer")
                            u.head = gr.Dropdown([("mean over heads", "mean")], value="mean", label="Head",
                                                 elem_id="head")
                            u.query = gr.Dropdown([("CLS (default)", "auto")], value="auto", label="Query",
                                                  elem_id="query")
                        with gr.Row():
                            u.cmap = gr.Dropdown(list(COLORMAPS), value="inferno", label="Colormap")
                            u.alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                            u.mode = gr.Radio(list(MODES), value="smooth", label="Upsampling")
                            u.norm = gr.Radio(list(NORMS), value="minmax", label="Colour scale")
                        with gr.Row():
                            u.mass = gr.Slider(0.0, 0.95, value=0.0, step=0.05,
                                               label="Mass threshold (keep the patches holding this share; 0 = off)")
                            u.contour = gr.Checkbox(False, label="Outline")
                        gr.Markdown(method_help(), elem_classes=["caption"])

                    lesson_saved, learn_tab = build_learn_tab(demo, Lesson(cb), TrainingRoom(cb.manager), u)

                    with gr.Tab("Grid", id="grid") as grid_tab:
                        u.grid_btn = gr.Button("Show the layer × head grid for this image", variant="primary")
                        gr.Markdown("Every layer (rows) × head (columns) for the current query — **click a cell "
                                    "to open that layer and head**.")
                        u.grid_img = gr.Image(show_label=False, interactive=False, format="png", elem_id="grid",
                                              buttons=["download", "fullscreen"])
                        u.grid_md = gr.Markdown("", elem_classes=["caption"], elem_id="grid-md")

                    with gr.Tab("Compare", id="compare") as compare_tab:
                        gr.Markdown("Two settings side by side on the same image: two heads, layers, methods or "
                                    "models.")
                        with gr.Row():
                            u.cmp_controls, u.cmp_outputs, u.cmp_models, u.cmp_heads = [], [], [], []
                            for side, (m0, l0) in (("A", ("rollout", -1)), ("B", ("raw", -1))):
                                with gr.Column():
                                    c_model = gr.Dropdown(cb.manager.choice_pairs(), value=initial_model,
                                                          allow_custom_value=True, label=f"{side}: model",
                                                          elem_id=f"compare-{side.lower()}-model")
                                    c_method = gr.Dropdown([(v, k) for k, v in METHODS.items()], value=m0,
                                                           label=f"{side}: method")
                                    with gr.Row():
                                        c_layer = gr.Number(l0, precision=0, label="layer (-1 = last)")
                                        c_head = gr.Dropdown(["mean", "max", "min"], value="mean",
                                                             allow_custom_value=True, label="head",
                                                             elem_id=f"compare-{side.lower()}-head")
                                    c_img = gr.Image(interactive=False, format="png", label=f"{side}",
                                                     elem_id=f"compare-{side.lower()}", height=340,
                                                     buttons=["download", "fullscreen"])
                                    c_md = gr.Markdown("", elem_classes=["caption"],
                                                       elem_id=f"compare-{side.lower()}-md")
                                    u.cmp_controls += [c_model, c_method, c_layer, c_head]
                                    u.cmp_outputs += [c_img, c_md]
                                    u.cmp_models.append(c_model)
                                    u.cmp_heads.append(c_head)
                        u.cmp_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")

                    with gr.Tab("Heads", id="diagnostics") as diag_tab:
                        u.diag_btn = gr.Button("Compute head statistics", variant="primary", elem_id="diag-btn")
                        u.diag_md = gr.Markdown("", elem_classes=["caption"], elem_id="diag-md")
                        with gr.Row():
                            u.ent_plot = gr.Plot(show_label=False)
                            u.dist_plot = gr.Plot(show_label=False)
                        with gr.Row():
                            u.mass_plot = gr.Plot(show_label=False)
                        u.rank_df = gr.Dataframe(headers=["layer", "head", "entropy (norm.)", "mean distance (px)",
                                                          "prefix mass", "register mass"],
                                                 label="Heads ranked (most focused first)", interactive=False,
                                                 max_height=340, wrap=True)

                    with gr.Tab("Faithfulness", id="faithfulness") as faith_tab:
                        gr.Markdown("Delete (or insert) patches in the order of the current map and follow the "
                                    "probability of the explained class. A faithful map: steep deletion, fast "
                                    "insertion.")
                        with gr.Row():
                            u.f_steps = gr.Slider(5, 40, value=20, step=1, label="Steps")
                            u.f_random = gr.Checkbox(True, label="Also a random patch order (reference)")
                        u.f_btn = gr.Button("Run deletion / insertion", variant="primary", elem_id="faith-btn")
                        u.f_plot = gr.Plot(show_label=False, elem_id="faith-plot")
                        u.f_md = gr.Markdown("", elem_classes=["caption"], elem_id="faith-md")

                    with gr.Tab("Live", id="live") as live_tab:
                        gr.Markdown("The camera, live: the heatmap follows what it sees (the model and view of the "
                                    "Attention tab; a class-specific method falls back to rollout). Allow the camera, "
                                    "then press **Record**; press again to stop. Frames stay in this tab: nothing "
                                    "is stored.")
                        with gr.Row():
                            u.live_cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera",
                                                  elem_id="live-cam", height=360, webcam_options=gr.WebcamOptions(
                                                      constraints={"video": {"width": {"ideal": LIVE_SIZE[0]},
                                                                             "height": {"ideal": LIVE_SIZE[1]}}}))
                            u.live_img = gr.Image(label="Attention, live", interactive=False, format="jpeg",
                                                  elem_id="live-heatmap", height=360)
                        u.live_md = gr.Markdown("", elem_classes=["caption"], elem_id="live-md")

                    with gr.Tab("Export", id="downloads") as export_tab:
                        gr.Markdown("The current overlay (PNG), the layer × head sheet (PNG), and every attention "
                                    "tensor as `.npz` + `.json` in the format of `python -m attention export`, "
                                    "named after the uploaded file.")
                        u.dl_btn = gr.Button("Prepare downloads", variant="primary", elem_id="prepare-downloads")
                        u.dl_files = gr.File(label="Files", file_count="multiple", interactive=False,
                                             elem_id="downloads")

        with gr.Accordion("Scripting the app (API)", open=False, elem_id="about"):
            gr.Markdown(API_HELP)

        # ---------------------------------------------------------------- hidden API endpoints
        with gr.Column(visible=False):
            api_image = photo_input(label="image")
            u.api_model = api_model = gr.Textbox("", label="model")
            api_method = gr.Textbox("rollout", label="method")
            api_layer = gr.Number(-1, precision=0, label="layer")
            api_head = gr.Textbox("mean", label="head")
            api_query = gr.Textbox("auto", label="query")
            api_target = gr.Number(-1, precision=0, label="target")
            api_cmap = gr.Textbox("inferno", label="colormap")
            api_alpha = gr.Number(0.5, label="opacity")
            api_mode = gr.Textbox("smooth", label="mode")
            api_mass = gr.Number(0.0, label="mass_threshold")
            api_label = gr.Label(num_top_classes=5, label="predictions")
            api_pic = gr.Image(format="png", label="heatmap")
            api_json = gr.JSON(label="metadata")
            api_btn_predict = gr.Button("predict")
            api_btn_map = gr.Button("attention_map")

        # ================================================================= wiring
        stale = list(h.stale())
        main_outputs = [u.preds, u.heatmap, u.caption, u.sha_state, u.view_state, u.key_state, u.method, u.layer,
                        u.start_layer, u.head, u.query, u.target_md, u.notes_md, u.status_md] + u.cmp_heads + stale
        model_outputs = [u.model_dd, u.model_state] + u.cmp_models + main_outputs
        private = dict(api_visibility="private")
        for tab, tab_id in ((attention_tab, "attention"), (learn_tab, "learn"), (grid_tab, "grid"),
                            (compare_tab, "compare"), (diag_tab, "diagnostics"), (faith_tab, "faithfulness"),
                            (export_tab, "downloads"), (live_tab, "live")):
            tab.select(h.on_tab(tab_id), None, u.page_tab, show_progress="hidden", **private)
            tab.select(None, None, None, js=f"() => {{ document.body.classList.toggle('learning', "
                                            f"{'true' if tab_id == 'learn' else 'false'}); return []; }}", **private)
        demo.load(h.on_load, u.image_in, [u.model_dd, u.model_state, u.notice_md, u.api_model, u.image_in]
                  + u.cmp_models, **private)
        u.image_in.change(h.on_image, [u.image_in, u.model_state, u.view_state], main_outputs, show_progress="full",
                          trigger_mode="always_last", **private)
        u.gallery.select(h.on_gallery, None, u.image_in, **private)
        u.model_dd.input(h.on_model, [u.model_dd, u.image_in, u.view_state, u.model_state], model_outputs,
                         **private)
        def on_custom(arch, ckpt, path, labels, live, image, view, current, request: gr.Request,
                      progress=gr.Progress()):
            # a path typed on this machine wins over an upload and loads in place (no copy)
            chosen = LocalPath(path.strip()) if (path or "").strip() else ckpt
            return h.on_custom(arch, chosen, labels, image, view, current, request, progress,
                               ema=False if live else None)

        def classes_box(name):
            visible, text = cb.manager.classes_box(name)
            return gr.update(visible=visible, value=text)

        def on_classes(text, image, view, current, request: gr.Request, progress=gr.Progress()):
            try:       # "model + these classes" becomes its own menu entry (see ModelManager.with_classes)
                name = cb.manager.with_classes(current, text, session=getattr(request, "session_hash", None))
            except Exception as e:  # noqa: BLE001 - the current model keeps serving
                warn(e, f" — still using {current}.")
                return {u.model_dd: gr.update(value=current), u.model_state: current}
            out = h.on_model(name, image, view, current, request, progress)
            if out.get(u.model_state) != name:        # it did not load: on_model said why
                return out
            choices = cb.manager.choice_pairs(getattr(request, "session_hash", None))
            out[u.model_dd] = gr.update(choices=choices, value=name)
            for c_model in u.cmp_models:
                out[c_model] = gr.update(choices=choices)
            return out

        u.custom_btn.click(on_custom, [u.arch_dd, u.ckpt_file, u.ckpt_path, u.labels_file, u.live_cb, u.image_in,
                                       u.view_state,
                                       u.model_state], model_outputs, **private)
        u.model_dd.change(classes_box, u.model_dd, u.classes_tb, show_progress="hidden", **private)
        u.classes_tb.submit(on_classes, [u.classes_tb, u.image_in, u.view_state, u.model_state], model_outputs,
                            **private)
        control_inputs = [u.method, u.layer, u.head, u.query, u.cmap, u.alpha, u.mode, u.norm, u.mass, u.contour,
                          u.view_state, u.sha_state, u.model_state, u.image_in]
        control_outputs = [u.heatmap, u.caption, u.view_state, u.head]
        for comp in (u.method, u.head, u.query, u.cmap, u.mode, u.norm, u.contour):
            comp.input(h.on_controls, control_inputs, control_outputs, show_progress="minimal",
                       trigger_mode="always_last", **private)
        for comp in (u.layer, u.alpha, u.mass):
            comp.input(h.on_controls, control_inputs, control_outputs, show_progress="hidden",
                       trigger_mode="always_last", **private)
            comp.release(h.on_controls, control_inputs, control_outputs, show_progress="hidden",
                         trigger_mode="always_last", **private)
        u.start_layer.release(h.on_start_layer, [u.start_layer] + control_inputs, control_outputs,
                              show_progress="hidden", trigger_mode="always_last", **private)
        # a frame every 0.1 s at most; small frames (LIVE_SIZE) keep the upload and the drawing cheap
        u.live_cam.stream(h.on_live, [u.live_cam, u.model_state, u.view_state], [u.live_img, u.live_md],
                          stream_every=0.1, time_limit=600, concurrency_limit=4, show_progress="hidden", **private)
        view_keys = [u.view_state, u.sha_state, u.model_state, u.image_in]
        u.heatmap.select(h.on_heatmap_click, view_keys, [u.heatmap, u.caption, u.view_state, u.method, u.query],
                         **private)
        u.preds.select(h.on_class, view_keys, [u.heatmap, u.caption, u.view_state, u.method, u.target_md],
                       **private)
        u.reset_target.click(h.on_reset_target, view_keys, [u.heatmap, u.caption, u.view_state, u.target_md],
                             **private)
        grid_out = [u.grid_img, u.layout_state, u.grid_md]
        u.grid_btn.click(h.on_grid, view_keys, grid_out, **private)
        grid_tab.select(h.on_grid, view_keys, grid_out, **private)
        u.grid_img.select(h.on_grid_click, [u.layout_state] + view_keys,
                          [u.heatmap, u.caption, u.view_state, u.method, u.layer, u.head, u.tabs, u.page_tab],
                          **private)
        lesson_saved.then(h.on_model, [u.model_dd, u.image_in, u.view_state, u.model_state], model_outputs,
                          **private)
        for c_model, c_head in zip(u.cmp_models, u.cmp_heads):
            c_model.input(h.on_compare_model, [c_model, u.sha_state, u.image_in], c_head, **private)
        u.cmp_btn.click(h.on_compare, u.cmp_controls + [u.view_state, u.sha_state, u.image_in], u.cmp_outputs,
                        **private)
        u.diag_btn.click(h.on_diagnostics, [u.sha_state, u.model_state, u.image_in],
                         [u.ent_plot, u.dist_plot, u.mass_plot, u.rank_df, u.diag_md], **private)
        u.f_btn.click(h.on_faithfulness, [u.f_steps, u.f_random] + view_keys, [u.f_plot, u.f_md], **private)
        u.dl_btn.click(h.on_export, view_keys, u.dl_files, **private)
        api_btn_predict.click(h.api_predict, [api_image, api_model], [api_label, api_pic, api_json],
                              api_name="predict")
        api_btn_map.click(h.api_attention_map, [api_image, api_model, api_method, api_layer, api_head, api_query,
                                              api_target, api_cmap, api_alpha, api_mode, api_mass],
                          [api_pic, api_json], api_name="attention_map")

    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.viz_callbacks = cb   # for tests and scripts
    demo.viz_handlers = h     # the page's handlers; h.ui.learn: the Learn tab's
    demo.viz_default = default
    return demo
