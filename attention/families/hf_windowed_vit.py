"""Hugging Face LW-DETR ViT and RF-DETR DINOv2 backbones: the image cut into windows, some layers global.

Both cut the (gh, gw) patch grid (``gh = H // p``) into ``n x n`` windows before the first layer and keep
the tokens window by window (batch row ``b * n² + w``); a *window* layer attends within each window, a
*global* layer joins the windows' sequences into one per image (``(B, n² · t, C)``: window 0's tokens,
then window 1's, ...) and attends over all of them. Neither order is row-major, so the global layers
are no plain grid either: both are described by where each token of each sequence sits (`TokenWindows`).

LW-DETR (``num_windows`` = n², no CLS token): window ``w = a·n + b`` holds the rectangle of
``(gh/n) x (gw/n)`` patches at window row a, column b, row-major inside (a plain `WindowInfo`).

RF-DETR (``num_windows`` = n; DINOv2 with a CLS token): each window is ``[CLS, its patches]``, the CLS
copied into every window. Its partition views the row-major patch sequence as
``(n, gw/n, n, gh/n)`` (height and width swapped, the comment in transformers calls it a bug kept
from the original), so in-window token ``1 + b·(gh/n) + e`` of window ``w = a·n + d`` is flat patch
``f = (a·(gw/n) + b)·(n·gh/n) + d·(gh/n) + e``, at grid cell ``(f // gw, f % gw)``: a rectangle for a
square grid, interleaved rows otherwise. The window CLS tokens are named ``cls`` in each window and
``cls0 … cls{n²-1}`` (by window) in the global layers.

In a whole detector (``LwDetrForObjectDetection``, ``RfDetrForObjectDetection``) the decoder's object
queries attend among themselves (a token matrix) and read the image through deformable attention, whose
softmax weighs a few sampling points per query (not the image's positions): not shown as a map.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..errors import MethodNotDefinedError
from ..layout import KNOWN, TOKENS, WINDOW, ModelTokens, TokenLayout, TokenWindows, WindowInfo
from . import register_family
from .base import MapSpec
from .huggingface import HuggingFace, is_hf

#: the windowed backbones: (model type, class name prefix)
_TYPES = {"lw_detr_vit": "LwDetrViT", "rf_detr_dinov2": "RfDetrDinov2"}


def windowed_backbone(model: nn.Module) -> Optional[nn.Module]:
    """The LW-DETR ViT / RF-DETR DINOv2 backbone inside `model` (or `model` itself), or None."""
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if getattr(cfg, "model_type", "") in _TYPES and type(m).__name__.startswith(_TYPES[cfg.model_type]) \
                and hasattr(m, "embeddings") and hasattr(m, "encoder"):
            return m
    return None


def _side(cfg) -> int:
    """Windows per side n: LW-DETR's config counts all n² windows, RF-DETR's one side."""
    if cfg.model_type == "lw_detr_vit":
        return int(getattr(cfg, "num_windows_side", round(cfg.num_windows ** 0.5)))
    return int(cfg.num_windows)


def window_tables(cfg, grid: tuple[int, int]) -> tuple[list[list[int]], bool]:
    """(per window, the flat grid index of each of its patches in sequence order; whether each window
    starts with its own CLS token), following the backbone's partition (module docstring)."""
    gh, gw = grid
    n = _side(cfg)
    if cfg.model_type == "lw_detr_vit":
        wh, ww = gh // n, gw // n
        return [[(a * wh + py) * gw + b * ww + px for py in range(wh) for px in range(ww)]
                for a in range(n) for b in range(n)], False
    hpw, wpw = gh // n, gw // n
    return [[(a * wpw + b) * (n * hpw) + d * hpw + e for b in range(wpw) for e in range(hpw)]
            for a in range(n) for d in range(n)], True


@register_family
class HFWindowedViT(HuggingFace):
    name = "huggingface-windowed-vit"
    priority = 46

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and windowed_backbone(model) is not None

    def _config(self, model):
        return windowed_backbone(model).config

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        cfg = self._config(model)
        p = int(cfg.patch_size)
        cls = ("cls",) if cfg.model_type == "rf_detr_dinov2" and _side(cfg) <= 1 else ()
        return ModelTokens(cls, (hw[0] // p, hw[1] // p), (float(p), float(p)))

    def describe(self, session, module, weights, site):
        bb = windowed_backbone(session.model)
        if bb is None or site.enclosing(lambda m: m is bb) is None:
            return self._detector(session, module, weights, site)
        cfg = bb.config
        grid, stride = session.tokens.grid, session.tokens.stride
        n = _side(cfg)
        X, heads, nq, nk = weights.shape
        layout = TokenLayout((), grid, stride)
        if n <= 1:   # no windows: a plain ViT / DINOv2 sequence
            return super().describe(session, module, weights, site)
        tables, with_cls = window_tables(cfg, grid)
        nW = len(tables)
        per_window = len(tables[0]) + int(with_cls)
        nominal = (grid[0] // n, grid[1] // n)
        if X == session.batch * nW and nq == nk == per_window:          # a window layer
            if not with_cls:
                return MapSpec(WINDOW, layout, window=WindowInfo(nominal, (0, 0), grid, grid), source=KNOWN)
            info = TokenWindows(nominal, (0, 0), grid, grid, table=tuple((-1,) + tuple(t) for t in tables),
                                special=(("cls",),) * nW)
            return MapSpec(WINDOW, layout, window=info, source=KNOWN)
        if X == session.batch and nq == nk == nW * per_window:         # a global layer: the windows joined
            table = tuple(f for t in tables for f in (((-1,) if with_cls else ()) + tuple(t)))
            special = tuple(f"cls{w}" for w in range(nW)) if with_cls else ()
            info = TokenWindows(grid, (0, 0), grid, grid, table=(table,), special=(special,))
            return MapSpec(WINDOW, layout, window=info, source=KNOWN)
        return super().describe(session, module, weights, site)

    def _detector(self, session, module, weights, site) -> Optional[MapSpec]:
        """The rest of a whole LW-DETR / RF-DETR detector: its decoder's object queries attend among
        themselves (a token matrix, never a grid); its deformable cross-attention's softmax weighs sampling
        points around each query's reference box, not the positions of the image, so it is no map (None)."""
        if site.enclosing(lambda m: "Deformable" in type(m).__name__) is not None:
            return None
        X, heads, nq, nk = weights.shape
        if nq == nk and site.enclosing(lambda m: type(m).__name__.endswith("Decoder")) is not None:
            return MapSpec(TOKENS, None, source=KNOWN)
        return super().describe(session, module, weights, site)

    def blocks(self, model: nn.Module):
        if _side(self._config(model)) <= 1:
            return super().blocks(model)
        raise MethodNotDefinedError(
            f"{type(model).__name__} keeps its tokens window by window (one batch row per window"
            f"{', each with its own CLS token' if self._config(model).model_type == 'rf_detr_dinov2' else ''}), "
            f"not as one row-major sequence, so per-layer token norms are not placed on the image; the attention "
            f"views place every window")

    def position_embedding(self, model: nn.Module):
        return None
