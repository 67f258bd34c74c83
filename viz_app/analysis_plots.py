"""Matplotlib figures for the Head diagnostics and Faithfulness tabs (object-oriented API: thread-safe)."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from matplotlib.figure import Figure

from .state import Analysis

RANK_COLUMNS = ["layer", "head", "entropy (norm.)", "mean distance (px)", "prefix mass", "register mass"]


def _per_head_plot(values: np.ndarray, title: str, ylabel: str, note: str = "") -> Figure:
    fig = Figure(figsize=(5.2, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    L = values.shape[0]
    for layer in range(L):
        v = values[layer]
        v = v[np.isfinite(v)]
        ax.scatter(np.full(v.shape, layer), v, s=14, alpha=0.7, color="tab:blue", linewidths=0)
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=1)
    ax.plot(np.arange(L), mean, color="tab:orange", lw=1.5, label="mean over heads")
    ax.set_xlabel("layer (depth)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if L:
        ax.set_xticks(range(0, L, max(1, L // 12)))
    ax.legend(fontsize=8, loc="best")
    if note:
        ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, color="gray")
    return fig


def _mass_plot(prefix: np.ndarray, registers: np.ndarray) -> Figure:
    fig = Figure(figsize=(5.2, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    with np.errstate(all="ignore"):
        p = np.nanmean(prefix, axis=1) if np.isfinite(prefix).any() else None
        r = np.nanmean(registers, axis=1) if np.isfinite(registers).any() else None
    L = prefix.shape[0]
    if p is not None:
        ax.plot(np.arange(L), p, marker="o", ms=3, label="prefix tokens (CLS, DIST, registers)")
    if r is not None:
        ax.plot(np.arange(L), r, marker="s", ms=3, label="registers only")
    if p is None and r is None:
        ax.text(0.5, 0.5, "this model has no prefix tokens", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 1)
    if L:
        ax.set_xticks(range(0, L, max(1, L // 12)))
    ax.set_xlabel("layer (depth)")
    ax.set_ylabel("attention mass from patch queries")
    ax.set_title("Attention the patches give to prefix / register tokens", fontsize=10)
    ax.grid(alpha=0.3)
    if p is not None or r is not None:
        ax.legend(fontsize=8)
    return fig


def diagnostics_figures(analysis: Analysis):
    """(entropy figure, distance figure, prefix-mass figure, ranking rows, summary markdown)."""
    from attention.diagnostics import head_stats, most_global, most_local
    from .views import spatial_layers
    stats = head_stats(analysis.result)
    keep = spatial_layers(analysis.result)
    sub = lambda a: a[keep] if a is not None else None  # noqa: E731
    ent, dist = sub(stats.entropy_normalized), sub(stats.mean_distance)
    pm, rm = sub(stats.prefix_mass), sub(stats.register_mass)
    f1 = _per_head_plot(ent, "Entropy of each head's attention (1 = uniform, 0 = one patch)",
                        "normalised entropy", "query: CLS where the model has one, else mean over patches")
    f2 = _per_head_plot(dist, "Mean attention distance per head (ViT paper, Fig. 7)", "input pixels",
                        "low = local head, high = global head")
    f3 = _mass_plot(pm, rm)
    rows = []
    for li in range(ent.shape[0]):
        for h in range(ent.shape[1]):
            if not np.isfinite(ent[li, h]):
                continue
            rows.append([li, h, _r(ent[li, h]), _r(dist[li, h], 1), _r(pm[li, h]), _r(rm[li, h])])
    # a column the model has nothing for says so (a blank cell reads as a bug): no prefix / no register tokens
    for col, values in ((4, pm), (5, rm)):
        if values is None or not np.isfinite(values).any():
            for r in rows:
                r[col] = NOT_APPLICABLE
    rows.sort(key=lambda r: (r[2] if r[2] is not None else 9.0))
    lines = [f"**{len(keep)} layers** with spatial attention; heads ranked from the most focused (lowest "
             f"entropy) to the most diffuse. Click a layer/head in the grid tab to look at it."]
    local_idx = {i: k for k, i in enumerate(keep)}
    try:
        g = [(local_idx.get(l), h, v) for l, h, v in most_global(stats, 3) if l in local_idx]
        lo = [(local_idx.get(l), h, v) for l, h, v in most_local(stats, 3) if l in local_idx]
        if g:
            lines.append("Most global heads: " + ", ".join(f"L{l} H{h} ({v:.0f} px)" for l, h, v in g))
        if lo:
            lines.append("Most local heads: " + ", ".join(f"L{l} H{h} ({v:.0f} px)" for l, h, v in lo))
    except ValueError:
        pass
    if np.isfinite(rm).any():
        l, h = np.unravel_index(np.nanargmax(rm), rm.shape)
        lines.append(f"Head that looks most at the registers: L{l} H{h} ({rm[l, h]:.0%} of its attention)")
    return f1, f2, f3, rows, "  \n".join(lines)


#: the cell of a column that does not apply to this model (e.g. register mass without register tokens)
NOT_APPLICABLE = "n/a"


def _r(v, nd: int = 3):
    v = float(v)
    return round(v, nd) if np.isfinite(v) else None


def faithfulness_figure(analysis: Analysis, loaded, mapped, view, steps: int = 20,
                        progress: Optional[Callable[[float, str], None]] = None, with_random: bool = True,
                        per_method: bool = True, grad_lock=None):
    """(figure, markdown) with the deletion and insertion curves of the current map and their AUCs, and
    (``per_method``) a table of every registered method's deletion / insertion AUC on this image."""
    from attention.faithfulness import perturbation_curves
    steps = int(min(max(steps, 2), 50))
    target = analysis.top1 if view.target is None else int(view.target)
    x = analysis.prepared.tensor
    if progress:
        progress(0.1, f"deleting / inserting patches in {steps} steps ({2 * (steps + 1)} forward passes)")
    heat = torch.from_numpy(np.nan_to_num(mapped.heat, nan=0.0))
    curves = perturbation_curves(loaded.model, x, heat, target, steps=steps, batch_size=16)
    rand = None
    if with_random:
        if progress:
            progress(0.55, "the same with a random patch order, for reference")
        g = torch.Generator().manual_seed(0)
        rand = perturbation_curves(loaded.model, x, torch.rand(heat.shape, generator=g), target, steps=steps,
                                   batch_size=16)
    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    f = curves.fractions
    ax.plot(f, curves.deletion[0], color="tab:red", lw=2, label=f"deletion (AUC {curves.deletion_auc[0]:.3f})")
    ax.plot(f, curves.insertion[0], color="tab:green", lw=2, label=f"insertion (AUC {curves.insertion_auc[0]:.3f})")
    if rand is not None:
        ax.plot(f, rand.deletion[0], color="tab:red", lw=1, ls="--", alpha=0.6,
                label=f"deletion, random order ({rand.deletion_auc[0]:.3f})")
        ax.plot(f, rand.insertion[0], color="tab:green", lw=1, ls="--", alpha=0.6,
                label=f"insertion, random order ({rand.insertion_auc[0]:.3f})")
    name = analysis.class_names[target] if 0 <= target < len(analysis.class_names) else str(target)
    ax.set_xlabel("fraction of patches deleted / inserted (most attended first)")
    ax.set_ylabel(f"p({name})")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Deletion / insertion curves of the current map", fontsize=10)
    md = (f"Class **{name}**, map: {mapped.caption}  \n"
          f"Deletion AUC **{curves.deletion_auc[0]:.3f}** (lower is better) · insertion AUC "
          f"**{curves.insertion_auc[0]:.3f}** (higher is better)")
    if rand is not None:
        md += (f"  \nRandom patch order: deletion {rand.deletion_auc[0]:.3f}, insertion {rand.insertion_auc[0]:.3f}"
               f" — a faithful map beats both.")
    md += "  \nPatches are replaced by a blurred copy of the image (baseline 'blur')."
    if per_method:
        md += "\n\n" + method_table(analysis, loaded, target, progress, grad_lock)
    return fig, md


TABLE_STEPS = 10


def method_table(analysis: Analysis, loaded, target: int, progress=None, grad_lock=None) -> str:
    """Markdown: every registered method's deletion / insertion AUC on this image (library:
    `attention.faithfulness.method_faithfulness`; maps come from the analysis cache where computed)."""
    from attention.faithfulness import method_faithfulness
    step = (lambda f, d: progress(0.6 + 0.4 * f, d)) if progress else None
    rows = analysis.cached(("faithfulness_table", target, TABLE_STEPS), lambda: method_faithfulness(
        loaded.model, analysis.result, analysis.prepared.tensor, target, steps=TABLE_STEPS, batch_size=16,
        cache=analysis.cached, grad_lock=grad_lock, progress=step))
    lines = [f"**Every method on this image** (class as above, {TABLE_STEPS} steps, default settings of each "
             f"method). Pointing game and AUROC need a ground-truth mask: see `python -m attention.demo "
             f"evaluate` for them on the shapes set or on a folder with masks.", "",
             "| method | deletion AUC ↓ | insertion AUC ↑ |", "|---|---|---|"]
    for r in rows:
        if "reason" in r:
            lines.append(f"| {r['label']} | not defined for this model | – |")
        else:
            lines.append(f"| {r['label']} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} |")
    return "\n".join(lines)
