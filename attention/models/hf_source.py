"""Hugging Face transformers vision models: ``hf:ORG/NAME`` (the hub, cached by huggingface_hub) or a
folder written by ``save_pretrained`` (``hf:PATH`` or the plain folder path).

- The model class is the one the folder was saved from (``config.architectures``): an
  ``...ForImageClassification`` (ViT, DeiT incl. ``...WithTeacher``, BEiT, DINOv2 (+ registers),
  Swin, CLIP / SigLIP vision classifiers) has predictions, labels from ``config.id2label``; a bare
  backbone (``Dinov2Model``, ``CLIPVisionModel``, ...) loads headless. A full CLIP / SigLIP
  checkpoint is loaded as its vision tower.
- Always ``attn_implementation="eager"``: transformers 5.x defaults to SDPA, whose
  ``output_attentions=True`` gives nothing; with eager the softmax exists as a tensor and the
  model's own ``output_attentions`` weights are an independent check of the capture.
- Preprocessing is the saved image processor itself (so the pixels are exactly what transformers
  feeds the model); the photo ↔ input geometry is followed from its resize and centre-crop settings
  (resize to ``height × width`` or shortest edge, crop offsets ``floor((H - h) / 2)`` as transformers
  crops).
- SigLIP 2's NaFlex processor picks a patch grid per photo (its aspect ratio kept, at most
  ``max_num_patches`` patches) and feeds patches, an attention mask over the padding and
  ``spatial_shapes``: the photo is prepared as the image those patches tile (`NaFlexPreprocessor`) and the
  model wrapped (`attention.families.hf_siglip2.NaFlexImageModel`) to take that image and give the model
  exactly the processor's three inputs.
- Refused from config.json alone, before any weights are read, each naming its reason (`not_viewable`): a
  video model (frames in), a vision-language model (text and image features in), multi-scale deformable
  attention (a softmax over sampling offsets, not positions), a class whose module needs a package that is
  not installed (DiNAT: natten).
- Weights are never partially loaded: missing or mismatched keys are refused with a listing. No
  code is imported from the folder or the hub (``trust_remote_code`` stays off).
"""
from __future__ import annotations

import os

from torchvision import transforms as T

from ..errors import CheckpointError, ModelNotFoundError, WeightsUnavailableError
from ..preprocess import Geometry, PreparedImage, Preprocessor
from . import LoadedModel, ModelSource, no_classifier, register_source
from .checkpoint import load_strict, read_state_dict
from .hub import PROBE_TIMEOUT_S, cache_dir, endpoint, offline, reachable, unavailable
from .labels import class_names_for, read_labels
from .no_remote_code import refuse_remote_code

PREFIX = "hf:"
WEIGHT_PATTERNS = ["config.json", "preprocessor_config.json", "model.safetensors", "model.safetensors.index.json",
                   "model-*.safetensors"]
# full two-tower checkpoints: the image tower is what has attention over the picture
VISION_TOWERS = {"CLIPModel": "CLIPVisionModel", "SiglipModel": "SiglipVisionModel",
                 "Siglip2Model": "Siglip2VisionModel", "CLIPVisionModelWithProjection": "CLIPVisionModelWithProjection"}


def is_model_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def _claims(name: str) -> bool:
    return name.startswith(PREFIX) or is_model_folder(os.path.expanduser(name))


def _unavailable(name: str, why: str) -> WeightsUnavailableError:
    return unavailable(name, why, folder_hint=True)


def resolve_folder(name: str) -> tuple[str, str]:
    """(local folder, what it is: "folder" | repo id) of an ``hf:`` name or a plain folder path."""
    ref = name[len(PREFIX):] if name.startswith(PREFIX) else name
    ref = os.path.expanduser(ref.strip())
    if not ref:
        raise ModelNotFoundError("hf: needs a repository (hf:ORG/NAME) or a folder (hf:PATH)")
    if os.path.isdir(ref):
        if not is_model_folder(ref):
            raise CheckpointError(f"{ref} is a folder without config.json: not a save_pretrained folder")
        return ref, "folder"
    if ref.startswith((".", "/", "~")) or ref.count("/") != 1:
        raise ModelNotFoundError(f"{ref!r} is neither an existing folder nor a hub repository ORG/NAME")
    return fetch_repo(ref, name), ref


def fetch_repo(repo: str, name: str) -> str:
    """The cached snapshot of `repo`; downloaded once when the hub answers, never minutes of retries."""
    from huggingface_hub import snapshot_download
    try:
        folder = snapshot_download(repo, allow_patterns=WEIGHT_PATTERNS + ["pytorch_model.bin"],
                                   cache_dir=cache_dir(), local_files_only=True)
        if is_model_folder(folder) and _has_weights(folder):
            return folder
    except Exception:  # noqa: BLE001 - not (completely) in the cache
        pass
    if offline():
        raise _unavailable(name, f"HF_HUB_OFFLINE is set and {repo} is not in the local cache")
    if not reachable(endpoint()):
        raise _unavailable(name, f"the model hub ({endpoint()}) cannot be reached from this machine")
    try:
        folder = snapshot_download(repo, allow_patterns=WEIGHT_PATTERNS, cache_dir=cache_dir(),
                                   etag_timeout=PROBE_TIMEOUT_S)
        if not _has_weights(folder):     # an older repository without safetensors
            folder = snapshot_download(repo, allow_patterns=WEIGHT_PATTERNS + ["pytorch_model.bin"],
                                       cache_dir=cache_dir(), etag_timeout=PROBE_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - any hub trouble becomes one clear message
        raise _unavailable(name, f"downloading {repo} failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
                           ) from None
    if not is_model_folder(folder):
        raise _unavailable(name, f"{repo} has no config.json (not a transformers model)")
    return folder


def model_class(config):
    """The transformers class to build: the saved one, or the vision tower of a two-tower model."""
    import transformers
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        arch = VISION_TOWERS.get(arch, arch)
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    if archs:
        raise ModelNotFoundError(f"transformers {transformers.__version__} has no class {archs[0]!r}")
    return transformers.AutoModel


#: what a backend that transformers needs for a model does (named in the refusal)
_BACKENDS = {"natten": "neighbourhood attention kernels"}


def _missing_backends(cls) -> list[str]:
    """The packages that `cls`'s module asks for (``requires_backends(self, [...])``) and that are not installed."""
    import importlib
    import inspect
    import re
    import transformers
    try:
        source = inspect.getsource(importlib.import_module(cls.__module__))
    except (OSError, TypeError, ImportError):
        return []
    names = {n for group in re.findall(r"requires_backends\(\s*self\s*,\s*\[([^\]]*)\]", source)
             for n in re.findall(r"[\"'](\w+)[\"']", group)}
    return sorted(n for n in names if not getattr(transformers.utils, f"is_{n}_available", lambda: True)())


def not_viewable(config, cls) -> str:
    """Why a folder's model cannot be shown as attention over one image, from its config alone ("" if it can):
    a video model, a vision-language model, multi-scale deformable attention, or a package it needs."""
    from transformers.models.auto import modeling_auto as ma
    model_type = str(getattr(config, "model_type", ""))
    vision = getattr(config, "vision_config", None)
    video_types = getattr(ma, "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES", {})
    if model_type.endswith("_video") or model_type in video_types or getattr(vision, "model_type", "") in video_types \
            or str(getattr(cls, "main_input_name", "")).endswith("_videos"):
        if model_type.endswith("_video"):   # SAM 2 / EdgeTAM / SAM 3 video trackers
            return ("a video model: it tracks objects through a stream of frames (B, T, 3, H, W) with a memory of "
                    "the earlier frames, not one image; its image encoder, saved as its image-only type (e.g. "
                    "sam2, sam3_tracker), can be viewed")
        return ("a video model: its input is frames (B, T, 3, H, W) of a clip, not one image; the attention views "
                "take one image")
    vlm = set(getattr(ma, "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", {})) | set(
        getattr(ma, "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", {}))
    if model_type in vlm and getattr(config, "text_config", None) is not None:
        return ("a vision-language model: its image tower runs inside a language model that takes text tokens and "
                "image features together (its own inputs, not one image tensor); save its vision tower on its own "
                "to view the image encoder")
    if getattr(config, "encoder_n_points", None):
        return ("built on multi-scale deformable attention: its softmax is over a few sampling offsets per query "
                "on each feature level, not over the positions of the image, so there is no attention map to place "
                "on the photo")
    if model_type == "timm_backbone":
        name = getattr(config, "backbone", None) or "its timm model"
        return (f"a wrapper that transformers rebuilds from the timm model name in its config ({name}), reading "
                f"the folder's path as that name, so it cannot load from a folder (and a backbone keeps no classifier "
                f"or image processor to view it with); view the timm model {name} itself")
    missing = _missing_backends(cls)
    if missing:
        what = ", ".join(f"the {n} package" + (f" ({_BACKENDS[n]})" if n in _BACKENDS else "") for n in missing)
        return f"not buildable here: it needs {what}, not installed (pip install {' '.join(missing)})"
    return ""


def _has_weights(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in
               ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"))


def build(folder: str, pretrained: bool = True):
    """(model in eval mode with eager attention, loading notes)."""
    import transformers
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - the user's folder
        raise CheckpointError(f"{folder}: config.json cannot be read by transformers {transformers.__version__} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    cls = model_class(config)
    reason = not_viewable(config, cls)
    if reason:   # from config.json alone: before any weights are read
        raise CheckpointError(f"{folder}: {cls.__name__} ({getattr(config, 'model_type', '')}) is {reason}")
    notes = {"class": cls.__name__, "model_type": getattr(config, "model_type", "")}
    if not pretrained:
        if cls is transformers.AutoModel:
            model = transformers.AutoModel.from_config(config, attn_implementation="eager", trust_remote_code=False)
        else:
            cfg = config.vision_config if cls.__name__ in VISION_TOWERS.values() and hasattr(
                config, "vision_config") else config
            model = cls._from_config(cfg, attn_implementation="eager")
        notes["weights"] = "random"
        return model.eval(), notes
    if not _has_weights(folder):
        raise CheckpointError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin)")
    try:
        model, loading = cls.from_pretrained(folder, attn_implementation="eager", output_loading_info=True,
                                              trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - the user's files
        raise CheckpointError(f"{folder}: {cls.__name__} could not be loaded ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300] if str(e) else ''})") from None
    problems = []
    for label in ("missing_keys", "mismatched_keys"):
        items = [str(k if not isinstance(k, tuple) else k[0]) for k in (loading.get(label) or [])]
        if items:
            shown = ", ".join(sorted(items)[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
            problems.append(f"{len(items)} {label.replace('_', ' ')}: {shown}")
    if problems:   # transformers would initialise those randomly: refuse instead of a silent partial load
        raise CheckpointError(f"the weights in {folder} do not fit {cls.__name__}: " + "; ".join(problems))
    unexpected = loading.get("unexpected_keys") or []
    if unexpected:
        notes["unused_weights"] = len(unexpected)   # e.g. the text tower of a full CLIP checkpoint
    notes["weights"] = folder
    return model.eval(), notes


# ---------------------------------------------------------------- preprocessing

class HFCenterCrop(T.CenterCrop):
    """Centre crop with transformers' offsets ``floor((H - h) / 2)`` (torchvision rounds); geometry only."""

    floor_offsets = True

    def forward(self, img):
        from torchvision.transforms import functional as TF
        w, h = TF.get_image_size(img)
        ch, cw = self.size
        return TF.crop(img, (h - ch) // 2, (w - cw) // 2, ch, cw)


def _resample(value) -> T.InterpolationMode:
    from PIL import Image
    modes = {int(Image.Resampling.NEAREST): T.InterpolationMode.NEAREST,
             int(Image.Resampling.BILINEAR): T.InterpolationMode.BILINEAR,
             int(Image.Resampling.BICUBIC): T.InterpolationMode.BICUBIC,
             int(Image.Resampling.LANCZOS): T.InterpolationMode.LANCZOS,
             int(Image.Resampling.BOX): T.InterpolationMode.BOX,
             int(Image.Resampling.HAMMING): T.InterpolationMode.HAMMING}
    if value is None:
        return T.InterpolationMode.BILINEAR
    if isinstance(value, T.InterpolationMode):
        return value
    if hasattr(value, "value") and isinstance(value.value, str):   # torchvision enum from a fast processor
        return T.InterpolationMode(value.value)
    return modes.get(int(value), T.InterpolationMode.BILINEAR)


def _get(proc, key, default=None):
    v = getattr(proc, key, default)
    if hasattr(v, "height") and not isinstance(v, dict):        # SizeDict
        v = {k: getattr(v, k) for k in ("height", "width", "shortest_edge", "longest_edge")
             if getattr(v, k, None) is not None}
    return v


def _resizes_with_crop_pct(proc) -> bool:
    """Whether the processor's own resize takes ``crop_pct`` (ConvNeXt's resize-then-crop rule)."""
    import inspect
    try:
        return "crop_pct" in inspect.signature(type(proc).resize).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def geometry_steps(proc) -> list:
    """The processor's resize and centre crop as torchvision steps (what `geometry_of` follows)."""
    steps = []
    name = type(proc).__name__
    if _get(proc, "max_num_patches") is not None:
        raise CheckpointError(f"{name} is a NaFlex processor (SigLIP 2): it picks a patch grid per photo within "
                              f"max_num_patches={_get(proc, 'max_num_patches')} and feeds patches with spatial_shapes "
                              f"and an attention mask, not one fixed-size image: no resize / crop steps to follow "
                              f"(`make_preprocessor` gives it a NaFlexPreprocessor)")
    if _get(proc, "do_resize", True):
        size = _get(proc, "size")
        if isinstance(size, int):
            size = {"shortest_edge": size}
        if size is None and _get(proc, "size_divisor") is not None:
            raise CheckpointError(f"{name} has no fixed input size: it rounds each photo's own height and width "
                                  f"down to a multiple of size_divisor={_get(proc, 'size_divisor')}; the views "
                                  f"need one fixed input size")
        if not isinstance(size, dict):
            raise CheckpointError(f"{name}: cannot follow its resize setting size={size!r} (expected height × width "
                                  f"or shortest_edge)")
        if size.get("longest_edge") is not None and size.get("shortest_edge") is None:
            raise CheckpointError(f"{name} resizes each photo's longest edge to {size['longest_edge']} and pads the "
                                  f"rest (its size follows the photo's aspect ratio): the views need one fixed "
                                  f"resize or crop; not supported yet")
        if "height" in size and "width" in size:
            target = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            if size.get("longest_edge"):
                raise CheckpointError(f"{name} resizes each photo's shortest edge to {size['shortest_edge']} with its "
                                      f"longest edge at most {size['longest_edge']} (DETR-style), so the input size "
                                      f"follows each photo's aspect ratio; the views need one fixed size: save the "
                                      f"processor with size={{'height': H, 'width': W}} to view the model at H x W "
                                      f"(DETR's convolutional backbone takes any size)")
            crop_pct = _get(proc, "crop_pct")
            se = int(size["shortest_edge"])
            if crop_pct and _resizes_with_crop_pct(proc):
                # ConvNeXt's processor (also CvT's): below 384 px, shortest edge to se / crop_pct, then a
                # centre crop to se x se; from 384 px on, a warp to se x se
                if se < 384:
                    return [T.Resize(int(se / crop_pct), interpolation=_resample(_get(proc, "resample"))),
                            HFCenterCrop((se, se))]
                return [T.Resize((se, se), interpolation=_resample(_get(proc, "resample")))]
            if crop_pct and _get(proc, "do_center_crop", False) is False and crop_pct != 1:
                raise CheckpointError(f"{name}: crop_pct resizing without a centre crop is not supported")
            target = se
        else:
            raise CheckpointError(f"{type(proc).__name__}: cannot follow resize size {size!r}")
        steps.append(T.Resize(target, interpolation=_resample(_get(proc, "resample"))))
    if _get(proc, "do_center_crop", False):
        crop = _get(proc, "crop_size") or {}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        steps.append(HFCenterCrop((int(crop["height"]), int(crop["width"]))))
    return steps


class HFTransform:
    """PIL image -> (3, H, W) float tensor through the saved transformers image processor."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        out = self.processor(images=image, return_tensors="pt")
        return out["pixel_values"][0].float()

    def __repr__(self) -> str:
        return f"transformers {type(self.processor).__name__}"


def image_processor(folder: str, config):
    """The saved image processor, or (no preprocessor_config.json) the family's default one at the model's size."""
    import transformers
    if getattr(config, "model_type", "") == "timm_wrapper":   # timm's data config is in config.json
        try:
            return (transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=False),
                    "config.json (timm pretrained_cfg)")
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{folder}: a timm model saved through transformers (timm_wrapper), but its "
                                  f"config.json has no readable timm pretrained_cfg to preprocess with "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        try:
            return (transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=False),
                    "preprocessor_config.json")
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{folder}: preprocessor_config.json cannot be read ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200]})") from None
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
    vision = getattr(config, "vision_config", None) or config
    entry = None
    for cfg in (config, vision):
        try:
            entry = IMAGE_PROCESSOR_MAPPING[type(cfg)]
            break
        except KeyError:
            continue
    if entry is None:
        raise CheckpointError(f"{folder} has no preprocessor_config.json and transformers knows no image processor "
                              f"for {type(config).__name__}: save the processor too (processor.save_pretrained)")
    cls = entry.get("torchvision") or entry.get("pil") if isinstance(entry, dict) else entry
    if isinstance(cls, (tuple, list)):
        cls = next(c for c in cls if c is not None)
    size = getattr(vision, "image_size", None)
    size = size if isinstance(size, (list, tuple)) else (size, size) if size else None
    kwargs = {}
    if size:
        kwargs = {"size": {"height": int(size[0]), "width": int(size[1])}, "do_center_crop": False}
    return cls(**kwargs), f"{cls.__name__} defaults (no preprocessor_config.json), {size[0]}x{size[1]}" \
        if size else f"{cls.__name__} defaults (no preprocessor_config.json)"


class NaFlexPreprocessor(Preprocessor):
    """A photo -> the image its NaFlex processor's patches tile, (1, 3, h*p, w*p), with its geometry: the
    processor resizes the whole photo to (h*p, w*p), no crop, a grid of its own per aspect ratio."""

    def __init__(self, processor, origin: str):
        from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches
        self.processor = processor
        self.patch_size = int(_get(processor, "patch_size"))
        self.max_num_patches = int(_get(processor, "max_num_patches"))
        side = get_image_size_for_max_num_patches(1000, 1000, self.patch_size, self.max_num_patches)
        mean = tuple(float(v) for v in (_get(processor, "image_mean") or (0.0, 0.0, 0.0)))
        std = tuple(float(v) for v in (_get(processor, "image_std") or (1.0, 1.0, 1.0)))
        config = {"input_size": (3, int(side[0]), int(side[1])), "mean": mean, "std": std,
                  "image_processor": type(processor).__name__, "from": origin, "patch_size": self.patch_size,
                  "max_num_patches": self.max_num_patches,
                  "note": "NaFlex: each photo's input size is the processor's patch grid for it; input_size is "
                          "a square photo's"}
        super().__init__(HFTransform(processor), config, steps=[])

    def __call__(self, image) -> PreparedImage:
        from ..families.hf_siglip2 import naflex_image
        image = image.convert("RGB") if image.mode != "RGB" else image
        out = self.processor(images=image, return_tensors="pt")
        shape = [int(v) for v in out["spatial_shapes"][0]]
        n = int(out["pixel_attention_mask"][0].sum())
        if n != shape[0] * shape[1]:
            raise CheckpointError(f"{type(self.processor).__name__}: its mask keeps {n} patches but spatial_shapes "
                                  f"says {shape[0]} x {shape[1]}")
        x = naflex_image(out["pixel_values"][0].float(), shape, self.patch_size)
        h, w = (int(v) for v in x.shape[-2:])
        resized = _get(self.processor, "do_resize", True)
        box = (0.0, 0.0, float(image.height), float(image.width)) if resized else (0.0, 0.0, float(h), float(w))
        return PreparedImage(x.unsqueeze(0), image, Geometry((image.height, image.width), (h, w), box))


def naflex_model(model, pre: NaFlexPreprocessor, name: str):
    """The model wrapped to take the prepared image (`NaFlexImageModel`); refused where its patch embedding
    does not take the processor's patches."""
    from torch import nn
    from ..families.hf_siglip2 import NaFlexImageModel
    emb = next((m for m in model.modules() if type(m).__name__.endswith("VisionEmbeddings")), None)
    lin = getattr(emb, "patch_embedding", None)
    want = 3 * pre.patch_size ** 2
    if not isinstance(lin, nn.Linear) or lin.in_features != want:
        raise CheckpointError(f"{name} does not take its NaFlex processor's patches: its patch embedding takes "
                              f"{getattr(lin, 'in_features', None)} values per patch, the processor's "
                              f"{pre.patch_size} px patches have {want}")
    return NaFlexImageModel(model, pre.patch_size, pre.max_num_patches).eval()


def make_preprocessor(folder: str, config) -> tuple[Preprocessor, str]:
    proc, origin = image_processor(folder, config)
    if _get(proc, "max_num_patches") is not None and _get(proc, "patch_size") is not None:
        return NaFlexPreprocessor(proc, origin), origin
    timm_steps = getattr(getattr(proc, "val_transforms", None), "transforms", None)
    if timm_steps is not None:   # TimmWrapperImageProcessor: timm's own torchvision eval transform
        steps = [t for t in timm_steps if isinstance(t, (T.Resize, T.CenterCrop))]
        mean, std = (tuple(float(v) for v in proc.data_config[k]) for k in ("mean", "std"))
    else:
        steps = geometry_steps(proc)
        mean = tuple(float(v) for v in (_get(proc, "image_mean") or (0.0, 0.0, 0.0)))
        std = tuple(float(v) for v in (_get(proc, "image_std") or (1.0, 1.0, 1.0)))
        if not _get(proc, "do_normalize", True):
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    last = steps[-1] if steps else None
    if isinstance(last, T.CenterCrop):
        h, w = last.size
    elif isinstance(last, T.Resize) and isinstance(last.size, (tuple, list)) and len(last.size) == 2:
        h, w = last.size
    else:
        raise CheckpointError(f"{type(proc).__name__}: the input size is not fixed (no crop, no height × width "
                              f"resize); the model needs a fixed size")
    config_d = {"input_size": (3, int(h), int(w)), "mean": mean, "std": std, "image_processor": type(proc).__name__,
                "from": origin}
    if steps:
        config_d["interpolation"] = str(getattr(steps[0], "interpolation", "")).split(".")[-1].lower()
    pre = Preprocessor(HFTransform(proc), config_d, steps=steps + [T.Normalize(mean, std)])
    return pre, origin


# ---------------------------------------------------------------- loading

def load(name: str, checkpoint=None, labels=None, pretrained=True, img_size=None) -> LoadedModel:
    if img_size is not None:
        raise CheckpointError("--img-size is for timm ViTs; Hugging Face models run at their processor's size")
    folder, origin = resolve_folder(name)
    refuse_remote_code(folder, name)      # auto_map: refused with a message, never a prompt
    timm_cfg = _timm_folder_config(folder)
    if timm_cfg is not None:      # a timm model saved to the hub format (push_to_hub / save_for_hf)
        return _load_timm_folder(name, folder, timm_cfg, checkpoint, labels, pretrained)
    model, notes = build(folder, pretrained=pretrained and not checkpoint)
    if checkpoint:
        load_strict(model, read_state_dict(checkpoint), f"{notes['class']} (from {os.path.basename(checkpoint)})")
        notes["weights"] = os.path.abspath(checkpoint)
    config = model.config
    main_input = getattr(model, "main_input_name", "pixel_values")
    if main_input.endswith("_ids") and getattr(config, "model_type", "") != "imagegpt":   # ImageGPT: below
        raise CheckpointError(f"{notes['class']} reads {main_input!r}: its processor turns the photo into token ids, "
                              f"not an image tensor; the attention views need a model fed pixels")
    if getattr(config, "mask_ratio", 0):   # ViTMAE: every patch is kept while capturing (families/hf_masked.py)
        notes["masking"] = (f"runs unmasked for viewing (the checkpoint's mask_ratio={config.mask_ratio} drops "
                            f"random patches in training)")
    pre, _ = make_preprocessor(folder, config)
    if isinstance(pre, NaFlexPreprocessor):   # SigLIP 2: patches + mask + spatial_shapes from the prepared image
        model = naflex_model(model, pre, notes["class"])
        notes["naflex"] = (f"a patch grid per photo (at most {pre.max_num_patches} patches of {pre.patch_size} px), "
                           f"the padding masked")
    if main_input.endswith("_ids"):   # ImageGPT: the processor's pixels in, its colour-cluster ids computed inside
        from ..families.hf_imagegpt import colour_cluster_model
        model = colour_cluster_model(model, pre.transform.processor)
        notes["input"] = "the processor's pixels, turned into its colour-cluster ids inside the model"
    info = {"arch": notes["class"], "hf": origin, **notes}
    reason = ""
    if "ForImageClassification" in notes["class"]:
        id2label = getattr(config, "id2label", None) or {}
        n = int(getattr(config, "num_labels", len(id2label)))
        if labels:
            names = class_names_for(n, labels)
        else:
            names = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(n)]
        if n == 0:
            reason = no_classifier(f"{notes['class']} was saved with num_labels=0")
    else:
        names = []
        reason = no_classifier(f"{notes['class']} is a bare {notes['model_type']} model: it returns features, "
                               f"not class scores")
        if labels:
            read_labels(labels)   # a bad file still gets its own message
            raise CheckpointError(f"labels were given but {notes['class']} has no classifier")
    return LoadedModel(name, model, pre, names, "transformers", info, no_classifier_reason=reason)


def _timm_folder_config(folder: str):
    """The config of a timm hub-format folder (``{"architecture": ..., "num_classes": ...}``), else None."""
    import json
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(cfg, dict) and "architecture" in cfg and "model_type" not in cfg:
        return cfg
    return None


def _load_timm_folder(name, folder, cfg, checkpoint, labels, pretrained) -> LoadedModel:
    from . import timm_source
    weights = checkpoint or next((os.path.join(folder, f) for f in ("model.safetensors", "pytorch_model.bin")
                                  if os.path.isfile(os.path.join(folder, f))), None)
    if weights is None and pretrained:
        raise CheckpointError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin)")
    arch = cfg["architecture"]
    if not timm_source._claims(arch):
        raise ModelNotFoundError(f"{folder}: timm {__import__('timm').__version__} has no architecture {arch!r}")
    lm = timm_source.load(arch, checkpoint=weights if pretrained or checkpoint else None, labels=labels,
                          pretrained=False)
    names = cfg.get("label_names")
    if not labels and isinstance(names, list) and lm.has_classifier and len(names) == lm.num_classes:
        lm.class_names = [str(n) for n in names]
    lm.name = name
    lm.info["hf"] = folder
    return lm


register_source(ModelSource("transformers", _claims, load, order=20,
                             syntax="hf:ORG/NAME or a save_pretrained folder: Hugging Face transformers "
                                    "(e.g. hf:google/vit-base-patch16-224)"))
