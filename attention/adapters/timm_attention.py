"""timm attention modules: turn fused attention off for the capture and hook ``attn_drop``.

timm reads ``fused_attn`` once at construction; with it on, ``F.scaled_dot_product_attention`` runs
and the weights never exist as a tensor. We flip it off per module for the capture (restored
afterwards). On the unfused path the post-softmax matrix goes through ``self.attn_drop``, a dropout
that is the identity in eval mode, which is why the hook sits on a dropout layer.

Covers ViT, DeiT (distilled), register ViTs, EVA/EVA02 (RoPE), BEiT (relative position bias),
CaiT's class attention, PVT-v2 / Twins (spatial reduction: keys on a coarser grid) and XCiT's
channel attention (labelled as not spatial).
"""
from __future__ import annotations

import math

from torch import nn

from ..capture import current_session
from ..layout import CHANNEL, CLASS, REDUCED, SELF, WINDOW, TokenLayout, WindowInfo
from . import register_adapter
from .base import Adapter, chain, set_attr

_CHANNEL_ATTENTION = {"XCA"}


def _key_grid(num_keys: int, query_grid: tuple[int, int]) -> tuple[int, int]:
    """Grid of the reduced keys: same aspect ratio as the queries' grid."""
    h, w = query_grid
    kh = max(1, round(math.sqrt(num_keys * h / max(w, 1))))
    while num_keys % kh:
        kh -= 1
    return kh, num_keys // kh


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _reduced_geometry(module: nn.Module, q_grid: tuple[int, int], num_keys: int):
    """Key grid of spatial-reduction attention and its cell size in query cells, following the module's
    own adaptive pooling (PVT-v2 linear) and strided ``sr`` conv (PVT, Twins); None if that does not
    account for ``num_keys`` keys."""
    h, w = q_grid
    fh = fw = 1.0
    pool = getattr(module, "pool", None)
    if isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        oh, ow = _pair(pool.output_size)
        oh, ow = oh or h, ow or w
        fh, fw, h, w = h / oh, w / ow, oh, ow
    sr = getattr(module, "sr", None)
    if isinstance(sr, nn.Conv2d):
        if isinstance(sr.padding, str):
            return None
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = sr.kernel_size, sr.stride, sr.padding, sr.dilation
        h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        fh, fw = fh * sh, fw * sw
    if h * w != num_keys:
        return None
    return (h, w), (fh, fw)


@register_adapter
class TimmAttentionAdapter(Adapter):
    priority = 10

    def matches(self, module: nn.Module) -> bool:
        name = type(module).__name__
        return isinstance(getattr(module, "attn_drop", None), nn.Dropout) and (
            hasattr(module, "fused_attn") or "Attn" in name or "Attention" in name or name in _CHANNEL_ATTENTION)

    def install(self, module: nn.Module):
        undos = []
        if hasattr(module, "fused_attn"):
            undos.append(set_attr(module, "fused_attn", False))
        channel = type(module).__name__ in _CHANNEL_ATTENTION

        def remember_feat_size(mod, args, kwargs):
            # spatial-reduction attention is called as attn(x, feat_size)
            s = current_session(mod)
            if s is not None:
                fs = kwargs.get("feat_size", kwargs.get("size", args[1] if len(args) > 1 else None))
                s.scratch[id(mod)] = tuple(int(v) for v in fs) if fs is not None else None

        def on_weights(drop, args, out):
            s = current_session(module)
            if s is None:
                return
            w = out
            if channel:
                s.add(module, w, CHANNEL, layout=None)
            elif w.dim() == 5 and hasattr(module, "ws") and s.scratch.get(id(module)) is not None:
                # Twins' locally-grouped attention: (B, nW, heads, n, n) over unshifted windows
                H, W = s.scratch[id(module)]
                ws = int(module.ws)
                info = WindowInfo((ws, ws), (0, 0), (H, W), (-(-H // ws) * ws, -(-W // ws) * ws))
                s.add(module, w.flatten(0, 1), WINDOW, layout=TokenLayout((), (H, W), s.stride_for((H, W))),
                      window=info)
            elif w.shape[-2] == w.shape[-1]:
                layout = s.layout_for(w.shape[-1])
                if layout is None and id(module) in s.scratch:
                    layout = TokenLayout((), s.scratch[id(module)], s.stride_for(s.scratch[id(module)]))
                s.add(module, w, SELF, layout=layout)
            elif s.scratch.get(id(module)) is not None:
                q_grid = s.scratch[id(module)]
                q_stride = s.stride_for(q_grid)
                geometry = _reduced_geometry(module, q_grid, w.shape[-1])
                if geometry is not None:
                    k_grid, (fh, fw) = geometry
                    k_stride = (q_stride[0] * fh, q_stride[1] * fw)
                else:
                    k_grid = _key_grid(w.shape[-1], q_grid)
                    k_stride = s.stride_for(k_grid)
                s.add(module, w, REDUCED, layout=TokenLayout((), k_grid, k_stride),
                      query_layout=TokenLayout((), q_grid, q_stride))
            else:
                s.add(module, w, CLASS)

        h1 = module.attn_drop.register_forward_hook(on_weights)
        h2 = module.register_forward_pre_hook(remember_feat_size, with_kwargs=True)
        undos += [h1.remove, h2.remove]
        return chain(*undos)
