"""The page: its frame, the input column, the tabs (one module each, `viz_app.tabs`), and their wiring.
Layout and wiring only: handlers live beside their components (`viz_app.inputs`, `viz_app.tabs.*`), the
computations in `viz_app.callbacks` and the library. The page's one state is a `viz_app.page.Page` in one
`gr.State`; every event goes through `viz_app.events`."""
from __future__ import annotations

import json
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


def _cjk_font_css() -> str:
    """The page's Chinese glyphs come from the packaged Noto Sans SC (SIL OFL), served by the app itself (never a
    system font, never the network): listed after the theme's fonts, the browser takes only the glyphs the others
    lack, and downloads the file only when a page shows such a glyph."""
    from attention.i18n.fonts import cjk_font_path
    path = Path(cjk_font_path()).resolve()
    gr.set_static_paths([path])              # this one file, nothing else of its folder
    stack = "'Source Sans Pro', ui-sans-serif, system-ui, sans-serif, 'Noto Sans SC'"
    return (f"@font-face {{ font-family: 'Noto Sans SC'; src: url('/gradio_api/file={path.as_posix()}') "
            f"format('opentype'); font-display: swap; }}\n"
            f".gradio-container, .gradio-container * {{ --font: {stack}; }}\n"
            f"body, .gradio-container {{ font-family: {stack}; }}\n"
            f".gradio-container code, .gradio-container pre {{ font-family: ui-monospace, monospace, 'Noto Sans SC'; }}")


def _gradio_words_js() -> str:
    """The table `assets/gradio_words.js` reads: Gradio's own English widget words -> their text per language
    (catalogue keys ``gradio.*``; the English value is Gradio's literal)."""
    from attention.i18n import LANGUAGES, catalogue
    keys = [k for k in catalogue("en") if k.startswith("gradio.")]
    table = {catalogue("en")[k]: {lang: catalogue(lang)[k] for lang in LANGUAGES} for k in keys}
    return f"() => {{ window.vizGradioWords = {json.dumps(table, ensure_ascii=False)}; }}"


#: every stylesheet of viz_app/assets (and the CJK font), and one script that runs each script there
CSS = "\n".join(_assets(".css") + [_cjk_font_css()])
JS = "() => {\n" + "\n".join(f"({src.strip()})();" for src in [_gradio_words_js()] + _assets(".js")) + "\n}"


def api_help(lang: str) -> str:
    """How to script the app (`gradio_client`), in `lang`."""
    return words.t("app.api.help", lang, methods=" | ".join(METHODS))




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
    outputs = tuple(dict.fromkeys([*said_names, "lang"]))
    built_in = words.build_language()

    def relabelled(page: Page) -> dict:
        out = words.relabel(ui, said_names, page.lang)
        return {**out, "page": page, "lang": {**out.get("lang", gr.update()), "value": page.lang}}

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
        said(gr.Markdown(elem_id="intro"), value="app.intro")
        ui.notice_md = gr.Markdown(words.in_language(notice, words.build_language()), visible=bool(notice),
                                   elem_id="notice")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300, elem_id="input-column"):
                # first in the input column: on every tab, and in presenter mode's drawer, without taking a
                # line from the pictures' column
                ui.lang = words.switch(words.build_language())
                inputs.build(ui, services, initial_model)
            with gr.Column(scale=7, min_width=480):
                # short tab names: all of them fit at 1024 px, the lesson is never behind an overflow menu
                with gr.Tabs(elem_id="main-tabs") as ui.tabs:
                    opened = {}
                    for tab in page_tabs:
                        if tab.own_tab:
                            opened[tab.id] = tab.build(ui, events)
                        else:
                            with said(gr.Tab(tab.title, id=tab.id), label=f"app.tab.{tab.id}") as opened[tab.id]:
                                tab.build(ui, services)
        with said(gr.Accordion(open=False, elem_id="about"), label="app.api.title"):
            said(gr.Markdown(), value=api_help)
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
        ui.lang.change(None, [ui.lang], None, js=words.SWITCH_JS, api_visibility="private")   # also set on load
        events.then(events.bind(demo.load, inputs.on_load), relabel_page)
        events.finish()

    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.viz_callbacks = cb      # for tests and scripts
    demo.viz_services = services
    demo.viz_ui = ui
    demo.viz_events = events
    demo.viz_default = services.default
    return demo
