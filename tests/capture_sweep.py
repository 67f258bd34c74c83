"""The registry sweep: one small random-init model per timm module, captured and checked against the
aten-level reference (`attention_reference`). Run ``python -m tests.capture_sweep`` for the table.

Per model: the capture's op records (softmax / SDPA) equal the reference's in number and order, each
within TOL; the logits are those of the plain forward; every map's layout is known, inferred or
labelled unknown (never missing a label).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from attention import capture
from attention.capture import prediction_tensor
from tests.attention_reference import reference_attention

TOL = 1e-5
# how small a timm model name sounds (the first keyword found wins; earlier = smaller)
_SMALL = ("atto", "femto", "pico", "nano", "xxxs", "xxs", "tiny", "xs", "mini", "t_", "small", "s0", "b0", "s_",
          "base", "b_", "medium", "m_")


def _score(name: str, input_px: int) -> tuple:
    low = name.lower()
    idx = -1 if low.startswith("test_") else next((i for i, k in enumerate(_SMALL) if k in low), len(_SMALL))
    return (input_px > 256, idx, input_px, len(name), name)


_ATTENTION_WORDS = re.compile(r"softmax|scaled_dot_product|[Aa]ttention|attn|vision_transformer|[Tt]ransformer")


def source_mentions_attention(module: str) -> bool:
    """Whether a timm module's source can build attention at all (a softmax, SDPA, an attention layer or
    factory, or a transformer it builds on). Modules that mention none of these are plain CNNs; the
    sweep names them instead of building them (the slowest models of the registry are among them)."""
    import importlib
    import inspect
    return bool(_ATTENTION_WORDS.search(inspect.getsource(importlib.import_module(f"timm.models.{module}"))))


def smallest_model(module: str) -> Optional[str]:
    """The smallest-sounding model of a timm module, preferring a default input of at most 256 px."""
    import timm
    names = timm.list_models(module=module)
    if not names:
        return None
    def px(n):
        try:
            return int(timm.get_pretrained_cfg(n).input_size[-1])
        except Exception:  # noqa: BLE001
            return 224
    return min(names, key=lambda n: _score(n, px(n)))


@dataclass
class SweepRow:
    family: str
    model: str
    ops: int = 0
    ref_ops: int = 0
    maps: int = 0
    max_err: float = 0.0
    logits_err: float = 0.0
    layouts: dict = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0
    dtype: str = "float32"

    @property
    def ok(self) -> bool:
        return (not self.error and self.ops == self.ref_ops and self.max_err <= TOL
                and self.logits_err <= 1e-4)


def check(family: str, model_name: str, build: Callable, x: torch.Tensor) -> SweepRow:
    row = SweepRow(family, model_name)
    t0 = time.perf_counter()
    try:
        torch.manual_seed(0)
        model = build().eval()
        _compare(row, model, x)
        if row.max_err > TOL and row.ops == row.ref_ops:
            # float32 rounding differs between a fused kernel and the weights written out, and random-init
            # models amplify it with depth; in float64 both agree to ~1e-15 at every depth, so a real
            # difference (a scale, mask or bias missed) still stands out
            try:
                _compare(row, model.double(), x.double())
                row.dtype = "float64"
            except Exception:  # noqa: BLE001 - a model that insists on float32 keeps its float32 numbers
                model.float()
    except Exception as e:  # noqa: BLE001 - reported, and the test fails on it
        row.error = f"{type(e).__name__}: {e}"[:300]
    row.seconds = time.perf_counter() - t0
    return row


#: above this many parameters the sweep builds the model with two blocks (``depth=2``) where the
#: family accepts it: the attention code is the same, the forward several times cheaper
BIG = 10_000_000


def _params_on_meta(name: str, **kw) -> int:
    import timm
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name, pretrained=False, **kw).parameters())


def _compare(row: SweepRow, model, x) -> None:
    out, ref = reference_attention(model, x)
    plain = prediction_tensor(out)
    res = capture(model, x)
    recs = [m for m in res.records if m.op in ("softmax", "sdpa")]
    row.ops, row.ref_ops, row.maps = len(recs), len(ref.records), len(res.maps)
    errs = []
    for got, want in zip(recs, ref.records):
        g = got.weights.double().reshape(-1, got.weights.shape[-1])
        errs.append(float((g - want).abs().max()) if g.shape == want.shape else float("inf"))
    row.max_err = max(errs, default=0.0)
    scale = max(1.0, float(plain.abs().max()))
    row.logits_err = float((res.logits - plain).abs().max()) / scale
    row.layouts = {}
    for m in res.maps:
        key = f"{m.kind}:{m.layout_source}"
        row.layouts[key] = row.layouts.get(key, 0) + 1


def timm_case(module: str):
    """(model name, build, input) of the smallest model of a timm module at its default input size."""
    import timm
    name = smallest_model(module)
    if name is None:
        return None
    cfg = timm.get_pretrained_cfg(name)
    size = tuple(cfg.input_size[-2:]) if cfg is not None else (224, 224)
    kw = {}
    try:
        big = _params_on_meta(name) > BIG
    except Exception:  # noqa: BLE001 - cannot be built on the meta device: try the cut-down build
        big = True
    if big:
        try:
            with torch.device("meta"):
                timm.create_model(name, pretrained=False, depth=2)
            kw = {"depth": 2}
        except Exception:  # noqa: BLE001 - no ``depth`` argument in this family: build it whole
            kw = {}
    label = name + ("(depth=2)" if kw else "")
    return label, (lambda: timm.create_model(name, pretrained=False, **kw)), torch.randn(1, 3, *size)


def _line(r: SweepRow) -> str:
    return (f"| {r.family} | {r.model} | {r.ops}/{r.ref_ops} | {r.maps} | {r.max_err:.1e} | {r.dtype} | "
            f"{r.logits_err:.1e} | {', '.join(f'{k} x{v}' for k, v in sorted(r.layouts.items()))} | "
            f"{r.seconds:.1f} | {'ok' if r.ok else 'FAIL ' + r.error} |")


def main():
    import timm
    torch.set_num_threads(2)
    rows = []
    print("| family | model | ops / reference | maps | max error | dtype | logits (rel.) | layouts | s | |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cnns = []
    for mod in timm.list_modules():
        if not source_mentions_attention(mod):
            cnns.append(mod)
            continue
        case = timm_case(mod)
        if case is None:
            continue
        rows.append(check(mod, *case))
        r = rows[-1]
        print(_line(r), flush=True)
    for case in extra_cases():
        rows.append(check(*case))
        r = rows[-1]
        print(_line(r), flush=True)
    att = [r for r in rows if r.ref_ops]
    print(f"\n{sum(r.ok for r in att)} of {len(att)} attention families pass; {len(rows) - len(att)} built "
          f"modules compute no softmax attention; {len(cnns)} modules mention no attention in their source "
          f"(not built): {', '.join(cnns)}")



# ------------------------------------------------------------------------------------ beyond timm

class _HandViT(nn.Module):
    """A ViT written by hand the way users write them; ``style`` picks how attention is computed:
    ``module`` (vit-pytorch: an ``nn.Softmax`` module), ``method`` (MONAI: ``.softmax(dim=-1)``),
    ``sdpa`` (a raw ``F.scaled_dot_product_attention`` call)."""

    def __init__(self, style: str, img=32, patch=8, dim=32, depth=2, heads=4, classes=7):
        super().__init__()
        self.style, self.heads, self.patch = style, heads, patch
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, dim))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(depth))
        self.out = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.attend = nn.Softmax(dim=-1)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        B, N, C = t.shape
        for qkv, out in zip(self.qkv, self.out):
            q, k, v = qkv(t).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
            if self.style == "sdpa":
                z = F.scaled_dot_product_attention(q, k, v)
            else:
                s = (q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5
                a = self.attend(s) if self.style == "module" else s.softmax(dim=-1)
                z = a @ v
            t = t + out(z.transpose(1, 2).reshape(B, N, C))
        return self.head(t[:, 0])


def _hf(cls_name: str, cfg_name: str, **cfg):
    def build():
        import transformers
        config = getattr(transformers, cfg_name)(**cfg)
        return getattr(transformers, cls_name)(config)
    return build


_HF_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
               patch_size=8, num_labels=5)


def extra_cases():
    """(family, name, build, input) for torchvision, nn.TransformerEncoder, Hugging Face, open_clip and
    hand-written ViTs."""
    import torchvision.models as tvm
    from tests.test_capture_exactness import EncoderViT
    x32, x224 = torch.randn(2, 3, 32, 32), torch.randn(1, 3, 224, 224)
    cases = [
        ("torchvision", "vit_b_16", lambda: tvm.vit_b_16(), x224),
        ("torchvision", "swin_t", lambda: tvm.swin_t(), x224),
        ("torchvision", "swin_v2_t", lambda: tvm.swin_v2_t(), x224),
        ("torchvision", "maxvit_t", lambda: tvm.maxvit_t(), x224),
        ("torch", "nn.TransformerEncoder ViT", lambda: EncoderViT(), x32),
        ("hand-written", "nn.Softmax module", lambda: _HandViT("module"), x32),
        ("hand-written", "Tensor.softmax", lambda: _HandViT("method"), x32),
        ("hand-written", "F.scaled_dot_product_attention", lambda: _HandViT("sdpa"), x32),
        ("huggingface", "ViT (sdpa)", _hf("ViTForImageClassification", "ViTConfig", **_HF_VIT), x32),
        ("huggingface", "ViT (eager)", _hf("ViTForImageClassification", "ViTConfig", attn_implementation="eager",
                                          **_HF_VIT), x32),
        ("huggingface", "DeiT with teacher", _hf("DeiTForImageClassificationWithTeacher", "DeiTConfig", **_HF_VIT), x32),
        ("huggingface", "BEiT", _hf("BeitForImageClassification", "BeitConfig", use_relative_position_bias=True,
                                    **_HF_VIT), x32),
        ("huggingface", "DINOv2", _hf("Dinov2ForImageClassification", "Dinov2Config", **_HF_VIT), x32),
        ("huggingface", "DINOv2 with registers", _hf("Dinov2WithRegistersForImageClassification",
                                                     "Dinov2WithRegistersConfig", num_register_tokens=4, **_HF_VIT), x32),
        ("huggingface", "Swin", _hf("SwinForImageClassification", "SwinConfig", image_size=32, patch_size=2,
                                    embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=5), x32),
        ("huggingface", "CLIP vision", _hf("CLIPVisionModel", "CLIPVisionConfig", hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8), x32),
        ("huggingface", "SigLIP vision", _hf("SiglipVisionModel", "SiglipVisionConfig", hidden_size=32,
                                             num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                             image_size=32, patch_size=8), x32),
        ("open_clip", "ViT (visual tower)", _open_clip_visual, x32),
    ]
    return cases


def _open_clip_visual():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    clip = CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=8, patch_size=8, image_size=32),
                text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=16, heads=2, layers=1))
    return clip.visual


if __name__ == "__main__":
    main()
