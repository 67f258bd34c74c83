"""Event handlers: translate Gradio's values (updates, SelectData, Request, Progress) to and from the plain
callbacks in `viz_app.callbacks`. No layout here (`viz_app.ui`), no computation (`viz_app.callbacks`).

Every handler returns **named updates** (a dict keyed by component; components left out keep their
value). A failure never escapes as an exception: Gradio would then put a red "Error" badge on every
output component (the model menu included) and leave overlays that block clicks. Instead the page
shows one warning toast with the message, and every control stays as it was and usable.

One source of truth per browser session: `key_state` holds (model, image sha) of what the page shows.
Every picture derived from it is refreshed when it changes, or cleared with an "out of date" line;
every caption names its image (short hash) and model (`provenance`), so people and tests can check that
all pictures on the screen agree.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from types import SimpleNamespace
from typing import Optional

import gradio as gr

from .callbacks import Callbacks
from .errors import as_gr_error
from .models import choose_default
from .views import METHODS, available_methods, class_method, head_label, is_class_specific, query_label

log = logging.getLogger("viz_app")

STALE = "*Out of date: the image or model changed. Press the button above to compute it for the current one.*"


def _session(request: Optional[gr.Request]) -> str:
    return (getattr(request, "session_hash", None) or "local") if request is not None else "local"


def _prog(progress):
    return lambda frac, desc: progress(frac, desc=desc)


def message_of(e: BaseException) -> str:
    """The one-line message a failure shows in the page."""
    err = as_gr_error(e)
    return str(getattr(err, "message", err))


def warn(e: BaseException, suffix: str = "") -> None:
    gr.Warning(message_of(e) + suffix, duration=12)


#: ``ATTENTION_VIZ_TIMING=1``: log each handler's server-side time (benchmarks/browser.py splits
#: click -> pixels into server and the rest with it)
_TIMING = os.environ.get("ATTENTION_VIZ_TIMING") == "1"
_log = logging.getLogger("viz_app.timing")


def timed(fn):
    """Handler decorator: with ``ATTENTION_VIZ_TIMING=1``, log the handler's server-side time."""
    if not _TIMING:
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _log.info("handler %s %.1f ms", fn.__qualname__, (time.perf_counter() - t0) * 1e3)
    return wrapper


def guarded(fn):
    """Handler decorator: a failure becomes one warning toast and no update (no Error badge anywhere)."""
    @timed
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every failure becomes one message; the page stays usable
            warn(e)
            return gr.skip()
    return wrapper


def short_sha(sha: Optional[str]) -> str:
    return (sha or "")[:8]


def provenance(model_key: str, sha: Optional[str], name: Optional[str] = None) -> str:
    """The line every caption carries: which image (short hash of its pixels, and file name) and which model."""
    file = f" ({name})" if name else ""
    return f"image `{short_sha(sha)}`{file} · model `{model_key}`"


def image_name(image) -> Optional[str]:
    """The uploaded file's name (Gradio keeps it as the last part of the cached path)."""
    if isinstance(image, dict):
        image = image.get("orig_name") or image.get("path")
    if isinstance(image, str) and image.strip():
        return os.path.basename(image)
    return None


def slider_range(n: int, value: int) -> dict:
    """A 0..n-1 slider update that is always valid: with fewer than two positions the slider is hidden
    (a 0-0 slider is refused by the browser: "Slider minimum must be less than maximum")."""
    n = max(int(n), 0)
    value = min(max(int(value), 0), max(n - 1, 0))
    return gr.update(minimum=0, maximum=max(n - 1, 1), value=value, visible=n > 1, interactive=n > 1)


def method_choices(analysis) -> tuple[list, Optional[str]]:
    """(Radio choices, why some are missing) for this model: rollout needs a stack of self-attention layers;
    class-specific methods need predictions (a headless backbone has none)."""
    names, why = available_methods(analysis.result)
    if not analysis.predictions:
        dropped = [k for k in names if is_class_specific(k)]
        names = [k for k in names if k not in dropped]
        if dropped:
            why = (why + "; " if why else "") + (", ".join(METHODS[k] for k in dropped) +
                                                 ": class-specific, and this model has no classifier")
    return [(METHODS[k], k) for k in names], why


def query_menu(queries: list[str], result) -> list[tuple[str, str]]:
    """The query menu; "CLS (default)" already is CLS, so plain "CLS" is not listed twice."""
    labels = [(query_label(q, result), q) for q in queries]
    if ("CLS (default)", "auto") in labels:
        labels = [x for x in labels if x[1] != "cls"]
    return labels


def head_menu(num_heads: int) -> list[str]:
    return ["mean", "max", "min"] + [str(i) for i in range(max(int(num_heads), 0))]


def _target_text(analysis, view) -> str:
    if not analysis.predictions:
        return "This model has no classifier: no class to explain."
    t = analysis.top1 if view.target is None else int(view.target)
    name = analysis.class_names[t] if 0 <= t < len(analysis.class_names) else str(t)
    which = "the top-1 class" if view.target is None or t == analysis.top1 else "chosen by click"
    return f"Class-specific methods explain **{name}** ({which})."


class DefaultModel:
    """The default model and notice, decided once (a hub probe takes a few seconds at most)."""

    def __init__(self, model: Optional[str], notice: Optional[str]):
        self.model, self.notice = model, notice
        self._lock = threading.Lock()

    def get(self) -> tuple[str, str]:
        with self._lock:
            if self.model is None:
                self.model, self.notice = choose_default()
            return self.model, self.notice or ""


class FrameRate:
    """Frames per second of each browser session's live stream, over its last few frames (thread-safe)."""

    def __init__(self, window: int = 10):
        self.window = window
        self._times: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def tick(self, session: str) -> float:
        now = time.perf_counter()
        with self._lock:
            t = self._times.setdefault(session, [])
            if t and now - t[-1] > 2.0:     # a new recording: do not average over the pause
                t.clear()
            t.append(now)
            del t[:-self.window]
            return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


class Handlers:
    """One method per event of the page (see `viz_app.ui.build_demo` for the wiring). `ui` is the page's
    components by name (set by `build_demo` once they exist); handlers return {component: update}."""

    def __init__(self, cb: Callbacks, default: DefaultModel, examples: list[tuple[str, str]]):
        self.cb, self.default, self.examples = cb, default, examples
        self.ui = SimpleNamespace()
        self.live_rate = FrameRate()

    # ------------------------------------------------------------------ helpers
    def caption(self, analysis, text: str, name: Optional[str] = None) -> str:
        return f"{text}  \n{provenance(analysis.model_key, analysis.image_sha, name)}"

    def stale(self) -> dict:
        """Every picture that is computed on demand, cleared and marked out of date."""
        u = self.ui
        out = {u.grid_img: None, u.layout_state: None, u.grid_md: STALE, u.diag_md: STALE, u.f_md: STALE,
               u.dl_files: None, u.ent_plot: None, u.dist_plot: None, u.mass_plot: None, u.rank_df: None,
               u.f_plot: None}
        for img, md in zip(u.cmp_outputs[0::2], u.cmp_outputs[1::2]):
            out[img], out[md] = None, STALE
        return out

    def full_outputs(self, session, analysis, view, name=None) -> dict:
        """Everything that depends on (image, model): the picture, its caption, every control's range."""
        u = self.ui
        view = self.cb.default_view(analysis, view)
        methods, why = method_choices(analysis)
        if view.method not in [k for _, k in methods]:
            view = view.with_(method="raw")
        picture, cap = self.cb.render(session, analysis.model_key, analysis.image_sha, view)
        c = self.cb.controls(analysis, view)
        heads = [(head_label(h), h) for h in c["heads"]]
        queries = query_menu(c["queries"], analysis.result)
        if view.query == "cls" and "cls" not in [q for _, q in queries]:
            view = view.with_(query="auto")
        notes = list(analysis.notes)
        if why:
            notes.append(f"Some methods are not offered here: {why}")
        if c["num_layers"] <= 1:
            notes.append("This model has one attention layer: no layer slider.")
        out = {
            u.preds: self.cb.label_values(analysis), u.heatmap: picture, u.caption: self.caption(analysis, cap, name),
            u.sha_state: analysis.image_sha, u.view_state: view,
            u.key_state: (analysis.model_key, analysis.image_sha),
            u.method: gr.update(choices=methods, value=view.method),
            u.layer: slider_range(c["num_layers"], c["layer"]),
            u.start_layer: slider_range(c["num_layers"], view.start_layer or 0),
            u.head: gr.update(choices=heads, value=view.head),
            u.query: gr.update(choices=queries, value=view.query),
            u.target_md: _target_text(analysis, view),
            u.notes_md: "  \n".join(f"Note: {n}" for n in notes),
            u.status_md: f"Showing {provenance(analysis.model_key, analysis.image_sha, name)}",
        }
        for c_head in u.cmp_heads:
            out[c_head] = gr.update(choices=head_menu(c["num_heads"]))
        out.update(self.stale())
        return out

    def analyse_and_show(self, session, image, model_name, view, progress) -> dict:
        analysis = self.cb.analyse(session, image, model_name, _prog(progress))
        for n in analysis.notes:
            gr.Info(n)
        keep = view.with_(click=None, target=None, query=view.query if view.query != "patch" else "auto")
        return self.full_outputs(session, analysis, keep, image_name(image))

    # ------------------------------------------------------------------ image and model
    @guarded
    def on_image(self, image, model_name, view, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        u = self.ui
        if image is None:
            return {u.preds: None, u.heatmap: None, u.caption: "", u.sha_state: None, u.key_state: None,
                    u.target_md: "", u.notes_md: "", u.status_md: "No image: pick one on the left.", **self.stale()}
        return self.analyse_and_show(_session(request), image, model_name, view, progress)

    def on_gallery(self, evt: gr.SelectData):
        return self.examples[evt.index][0]

    def on_model(self, name, image, view, current, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        u = self.ui
        session = _session(request)
        try:
            self.cb.manager.get(name, _prog(progress))
        except Exception as e:  # noqa: BLE001 - the previous model keeps serving
            warn(e, f" — still using {current}.")
            return {u.model_dd: gr.update(value=current), u.model_state: current}
        out = {u.model_dd: gr.update(value=name), u.model_state: name}
        for c_model in u.cmp_models:         # Compare starts from the page's model (a side can then change it)
            out[c_model] = gr.update(value=name)
        if image is None:
            return out
        try:
            out.update(self.analyse_and_show(session, image, name, view, progress))
        except Exception as e:  # noqa: BLE001 - the model loaded, but this image failed on it
            warn(e)
        return out

    def on_custom(self, arch, ckpt, labels, image, view, current, request: gr.Request, progress=gr.Progress(),
                  ema=None):
        u = self.ui
        session = _session(request)
        try:
            name = self.cb.load_custom(session, arch, ckpt, labels, _prog(progress), ema=ema)
        except Exception as e:  # noqa: BLE001 - the previous model keeps serving
            warn(e, f" — still using {current}.")
            return {u.model_dd: gr.update(value=current), u.model_state: current}
        gr.Info(f"Loaded {name}")
        choices = self.cb.manager.choice_pairs(session)
        out = {u.model_dd: gr.update(choices=choices, value=name), u.model_state: name}
        for c_model in u.cmp_models:
            out[c_model] = gr.update(choices=choices, value=name)
        if image is not None:
            try:
                out.update(self.analyse_and_show(session, image, name, view, progress))
            except Exception as e:  # noqa: BLE001
                warn(e)
        return out

    # ------------------------------------------------------------------ view controls
    def controls_to_view(self, view, m, lay, h, q, cm, al, mo, no, ma, co):
        return view.with_(method=m, layer=int(lay if lay is not None else -1), head=str(h), query=str(q),
                          cmap=cm, alpha=float(al), mode=mo, norm=no, mass=float(ma) if ma else None,
                          contour=bool(co))

    @guarded
    def on_controls(self, m, lay, h, q, cm, al, mo, no, ma, co, view, sha, model_name, image, request: gr.Request,
                    progress=gr.Progress()):
        u = self.ui
        session = _session(request)
        new = self.controls_to_view(view, m, lay, h, q, cm, al, mo, no, ma, co)
        if sha is None and image is None:
            return {u.caption: "Pick an image first.", u.view_state: new}
        analysis = self.cb._get(session, model_name, sha, image, _prog(progress))
        out = {}
        c = self.cb.controls(analysis, new)
        if new.head not in c["heads"]:
            new = new.with_(head="mean")
            out[u.head] = gr.update(choices=[(head_label(x), x) for x in c["heads"]], value=new.head)
        picture, cap = self.cb.render(session, model_name, sha, new, image, _prog(progress))
        out.update({u.heatmap: picture, u.caption: self.caption(analysis, cap, image_name(image)),
                    u.view_state: new})
        return out

    @guarded
    def on_start_layer(self, start, m, lay, h, q, cm, al, mo, no, ma, co, view, sha, model_name, image,
                       request: gr.Request, progress=gr.Progress()):
        """The first layer chaining methods (rollout, gradient-weighted) start from (Chefer et al. start at 1)."""
        view = view.with_(start_layer=int(start) if start is not None else None)
        return self.on_controls.__wrapped__(self, m, lay, h, q, cm, al, mo, no, ma, co, view, sha, model_name,
                                            image, request, progress)

    @guarded
    def on_heatmap_click(self, view, sha, model_name, image, request: gr.Request, evt: gr.SelectData):
        u = self.ui
        session = _session(request)
        if sha is None:
            raise gr.Error("Pick an image first.")
        x, y = evt.index[0], evt.index[1]
        new = self.cb.click(session, model_name, sha, view, x, y)
        analysis = self.cb._get(session, model_name, sha)
        picture, cap = self.cb.render(session, model_name, sha, new)
        return {u.heatmap: picture, u.caption: self.caption(analysis, cap, image_name(image)), u.view_state: new,
                u.method: gr.update(value=new.method), u.query: gr.update(value="patch")}

    @guarded
    def on_class(self, view, sha, model_name, image, request: gr.Request, evt: gr.SelectData):
        u = self.ui
        session = _session(request)
        analysis = self.cb.find(session, model_name, sha)
        if analysis is None:
            raise gr.Error("Pick an image first.")
        label = evt.value if isinstance(evt.value, str) else (evt.value or {}).get("label", "")
        target = self.cb.target_from_label(analysis, label)
        new = view.with_(target=target)
        new = self.cb.default_view(analysis, new.with_(method=class_method(analysis.result, new.method)))
        picture, cap = self.cb.render(session, model_name, sha, new)
        return {u.heatmap: picture, u.caption: self.caption(analysis, cap, image_name(image)), u.view_state: new,
                u.method: gr.update(value=new.method), u.target_md: _target_text(analysis, new)}

    @guarded
    def on_reset_target(self, view, sha, model_name, image, request: gr.Request):
        u = self.ui
        session = _session(request)
        new = view.with_(target=None)
        analysis = self.cb.find(session, model_name, sha)
        if analysis is None:
            return {u.view_state: new, u.target_md: ""}
        picture, cap = self.cb.render(session, model_name, sha, new)
        return {u.heatmap: picture, u.caption: self.caption(analysis, cap, image_name(image)), u.view_state: new,
                u.target_md: _target_text(analysis, new)}

    # ------------------------------------------------------------------ other tabs
    @guarded
    def on_grid(self, view, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        u = self.ui
        if sha is None and image is None:
            return {u.grid_img: None, u.layout_state: None, u.grid_md: "Pick an image first."}
        session = _session(request)
        sheet, lay, cap = self.cb.grid(session, model_name, sha, view, image, _prog(progress))
        analysis = self.cb._get(session, model_name, sha, image)
        return {u.grid_img: sheet, u.layout_state: lay, u.grid_md: self.caption(analysis, cap, image_name(image))}

    @guarded
    def on_grid_click(self, lay, view, sha, model_name, image, request: gr.Request, evt: gr.SelectData):
        u = self.ui
        cell = self.cb.grid_cell(lay, evt.index[0], evt.index[1])
        if cell is None:
            return gr.skip()
        session = _session(request)
        li, hi = cell
        new = view.with_(method="raw", layer=li, head=hi)
        picture, cap = self.cb.render(session, model_name, sha, new)
        analysis = self.cb._get(session, model_name, sha)
        c = self.cb.controls(analysis, new)
        heads = [(head_label(x), x) for x in c["heads"]]
        return {u.heatmap: picture, u.caption: self.caption(analysis, cap, image_name(image)), u.view_state: new,
                u.method: gr.update(value="raw"), u.layer: slider_range(c["num_layers"], li),
                u.head: gr.update(choices=heads, value=hi), u.tabs: gr.Tabs(selected="attention"),
                u.page_tab: "attention"}

    @guarded
    def on_compare_model(self, name, sha, image, request: gr.Request, progress=gr.Progress()):
        """A Compare side's model changed: its head menu offers that model's heads."""
        if sha is None and image is None:
            return gr.skip()
        analysis = self.cb._get(_session(request), name, None, image, _prog(progress))
        return gr.update(choices=head_menu(self.cb.controls(analysis, self.cb.default_view(analysis))["num_heads"]),
                         value="mean")

    @guarded
    def on_compare(self, ma, mm_a, la, ha, mb, mm_b, lb, hb, view, sha, image, request: gr.Request,
                   progress=gr.Progress()):
        u = self.ui
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        base = view.with_(click=None, query="auto")
        va = base.with_(method=mm_a, layer=int(la if la is not None else -1), head=str(ha))
        vb = base.with_(method=mm_b, layer=int(lb if lb is not None else -1), head=str(hb))
        session = _session(request)
        (pa, ca), (pb, cbb) = self.cb.compare(session, image, sha, ma, va, mb, vb, _prog(progress))
        name = image_name(image)
        ia, ma_, ib, mb_ = u.cmp_outputs
        sha_now = self.cb._get(session, ma, sha, image).image_sha
        return {ia: pa, ma_: f"{ca}  \n{provenance(self.cb.manager.spec(ma).name, sha_now, name)}",
                ib: pb, mb_: f"{cbb}  \n{provenance(self.cb.manager.spec(mb).name, sha_now, name)}"}

    @guarded
    def on_diagnostics(self, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        u = self.ui
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        session = _session(request)
        f1, f2, f3, rows, md = self.cb.diagnostics(session, model_name, sha, image, _prog(progress))
        analysis = self.cb._get(session, model_name, sha, image)
        return {u.ent_plot: f1, u.dist_plot: f2, u.mass_plot: f3, u.rank_df: rows,
                u.diag_md: self.caption(analysis, md, image_name(image))}

    @guarded
    def on_faithfulness(self, steps, rnd, view, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        u = self.ui
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        session = _session(request)
        fig, md = self.cb.faithfulness(session, model_name, sha, view, int(steps), image, _prog(progress), bool(rnd))
        analysis = self.cb._get(session, model_name, sha, image)
        return {u.f_plot: fig, u.f_md: self.caption(analysis, md, image_name(image))}

    @guarded
    def on_export(self, view, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        return {self.ui.dl_files: self.cb.export(_session(request), model_name, sha, view, image, _prog(progress),
                                                 image_name=image_name(image))}

    @timed
    def on_live(self, frame, model_name, view, request: gr.Request):
        """A streamed camera frame: its heatmap in the Attention tab's view, and the frame rate this
        session's stream gets. A failure is said in the caption (no toast per frame)."""
        u = self.ui
        try:
            picture, analysis, shown = self.cb.live(model_name, frame, view)
        except Exception as e:  # noqa: BLE001 - the stream goes on; the caption says why
            return {u.live_md: f"**Not available here.** {message_of(e)}"}
        fps = self.live_rate.tick(_session(request))
        top = analysis.predictions[0] if analysis.predictions else None
        said = f" · top-1 **{top['label']}** ({top['probability']:.0%})" if top else ""
        return {u.live_img: picture,
                u.live_md: f"{METHODS[shown.method]}{said} · {fps:.1f} frames/s (server side)  \n"
                           f"camera frame {frame.shape[1]}×{frame.shape[0]} · model `{analysis.model_key}`"}

    def on_tab(self, tab_id: str):
        """Remember which top-level tab is shown (the lesson refreshes its pictures only when it is visible)."""
        return lambda: tab_id

    def on_load(self, image, request: gr.Request):
        """The page opened: the default model, and (the first screen is never empty) the first example."""
        u = self.ui
        name, text = self.default.get()
        choices = self.cb.manager.choice_pairs(_session(request))
        out = {u.model_dd: gr.update(choices=choices, value=name), u.model_state: name,
               u.notice_md: gr.update(value=text, visible=bool(text)), u.api_model: gr.update(value=name)}
        for c_model in u.cmp_models:
            out[c_model] = gr.update(choices=choices, value=name)
        if image is None and self.examples:
            out[u.image_in] = self.examples[0][0]
        return out

    # ------------------------------------------------------------------ API endpoints (positional by contract)
    def api_predict(self, image, model, request: gr.Request, progress=gr.Progress()):
        """Top-5 predictions, the model's default heatmap on the photo, and metadata (incl. input_sha256)."""
        name = (model or "").strip() or self.default.get()[0]
        return self.cb.predict(_session(request), image, name, _prog(progress))

    def api_attention_map(self, image, model, method, layer, head, query, target, colormap, opacity, mode,
                          mass_threshold, request: gr.Request, progress=gr.Progress()):
        """One attention view with explicit settings; query "row,col" picks a patch; target -1 = top-1."""
        name = (model or "").strip() or self.default.get()[0]
        # values go through as given: Callbacks.attention_map checks each one with its own message
        return self.cb.attention_map(_session(request), image, name, method or "rollout",
                                     -1 if layer is None else layer, head or "mean", query or "auto",
                                     None if target in (None, -1) else target, colormap or "inferno",
                                     0.5 if opacity is None else opacity, mode or "smooth",
                                     mass_threshold or 0.0, _prog(progress))
