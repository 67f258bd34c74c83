"""PVT-v2 and Twins: attention over a feature map passed beside the tokens, ``attn(x, feat_size)``.

- Spatial-reduction attention (PVT-v2 ``Attention``, Twins ``GlobalSubSampleAttn``): queries on the
  stage grid, keys on a coarser grid made by a strided ``sr`` conv or an adaptive pooling (kind
  ``reduced``; per-query views work, rollout does not).
- Twins' locally-grouped attention: (B, windows, heads, n, n) over unshifted ws x ws windows of the
  padded map (kind ``window``).
The stage grid is the module's second argument, read from its call.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..layout import KNOWN, REDUCED, SELF, WINDOW, TokenLayout, WindowInfo
from . import register_family
from .base import MapSpec
from .timm_vit import TimmViT, pair


def reduced_geometry(module: nn.Module, q_grid: tuple[int, int], num_keys: int):
    """Key grid of spatial-reduction attention and its cell size in query cells, following the module's
    own adaptive pooling (PVT-v2 linear) and strided ``sr`` conv; None if that does not account for the keys."""
    h, w = q_grid
    fh = fw = 1.0
    pool = getattr(module, "pool", None)
    if isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        oh, ow = pair(pool.output_size)
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


def _feat_size(args) -> Optional[tuple[int, int]]:
    if len(args) > 1 and isinstance(args[1], (tuple, list)) and len(args[1]) == 2:
        return int(args[1][0]), int(args[1][1])
    return None


@register_family
class PyramidViT(TimmViT):
    name = "timm-pvt-twins"
    priority = 60
    timm_classes = ("PyramidVisionTransformerV2", "Twins")

    def describe(self, session, module, weights, site):
        grid = _feat_size(site.inputs(module))
        if grid is None:
            return super().describe(session, module, weights, site)
        X, heads, nq, nk = weights.shape
        stride = session.stride_for(grid)
        if hasattr(module, "ws"):  # locally-grouped windows (one window when the map is that small)
            ws = int(module.ws)
            H, W = grid
            info = WindowInfo((ws, ws), (0, 0), (H, W), (-(-H // ws) * ws, -(-W // ws) * ws))
            return MapSpec(WINDOW, TokenLayout((), grid, stride), window=info, source=KNOWN)
        q_layout = TokenLayout((), grid, stride)
        if nq == nk == grid[0] * grid[1]:
            return MapSpec(SELF, q_layout, source=KNOWN)
        geometry = reduced_geometry(module, grid, nk)
        if geometry is None:
            return super().describe(session, module, weights, site)
        k_grid, (fh, fw) = geometry
        return MapSpec(REDUCED, TokenLayout((), k_grid, (stride[0] * fh, stride[1] * fw)), q_layout, source=KNOWN)

    def tokens(self, model, hw):
        from ..layout import ModelTokens
        from .timm_vit import patch_grid
        pe = getattr(model, "patch_embed", None) or model.patch_embeds[0]
        grid, stride = patch_grid(pe, hw)
        return ModelTokens((), grid, stride)

    def blocks(self, model):
        return super(TimmViT, self).blocks(model)

    def position_embedding(self, model):
        return None
