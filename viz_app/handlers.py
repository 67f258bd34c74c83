"""Event handlers: translate Gradio's values (updates, SelectData, Request, Progress) to and from the plain
callbacks in `viz_app.callbacks`. No layout here (`viz_app.ui`), no computation (`viz_app.callbacks`)."""
from __future__ import annotations

import threading
from typing import Optional

import gradio as gr

from .callbacks import Callbacks
from .errors import as_gr_error
from .models import choose_default
from .views import head_label, query_label

N_MAIN = 11   # preds, heatmap, caption, sha, view, method, layer, head, query, target text, notes
SKIP_MAIN = tuple(gr.skip() for _ in range(N_MAIN))


def _session(request: Optional[gr.Request]) -> str:
    return (getattr(request, "session_hash", None) or "local") if request is not None else "local"


def _prog(progress):
    return lambda frac, desc: progress(frac, desc=desc)


def _target_text(analysis, view) -> str:
    if not analysis.predictions:
        return "This model has no classifier: no class to explain."
    t = analysis.top1 if view.target is None else int(view.target)
    name = analysis.class_names[t] if 0 <= t < len(analysis.class_names) else str(t)
    which = "the top-1 class" if view.target is None or t == analysis.top1 else "chosen by click"
    return f"Class-specific methods explain **{name}** ({which})."


def _call(fn, *args, **kwargs):
    """Run a plain function and show any failure as a message in the page."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise as_gr_error(e) from None


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


class Handlers:
    """One method per event of the page (see `viz_app.ui.build_demo` for the wiring)."""

    def __init__(self, cb: Callbacks, default: DefaultModel, examples: list[tuple[str, str]]):
        self.cb, self.default, self.examples = cb, default, examples

    def full_outputs(self, session, analysis, view):
        view = self.cb.default_view(analysis, view)
        picture, cap = self.cb.render(session, analysis.model_key, analysis.image_sha, view)
        c = self.cb.controls(analysis, view)
        heads = [(head_label(h), h) for h in c["heads"]]
        queries = [(query_label(q, analysis.result), q) for q in c["queries"]]
        notes = "  \n".join(f"Note: {n}" for n in analysis.notes)
        return (self.cb.label_values(analysis), picture, cap, analysis.image_sha, view,
                gr.update(value=view.method),
                gr.update(minimum=0, maximum=max(c["num_layers"] - 1, 0), value=c["layer"],
                          interactive=c["num_layers"] > 1),
                gr.update(choices=heads, value=view.head),
                gr.update(choices=queries, value=view.query),
                _target_text(analysis, view), notes)

    def analyse_and_show(self, session, image, model_name, view, progress):
        analysis = self.cb.analyse(session, image, model_name, _prog(progress))
        for n in analysis.notes:
            gr.Info(n)
        keep = view.with_(click=None, target=None, query=view.query if view.query != "patch" else "auto")
        return self.full_outputs(session, analysis, keep)

    def on_image(self, image, model_name, view, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        if image is None:
            return (None, None, "", None, view, gr.skip(), gr.skip(), gr.skip(), gr.skip(), "", "")
        return self.analyse_and_show(_session(request), image, model_name, view, progress)

    def on_gallery(self, evt: gr.SelectData):
        return self.examples[evt.index][0]

    def on_model(self, name, image, view, current, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        session = _session(request)
        try:
            self.cb.manager.get(name, _prog(progress))
        except Exception as e:  # noqa: BLE001 - the previous model keeps serving
            gr.Warning(f"{as_gr_error(e).message} — still using {current}.", duration=15)
            return (gr.update(value=current), current) + SKIP_MAIN
        if image is None:
            return (gr.update(value=name), name) + SKIP_MAIN
        return (gr.update(value=name), name) + self.analyse_and_show(session, image, name, view, progress)

    def on_custom(self, arch, ckpt, labels, image, view, current, request: gr.Request, progress=gr.Progress()):
        session = _session(request)
        name = _call(self.cb.manager.register, arch, ckpt, labels, progress=_prog(progress))
        gr.Info(f"Loaded {name}")
        choices = self.cb.manager.choice_pairs()
        head_out = (gr.update(choices=choices, value=name), name, gr.update(choices=choices),
                    gr.update(choices=choices))
        if image is None:
            return head_out + SKIP_MAIN
        return head_out + self.analyse_and_show(session, image, name, view, progress)

    def controls_to_view(self, view, m, lay, h, q, cm, al, mo, no, ma, co):
        return view.with_(method=m, layer=int(lay if lay is not None else -1), head=str(h), query=str(q),
                          cmap=cm, alpha=float(al), mode=mo, norm=no, mass=float(ma) if ma else None,
                          contour=bool(co))

    def on_controls(self, m, lay, h, q, cm, al, mo, no, ma, co, view, sha, model_name, image, request: gr.Request,
                    progress=gr.Progress()):
        session = _session(request)
        new = self.controls_to_view(view, m, lay, h, q, cm, al, mo, no, ma, co)
        analysis = self.cb.find(session, model_name, sha)
        head_update = gr.skip()
        if analysis is not None:
            c = self.cb.controls(analysis, new)
            if new.head not in c["heads"]:
                new = new.with_(head="mean")
            heads = [(head_label(x), x) for x in c["heads"]]
            head_update = gr.update(choices=heads, value=new.head)
        if sha is None and image is None:
            return gr.skip(), "Pick an image first.", new, head_update
        picture, cap = self.cb.render(session, model_name, sha, new, image, _prog(progress))
        return picture, cap, new, head_update

    def on_heatmap_click(self, view, sha, model_name, request: gr.Request, evt: gr.SelectData):
        session = _session(request)
        if sha is None:
            raise gr.Error("Pick an image first.")
        x, y = evt.index[0], evt.index[1]
        new = self.cb.click(session, model_name, sha, view, x, y)
        picture, cap = self.cb.render(session, model_name, sha, new)
        return picture, cap, new, gr.update(value=new.method), gr.update(value="patch")

    def on_class(self, view, sha, model_name, request: gr.Request, evt: gr.SelectData):
        session = _session(request)
        analysis = self.cb.find(session, model_name, sha)
        if analysis is None:
            raise gr.Error("Pick an image first.")
        label = evt.value if isinstance(evt.value, str) else (evt.value or {}).get("label", "")
        target = _call(self.cb.target_from_label, analysis, label)
        new = view.with_(target=target)
        if new.method not in ("grad_rollout", "gradcam"):
            new = new.with_(method="grad_rollout")
            new = self.cb.default_view(analysis, new)
            if new.method == "raw":
                new = new.with_(method="gradcam")
        picture, cap = self.cb.render(session, model_name, sha, new)
        return picture, cap, new, gr.update(value=new.method), _target_text(analysis, new)

    def on_reset_target(self, view, sha, model_name, request: gr.Request):
        session = _session(request)
        new = view.with_(target=None)
        analysis = self.cb.find(session, model_name, sha)
        if analysis is None:
            return gr.skip(), gr.skip(), new, ""
        picture, cap = self.cb.render(session, model_name, sha, new)
        return picture, cap, new, _target_text(analysis, new)

    def on_grid(self, view, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        if sha is None and image is None:
            return gr.skip(), None, "Pick an image first."
        sheet, lay, cap = self.cb.grid(_session(request), model_name, sha, view, image, _prog(progress))
        return sheet, lay, cap

    def on_grid_click(self, lay, view, sha, model_name, request: gr.Request, evt: gr.SelectData):
        cell = self.cb.grid_cell(lay, evt.index[0], evt.index[1])
        if cell is None:
            return (gr.skip(),) * 7 + (gr.skip(),)
        session = _session(request)
        li, hi = cell
        new = view.with_(method="raw", layer=li, head=hi)
        picture, cap = self.cb.render(session, model_name, sha, new)
        analysis = self.cb.find(session, model_name, sha)
        heads = [(head_label(x), x) for x in self.cb.controls(analysis, new)["heads"]] if analysis else None
        return (picture, cap, new, gr.update(value="raw"), gr.update(value=li),
                gr.update(choices=heads, value=hi) if heads else gr.update(value=hi),
                gr.Tabs(selected="attention"), gr.skip())

    def on_compare(self, ma, mm_a, la, ha, mb, mm_b, lb, hb, view, sha, image, request: gr.Request,
                   progress=gr.Progress()):
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        base = view.with_(click=None, query="auto")
        va = base.with_(method=mm_a, layer=int(la if la is not None else -1), head=str(ha))
        vb = base.with_(method=mm_b, layer=int(lb if lb is not None else -1), head=str(hb))
        (pa, ca), (pb, cbb) = self.cb.compare(_session(request), image, sha, ma, va, mb, vb, _prog(progress))
        return pa, ca, pb, cbb

    def on_diagnostics(self, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        f1, f2, f3, rows, md = self.cb.diagnostics(_session(request), model_name, sha, image, _prog(progress))
        return f1, f2, f3, rows, md

    def on_faithfulness(self, steps, rnd, view, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        return self.cb.faithfulness(_session(request), model_name, sha, view, int(steps), image, _prog(progress),
                               bool(rnd))

    def on_export(self, view, sha, model_name, image, request: gr.Request, progress=gr.Progress()):
        if sha is None and image is None:
            raise gr.Error("Pick an image first.")
        return self.cb.export(_session(request), model_name, sha, view, image, _prog(progress))

    def on_load(self, request: gr.Request):
        name, text = self.default.get()
        choices = self.cb.manager.choice_pairs()
        upd = gr.update(choices=choices, value=name)
        return (upd, name, gr.update(value=text, visible=bool(text)), gr.update(choices=choices, value=name),
                gr.update(choices=choices, value=name), gr.update(value=name))

    def api_predict(self, image, model, request: gr.Request, progress=gr.Progress()):
        """Top-5 predictions, the model's default heatmap on the photo, and metadata (incl. input_sha256)."""
        name = (model or "").strip() or self.default.get()[0]
        return self.cb.predict(_session(request), image, name, _prog(progress))

    def api_attention_map(self, image, model, method, layer, head, query, target, colormap, opacity, mode,
                          mass_threshold, request: gr.Request, progress=gr.Progress()):
        """One attention view with explicit settings; query "row,col" picks a patch; target -1 = top-1."""
        name = (model or "").strip() or self.default.get()[0]
        return self.cb.attention_map(_session(request), image, name, method or "rollout",
                                int(layer if layer is not None else -1), str(head or "mean"), query or "auto",
                                None if target in (None, -1) else int(target), colormap or "inferno",
                                0.5 if opacity is None else float(opacity), mode or "smooth",
                                mass_threshold or 0.0, _prog(progress))
