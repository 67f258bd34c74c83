"""The input column: the image, the model (the menu, zero-shot classes, your own checkpoint), the predictions;
and `show_page`, which redraws everything that depends on the page's (model, image) after they change."""
from __future__ import annotations

import gradio as gr


from . import main_view, words
from .events import handler, warn
from .words import in_language, said, tr
from .main_view import image_name, provenance
from .models import CHECKPOINT_TYPES, CUSTOM_ARCHS, FROM_CHECKPOINT, LocalPath


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


def build(ui, services, initial_model: str) -> None:
    manager = services.manager
    ui.image_in = said(photo_input(sources=["upload", "clipboard", "webcam"], elem_id="input-image", height=280),
                       label="app.inputs.image")
    ui.gallery = said(gr.Gallery(value=[(p, in_language(c, words.build_language())) for p, c in services.examples], columns=5, rows=2, height=170,
                                 allow_preview=False, object_fit="cover", elem_id="examples", buttons=[]),
                      label="app.inputs.examples",
                      value=lambda lang: [(p, in_language(c, lang)) for p, c in services.examples])
    ui.model_dd = said(gr.Dropdown(manager.choice_pairs(), value=initial_model, allow_custom_value=True,
                                   elem_id="model"), label="app.inputs.model", info="app.inputs.model_info")
    ui.classes_tb = said(gr.Textbox(placeholder="cat, dog, teapot", lines=1, elem_id="classes",
                                    visible=manager.classes_box(initial_model)[0]), label="app.inputs.classes")
    ui.status_md = gr.Markdown("", elem_classes=["caption"], elem_id="status")
    with said(gr.Accordion(open=False, elem_id="own-model"), label="app.inputs.own_model"):
        ui.arch_dd = said(gr.Dropdown(_arch_choices(words.build_language()), value=FROM_CHECKPOINT,
                                      allow_custom_value=True, elem_id="arch"), label="app.inputs.arch",
                          choices=_arch_choices)
        ui.ckpt_file = said(gr.File(file_types=list(CHECKPOINT_TYPES), type="filepath", elem_id="ckpt-file"),
                            label="app.inputs.ckpt_file")
        ui.ckpt_path = said(gr.Textbox(lines=1, elem_id="ckpt-path"), label="app.inputs.ckpt_path")
        ui.labels_file = said(gr.File(file_types=[".txt", ".json"], type="filepath", elem_id="labels-file"),
                              label="app.inputs.labels_file")
        ui.live_cb = said(gr.Checkbox(False, elem_id="live-weights"), label="app.inputs.live_weights")
        ui.custom_btn = said(gr.Button(elem_id="custom-btn"), value="app.inputs.load_mine")
    ui.preds = said(gr.Label(num_top_classes=5, elem_id="predictions"), label="app.inputs.predictions")
    ui.target_md = gr.Markdown("", elem_classes=["caption"], elem_id="target-md")
    ui.reset_target = said(gr.Button(size="sm", elem_id="reset-target"), value="app.inputs.reset_target")
    ui.notes_md = gr.Markdown("", elem_classes=["caption"], elem_id="notes")


def _arch_choices(lang: str, fits=None) -> list:
    """The architecture menu: "(from the checkpoint)" (its value is `FROM_CHECKPOINT` in every language), then
    the architectures (names, not translated)."""
    return [(tr(lang, "app.inputs.from_checkpoint"), FROM_CHECKPOINT)] + [(a, a) for a in (fits or CUSTOM_ARCHS)]


def _analysed(ctx, page):
    """The page with its image analysed on its model (the notes of a new analysis said once, as one toast)."""
    if page.image is None:
        return page.with_(sha=None)
    before = ctx.app.cb.forwards
    analysis = ctx.app.cb.analysis_of(ctx.session, page.model, None, page.image, ctx.progress)
    if ctx.app.cb.forwards != before and analysis.notes:
        gr.Info("  \n".join(analysis.notes), duration=8)
    return page.with_(sha=analysis.image_sha)


@handler(inputs=("image_in",))
def on_image(ctx) -> dict:
    """A new image (upload, paste, webcam, example): analysed on the page's model; the followers redraw."""
    image = ctx.values.image_in
    page = ctx.page.with_(image=image, image_name=image_name(image), sha=None,
                          view=ctx.page.view.with_(click=None, target=None))
    return {"page": _analysed(ctx, page)}


@handler(outputs=("image_in",), select=True)
def on_gallery(ctx) -> dict:
    return {"image_in": ctx.app.examples[ctx.event.index][0]}


def switch_model(ctx, name: str, load) -> dict:
    """Load model `name` (``load()``), then analyse the page's image on it; a failure keeps the model shown."""
    current = ctx.page.model
    try:
        load()
    except Exception as e:  # noqa: BLE001 - the previous model keeps serving
        warn(e, tr(ctx, "app.inputs.still_using", model=current), ctx.lang)
        return {"model_dd": gr.update(value=current)}
    page = ctx.page.with_(model=name, view=ctx.page.view.with_(click=None, target=None))
    try:
        page = _analysed(ctx, page)
    except Exception as e:  # noqa: BLE001 - the model loaded, but this image failed on it
        warn(e, lang=ctx.lang)
        page = page.with_(sha=None)
    choices = ctx.app.manager.choice_pairs(ctx.session, ctx.lang)
    return {"page": page, "model_dd": gr.update(choices=choices, value=name)}


@handler(inputs=("model_dd",), outputs=("model_dd",))
def on_model(ctx) -> dict:
    name = ctx.values.model_dd
    return switch_model(ctx, name, lambda: ctx.app.manager.get(name, ctx.progress))


@handler(inputs=("arch_dd", "ckpt_file", "ckpt_path", "labels_file", "live_cb"), outputs=("model_dd",))
def on_custom(ctx) -> dict:
    """'Load my model': a path typed on this machine wins over an upload and loads in place (no copy)."""
    v = ctx.values
    chosen = LocalPath(v.ckpt_path.strip()) if (v.ckpt_path or "").strip() else v.ckpt_file
    try:
        name = ctx.app.cb.load_custom(ctx.session, v.arch_dd, chosen, v.labels_file, ctx.progress,
                                      ema=False if v.live_cb else None)
    except Exception as e:  # noqa: BLE001 - the previous model keeps serving
        warn(e, tr(ctx, "app.inputs.still_using", model=ctx.page.model), ctx.lang)
        return {}
    gr.Info(tr(ctx, "app.inputs.loaded", model=name))
    return switch_model(ctx, name, lambda: None)


@handler(inputs=("ckpt_file",), outputs=("arch_dd",))
def on_checkpoint_chosen(ctx) -> dict:
    """A checkpoint was uploaded: the architecture menu proposes what fits its weights' shapes."""
    path = ctx.values.ckpt_file
    if not path:
        return {"arch_dd": gr.update(choices=_arch_choices(ctx.lang), value=FROM_CHECKPOINT)}
    fits = ctx.app.cb.architectures_for(path, ctx.progress)
    if not fits:
        return {}
    return {"arch_dd": gr.update(choices=_arch_choices(ctx.lang, fits), value=FROM_CHECKPOINT,
                                 info=tr(ctx, "app.inputs.arch_fits", names=", ".join(fits)))}


@handler(inputs=("classes_tb",), outputs=("model_dd",))
def on_classes(ctx) -> dict:
    """'model + these classes' becomes its own menu entry (see ModelManager.with_classes)."""
    name = ctx.app.manager.with_classes(ctx.page.model, ctx.values.classes_tb, session=ctx.session)
    return switch_model(ctx, name, lambda: ctx.app.manager.get(name, ctx.progress))


@handler(inputs=("model_dd",), outputs=("classes_tb",))
def on_classes_box(ctx) -> dict:
    visible, text = ctx.app.manager.classes_box(ctx.values.model_dd)
    return {"classes_tb": gr.update(visible=visible, value=text)}


PAGE_OUTPUTS = ("preds", "heatmap", "caption", "notes_md", "status_md", "notice_md", "model_dd") + main_view.CONTROLS


@handler(outputs=PAGE_OUTPUTS)
def show_page(ctx) -> dict:
    """After the model or image changed: the predictions, the Attention tab, the notes, the status line and
    the notice (the default model's notice shows only while that model is shown)."""
    page = ctx.page
    default_model, notice = ctx.app.default.get()
    out = {"notice_md": gr.update(value=in_language(notice, page.lang),
                                  visible=bool(notice) and page.model == default_model),
           "model_dd": gr.update(choices=ctx.app.manager.choice_pairs(ctx.session, page.lang))}
    if page.sha is None:
        status = tr(ctx, "app.inputs.no_image") if page.image is None else \
            tr(ctx, "app.inputs.not_analysed", model=page.model)
        return {**out, "preds": None, "heatmap": None, "caption": "", "notes_md": "", "status_md": status,
                "target_md": ""}
    analysis = ctx.analysis()
    out.update(main_view.show(ctx, page, analysis))
    out.update({"preds": ctx.app.cb.label_values(analysis), "notes_md": main_view.notes_text(analysis, page.lang),
                "status_md": tr(ctx, "app.inputs.showing", what=provenance(analysis.model_key, analysis.image_sha,
                                                                            page.image_name, page.lang))})
    return out


@handler(outputs=("model_dd", "notice_md", "api_model", "image_in"))
def on_load(ctx) -> dict:
    """The page opened: the default model, and (the first screen is never empty) the first example."""
    name, text = ctx.app.default.get()
    lang = words.language_of(ctx.request, words.build_language())
    out = {"page": ctx.page.with_(model=name, lang=lang), "model_dd": gr.update(choices=ctx.app.manager.choice_pairs(
        ctx.session, lang), value=name), "notice_md": gr.update(value=in_language(text, lang), visible=bool(text)),
        "api_model": gr.update(value=name)}
    if ctx.page.image is None and ctx.app.examples:
        out["image_in"] = ctx.app.examples[0][0]
    return out


def wire(events, ui) -> None:
    events.bind(ui.image_in.change, on_image, key_change=True, show_progress="full", trigger_mode="always_last")
    events.bind(ui.gallery.select, on_gallery)
    events.bind(ui.model_dd.input, on_model, key_change=True)
    events.bind(ui.model_dd.change, on_classes_box, show_progress="hidden")
    events.bind(ui.custom_btn.click, on_custom, key_change=True)
    events.bind(ui.ckpt_file.upload, on_checkpoint_chosen)
    events.bind(ui.classes_tb.submit, on_classes, key_change=True)
