"""How well an attention map finds the object: accuracy, pointing game and AUROC against masks.

`evaluate_maps` is independent of how the maps were obtained; `demo_maps` below gives the demo
models' default maps from one `attention.capture` of a batch.

The definitions (cell fraction, pointing game, AUROC) are stated once, in `attention.scoring`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..capture import capture

# the scores against masks live one layer down (faithfulness and the audit use them too)
from ..scoring import _as_maps, auroc, cell_fractions, evaluate_maps, pointing_hits  # noqa: E402,F401


# --------------------------------------------------------------------------- the demo models' own maps

def rollout(layers: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of per-layer (B, heads, N, N) attention, in forward
    order: fuse heads, add the identity, renormalise rows, multiply ``R = a_L ... a_1``. Returns R (B, N, N)."""
    R = None
    for a in layers:
        a = a.float()
        a = a.mean(1) if head_fusion == "mean" else a.max(1).values if head_fusion == "max" else a.min(1).values
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        R = a if R is None else a @ R
    return R


@torch.no_grad()
def demo_maps(model: nn.Module, arch: str, x: torch.Tensor, map_name: str = "default"):
    """(logits (B, C), maps (B, gh, gw)) for a demo model, computed directly.

    map_name: "default" (ViTs: rollout; cnn-selfattn: attention received = column means;
    cnn-attnpool: pooling weights), "rollout", "last_cls" (ViTs: last layer's CLS row, mean over heads)."""
    was_training = model.training
    model.eval()
    try:
        res = capture(model, x)
        logits = res.logits
        if arch in ("demo-vit", "demo-torch-vit"):
            layers = [m.weights for m in res.self_attention()]
            n = layers[0].shape[-1] - 1
            g = int(round(n ** 0.5))
            if map_name in ("default", "rollout"):
                m = rollout(layers)[:, 0, 1:]
            elif map_name == "last_cls":
                m = layers[-1].float().mean(1)[:, 0, 1:]
            else:
                raise ValueError(f"unknown map {map_name!r} for {arch}")
            return logits, m.reshape(-1, g, g)
        a = res.maps[-1].weights.float()[:, 0]   # selfattn: (B, hw, hw); attnpool: (B, 1, hw)
        a = a[:, 0] if arch == "demo-cnn-attnpool" else a
        n = a.shape[-1]
        g = int(round(n ** 0.5))
        if arch == "demo-cnn-selfattn":
            m = a.mean(1) if map_name in ("default", "received") else None   # column means
        elif arch == "demo-cnn-attnpool":
            m = a if map_name in ("default", "pooling") else None
        else:
            raise ValueError(f"unknown demo arch {arch!r}")
        if m is None:
            raise ValueError(f"unknown map {map_name!r} for {arch}")
        return logits, m.reshape(-1, g, g)
    finally:
        model.train(was_training)


MAP_NAMES = {"demo-vit": ("rollout", "last_cls"), "demo-torch-vit": ("rollout", "last_cls"),
             "demo-cnn-selfattn": ("received",), "demo-cnn-attnpool": ("pooling",)}


def evaluate_model(model: nn.Module, arch: str, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                   mean, std, map_name: str = "default", batch_size: int = 250, **kw) -> dict:
    """`evaluate_maps` of a demo model's own maps on uint8 (N, H, W, 3) images."""
    all_logits, all_maps = [], []
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i:i + batch_size], mean, std)
        lg, m = demo_maps(model, arch, x, map_name)
        all_logits.append(lg)
        all_maps.append(m)
    return evaluate_maps(torch.cat(all_maps), masks, labels, torch.cat(all_logits), **kw)


def to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W), exactly as ToTensor + Normalize."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


__all__ = ["cell_fractions", "auroc", "pointing_hits", "evaluate_maps", "rollout", "demo_maps", "evaluate_model", "to_tensor",
           "MAP_NAMES"]
