"""Hugging Face SAM 2's image encoder (``Sam2VisionModel``, the vision encoder of ``Sam2Model``): Hiera-Det.

Its backbone (``Sam2HieraDetModel``) keeps the tokens as a (B, H, W, C) map, stem grid
``(H, W) = ((H_in + 2p - k) // s + 1, ...)`` of its patch convolution. Block ``i`` of stage ``t``:

* a *windowed* block (``window_size`` w > 0) pads the map bottom / right to whole ``w x w`` windows and
  attends within each (windows row-major, tokens row-major inside, no shift): a plain `WindowInfo`;
* a *global* block (``window_size`` 0, the ``global_attention_blocks``) attends over the whole map;
* the first block of stages ``1 .. num_query_pool_stages`` pools its queries: the (windowed or whole)
  map of queries is max-pooled with kernel = stride = ``query_stride`` (floor), so query ``j`` of a
  window is the max of the ``s x s`` in-window tokens ``(jy·s + dy, jx·s + dx)``; the output is
  unpartitioned with windows of ``w // s``, so that query sits at ``(wy·(w//s) + jy, wx·(w//s) + jx)`` of
  the pooled map ``(H // s, W // s)``. Its keys are the unpooled map: a ``reduced`` map, queries on the
  pooled grid, keys on the block's input grid, written out as the full (Nq, Nk) matrix with zeros
  between a query and the keys of other windows (and without the padding keys, which take weight but
  are no position).

A whole ``Sam2Model`` (or ``EdgeTamModel``: the same prompt encoder and mask decoder on a convolutional
RepViT image encoder; or SAM 3's tracker) also runs its mask decoder: see `mask_decoder_spec`.

The windowed records of a pooling block have fewer queries than keys per window, which no window
view shows, so `finish` writes them out as that full matrix, up to `MAX_DENSE` entries (at 1024 px
the first pooling block of SAM 2 would need ~2·10⁹: left as its per-window record, unplaced).

``Sam2MultiScaleAttention.forward`` also runs a softmax whose result it never uses: ``(q·scale) @ kᵀ``
of the (B', N, heads, d) tensors before the transpose, i.e. a heads x heads softmax per token. It is
kept in ``records`` (it is an op of the forward) and left out of the maps (it weighs no positions).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import nn

from ..layout import KNOWN, POOLING, REDUCED, SELF, TOKENS, UNKNOWN, WINDOW, ModelTokens, TokenLayout, WindowInfo
from . import register_family
from .base import MapSpec
from .huggingface import HuggingFace, is_hf

#: entries of the full matrix a pooling window layer is written out as, at most (512 MB in float32)
MAX_DENSE = 2 ** 27


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def hiera_det(model: nn.Module) -> Optional[nn.Module]:
    """The SAM 2 Hiera-Det backbone inside `model` (or `model` itself), or None."""
    for m in model.modules():
        if getattr(getattr(m, "config", None), "model_type", "") == "sam2_hiera_det_model" \
                and hasattr(m, "blocks") and hasattr(m, "patch_embed"):
            return m
    return None


def stem_grid(backbone: nn.Module, hw) -> tuple[tuple[int, int], tuple[int, int]]:
    """((H, W), stride) of the patch convolution's output for an (H_in, W_in) input."""
    conv = backbone.patch_embed.projection
    (kh, kw), (sh, sw), (ph, pw) = (_pair(v) for v in (conv.kernel_size, conv.stride, conv.padding))
    return ((hw[0] + 2 * ph - kh) // sh + 1, (hw[1] + 2 * pw - kw) // sw + 1), (sh, sw)


def block_grids(backbone: nn.Module, hw) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """{id(attention module): (input grid, query grid)} of every block, following the pooling."""
    grid, _ = stem_grid(backbone, hw)
    out = {}
    for block in backbone.blocks:
        qs = block.query_stride
        q = (grid[0] // int(qs[0]), grid[1] // int(qs[1])) if qs else grid
        out[id(block.attn)] = (grid, q)
        grid = q
    return out


def mask_decoder_spec(session, weights, site) -> Optional[MapSpec]:
    """What one attention of a whole SAM 2 / EdgeTAM / SAM 3 tracker model's mask decoder (two-way transformer) is,
    None outside a mask decoder: its output and prompt tokens attend among themselves (a token matrix), each token
    reads the image embedding (a ``pooling`` map per token over the embedding grid, the config's
    ``backbone_feature_sizes[-1]``, row-major: the model views its last feature map to that size and flattens
    it), and the image embedding attends to the tokens (queries on the grid, keys no positions: a token matrix)."""
    if site.enclosing(lambda m: type(m).__name__.endswith("MaskDecoder")) is None:
        return None
    X, heads, nq, nk = weights.shape
    sizes = getattr(getattr(session.model.config, "vision_config", None), "backbone_feature_sizes", None)
    grid = tuple(int(v) for v in sizes[-1]) if sizes else None
    n_grid = grid[0] * grid[1] if grid else -1
    if nk == n_grid and nq != n_grid:
        layout = TokenLayout((), grid, session.stride_for(grid))
        names = tuple(f"token{i}" for i in range(nq))
        return MapSpec(POOLING, layout, TokenLayout(names, (0, 0), layout.stride), source=KNOWN)
    return MapSpec(TOKENS, None, source=KNOWN)


def _edgetam(model: nn.Module) -> bool:
    """A whole EdgeTAM model: SAM 2's prompt encoder and mask decoder on a RepViT (convolutional) image encoder."""
    return getattr(getattr(model, "config", None), "model_type", "") == "edgetam" and hasattr(model, "mask_decoder")


@register_family
class HFSam2(HuggingFace):
    name = "huggingface-sam2"
    priority = 47

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and (hiera_det(model) is not None or _edgetam(model))

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        bb = hiera_det(model)
        if bb is None:   # EdgeTAM: a convolutional image encoder, no token grid of its own
            return ModelTokens()
        grid, stride = stem_grid(bb, hw)
        return ModelTokens((), grid, (float(stride[0]), float(stride[1])))

    def _block(self, model, module):
        bb = hiera_det(model)
        return next((b for b in bb.blocks if b.attn is module), None) if bb is not None else None

    def describe(self, session, module, weights, site):
        block = self._block(session.model, module)
        if block is None:   # the mask decoder of a whole Sam2Model: prompts and image tokens
            spec = mask_decoder_spec(session, weights, site)
            return spec if spec is not None else super().describe(session, module, weights, site)
        if site.frame.f_code.co_name == "forward":
            return MapSpec(TOKENS, None, source=KNOWN)    # the unused heads x heads softmax: dropped in finish
        grid, q_grid = block_grids(hiera_det(session.model), session.input_hw)[id(module)]
        ws, pooled = int(block.window_size), bool(block.query_stride)
        X, heads, nq, nk = weights.shape
        k_layout = TokenLayout((), grid, session.stride_for(grid))
        if ws <= 0:
            if nk != grid[0] * grid[1] or nq != q_grid[0] * q_grid[1]:   # unforeseen: kept, as an unknown layout
                return MapSpec(SELF if nq == nk else REDUCED, None, source=UNKNOWN)
            if not pooled:
                return MapSpec(SELF, k_layout, source=KNOWN)
            return MapSpec(REDUCED, k_layout, TokenLayout((), q_grid, session.stride_for(q_grid)), source=KNOWN)
        padded = (-(-grid[0] // ws) * ws, -(-grid[1] // ws) * ws)
        info = WindowInfo((ws, ws), (0, 0), grid, padded)
        if X != session.batch * info.windows_per_image or nk != ws * ws:
            return MapSpec(WINDOW, None, source=UNKNOWN)
        if not pooled:
            return MapSpec(WINDOW, k_layout, window=info, source=KNOWN)
        return MapSpec(WINDOW, None, source=KNOWN)        # placed in `finish` (fewer queries than keys)

    def place_pooled_windows(self, session, m):
        """A pooling window layer's (B·nW, heads, nq, nk) record as the full reduced matrix (module docstring);
        the reason as a string when that matrix would be over `MAX_DENSE`; None for an unforeseen shape."""
        model = session.model
        module = dict(model.named_modules()).get(m.name)
        block = self._block(model, module)
        if block is None or not block.query_stride or int(block.window_size) <= 0:
            return None
        grid, q_grid = block_grids(hiera_det(model), session.input_hw)[id(module)]
        ws = int(block.window_size)
        s = _pair(block.query_stride)
        qw = (ws // s[0], ws // s[1])
        n_wx = -(-grid[1] // ws)
        X, heads, nq, nk = m.weights.shape
        B = session.batch
        nW = X // B
        Nq, Nk = q_grid[0] * q_grid[1], grid[0] * grid[1]
        if nq != qw[0] * qw[1] or nk != ws * ws:
            return None
        if B * heads * Nq * Nk > MAX_DENSE:
            return (f"its queries are pooled inside each window (fewer queries than keys); written out over the "
                    f"image it would hold {B * heads * Nq * Nk:,} entries, over the {MAX_DENSE:,} kept per layer")
        w = torch.arange(nW)
        wy, wx = w // n_wx, w % n_wx
        p = torch.arange(nk)
        ky, kx = wy[:, None] * ws + p // ws, wx[:, None] * ws + p % ws          # (nW, nk) on the padded map
        j = torch.arange(nq)
        qy, qx = wy[:, None] * qw[0] + j // qw[1], wx[:, None] * qw[1] + j % qw[1]
        k_ok = (ky < grid[0]) & (kx < grid[1])
        q_ok = (qy < q_grid[0]) & (qx < q_grid[1])
        ok = q_ok[:, :, None] & k_ok[:, None, :]                                  # (nW, nq, nk)
        flat = ((qy * q_grid[1] + qx)[:, :, None] * Nk + (ky * grid[1] + kx)[:, None, :])[ok]
        w5 = m.weights.reshape(B, nW, heads, nq, nk).permute(0, 2, 1, 3, 4)     # (B, heads, nW, nq, nk)
        dense = m.weights.new_zeros(B, heads, Nq * Nk)
        dense[:, :, flat.to(dense.device)] = w5[:, :, ok.to(w5.device)]
        k_layout = TokenLayout((), grid, session.stride_for(grid))
        q_layout = TokenLayout((), q_grid, session.stride_for(q_grid))
        return replace(m, weights=dense.view(B, heads, Nq, Nk), kind=REDUCED, layout=k_layout,
                       query_layout=q_layout, window=None, layout_source=KNOWN)

    def finish(self, session, maps: list) -> list:
        bb = hiera_det(session.model)
        attn = {id(b.attn) for b in bb.blocks} if bb is not None else set()
        names = {n for n, mod in session.model.named_modules() if id(mod) in attn}
        out = []
        for m in maps:
            if m.name in names and m.kind == TOKENS:
                continue     # the unused heads x heads softmax
            if m.name in names and m.kind == WINDOW and m.window is None:
                try:
                    placed = self.place_pooled_windows(session, m)
                except Exception:  # noqa: BLE001 - an unexpected variant: keep the record, unplaced
                    placed = None
                if isinstance(placed, str):          # too large to write out: say so
                    m = replace(m, unplaced_reason=placed)
                else:
                    m = placed if placed is not None else m
            out.append(m)
        return out

    def blocks(self, model: nn.Module):
        return super(HuggingFace, self).blocks(model)   # stages pool tokens: no flat stack

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        bb = hiera_det(model)
        return bb.blocks[-1].layer_norm1 if bb is not None else super(HuggingFace, self).gradcam_target(model)

    def position_embedding(self, model: nn.Module):
        return None


__all__ = ["HFSam2", "hiera_det", "stem_grid", "block_grids", "mask_decoder_spec"]


def sam3_vit(model: nn.Module) -> Optional[nn.Module]:
    """The SAM 3 ViT backbone inside `model` (the image encoder of SAM 3 and its tracker), or None."""
    for m in model.modules():
        if getattr(getattr(m, "config", None), "model_type", "") == "sam3_vit_model" and hasattr(m, "embeddings"):
            return m
    return None


@register_family
class HFSam3ViT(HuggingFace):
    """SAM 3's image encoder (``Sam3ViTModel`` inside ``Sam3VisionModel``): a plain ViT over the ``H/p x W/p``
    patch grid, no prefix token (rotary positions), its windowed layers ViTDet's (pad bottom / right to whole
    ``window_size`` windows, one batch row per window: `HuggingFace._plain_windows`), the
    ``global_attn_indexes`` layers global over the grid."""

    name = "huggingface-sam3-vit"
    priority = 47

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and sam3_vit(model) is not None

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        p = _pair(sam3_vit(model).config.patch_size)
        return ModelTokens((), (hw[0] // p[0], hw[1] // p[1]), (float(p[0]), float(p[1])))

    def describe(self, session, module, weights, site):
        vit = sam3_vit(session.model)
        if site.enclosing(lambda m: m is vit) is None:   # the rest of a whole SAM 3 tracker: its mask decoder
            spec = mask_decoder_spec(session, weights, site)
            return spec if spec is not None else super(HuggingFace, self).describe(session, module, weights, site)
        return super().describe(session, module, weights, site)

    def blocks(self, model: nn.Module):
        return super(HuggingFace, self).blocks(model)   # windowed layers keep one batch row per window

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        return sam3_vit(model).encoder.layer[-1].layer_norm1 if hasattr(sam3_vit(model), "encoder") else \
            super(HuggingFace, self).gradcam_target(model)

    def position_embedding(self, model: nn.Module):
        return None


__all__ += ["HFSam3ViT", "sam3_vit"]
