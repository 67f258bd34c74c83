"""What the page does, as plain functions: values in (paths, names, numbers), pictures and values out.

`Callbacks` holds the model manager and the session store; every public method takes the browser
session id first, so results never cross sessions. The forward pass and capture run once per
(session, image, model) — `analyse` — and every view after that is computed from the cache.
Errors leave as `gr.Error` with a clear message (see `viz_app.errors`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from attention.errors import ImageError, MethodNotDefinedError, UserError
from attention.i18n import t
from attention.images import LoadedImage, open_image

from .errors import user_facing
from .models import ModelManager
from .state import Analysis, SessionStore
from .views import (COLORMAPS, METHODS, MODES, View, click_method, compute_map, display_to_photo, draw,
                    fallback_method, head_choices, layer_map, needs_model, query_choices, spatial_layers)

log = logging.getLogger("viz_app")

Progress = Optional[Callable[[float, str], None]]
DISPLAY_MIN, DISPLAY_MAX = 448, 640      # long side of the picture the maps are drawn on


def pixels_sha256(image: Image.Image) -> str:
    """sha256 of the decoded RGB pixels (row-major uint8 H x W x 3): identifies an input in API answers."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(image.convert("RGB"), np.uint8)).tobytes()).hexdigest()


def display_copy(image: Image.Image) -> np.ndarray:
    """The photo at display size: big photos shrink (fast re-renders), tiny ones grow (visible patches)."""
    w, h = image.size
    long = max(w, h)
    target = min(max(long, DISPLAY_MIN), DISPLAY_MAX)
    if target == long:
        return np.asarray(image.convert("RGB"))
    f = target / long
    size = (max(1, round(w * f)), max(1, round(h * f)))
    resample = Image.Resampling.NEAREST if f >= 2 else Image.Resampling.LANCZOS
    return np.asarray(image.convert("RGB").resize(size, resample))


def _noop(frac: float, desc: str) -> None:
    pass


class Callbacks:
    def __init__(self, manager: Optional[ModelManager] = None, store: Optional[SessionStore] = None,
                 export_root: Optional[str] = None):
        self.manager = manager if manager is not None else ModelManager()
        self.store = store if store is not None else SessionStore()
        self.export_root = export_root or os.path.join(tempfile.gettempdir(), "viz_app_exports")
        self.forwards = 0           # analyses computed (not served from the cache)

    # ------------------------------------------------------------------ images and analyses
    @staticmethod
    def decode(image) -> LoadedImage:
        """An upload (path, bytes, array or PIL image) -> upright RGB, or `ImageError` saying what is wrong."""
        if image is None or (isinstance(image, str) and not image.strip()):
            raise ImageError.said("app.callbacks.no_image")
        if isinstance(image, dict):                      # a FileData-like dict from the API
            image = image.get("path") or image.get("url")
        name = os.path.basename(image) if isinstance(image, str) else None
        try:
            return open_image(image, name)
        except ImageError:
            if isinstance(image, str):
                discard_upload(image)       # a refused upload does not stay on the server's disk
            raise

    def load_custom(self, session: str, arch: str, checkpoint, labels=None, progress: Progress = None,
                    ema: Optional[bool] = None) -> str:
        """'Load my model': the checkpoint (an upload, or a `LocalPath` typed in the path field) joins this
        session's menu. Gradio's copies of the uploads are deleted afterwards, loaded or refused (a loaded
        model has its private copy, `ModelManager._keep`); so is the private copy of a refused one."""
        from .models import LocalPath
        try:
            return self.manager.register(arch, checkpoint, labels, progress=progress, session=session, ema=ema)
        except BaseException:
            self.manager.discard_unused_copies()
            raise
        finally:
            for f in (checkpoint, labels):
                if f and not isinstance(f, LocalPath):
                    discard_upload(str(f))

    @staticmethod
    def architectures_for(path: str, progress: Progress = None, limit: int = 5) -> list[str]:
        """The architectures for the checkpoint at `path`: the one it names, else those whose every weight shape
        fits it ([] when it cannot be read safely: loading it then says why)."""
        from attention.models.architecture import candidates
        from attention.models.checkpoint import read_checkpoint
        if progress:
            progress(0.3, "finding the architectures that fit the checkpoint's weights")
        try:
            names = candidates(read_checkpoint(str(path)), limit=limit)
            return list(dict.fromkeys(name.split(" (img_size")[0] for name in names))
        except Exception:  # noqa: BLE001 - refused or not weights: 'Load my model' gives the reason
            return []

    def find(self, session: str, model_name: str, sha: Optional[str]) -> Optional[Analysis]:
        if not sha:
            return None
        return self.store.get(session, self.manager.spec(model_name).name, sha)

    def _analyse(self, session: str, image, model_name: str, progress: Progress = None) -> Analysis:
        progress = progress or _noop
        progress(0.02, "reading the image")
        loaded_image = image if isinstance(image, LoadedImage) else self.decode(image)
        photo = loaded_image.image
        sha = pixels_sha256(photo)
        name = self.manager.spec(model_name).name
        hit = self.store.get(session, name, sha)
        if hit is not None:
            _notes_of_this_file(hit, loaded_image)
            return hit
        loaded = self.manager.get(name, progress)
        progress(0.5, f"running {name} and capturing its attention")
        analysis = self._compute(loaded, name, photo, sha, list(loaded_image.notes))
        analysis.decode_notes, analysis.file_sha256 = list(loaded_image.notes), loaded_image.file_sha256
        self.store.put(session, analysis)
        return analysis

    def _compute(self, loaded, name: str, photo: Image.Image, sha: str, notes: list) -> Analysis:
        """One forward with capture and the predictions: the `Analysis` of (model, photo), not cached."""
        prepared = loaded.prepare(photo)
        result = loaded.capture(prepared, dtype=torch.float16)
        self.forwards += 1
        if loaded.num_classes and result.logits.shape[-1] == loaded.num_classes:
            predictions = loaded.top_k(result.logits, 5)[0]
        else:
            predictions = []
            notes.append((loaded.predictions_message() or f"{name}: no predictions.") +
                         " Class-specific methods need a classifier; raw attention and rollout work.")
        return Analysis(name, sha, photo, display_copy(photo), prepared, result, predictions,
                        class_names=list(loaded.class_names), notes=notes)

    @user_facing
    def live(self, model_name: str, frame: np.ndarray, view: View) -> tuple[np.ndarray, Analysis, View]:
        """One camera frame: its map in `view` (a class-specific method falls back to rollout, which needs no
        backward pass) on the frame, the analysis and the view drawn. Nothing is cached: frames come and go."""
        if frame is None:
            raise ImageError.said("app.callbacks.no_camera_frame")
        photo = Image.fromarray(np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)[..., :3]))
        name = self.manager.spec(model_name).name
        analysis = self._compute(self.manager.get(name), name, photo, "live", [])
        if needs_model(view.method):
            view = view.with_(method="rollout")
        view = self.default_view(analysis, view.with_(click=None, query="auto" if view.query == "patch" else view.query))
        return draw(analysis, self._map(analysis, view), view), analysis, view

    @user_facing
    def analyse(self, session: str, image, model_name: str, progress: Progress = None) -> Analysis:
        """Decode, run the model once with capture, cache the result for this session."""
        return self._analyse(session, image, model_name, progress)

    def analysis_of(self, session: str, model_name: str, sha: Optional[str], image=None,
                    progress: Progress = None) -> Analysis:
        """The session's analysis of (image, model): from the cache by the image's sha, else computed from
        `image` (evicted, or never analysed on this model)."""
        a = self.find(session, model_name, sha)
        if a is not None:
            return a
        if image is None:
            raise UserError.said("app.callbacks.not_cached")
        return self._analyse(session, image, model_name, progress)

    # ------------------------------------------------------------------ predictions and defaults
    @staticmethod
    def label_values(analysis: Analysis) -> dict[str, float]:
        """Top-5 for `gr.Label` ({name: probability}); equal names get their class index appended."""
        out: dict[str, float] = {}
        for p in analysis.predictions:
            label = p["label"] if p["label"] not in out else f"{p['label']} (#{p['index']})"
            out[label] = float(p["probability"])
        return out

    @staticmethod
    def target_from_label(analysis: Analysis, label: str) -> int:
        """Class index of a label clicked in the predictions."""
        label = str(label)
        for p in analysis.predictions:
            if label in (p["label"], f"{p['label']} (#{p['index']})"):
                return int(p["index"])
        m = re.search(r"\(#(\d+)\)$", label)
        if m:
            return int(m.group(1))
        if label in analysis.class_names:
            return analysis.class_names.index(label)
        raise UserError.said("app.callbacks.unknown_class", label=repr(label))

    @staticmethod
    def default_view(analysis: Analysis, base: Optional[View] = None) -> View:
        """A view that exists for this model: rollout where defined, else raw attention of the last layer."""
        base = base or View()
        method = fallback_method(analysis.result, base.method)
        queries = query_choices(analysis.result)
        query = base.query if base.query in queries else queries[0]
        if query == "auto" and "cls+dist" in queries:
            query = "cls+dist"     # distilled DeiT predicts with the mean of both heads: look at both rows
        _, _, m = layer_map(analysis.result, base.layer)
        head = base.head if base.head in head_choices(m) else "mean"
        return base.with_(method=method, query=query, head=head, click=None if query != "patch" else base.click)

    @staticmethod
    def controls(analysis: Analysis, view: View) -> dict:
        """What the view controls should offer for this model and layer."""
        n = len(spatial_layers(analysis.result))
        pos, _, m = layer_map(analysis.result, view.layer)
        return {"num_layers": n, "layer": pos, "heads": head_choices(m), "queries": query_choices(analysis.result),
                "layer_name": m.name, "num_heads": m.num_heads}

    # ------------------------------------------------------------------ views
    def _map(self, analysis: Analysis, view: View, lang: str = "en"):
        mapped = compute_map(analysis, view, model=lambda: self.manager.get(analysis.model_key),
                             grad_lock=self.manager.grad_lock(analysis.model_key), lang=lang)
        return mapped

    @user_facing
    def draw_view(self, session: str, analysis: Analysis, view: View, lang: str = "en") -> tuple[np.ndarray, str]:
        """The picture and caption of `view` on an analysis (the caption in `lang`)."""
        return self._render(session, analysis, view, lang)

    def _render(self, session: str, analysis: Analysis, view: View, lang: str = "en") -> tuple[np.ndarray, str]:
        mapped = self._map(analysis, view, lang)
        picture = draw(analysis, mapped, view)
        self.store.touch(session, analysis)       # the map was cached with the analysis: the byte bound sees it
        return picture, mapped.caption

    @user_facing
    def render(self, session: str, model_name: str, sha: Optional[str], view: View, image=None,
               progress: Progress = None) -> tuple[np.ndarray, str]:
        """The picture and caption of `view` (from the cache; `image` is only used if it was evicted)."""
        analysis = self.analysis_of(session, model_name, sha, image, progress)
        return self._render(session, analysis, view)

    @user_facing
    def click(self, session: str, analysis: Analysis, view: View, x: float, y: float) -> View:
        """A click at (x, y) on the displayed picture -> the view of where that patch attends."""
        py, px = display_to_photo(analysis, x, y)
        new = view.with_(method=click_method(analysis.result, view.method), query="patch", click=(py, px))
        self._map(analysis, new)     # raises a clear error for a click outside the model's view
        return new

    # ------------------------------------------------------------------ layer x head grid
    @user_facing
    def grid(self, session: str, model_name: str, sha: Optional[str], view: View, image=None,
             progress: Progress = None, lang: str = "en"):
        """(sheet picture, SheetLayout, caption in `lang`): every layer x head for the current query."""
        from attention.render import grid_sheet
        from .views import layer_heads
        analysis = self.analysis_of(session, model_name, sha, image, progress)
        maps, names, qtext, patch_note = layer_heads(analysis, view, lang)
        heads = max(m.shape[0] for m in maps)
        cell = int(min(112, max(44, 1240 // (heads + 1))))
        sheet, layout = grid_sheet(analysis.display, maps, analysis.prepared.geometry, cell_size=cell,
                                   cmap=view.cmap, alpha=max(float(view.alpha), 0.5), mode=view.mode,
                                   norm=view.norm, return_layout=True)
        caption = t("app.grid.caption", lang, layers=len(maps), heads=heads, model=analysis.model_key, query=qtext,
                    note=patch_note)
        return sheet, layout, caption

    @staticmethod
    def grid_cell(layout, x: float, y: float) -> Optional[tuple[int, str]]:
        """(layer, head) of the sheet cell under a click, head "mean" for the fused column; None outside."""
        from attention.render import FUSED
        if layout is None:
            return None
        cell = layout.cell_at(x, y)
        if cell is None:
            return None
        layer, head = cell
        return int(layer), ("mean" if head == FUSED else str(int(head)))

    # ------------------------------------------------------------------ compare
    @user_facing
    def compare(self, session: str, image, sha: Optional[str], model_a: str, view_a: View, model_b: str,
                view_b: View, progress: Progress = None, lang: str = "en"):
        """Two settings (or two models) side by side on the same image: ((pic, caption), (pic, caption)),
        the captions in `lang`."""
        out = []
        for k, (model_name, view) in enumerate(((model_a, view_a), (model_b, view_b))):
            step = (lambda f, d, k=k: progress(0.5 * k + 0.5 * f, d)) if progress else None
            analysis = self.analysis_of(session, model_name, sha, image, step)
            view = self.default_view(analysis, view)
            pic, caption = self._render(session, analysis, view, lang)
            top = analysis.predictions[0] if analysis.predictions else None
            said = t("app.compare.predicts", lang, model=analysis.model_key, label=top["label"],
                     p=top["probability"]) if top else t("app.compare.no_classifier", lang, model=analysis.model_key)
            out.append((pic, f"{caption}  \n{said}"))
        return out[0], out[1]

    # ------------------------------------------------------------------ diagnostics and faithfulness
    @user_facing
    def diagnostics(self, session: str, model_name: str, sha: Optional[str], image=None, progress: Progress = None,
                    lang: str = "en"):
        """(entropy fig, distance fig, prefix-mass fig, ranking rows, summary) for the image's heads, in `lang`
        (the statistics are computed once per analysis; each language only writes them out)."""
        from .analysis_plots import diagnostics_figures, head_numbers
        analysis = self.analysis_of(session, model_name, sha, image, progress)
        if progress and ("diagnostics",) not in analysis.derived:
            progress(0.3, t("app.heads.progress", lang))
        numbers = analysis.cached(("diagnostics",), lambda: head_numbers(analysis))
        return diagnostics_figures(analysis, lang, numbers)

    @staticmethod
    def has_diagnostics(analysis: Analysis) -> bool:
        """Whether the Heads tab's statistics were computed for this analysis (a redraw costs nothing)."""
        return ("diagnostics",) in analysis.derived

    @user_facing
    def faithfulness(self, session: str, model_name: str, sha: Optional[str], view: View, steps: int = 20,
                     image=None, progress: Progress = None, with_random: bool = True, lang: str = "en"):
        """(figure, markdown) in `lang`: deletion / insertion curves of the view's map and their AUCs. The curves
        are kept with the analysis (the same request, or the same one in another language, is drawn again
        without a forward pass); the request is remembered as this analysis' last (`last_faithfulness`)."""
        from .analysis_plots import faithfulness_run, faithfulness_text, method_table
        analysis = self.analysis_of(session, model_name, sha, image, progress)
        mapped = self._map(analysis, view, lang)
        loaded = self.manager.get(analysis.model_key)
        steps = int(steps)
        target = None if not analysis.predictions else (analysis.top1 if view.target is None else int(view.target))
        key = ("faithfulness", view.method, view.layer, view.start_layer, str(view.head), view.query, view.click,
               target, steps, bool(with_random))
        run = analysis.cached(key, lambda: faithfulness_run(analysis, loaded, mapped, view, steps, progress,
                                                            with_random, lang))
        _remember(analysis, "faithfulness", (view, steps, bool(with_random)))
        fig, md = faithfulness_text(run, mapped.caption, lang)
        md += "\n\n" + method_table(analysis, loaded, run.target, progress,
                                     self.manager.grad_lock(analysis.model_key), lang)
        self.store.touch(session, analysis)
        return fig, md

    @staticmethod
    def remember(analysis: Analysis, what: str, value) -> None:
        """Keep `value` as the analysis' last `what` request (a tab redraws it in another language)."""
        _remember(analysis, what, value)

    @staticmethod
    def recall(analysis: Analysis, what: str):
        """The analysis' last `what` request kept by `remember`, or None."""
        return _recalled(analysis, what)

    @staticmethod
    def last_faithfulness(analysis: Analysis):
        """(view, steps, with_random) of the last faithfulness run on this analysis, or None."""
        return _recalled(analysis, "faithfulness")

    # ------------------------------------------------------------------ downloads
    @user_facing
    def export(self, session: str, model_name: str, sha: Optional[str], view: View, image=None,
               progress: Progress = None, image_name: Optional[str] = None, lang: str = "en") -> list[str]:
        """Write the overlay PNG, the grid sheet PNG, and the npz + json of the CLI's export contract, named
        after the uploaded file (``<file stem>_<model>``; the JSON's "image" is the file name); the progress
        is said in `lang`. The files are remembered as this analysis' last export (`last_export`)."""
        from attention.export import export_arrays, export_metadata, write_export
        from attention.render.files import save_png
        progress = progress or _noop
        analysis = self.analysis_of(session, model_name, sha, image, progress)
        loaded = self.manager.get(analysis.model_key, progress)
        folder = os.path.join(self.export_root, hashlib.sha256(session.encode()).hexdigest()[:16])
        os.makedirs(folder, exist_ok=True)
        _remove_old_files(self.export_root)
        file_stem = os.path.splitext(os.path.basename(image_name or ""))[0]
        file_stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", file_stem).strip("._") or f"image_{analysis.image_sha[:10]}"
        stem = f"{file_stem}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', analysis.model_key)}"
        progress(0.2, t("app.export.progress_npz", lang))
        arrays, skipped = export_arrays(loaded, analysis.prepared, analysis.result)
        meta = export_metadata(loaded, analysis.prepared, analysis.result, image_name, analysis.notes,
                               skipped)
        meta["input_sha256"] = analysis.image_sha
        meta["attention_dtype"] = str(analysis.result.maps[0].weights.dtype).replace("torch.", "") \
            if analysis.result.maps else None
        meta["view"] = {k: v for k, v in asdict(view).items()}
        npz, js = write_export(folder, stem, arrays, meta)
        progress(0.6, t("app.export.progress_pictures", lang))
        picture, _ = self._render(session, analysis, view)
        overlay_png = save_png(os.path.join(folder, f"{stem}_overlay.png"), picture)
        sheet, _, _ = self.grid(session, model_name, analysis.image_sha, view)
        grid_png = save_png(os.path.join(folder, f"{stem}_grid.png"), sheet)
        files = [overlay_png, grid_png, npz, js]
        _remember(analysis, "export", tuple(files))
        return files

    @staticmethod
    def last_export(analysis: Analysis) -> Optional[list[str]]:
        """The files of the last export of this analysis while they are all still on disk (exports older than
        an hour are removed), else None."""
        files = _recalled(analysis, "export")
        return list(files) if files and all(os.path.isfile(f) for f in files) else None

    # ------------------------------------------------------------------ API endpoints
    def _api_meta(self, analysis: Analysis, view: View, caption: str, cached: bool, t0: float) -> dict:
        pos, _, m = layer_map(analysis.result, view.layer)
        target = (analysis.top1 if analysis.predictions else None) if view.target is None else int(view.target)
        return {
            "model": analysis.model_key,
            "input_sha256": analysis.image_sha,
            "image_size": [analysis.photo.width, analysis.photo.height],
            "predictions": analysis.predictions,
            "method": view.method,
            "layer": pos,
            "layer_name": m.name,
            "num_layers": len(spatial_layers(analysis.result)),
            "head": view.head,
            "query": view.query,
            "target": target,
            "target_label": analysis.class_names[target] if target is not None and 0 <= target < len(
                analysis.class_names) else None,
            "prefix_tokens": list(analysis.result.tokens.prefix_names),
            "grid": list(analysis.result.tokens.grid) if analysis.result.tokens.grid else None,
            "caption": caption,
            "notes": list(analysis.notes),
            "cached": cached,
            "seconds": round(time.perf_counter() - t0, 4),
        }

    @user_facing
    def predict(self, session: str, image, model_name: str, progress: Progress = None):
        """(top-5 {label: p}, heatmap picture, metadata) with the model's default map."""
        t0 = time.perf_counter()
        before = self.forwards
        analysis = self._analyse(session, image, model_name, progress)
        view = self.default_view(analysis)
        picture, caption = self._render(session, analysis, view)
        meta = self._api_meta(analysis, view, caption, self.forwards == before, t0)
        return self.label_values(analysis), picture, meta

    @user_facing
    def attention_map(self, session: str, image, model_name: str, method: str = "rollout", layer: int = -1,
                      head: str = "mean", query: str = "auto", target: Optional[int] = None,
                      colormap: str = "inferno", opacity: float = 0.5, mode: str = "smooth",
                      mass_threshold: float = 0.0, progress: Progress = None):
        """(picture, metadata) for explicit settings; ``query`` may be "row,col" for a patch."""
        t0 = time.perf_counter()
        before = self.forwards
        # every value is checked before any work, each with its own message (never a traceback)
        method, colormap, mode = (_api_choice(v, what, choices) for v, what, choices in (
            (method, "method", tuple(METHODS)), (colormap, "colormap", COLORMAPS), (mode, "mode", MODES)))
        layer = _api_int(layer, "layer")
        target = None if target in (None, "") else _api_int(target, "target")
        target = None if target == -1 else target
        opacity = _api_number(opacity, "opacity", 0.0, 1.0, "0 = the photo only, 1 = the map only")
        mass = _api_number(mass_threshold or 0.0, "mass_threshold", 0.0, 0.999,
                           "the share of attention the kept patches hold; 0 = off")
        q = str(query if query is not None else "auto").strip() or "auto"
        if len(q) > 40:
            raise UserError(f"query of {len(q)} characters: use auto, cls, dist, cls+dist, reg0..., patch_mean or "
                            f"\"row,col\"")
        analysis = self._analyse(session, image, model_name, progress)
        n_layers = len(spatial_layers(analysis.result))
        if not -n_layers <= layer < n_layers:
            raise UserError(f"layer {layer} does not exist: this model has {n_layers} layers (0..{n_layers - 1}, "
                            f"or -1 for the last)")
        _, _, m = layer_map(analysis.result, layer)
        head = str(head if head is not None else "mean").strip() or "mean"
        if head not in head_choices(m):
            raise UserError(f"head {head[:20]!r} does not exist: layer {m.name} has {m.num_heads} heads "
                            f"(0..{m.num_heads - 1}), or use mean | max | min")
        click = None
        if re.fullmatch(r"\s*\d{1,6}\s*,\s*\d{1,6}\s*", q):
            r, c = (int(v) for v in q.split(","))
            click = _patch_centre(analysis, layer, r, c)
            q = "patch"
        elif q not in [x for x in query_choices(analysis.result) if x != "patch"]:
            raise UserError(f"query {q!r} is not one of this model's: "
                            f"{', '.join(x for x in query_choices(analysis.result) if x != 'patch')} or \"row,col\"")
        if target is not None and not 0 <= target < len(analysis.class_names):
            raise UserError(f"target class {target} is out of range 0..{len(analysis.class_names) - 1}"
                            if analysis.class_names else "this model has no classes: leave target at -1")
        view = View(method=method, layer=layer, head=head, query=q, click=click, target=target, cmap=colormap,
                    alpha=opacity, mode=mode, mass=mass or None)
        picture, caption = self._render(session, analysis, view)
        return picture, self._api_meta(analysis, view, caption, self.forwards == before, t0)


def _remember(analysis: Analysis, what: str, value) -> None:
    """Keep `value` as the analysis' last `what` (a tab's last request: redrawn in another language)."""
    with analysis.lock:
        analysis.derived[("last", what)] = value


def _recalled(analysis: Analysis, what: str):
    with analysis.lock:
        return analysis.derived.get(("last", what))


def upload_folder() -> str:
    """Where Gradio keeps uploads (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``), read at call time."""
    return os.path.realpath(os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "gradio"))


def discard_upload(path: str) -> bool:
    """Delete `path` if it is one of Gradio's uploads (never a file elsewhere: a path typed, an example);
    its per-upload folder goes too when empty. True if deleted."""
    real = os.path.realpath(path)
    root = upload_folder()
    if not real.startswith(root + os.sep) or not os.path.isfile(real):
        return False
    try:
        os.remove(real)
        folder = os.path.dirname(real)
        if folder != root and not os.listdir(folder):
            os.rmdir(folder)
    except OSError:
        return False
    return True


def _notes_of_this_file(analysis: Analysis, image: LoadedImage) -> None:
    """A cached analysis found by its pixels takes the notes of the file sent now: two files can decode to
    the same pixels (an APNG and its first frame as PNG; a 16-bit PNG and its 8-bit conversion), and what
    was done to decode one ("animated image: first of 4 frames") is not true of the other."""
    with analysis.lock:
        if getattr(analysis, "file_sha256", None) == image.file_sha256 and hasattr(analysis, "decode_notes"):
            return
        old = getattr(analysis, "decode_notes", [])
        model_notes = [n for n in analysis.notes if n not in old]
        analysis.notes = list(image.notes) + model_notes      # a new list: answers already given keep theirs
        analysis.decode_notes, analysis.file_sha256 = list(image.notes), image.file_sha256


def _api_choice(value, what: str, choices) -> str:
    text = str(value if value is not None else "").strip()
    if text not in choices:
        raise UserError(f"unknown {what} {text[:40]!r}; choose one of {', '.join(choices)}")
    return text


def _api_int(value, what: str) -> int:
    """An integer from the API (a JSON number or a numeric string), or a message saying what it should be."""
    try:
        number = float(str(value).strip()) if len(str(value)) <= 20 else float("nan")
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or number != int(number):
        raise UserError(f"{what} must be a whole number, not {str(value)[:20]!r}"
                        + ("..." if len(str(value)) > 20 else ""))
    return int(number)


def _api_number(value, what: str, lo: float, hi: float, meaning: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and lo <= number <= hi):
        raise UserError(f"{what} must be between {lo:g} and {hi:g} ({meaning}), not {str(value)[:20]}")
    return number


def _remove_old_files(root: str, max_age_s: float = 3600.0) -> None:
    """Exports older than an hour go (Gradio has copied what it serves to its own cache)."""
    now = time.time()
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            try:
                if now - os.path.getmtime(path) > max_age_s:
                    os.remove(path)
            except OSError:
                pass


def _patch_centre(analysis: Analysis, layer: int, row: int, col: int) -> tuple[float, float]:
    """Original-photo (y, x) of the centre of patch (row, col) of a layer's grid (for "row,col" queries)."""
    from attention.render import patch_pixels
    from attention.methods import grid_stride, query_grid
    _, _, m = layer_map(analysis.result, layer)
    grid = query_grid(m)
    if grid is None:
        raise MethodNotDefinedError(f"layer {m.name} has no patch queries")
    if not (0 <= row < grid[0] and 0 <= col < grid[1]):
        raise UserError(f"patch ({row}, {col}) is outside the {grid[0]}x{grid[1]} grid")
    y0, y1, x0, x1 = patch_pixels(analysis.prepared.geometry, grid, row, col, grid_stride(analysis.result, grid))
    return (y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0
