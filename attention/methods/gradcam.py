"""Grad-CAM (Selvaraju et al., 2017) through the pytorch-grad-cam library, with token-aware reshaping.

For the target layer's activations ``F`` (B, C, h, w) and target class c:
``α_k = mean_{i,j} ∂y_c/∂F_k[i, j]`` (mean-pooled gradients), ``cam = ReLU(Σ_k α_k F_k)``, a
(B, h, w) map at the target layer's own grid — the patch grid for a ViT.

The registered method (`GradCAMMethod`) takes ``F`` and ``∂y_c/∂F`` from the shared forward + backward
of `attention.methods.plan` (with gradient-weighted rollout and transformer attribution for the same
class: one pass for all) and applies the formula in torch (`cam_from`), on the model's device, in
float32. The function `gradcam` is the library path (`pytorch_grad_cam.GradCAM` runs the forward,
the backward and the formula; the tests hold the method to it). Two things are changed, both
documented here:

* ``reshape_transform`` (`token_reshape`): token activations (B, N, C) lose their prefix tokens
  (CLS, DIST, registers: however many the model has; CaiT's patch-only blocks have none) and are
  laid out on the patch grid of *this* input size, (B, C, gh, gw). The output of a LayerNorm that
  is 4-D is channels-last (Swin's NHWC blocks, (B, H, W, C)) and is permuted to (B, C, H, W).
  The library's documented ViT transform (``tensor[:, 1:, :].reshape(B, 14, 14, C)``) breaks for
  distilled DeiT, register models, Swin and any input size but 224.
* The result is kept at the target layer's grid and unnormalised: `GridGradCAM` skips the
  library's upsampling to the input size and its per-image min-max scaling (both applied in
  ``compute_cam_per_layer`` / ``aggregate_multi_layers``), so the raw values ``ReLU(Σ_k α_k F_k)``
  come back. Resampling to pixels is the renderer's business.

Default target layers (`default_target_layer`): Swin ``layers[-1].blocks[-1].norm1``; timm ViT
family ``blocks[-1].norm1``; torchvision ViT ``encoder.layers[-1].ln_1``; ``nn.TransformerEncoder``
the last layer's ``norm1``; otherwise the last ``nn.Conv2d``. For Swin the map is on the last
stage's grid (7 × 7 at 224), not the 56 × 56 patch grid.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ..errors import MethodNotDefinedError
from ..layout import ModelTokens
from ..modelstate import preserved
from .base import MapResult, Method, MethodContext, register
from .targets import Target
from .layers import grid_stride
from .plan import Needs, shared_pass
from .words import phrase


def default_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM uses by default: the model's family descriptor says which
    (the last block's first norm for transformers, the last conv of a CNN)."""
    from ..families import family_of
    return family_of(model).gradcam_target(model)


def _grid_for(n: int, input_hw: tuple[int, int]) -> Optional[tuple[int, int]]:
    """(h, w) with h·w = n and h / w closest to the input's aspect ratio, or None."""
    H, W = input_hw
    best = None
    for h in range(1, n + 1):
        if n % h == 0:
            w = n // h
            err = abs(math.log((h / w) / (H / W)))
            if best is None or err < best[0]:
                best = (err, (h, w))
    return best[1] if best and best[0] < 0.2 else None


def token_reshape(tokens: ModelTokens, input_hw: tuple[int, int],
                  channels_last: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """``reshape_transform`` for pytorch-grad-cam: activations (or their gradients) -> (B, C, h, w).

    (B, N, C) tokens: the last ``gh·gw`` tokens are the patches (prefix tokens dropped; with tokens after the
    patches, ``ModelTokens.suffix_names``, the ``gh·gw`` tokens between), reshaped to
    the model's patch grid for this input size (or, for a stage with another token count, the
    grid of that count with the input's aspect ratio). (B, H, W, C) when ``channels_last``:
    permuted. (B, C, H, W): unchanged.
    """
    num_prefix = len(tokens.prefix_names)
    num_suffix = len(getattr(tokens, "suffix_names", ()) or ())
    grid = tokens.grid

    def transform(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4:
            return t.permute(0, 3, 1, 2) if channels_last else t
        if t.dim() != 3:
            raise ValueError(f"Grad-CAM: cannot lay out activations of shape {tuple(t.shape)} on a grid")
        B, N, C = t.shape
        g = None
        if grid is not None and num_suffix and N == num_prefix + grid[0] * grid[1] + num_suffix:
            # tokens after the patches (YOLOS's detection tokens, a NaFlex model's padding): the patches between
            n = grid[0] * grid[1]
            return t[:, num_prefix:num_prefix + n, :].reshape(B, grid[0], grid[1], C).permute(0, 3, 1, 2)
        if grid is not None and N - grid[0] * grid[1] in (num_prefix, 0):
            g = grid
        else:
            for p in (num_prefix, 0):
                g = _grid_for(N - p, input_hw) if N > p else None
                if g:
                    break
        if g is None:
            raise MethodNotDefinedError(
                f"Grad-CAM: {N} tokens do not fit the {grid} patch grid with {num_prefix} prefix tokens")
        patches = t[:, N - g[0] * g[1]:, :]
        return patches.reshape(B, g[0], g[1], C).permute(0, 3, 1, 2)

    return transform


class GridGradCAM(GradCAM):
    """The library's GradCAM, stopped before its upsampling to the input size and min-max scaling."""

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        if len(grads) < len(self.target_layers):
            raise MethodNotDefinedError("Grad-CAM: the target layer received no gradient from the class score")
        cams = []
        for layer, a, g in zip(self.target_layers, acts, grads):
            cam = self.get_cam_image(input_tensor, layer, targets, a, g, eigen_smooth)
            cams.append(np.maximum(cam, 0)[:, None])
        return cams

    def aggregate_multi_layers(self, cams):
        return np.mean(np.concatenate(cams, axis=1), axis=1)


class _Logits(nn.Module):
    """Hands the library a plain logits tensor (some models return a tuple)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = None, *, target_layer: Optional[nn.Module] = None,
            tokens: Optional[ModelTokens] = None, channels_last: Optional[bool] = None) -> torch.Tensor:
    """(B, h, w) Grad-CAM for class `target` (default top-1 per item) at the target layer's grid.

    ``channels_last``: whether a 4-D activation is (B, H, W, C); default: it is when the target layer
    is a LayerNorm (which normalises the last axis, i.e. channels). The model is left as found
    (training flags, parameter ``.grad``).
    """
    from ..families import model_tokens

    layer = target_layer if target_layer is not None else default_target_layer(model)
    tokens = tokens or model_tokens(model, (x.shape[-2], x.shape[-1]))
    if channels_last is None:
        channels_last = isinstance(layer, nn.LayerNorm)
    reshape = token_reshape(tokens, (x.shape[-2], x.shape[-1]), channels_last)
    targets = None
    if target is not None:
        t = torch.as_tensor(target, dtype=torch.long).flatten()
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        if t.numel() != x.shape[0]:
            raise ValueError(f"got {t.numel()} targets for a batch of {x.shape[0]}")
        targets = [ClassifierOutputTarget(int(c)) for c in t]

    cam = GridGradCAM(_Logits(model), [layer], reshape_transform=reshape)
    # Grad-CAM needs gradients w.r.t. the target activations only: with the weights frozen the
    # library's backward skips every weight gradient (about 3x less work on ViT-B).
    try:
        with preserved(model, eval_mode=False, freeze=True), torch.enable_grad():
            from ..device import to_model
            out = cam(input_tensor=to_model(model, x.detach()).clone().requires_grad_(True), targets=targets)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.ascontiguousarray(out)).float()


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next((n for n, mod in model.named_modules() if mod is layer), type(layer).__name__)


def cam_from(activations: torch.Tensor, gradients: torch.Tensor,
             reshape: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(B, h, w) ``ReLU(Σ_k α_k F_k)`` with ``α_k = mean_{i,j} ∂y_c/∂F_k[i, j]``, in float32, on the
    tensors' device: the library's formula (``get_cam_weights`` / ``get_cam_image``) written in torch."""
    a = reshape(activations.float())
    g = reshape(gradients.float())
    alpha = g.mean(dim=(2, 3))
    return (alpha[:, :, None, None] * a).sum(dim=1).clamp_min(0)


class GradCAMMethod(Method):
    """Grad-CAM at the default target layer (or ``options["target_layer"]``); see `gradcam`.

    The activations and their gradients come from the shared pass (`attention.methods.plan`): with
    gradient-weighted rollout for the same class, one forward and one backward serve both.
    """

    name = "gradcam"
    label = "Grad-CAM"
    summary = "activations of one layer weighted by their mean gradient for the chosen class (Selvaraju et al. 2017)"
    needs_gradients = True
    needs_model = True
    class_specific = True
    uses_query = False
    order = 30

    def _layer(self, ctx: MethodContext) -> tuple[nn.Module, str]:
        model = ctx.get_model()
        layer = ctx.options.get("target_layer") or default_target_layer(model)
        return layer, layer_name(model, layer)

    def requirements(self, ctx: MethodContext) -> Needs:
        return Needs(activations=(self._layer(ctx)[1],))

    def compute(self, ctx: MethodContext) -> MapResult:
        targets = ctx.targets()

        def run():
            layer, where = self._layer(ctx)
            gp = shared_pass(ctx, Needs(activations=(where,)))
            act, grad = gp.activations.get(where, (None, None))
            if act is None:
                raise MethodNotDefinedError(f"Grad-CAM: the target layer {where} gave no tensor output")
            if grad is None:
                raise MethodNotDefinedError("Grad-CAM: the target layer received no gradient from the class score")
            x = ctx.input
            reshape = token_reshape(ctx.result.tokens, (x.shape[-2], x.shape[-1]), isinstance(layer, nn.LayerNorm))
            return cam_from(act, grad, reshape), where
        heat, where = ctx.memo(("gradcam", ctx.class_key(targets), id(ctx.options.get("target_layer"))), run)
        return MapResult(heat, self.name, None, grid_stride(ctx.result, heat.shape[-2:]), None,
                         details={"targets": targets.tolist(), "target_layer": where},
                         words=(phrase("method.gradcam.at", layer=where, h=heat.shape[-2], w=heat.shape[-1]),))


register(GradCAMMethod())

__all__ = ["GradCAMMethod", "gradcam", "cam_from", "GridGradCAM", "token_reshape", "default_target_layer", "layer_name"]
