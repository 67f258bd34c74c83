"""Faithfulness of a map: deletion and insertion curves (Petsiuk et al., RISE, 2018).

The map's cells (patches) are ranked from the highest value to the lowest (ties: lower flat index
first). For ``steps`` + 1 fractions ``f_k = k / steps`` (k = 0 … steps), the first
``n_k = round(f_k · P)`` cells of the ranking (P cells in all) are

* deleted: replaced in the image by the baseline (deletion curve, starts at the image), or
* inserted: copied from the image into the baseline (insertion curve, starts at the baseline),

and the softmax probability of the target class is recorded, ``p_k``. A cell (i, j) of a
(gh, gw) map covers input pixels ``y`` with ``floor(y·gh / H) = i`` (and likewise x), i.e. exactly
the patch for a ViT. The area under each curve is the trapezoid rule over the fractions,
``AUC = Σ_k (f_{k+1} − f_k) · (p_k + p_{k+1}) / 2``. A faithful map has a *low* deletion AUC (the
probability falls fast when its top cells go) and a *high* insertion AUC.

Baselines: ``"blur"`` (Gaussian blur of the image, σ = ``blur_sigma`` · max(H, W), default 1/20),
``"mean"`` (each channel's mean over the image), ``"zero"`` (zeros: the dataset mean after
normalisation), or a tensor broadcastable to the image. Perturbed inputs run through the model in
batches of ``batch_size``.

`method_faithfulness` scores every registered method this way (the demo evaluation and the app's
Faithfulness tab call it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .modelstate import preserved

Baseline = Union[str, torch.Tensor]


@dataclass
class Curves:
    """Deletion / insertion curves of a batch of maps: arrays (B, steps + 1) and AUCs (B,)."""

    fractions: np.ndarray          # (steps + 1,)
    deletion: np.ndarray           # (B, steps + 1) class probability
    insertion: np.ndarray          # (B, steps + 1)
    deletion_auc: np.ndarray       # (B,)
    insertion_auc: np.ndarray      # (B,)
    targets: np.ndarray            # (B,) class index scored


def auc(fractions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Trapezoid area under ``values`` (…, K) over ``fractions`` (K,)."""
    f = np.asarray(fractions, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    return ((f[1:] - f[:-1]) * (v[..., 1:] + v[..., :-1]) / 2).sum(-1)


def ranking(saliency: torch.Tensor) -> torch.Tensor:
    """(B, P) flat cell indices of maps (B, gh, gw) or one map (gh, gw), from the highest value to the
    lowest (stable: ties keep index order)."""
    sal = torch.as_tensor(saliency).detach().float()
    flat = sal.flatten()[None] if sal.dim() == 2 else sal.flatten(1)
    return torch.sort(flat, dim=1, descending=True, stable=True).indices


def cell_counts(num_cells: int, steps: int) -> list[int]:
    """Cells perturbed at each of the ``steps + 1`` fractions k / steps."""
    return [int(round(k / steps * num_cells)) for k in range(steps + 1)]


def make_baseline(x: torch.Tensor, baseline: Baseline = "blur", blur_sigma: float = 1 / 20) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x.device, x.dtype).expand_as(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        sigma = max(blur_sigma * max(x.shape[-2:]), 0.5)
        radius = max(1, int(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t ** 2) / (2 * sigma ** 2))
        k = k / k.sum()
        C = x.shape[1]
        pad = F.pad(x, (radius, radius, radius, radius), mode="replicate")
        y = F.conv2d(pad, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
        return F.conv2d(y, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    raise ValueError(f"unknown baseline {baseline!r}; use 'blur', 'mean', 'zero' or a tensor")


def pixel_cells(grid: tuple[int, int], hw: tuple[int, int], device=None) -> torch.Tensor:
    """(H, W) flat index of the map cell each input pixel belongs to."""
    gh, gw = grid
    H, W = hw
    ri = torch.div(torch.arange(H, device=device) * gh, H, rounding_mode="floor")
    ci = torch.div(torch.arange(W, device=device) * gw, W, rounding_mode="floor")
    return ri[:, None] * gw + ci[None, :]


def _probabilities(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, inputs.shape[0], batch_size):
        logits = model(inputs[i:i + batch_size])
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        p = logits.float().softmax(-1)
        out.append(p.gather(1, targets[i:i + batch_size, None])[:, 0])
    return torch.cat(out)


@torch.no_grad()
def perturbation_curves(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, *,
                        steps: int = 20, baseline: Baseline = "blur", batch_size: int = 32,
                        modes: tuple[str, ...] = ("deletion", "insertion"), blur_sigma: float = 1 / 20) -> Curves:
    """Deletion and insertion curves of ``saliency`` (B, gh, gw) or (gh, gw) for images ``x`` (B, 3, H, W).

    ``target``: class per item (None: the model's top-1 on the unperturbed image). Formula and
    baselines in the module docstring. The model runs in eval mode and is restored afterwards.
    """
    sal = torch.as_tensor(saliency).detach().float()
    if sal.dim() == 2:
        sal = sal[None]
    if sal.shape[0] == 1 and x.shape[0] > 1:
        sal = sal.expand(x.shape[0], -1, -1)
    if sal.shape[0] != x.shape[0]:
        raise ValueError(f"{sal.shape[0]} maps for {x.shape[0]} images")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    B, _, H, W = x.shape
    grid = tuple(sal.shape[-2:])
    P = grid[0] * grid[1]
    with preserved(model, eval_mode=True):
        if target is None:
            logits = model(x)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            targets = logits.argmax(-1)
        else:
            t = torch.as_tensor(target, dtype=torch.long).flatten()
            targets = (t.expand(B) if t.numel() == 1 else t).to(x.device)
        base = make_baseline(x, baseline, blur_sigma)
        cells = pixel_cells(grid, (H, W), x.device).flatten()          # (H·W,)
        order = ranking(sal).to(x.device)                                # (B, P)
        rank_of = torch.empty_like(order)
        rank_of.scatter_(1, order, torch.arange(P, device=x.device).expand(B, -1))
        pixel_rank = rank_of[:, cells].view(B, 1, H, W)                  # rank of each pixel's cell
        counts = torch.tensor(cell_counts(P, steps), device=x.device)    # (K,)
        K = counts.numel()
        curves = {}
        for mode in modes:
            if mode not in ("deletion", "insertion"):
                raise ValueError(f"unknown mode {mode!r}")
            src, dst = (base, x) if mode == "deletion" else (x, base)
            probs = torch.empty(B, K, device=x.device)
            # one batch of perturbed inputs at a time: (item, step) pairs flattened
            pairs = [(b, k) for b in range(B) for k in range(K)]
            for i in range(0, len(pairs), batch_size):
                chunk = pairs[i:i + batch_size]
                bi = torch.tensor([b for b, _ in chunk], device=x.device)
                ki = torch.tensor([k for _, k in chunk], device=x.device)
                taken = (pixel_rank[bi] < counts[ki].view(-1, 1, 1, 1)).to(x.dtype)   # cells perturbed
                inputs = taken * src[bi] + (1 - taken) * dst[bi]
                probs[bi, ki] = _probabilities(model, inputs, targets[bi], batch_size)
            curves[mode] = probs.double().cpu().numpy()
    fr = np.array([k / steps for k in range(steps + 1)])
    nan = np.full((B, K), np.nan)
    dele, ins = curves.get("deletion", nan), curves.get("insertion", nan)
    return Curves(fr, dele, ins, auc(fr, dele), auc(fr, ins), targets.cpu().numpy())


def deletion_curve(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, **kw) -> Curves:
    """Only the deletion curve (see `perturbation_curves`)."""
    return perturbation_curves(model, x, saliency, target, modes=("deletion",), **kw)


def insertion_curve(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, **kw) -> Curves:
    """Only the insertion curve (see `perturbation_curves`)."""
    return perturbation_curves(model, x, saliency, target, modes=("insertion",), **kw)


def method_faithfulness(model: nn.Module, result, x: Optional[torch.Tensor] = None, target=None, *,
                        methods: Optional[Iterable[str]] = None, steps: int = 10, baseline: Baseline = "blur",
                        batch_size: int = 32, masks=None, cache=None, grad_lock=None,
                        progress: Optional[Callable[[float, str], None]] = None) -> list[dict]:
    """Deletion and insertion AUC of every registered method's map (default settings) on one batch.

    One row per method, in menu order: ``{"method", "label", "deletion_auc", "insertion_auc"}`` (means
    over the batch), plus ``"pointing_game"`` and ``"auroc"`` when ground-truth ``masks`` (B, H, W) are
    given (`attention.scoring.evaluate_maps`); a method undefined for the model gets
    ``{"method", "label", "reason"}`` instead. ``target``: class per item (None: top-1). ``cache``
    and ``grad_lock`` go to `attention.methods.compute_map` (so maps already computed are reused).
    """
    from .errors import MethodNotDefinedError
    from .methods import compute_map, methods as registered
    x = result.input if x is None else x
    chosen = [m for m in registered() if methods is None or m.name in set(methods)]
    rows = []
    for k, m in enumerate(chosen):
        if progress:
            progress(k / max(len(chosen), 1), f"{m.label}: map, then {2 * (steps + 1)} perturbed forwards")
        try:
            out = compute_map(m.name, result, model=model, x=x, target=target, cache=cache, grad_lock=grad_lock)
        except MethodNotDefinedError as e:
            rows.append({"method": m.name, "label": m.label, "reason": str(e)})
            continue
        maps = torch.nan_to_num(out.maps.detach().float(), nan=0.0)
        c = perturbation_curves(model, x, maps, target, steps=steps, baseline=baseline, batch_size=batch_size)
        row = {"method": m.name, "label": m.label, "deletion_auc": float(np.mean(c.deletion_auc)),
               "insertion_auc": float(np.mean(c.insertion_auc))}
        if masks is not None:
            from .scoring import evaluate_maps
            q = evaluate_maps(maps.numpy(), masks)
            row.update({"pointing_game": q["pointing_game"], "auroc": q["auroc"]})
        rows.append(row)
    return rows


__all__ = ["Curves", "perturbation_curves", "method_faithfulness", "deletion_curve", "insertion_curve", "auc", "ranking",
           "cell_counts", "make_baseline", "pixel_cells"]
