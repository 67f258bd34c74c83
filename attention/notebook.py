"""In a notebook: ``show(model, image)`` renders a model's attention inline; ``explore(model)`` serves the app on it.

The model is the object you hold: a timm, Hugging Face transformers, torchvision or open_clip module, a
hand-written ViT / CNN with attention, or a name / path as `load_model` takes. `as_loaded` wraps it in the
same `LoadedModel` every loader returns, so the capture, the methods and the app treat it exactly like a
model loaded by name (no second code path). Nothing is copied or changed: the capture runs the model in
eval mode and restores each module's ``training`` flag; inputs go to the parameters' device and dtype.

Preprocessing comes from the model where it says it (timm's ``pretrained_cfg``; a Hugging Face image
processor given as ``processor=`` or saved beside the model; an open_clip model's own config); otherwise
``processor=`` is one of

- a Hugging Face image processor (``ViTImageProcessor``...), a torchvision weights entry
  (``ViT_B_16_Weights.IMAGENET1K_V1``) or its ``.transforms()``;
- a dict ``{"input_size": 224 | (H, W), "mean": (...), "std": (...)}`` (optional ``crop_pct``,
  ``interpolation``), read as timm reads a data config;
- any callable PIL image -> (3, H, W) tensor (a torchvision ``Compose`` is followed step by step for the
  photo <-> input geometry; for another callable the input is taken to show the whole photo).

`show(...)` returns an `AttentionView`: its ``_repr_html_`` is one self-contained page (pictures inlined as
base64 PNG, a few lines of inline script, no network) with the top predictions, the default map on the
photo and the layer x head grid; the arrays drawn are attributes (``heatmap``, ``grid``, ...).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from .capture import CaptureResult
from .errors import ImageError, LabelsError, UserError
from .preprocess import Geometry, PreparedImage, Preprocessor

TOP_K = 5
#: the longest side of the photo drawn in the view (the HTML stays small whatever the photo's size)
PHOTO_SIDE = 320
#: pixels of a grid cell's longer side
CELL = 64


class NotAModelError(UserError, TypeError):
    """`show` / `explore` got something that is not an ``nn.Module`` (nor a name, path or capture)."""


class UnknownPreprocessingError(UserError):
    """The model does not say how its input is prepared, and ``processor=`` was not given."""


HOW_TO_PREPROCESS = ("pass processor=: a Hugging Face image processor, torchvision weights (e.g. "
                     "ViT_B_16_Weights.IMAGENET1K_V1) or their .transforms(), a dict {'input_size': 224, "
                     "'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)}, or any callable "
                     "PIL image -> (3, H, W) tensor")


# ---------------------------------------------------------------------------------------------- wrapping

def as_loaded(model, labels=None, processor=None, name: Optional[str] = None, probe: bool = True):
    """A `LoadedModel` around `model` (an ``nn.Module``, a `LoadedModel`, or a name / path for `load_model`).

    ``labels``: class names (a list, a ``{index: name}`` dict, or a text / JSON file); their count must be
    the classifier's. ``probe``: for a model that does not say its number of classes (a hand-written or
    torchvision module), run one forward on a blank input to learn it; without it the class names are
    settled by the first capture (`settle_labels`).
    """
    from .models import LoadedModel, load_model
    if isinstance(model, LoadedModel):
        loaded = dataclasses.replace(model)      # names and labels set here stay off the caller's object
    elif isinstance(model, (str, os.PathLike)):
        loaded = load_model(os.fspath(model))
    elif isinstance(model, nn.Module):
        loaded = _wrap_module(model, processor, name, probe)
    else:
        raise NotAModelError(f"show() / explore() take a torch nn.Module (or a model name or path as load_model "
                             f"takes), not a {type(model).__module__}.{type(model).__qualname__}")
    if processor is not None and not isinstance(model, nn.Module):
        loaded.preprocess = preprocessor_from(processor)
    if name:
        loaded.name = name
    if labels is not None:
        names = read_label_list(labels)
        if loaded.is_zero_shot:
            return loaded.with_classes(names)
        if loaded.class_names or not loaded.has_classifier:
            check_label_count(names, loaded.num_classes if loaded.has_classifier else 0, loaded.name)
        loaded.class_names = names
    return loaded


def read_label_list(labels) -> list[str]:
    """Class names from a list / tuple, a ``{index: name}`` dict (``config.id2label``) or a labels file."""
    if isinstance(labels, (str, os.PathLike)):
        from .models.labels import read_labels
        return read_labels(os.fspath(labels))
    if isinstance(labels, dict):
        try:
            keys = sorted(int(k) for k in labels)
        except (TypeError, ValueError):
            raise LabelsError("a labels dict maps class indices to names, e.g. model.config.id2label") from None
        if keys != list(range(len(keys))):
            raise LabelsError(f"a labels dict needs the indices 0..{len(keys) - 1} once each")
        by_int = {int(k): v for k, v in labels.items()}
        return [str(by_int[i]) for i in keys]
    if isinstance(labels, (list, tuple)) or (hasattr(labels, "__iter__") and not isinstance(labels, bytes)):
        names = [str(n) for n in labels]
        if not names:
            raise LabelsError("labels is empty: give one name per class")
        return names
    raise LabelsError(f"labels must be a list of names, a dict {{index: name}} or a file path, "
                      f"not a {type(labels).__name__}")


def check_label_count(names: Sequence[str], num_classes: int, what: str) -> None:
    if num_classes == 0:
        raise LabelsError(f"{len(names)} labels were given but {what} has no classifier (it returns features)")
    if len(names) != num_classes:
        raise LabelsError(f"{len(names)} labels were given but the classifier of {what} has {num_classes} "
                          f"classes: give exactly {num_classes} names")


def _source_of(model: nn.Module) -> str:
    mod = type(model).__module__
    if mod.startswith("timm."):
        return "timm"
    if mod.startswith("transformers."):
        return "transformers"
    if mod.startswith("torchvision."):
        return "torchvision"
    if mod.startswith("open_clip."):
        return "open_clip"
    return "module"


def _wrap_module(model: nn.Module, processor, name: Optional[str], probe: bool):
    from .models import LoadedModel, no_classifier
    from .models.labels import class_names_for
    source = _source_of(model)
    name = name or type(model).__name__
    info: dict = {"arch": type(model).__name__, "weights": "in memory (your object)"}
    if source == "open_clip" and hasattr(model, "visual") and hasattr(model, "encode_text"):
        return _wrap_open_clip(model, processor, name, info)
    pre = preprocessor_from(processor) if processor is not None else _own_preprocessor(model, source)
    info["preprocessing_from"] = "processor=" if processor is not None else "the model's own config"
    reason, names = "", []
    if source == "transformers":
        config = model.config
        if "ForImageClassification" in type(model).__name__:
            n = int(getattr(config, "num_labels", 0))
            id2label = getattr(config, "id2label", None) or {}
            names = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(n)]
            if n == 0:
                reason = no_classifier(f"{type(model).__name__} has num_labels=0")
        else:
            reason = no_classifier(f"{type(model).__name__} is a bare model: it returns features, not class scores")
    elif source == "timm" and isinstance(getattr(model, "num_classes", None), int):
        n = model.num_classes
        if n == 0:
            reason = no_classifier(f"{type(model).__name__} has num_classes=0")
        else:
            cfg = getattr(model, "pretrained_cfg", None) or {}
            stored = cfg.get("label_names") if isinstance(cfg, dict) else None
            names = (list(stored) if stored and len(stored) == n else class_names_for(n))
    elif probe:
        n = _probe_classes(model, pre)
        if n == 0:
            reason = no_classifier(f"its output is not a (batch, classes) tensor")
        else:
            names = class_names_for(n)
    return LoadedModel(name, model, pre, names, source if source != "module" else "in-memory module", info,
                       no_classifier_reason=reason)


def _probe_classes(model: nn.Module, pre: Preprocessor) -> int:
    """Classes of a model that does not say: the width of its output for a blank input (0: not class scores)."""
    from .capture import prediction_tensor
    from .device import to_model
    from .modelstate import preserved
    h, w = pre.input_size
    with preserved(model), torch.no_grad():
        out = prediction_tensor(model(to_model(model, torch.zeros(1, 3, h, w))))
    return int(out.shape[-1]) if out.dim() == 2 else 0


def settle_labels(loaded, logits: torch.Tensor) -> None:
    """After a capture without a probe: class names for the output width (checking given names)."""
    from .models import no_classifier
    from .models.labels import class_names_for
    n = int(logits.shape[-1]) if logits.dim() == 2 else 0
    if loaded.class_names:
        check_label_count(loaded.class_names, n, loaded.name)
    elif n == 0:
        loaded.no_classifier_reason = loaded.no_classifier_reason or no_classifier(
            "its output is not a (batch, classes) tensor")
    elif loaded.has_classifier:
        loaded.class_names = class_names_for(n)


def _wrap_open_clip(clip: nn.Module, processor, name: str, info: dict):
    """An open_clip CLIP as the zero-shot model `load_model("open_clip:...")` gives (classes = labels)."""
    import open_clip
    from .models import LoadedModel
    from .models.open_clip_source import NEEDS_CLASSES, ImageEmbedder, ZeroShot, _preprocess, _templates
    pre = preprocessor_from(processor) if processor is not None else _preprocess(clip)
    # the tokenizer of OpenAI-style CLIP models (open_clip's default); a model of another tokenizer is
    # best loaded by name ("open_clip:ARCH/TAG"), which knows it
    tokenizer = open_clip.SimpleTokenizer(context_length=int(getattr(clip, "context_length", 77) or 77))
    zs = ZeroShot(clip, tokenizer, _templates())
    return LoadedModel(name, ImageEmbedder(clip.visual), pre, [], "open_clip", info,
                       no_classifier_reason=NEEDS_CLASSES, zero_shot=zs)


# ---------------------------------------------------------------------------------------------- preprocessing

def _own_preprocessor(model: nn.Module, source: str) -> Preprocessor:
    """The preprocessing a model says it wants, or `UnknownPreprocessingError` naming what to pass."""
    if source == "timm" or isinstance(getattr(model, "pretrained_cfg", None), dict):
        from timm.data import resolve_data_config
        config = resolve_data_config({}, model=model)
        built = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if built is not None:      # built at another size than its pretrained config says: follow the model
            config["input_size"] = (3, *(tuple(built) if isinstance(built, (tuple, list)) else (built, built)))
        return Preprocessor.from_timm_config(config)
    if source == "transformers":
        folder = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            from .models.hf_source import make_preprocessor
            return make_preprocessor(folder, model.config)[0]
        raise UnknownPreprocessingError(
            f"{type(model).__name__}: no image processor was given and none is saved beside the model "
            f"({folder or 'it was not loaded from a folder'}): pass processor=AutoImageProcessor.from_pretrained(...)"
            f" (or ViTImageProcessor(...)), or {HOW_TO_PREPROCESS.split('pass processor=: ', 1)[1]}")
    if source == "torchvision":
        raise UnknownPreprocessingError(
            f"{type(model).__name__} (torchvision) does not remember which weights it was built with, so its "
            f"transforms are unknown: pass processor=<the weights>, e.g. processor=ViT_B_16_Weights.IMAGENET1K_V1 "
            f"(or weights.transforms())")
    raise UnknownPreprocessingError(f"{type(model).__name__} does not say how its input is prepared: "
                                    f"{HOW_TO_PREPROCESS}")


def preprocessor_from(processor) -> Preprocessor:
    """A `Preprocessor` from what ``processor=`` takes (see the module docstring)."""
    from torchvision import transforms as T
    if isinstance(processor, Preprocessor):
        return processor
    if type(processor).__module__.startswith("transformers.") and hasattr(processor, "image_mean"):
        return _hf_preprocessor(processor)
    if hasattr(processor, "transforms") and hasattr(processor, "meta") and callable(processor.transforms):
        processor = processor.transforms()          # torchvision weights: their documented eval transform
    if type(processor).__name__ == "ImageClassification" and hasattr(processor, "crop_size"):
        return _torchvision_preprocessor(processor)
    if isinstance(processor, dict):
        return _dict_preprocessor(processor)
    if callable(processor):
        return _callable_preprocessor(processor, T)
    raise UnknownPreprocessingError(f"processor= got a {type(processor).__name__}: {HOW_TO_PREPROCESS}")


def _hf_preprocessor(proc) -> Preprocessor:
    """A transformers image processor object, read as `hf_source` reads a saved one."""
    from torchvision import transforms as T
    from .models.hf_source import HFTransform, _get, geometry_steps
    steps = geometry_steps(proc)
    mean = tuple(float(v) for v in (_get(proc, "image_mean") or (0.0, 0.0, 0.0)))
    std = tuple(float(v) for v in (_get(proc, "image_std") or (1.0, 1.0, 1.0)))
    if not _get(proc, "do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    transform = HFTransform(proc)
    h, w = transform(Image.new("RGB", (300, 400))).shape[-2:]
    config = {"input_size": (3, int(h), int(w)), "mean": mean, "std": std, "image_processor": type(proc).__name__,
              "from": "processor="}
    return Preprocessor(transform, config, steps=steps + [T.Normalize(mean, std)])


def _torchvision_preprocessor(preset) -> Preprocessor:
    crop = preset.crop_size[0]
    config = {"input_size": (3, crop, crop), "interpolation": preset.interpolation.value,
              "mean": tuple(preset.mean), "std": tuple(preset.std), "crop_pct": crop / preset.resize_size[0],
              "crop_mode": "center"}
    return Preprocessor(preset, config)


def _dict_preprocessor(d: dict) -> Preprocessor:
    unknown = set(d) - {"input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode"}
    if unknown or "input_size" not in d:
        raise UnknownPreprocessingError(f"processor dict: expected keys input_size, mean, std (optional crop_pct, "
                                        f"interpolation), got {sorted(d)}")
    size = d["input_size"]
    size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)[-2:]
    config = {"input_size": (3, *size), "mean": tuple(d.get("mean", (0.485, 0.456, 0.406))),
              "std": tuple(d.get("std", (0.229, 0.224, 0.225))), "crop_pct": float(d.get("crop_pct", 1.0)),
              "interpolation": d.get("interpolation", "bicubic"), "crop_mode": d.get("crop_mode", "center")}
    return Preprocessor.from_timm_config(config)


def _callable_preprocessor(fn, T) -> Preprocessor:
    x = fn(Image.new("RGB", (400, 300)))
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise UnknownPreprocessingError(f"processor= {fn!r} returned {type(x).__name__} "
                                        f"{tuple(getattr(x, 'shape', ()))}: it must turn a PIL image into a "
                                        f"(3, H, W) tensor")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    config = {"input_size": (3, h, w), "transform": repr(fn)}
    call = (lambda img: fn(img)[0]) if x.dim() == 4 else fn
    try:
        return Preprocessor(fn, config) if x.dim() == 3 else Preprocessor(call, config, steps=[fn])
    except ValueError:
        # a transform whose resize / crop cannot be followed: taken to show the whole photo, stretched
        config["geometry"] = "assumed: the input shows the whole photo"
        return Preprocessor(call, config, steps=[T.Resize((h, w))])


# ---------------------------------------------------------------------------------------------- the view

@dataclass
class AttentionView:
    """What `show` computed and draws. ``heatmap`` (gh, gw): the default map (`method`) as `compute_map`
    gives it; ``grid``: per spatial layer a (heads, gh, gw) array, `layer_head_stack(result, "auto")`
    (CLS -> patches where the model has a CLS token, else the attention each position receives);
    ``grid_mean``: per layer the mean over heads; ``predictions``: the top classes."""

    model_name: str
    image: Image.Image
    geometry: Geometry
    result: CaptureResult
    predictions: list[dict]
    method: str
    heatmap: Optional[np.ndarray]
    grid: list[np.ndarray]
    layer_names: list[str]
    notes: list[str] = field(default_factory=list)
    loaded: Any = None
    _html: Optional[str] = field(default=None, repr=False)

    @property
    def grid_mean(self) -> list[np.ndarray]:
        return [np.nanmean(g, axis=0) if np.isfinite(g).any() else g[0] for g in self.grid]

    def html(self) -> str:
        if self._html is None:
            self._html = render_html(self)
        return self._html

    def _repr_html_(self) -> str:
        return self.html()

    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write the view as one self-contained ``.html`` file (the same HTML as shown inline)."""
        path = os.fspath(path)
        with open(path, "w", encoding="utf-8") as f:
            f.write("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
                    f"{html.escape(self.model_name)} attention</title></head><body>{self.html()}</body></html>\n")
        return path

    def __repr__(self) -> str:
        top = self.predictions[0] if self.predictions else None
        said = f", top-1 {top['label']!r} ({top['probability']:.1%})" if top else ""
        return (f"<AttentionView {self.model_name}: {len(self.grid)} layers, method {self.method}{said}>")


def _image(image) -> Image.Image:
    from .images import load_image
    if image is None:
        raise ImageError("show() needs an image: a file path, a PIL image or an (H, W, 3) uint8 array")
    if isinstance(image, PreparedImage):
        return image.image
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        if image.dtype.kind == "f" and np.nanmax(image) <= 1.0:
            image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            raise ImageError(f"an image array must be uint8 (H, W[, 3]) or float in [0, 1], got {image.dtype}")
    if not isinstance(image, (str, os.PathLike, bytes, Image.Image, np.ndarray)):
        raise ImageError(f"cannot read an image from a {type(image).__name__}: give a file path, a PIL image or "
                         f"an (H, W, 3) uint8 array")
    try:
        return load_image(image)
    except FileNotFoundError:
        raise ImageError(f"{image}: no such file") from None
    except (OSError, TypeError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise ImageError(f"the image cannot be read: {type(e).__name__}: {e}") from None


def show(model, image, labels=None, processor=None, *, method: Optional[str] = None, name: Optional[str] = None):
    """The model's attention on `image`, rendered inline in Jupyter (an `AttentionView`).

    ``model``: an ``nn.Module`` (any source; see the module docstring), a name / path for `load_model`,
    or a `CaptureResult` you already have (then `image` is the photo it was computed from: a
    `PreparedImage` keeps the exact geometry, a plain photo is taken as resized whole to the input).
    ``labels``: class names (list, {index: name} or a file). ``method``: the map drawn large (default:
    the model's default, rollout for ViTs).
    """
    from .methods import compute_map, default_method, layer_head_stack
    from .errors import MethodNotDefinedError
    notes: list[str] = []
    if isinstance(model, CaptureResult):
        result = model
        prepared = image if isinstance(image, PreparedImage) else None
        photo = _image(image)
        hw = tuple(int(s) for s in result.input.shape[-2:])
        geometry = prepared.geometry if prepared is not None else Geometry(
            (photo.height, photo.width), hw, (0.0, 0.0, float(photo.height), float(photo.width)))
        if prepared is None:
            notes.append("geometry assumed: the input shows the whole photo, resized")
        names = read_label_list(labels) if labels is not None else None
        if names is not None:
            check_label_count(names, int(result.logits.shape[-1]) if result.logits.dim() == 2 else 0, "the capture")
        predictions = _top_k(result.logits, names)
        title, loaded = "capture", None
    else:
        photo = _image(image)
        loaded = as_loaded(model, labels, processor, name, probe=False)
        prepared = loaded.prepare(photo)
        result = loaded.capture(prepared)
        settle_labels(loaded, result.logits)
        geometry = prepared.geometry
        predictions = loaded.top_k(result.logits, TOP_K)[0]
        if not predictions and loaded.predictions_message():
            notes.append(loaded.predictions_message())
        title = loaded.name
        if loaded.preprocess.config.get("geometry"):
            notes.append(f"geometry {loaded.preprocess.config['geometry']}")
    heat = None
    try:
        method = method or default_method(result)
        heat = compute_map(method, result, model=loaded.model if loaded is not None else None).maps[0]
        heat = heat.detach().float().cpu().numpy()
    except (MethodNotDefinedError, ValueError) as e:
        notes.append(f"no {method or 'default'} map: {e}")
    try:
        grid, layer_names = layer_head_stack(result, "auto")
    except MethodNotDefinedError as e:
        grid, layer_names = [], []
        notes.append(str(e))
    return AttentionView(title, photo, geometry, result, predictions, method or "", heat, grid, layer_names, notes,
                         loaded)


def _top_k(logits: torch.Tensor, names: Optional[list[str]]) -> list[dict]:
    if logits.dim() != 2:
        return []
    probs = logits[:1].detach().float().cpu().softmax(-1)[0]
    p, idx = probs.topk(min(TOP_K, probs.shape[-1]))
    return [{"label": names[int(i)] if names else f"class {int(i)}", "index": int(i), "probability": float(v)}
            for v, i in zip(p, idx)]


# ---------------------------------------------------------------------------------------------- HTML

METHOD_TITLES = {"rollout": "attention rollout", "received": "attention received", "raw": "raw attention"}


def _png(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _display_photo(photo: Image.Image) -> Image.Image:
    """The photo at `PHOTO_SIDE` on its longer side: a large photo is not inlined whole, a small one (a 64 px
    sample) is drawn large enough to see (the map is placed by the geometry, whatever the size)."""
    scale = PHOTO_SIDE / max(photo.size)
    if scale == 1:
        return photo
    return photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))),
                        Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def _cells(view: AttentionView) -> list[list[str]]:
    """Per layer, the PNG of every head's cell and of the mean, cut from the app's grid sheet."""
    from .render import FUSED, grid_sheet
    if not view.grid:
        return []
    sheet, layout = grid_sheet(_display_photo(view.image), view.grid, view.geometry, "mean", cell_size=CELL,
                               return_layout=True)
    rows = []
    for r, g in enumerate(view.grid):
        row = []
        for h in list(range(g.shape[0])) + [FUSED]:
            y, x = layout.cell_origin(r, h)
            row.append(_png(sheet[y:y + layout.cell_h, x:x + layout.cell_w]))
        rows.append(row)
    return rows


_STYLE = """
#{id} {{ font-family: system-ui, -apple-system, Segoe UI, sans-serif; font-size: 13px; color: #222; }}
#{id} h3 {{ margin: 4px 0 6px 0; font-size: 15px; }}
#{id} .av-top {{ display: flex; gap: 18px; flex-wrap: wrap; align-items: flex-start; }}
#{id} .av-main img {{ max-width: {side}px; border-radius: 4px; display: block; }}
#{id} table.av-pred td {{ padding: 1px 6px; white-space: nowrap; }}
#{id} .av-bar {{ background: #f59e0b; height: 10px; border-radius: 2px; }}
#{id} table.av-grid {{ border-collapse: collapse; }}
#{id} table.av-grid td, #{id} table.av-grid th {{ padding: 1px; font-weight: normal; font-size: 11px; color: #555; }}
#{id} table.av-grid img {{ width: {cell}px; display: block; cursor: pointer; }}
#{id} table.av-grid.av-one img {{ width: {big}px; }}
#{id} table.av-grid img.av-sel {{ outline: 2px solid #2563eb; }}
#{id} .av-note {{ color: #92400e; }}
#{id} .av-caption {{ color: #555; margin-top: 3px; max-width: {side}px; }}
"""

_SCRIPT = """
(function() {{
  var root = document.getElementById("{id}");
  if (!root) return;
  var big = root.querySelector(".av-focus img"), cap = root.querySelector(".av-focus .av-caption");
  var grid = root.querySelector("table.av-grid");
  root.querySelectorAll("table.av-grid img").forEach(function(img) {{
    img.addEventListener("click", function() {{
      root.querySelectorAll("img.av-sel").forEach(function(e) {{ e.classList.remove("av-sel"); }});
      img.classList.add("av-sel");
      big.src = img.src; cap.textContent = img.title;
    }});
  }});
  var pick = root.querySelector("select.av-layer");
  if (pick) pick.addEventListener("change", function() {{
    var v = pick.value;
    root.querySelectorAll("table.av-grid tr[data-layer]").forEach(function(tr) {{
      tr.style.display = (v === "all" || tr.dataset.layer === v) ? "" : "none";
    }});
    grid.classList.toggle("av-one", v !== "all");
  }});
}})();
"""


def render_html(view: AttentionView) -> str:
    """The view as one HTML fragment: no external resource, pictures as data URIs, scoped style and script."""
    from .render import overlay
    vid = "av-" + uuid.uuid4().hex[:10]
    esc = html.escape
    photo = _display_photo(view.image)
    parts = [f"<div id='{vid}' class='attention-view'>", f"<style>{_STYLE.format(id=vid, side=PHOTO_SIDE, cell=CELL, big=2 * CELL)}</style>"]
    shape = f"{view.result.input.shape[-2]}×{view.result.input.shape[-1]}"
    parts.append(f"<h3>{esc(view.model_name)} · what the model attends to</h3>")
    parts.append("<div class='av-top'>")
    if view.heatmap is not None:
        pic = overlay(photo, view.heatmap, view.geometry, alpha=0.5)
        title = METHOD_TITLES.get(view.method, view.method)
        gh, gw = view.heatmap.shape
        parts.append(f"<div class='av-main'><img class='av-heatmap' alt='{esc(title)}' src='{_png(pic)}'>"
                     f"<div class='av-caption'>{esc(title)} ({esc(view.method)}), {gh}×{gw} patches, input "
                     f"{shape}</div></div>")
    parts.append("<div><table class='av-pred'>")
    if view.predictions:
        parts.append("<tr><th colspan='3' style='text-align:left'>top predictions</th></tr>")
        for p in view.predictions:
            parts.append(f"<tr class='av-p'><td class='av-label'>{esc(str(p['label']))}</td>"
                         f"<td style='width:120px'><div class='av-bar' style='width:{100 * p['probability']:.1f}%'>"
                         f"</div></td><td class='av-prob'>{p['probability']:.1%}</td></tr>")
    else:
        parts.append("<tr><td>no predictions</td></tr>")
    parts.append("</table>")
    for n in view.notes:
        parts.append(f"<div class='av-note'>{esc(n)}</div>")
    cells = _cells(view)
    if cells:
        parts.append(f"<div class='av-focus' style='margin-top:10px'><img style='width:{3 * CELL}px' "
                     f"src='{cells[-1][-1]}'><div class='av-caption'>layer {len(cells) - 1}, mean of the heads "
                     f"(click a cell of the grid)</div></div>")
    parts.append("</div></div>")
    if cells:
        heads = max(g.shape[0] for g in view.grid)
        options = "".join(f"<option value='{i}'>layer {i}</option>" for i in range(len(cells)))
        parts.append(f"<h3 style='margin-top:12px'>Every layer × head (CLS → patches, or attention received) "
                     f"<select class='av-layer'><option value='all'>all layers</option>{options}</select></h3>")
        parts.append("<table class='av-grid'><tr><th></th>" + "".join(f"<th>H{h}</th>" for h in range(heads))
                     + "<th>mean</th></tr>")
        for i, (row, lname) in enumerate(zip(cells, view.layer_names)):
            tds = []
            for h, src in enumerate(row):
                last = h == len(row) - 1
                label = f"layer {i} ({lname}), " + ("mean of the heads" if last else f"head {h}")
                pad = "<td></td>" * (heads - (len(row) - 1)) if last else ""
                tds.append(f"{pad}<td><img title='{esc(label)}' alt='{esc(label)}' src='{src}'></td>")
            parts.append(f"<tr data-layer='{i}'><th title='{esc(lname)}'>L{i}</th>{''.join(tds)}</tr>")
        parts.append("</table>")
    parts.append(f"<script>{_SCRIPT.format(id=vid)}</script></div>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- the app

def explore(model, labels=None, image=None, processor=None, name: Optional[str] = None):
    """The full app (Gradio) serving `model`, on 127.0.0.1 at a free port, without blocking; returns a handle
    with ``url`` and ``close()`` (inline in Jupyter: an iframe). See `viz_app.explore.explore`.

    The app is the UI package (``viz_app``), found through its entry point ``explore`` in the group
    ``attention_viz.ui`` when called: the library never imports the UI (``import attention`` stays free of Gradio)."""
    from .registry import entry_point
    serve = entry_point("attention_viz.ui", "explore", "the browser app (attention.notebook.explore)")
    return serve(model, labels=labels, image=image, processor=processor, name=name)


__all__ = ["show", "explore", "as_loaded", "AttentionView", "preprocessor_from", "render_html", "NotAModelError",
           "UnknownPreprocessingError", "read_label_list", "settle_labels"]
