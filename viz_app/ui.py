"""The page: its frame, the input column, the tabs (one module each, `viz_app.tabs`), and their wiring.
Layout and wiring only: handlers live beside their components (`viz_app.inputs`, `viz_app.tabs.*`), the
computations in `viz_app.callbacks` and the library. The page's one state is a `viz_app.page.Page` in one
`gr.State`; every event goes through `viz_app.events`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import gradio as gr

from . import gradio_cache, inputs, words
from .callbacks import Callbacks
from .events import Events, Ui, handler
from .words import said
from .examples import example_files
from .models import DEFAULT_ONLINE, FALLBACK, ModelManager
from .page import Page
from .services import DefaultModel, Services
from .state import SessionStore
from .tabs import tabs
from .training import TrainingRoom
from .views import METHODS

gradio_cache.install()

log = logging.getLogger("viz_app")

ASSETS = Path(__file__).with_name("assets")


def _assets(suffix: str) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(ASSETS.glob(f"*{suffix}"))]


#: every stylesheet of viz_app/assets, and one script that runs each script there (each is `() => {...}`)
CSS = "\n".join(_assets(".css"))
JS = "() => {\n" + "\n".join(f"({src.strip()})();" for src in _assets(".js")) + "\n}"

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


def _tab_opened(tab_id: str):
    @handler()
    def on_tab(ctx) -> dict:
        """Remember which top-level tab is shown (what is computed on demand follows it)."""
        return {"page": ctx.page.with_(tab=tab_id)}
    on_tab.__name__ = f"on_tab_{tab_id}"
    return on_tab


def _language_handlers(ui, said_names: list[str]):
    """(on the switch, after the page loaded): every said component relabelled in the page's language (the
    followers then redraw every view in it). On load the language comes from the URL, the browser or the
    server (`inputs.on_load`); on the switch it is the one chosen."""
    outputs = tuple(said_names) + ("lang",)
    built_in = words.build_language()

    def relabelled(page: Page) -> dict:
        return {**words.relabel(ui, said_names, page.lang), "page": page, "lang": page.lang}

    @handler(inputs=("lang",), outputs=outputs)
    def on_language(ctx) -> dict:
        return relabelled(ctx.page.with_(lang=words.normalize_lang(ctx.values.lang)))

    @handler(outputs=outputs)
    def relabel_page(ctx) -> dict:
        return relabelled(ctx.page) if ctx.page.lang != built_in else {}
    return on_language, relabel_page


def _api(ui, services: Services) -> None:
    """The two named API endpoints (positional by contract; hidden components)."""
    cb, default = services.cb, services.default
    with gr.Column(visible=False):
        image = inputs.photo_input(label="image")
        ui.api_model = model = gr.Textbox("", label="model")
        fields = [gr.Textbox("rollout", label="method"), gr.Number(-1, precision=0, label="layer"),
                  gr.Textbox("mean", label="head"), gr.Textbox("auto", label="query"),
                  gr.Number(-1, precision=0, label="target"), gr.Textbox("inferno", label="colormap"),
                  gr.Number(0.5, label="opacity"), gr.Textbox("smooth", label="mode"),
                  gr.Number(0.0, label="mass_threshold")]
        label, picture, meta = gr.Label(num_top_classes=5, label="predictions"), gr.Image(format="png",
                                                                                         label="heatmap"), \
            gr.JSON(label="metadata")
        b_predict, b_map = gr.Button("predict"), gr.Button("attention_map")

    def session(request):
        return (getattr(request, "session_hash", None) or "local") if request is not None else "local"

    def api_predict(image, model, request: gr.Request, progress=gr.Progress()):
        """Top-5 predictions, the model's default heatmap on the photo, and metadata (incl. input_sha256)."""
        name = (model or "").strip() or default.get()[0]
        return cb.predict(session(request), image, name, lambda f, d: progress(f, desc=d))

    def api_attention_map(image, model, method, layer, head, query, target, colormap, opacity, mode,
                          mass_threshold, request: gr.Request, progress=gr.Progress()):
        """One attention view with explicit settings; query "row,col" picks a patch; target -1 = top-1."""
        name = (model or "").strip() or default.get()[0]
        # values go through as given: Callbacks.attention_map checks each one with its own message
        return cb.attention_map(session(request), image, name, method or "rollout", -1 if layer is None else layer,
                                head or "mean", query or "auto", None if target in (None, -1) else target,
                                colormap or "inferno", 0.5 if opacity is None else opacity, mode or "smooth",
                                mass_threshold or 0.0, lambda f, d: progress(f, desc=d))

    b_predict.click(api_predict, [image, model], [label, picture, meta], api_name="predict")
    b_map.click(api_attention_map, [image, model] + fields, [picture, meta], api_name="attention_map")


def build_demo(callbacks: Optional[Callbacks] = None, default_model: Optional[str] = None,
               notice: Optional[str] = None, examples_dir: Optional[str] = None,
               first_examples: tuple = ()) -> gr.Blocks:
    """The whole app. ``default_model=None``: decided at the first page load (no network at build time).
    ``first_examples``: (path, caption) shown before the examples (the first is the first screen's image)."""
    from attention.models.hub import offline
    cb = callbacks if callbacks is not None else Callbacks(ModelManager(), SessionStore())
    services = Services(cb, DefaultModel(default_model, notice), list(first_examples) + example_files(examples_dir),
                        room=TrainingRoom(cb.manager))
    initial_model = default_model or (FALLBACK if offline() else DEFAULT_ONLINE)
    ui = Ui()
    events = Events(ui, services)
    events.follow_key(inputs.show_page)           # first: the Attention tab and the status line
    page_tabs = tabs()

    # Gradio's uploads and served pictures: checked hourly, deleted 4 h after they were written, and at exit
    with gr.Blocks(title="Attention explorer", fill_width=True, delete_cache=(3600, 4 * 3600)) as demo:
        events.demo = demo
        ui.page = gr.State(Page(initial_model, lang=words.build_language()))
        with gr.Row(elem_id="header"):
            said(gr.Markdown(elem_id="intro"), value="app.intro")
            ui.lang = words.switch(words.build_language())
        ui.notice_md = gr.Markdown(notice or "", visible=bool(notice), elem_id="notice")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300, elem_id="input-column"):
                inputs.build(ui, services, initial_model)
            with gr.Column(scale=7, min_width=480):
                # short tab names: all of them fit at 1024 px, the lesson is never behind an overflow menu
                with gr.Tabs(elem_id="main-tabs") as ui.tabs:
                    opened = {}
                    for tab in page_tabs:
                        if tab.own_tab:
                            opened[tab.id] = tab.build(ui, events)
                        else:
                            with gr.Tab(tab.title, id=tab.id) as opened[tab.id]:
                                tab.build(ui, services)
        with said(gr.Accordion(open=False, elem_id="about"), label="app.api.title"):
            gr.Markdown(API_HELP)
        _api(ui, services)
        said_names = words.name_said(ui)

        # ------------------------------------------------------------------ wiring
        for tab in page_tabs:
            if tab.on_key is not None:
                events.follow_key(tab.on_key)
        for tab in page_tabs:
            tab.wire(events, ui)
            dep = events.bind(opened[tab.id].select, _tab_opened(tab.id), show_progress="hidden")
            if tab.on_select is not None:
                events.then(dep, tab.on_select)
            opened[tab.id].select(None, None, None, api_visibility="private",
                                  js=f"() => {{ document.body.classList.toggle('learning', "
                                     f"{'true' if tab.id == 'learn' else 'false'}); return []; }}")
        inputs.wire(events, ui)
        on_language, relabel_page = _language_handlers(ui, said_names)
        events.bind(ui.lang.input, on_language, key_change=True, show_progress="hidden")
        ui.lang.input(None, [ui.lang], None, js=words.SWITCH_JS, api_visibility="private")
        events.then(events.bind(demo.load, inputs.on_load), relabel_page)
        events.finish()

    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.viz_callbacks = cb      # for tests and scripts
    demo.viz_services = services
    demo.viz_ui = ui
    demo.viz_events = events
    demo.viz_default = services.default
    return demo
