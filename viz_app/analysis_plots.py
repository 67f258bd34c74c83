"""Matplotlib figures for the Head diagnostics and Faithfulness tabs (object-oriented API: thread-safe), in the
page's language (catalogue keys ``app.heads.*`` / ``app.faithfulness.*``; Chinese texts drawn with the packaged CJK
font). The numbers are computed once, in no language (`head_numbers`, `faithfulness_run`), and written out per
language, so a language switch redraws without computing again."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from matplotlib.figure import Figure

from attention.i18n import t

from .state import Analysis

#: the ranking table's columns (catalogue keys ``app.heads.col_<name>``)
RANK_KEYS = ("layer", "head", "entropy", "distance", "prefix", "register")


def rank_columns(lang: str = "en") -> list[str]:
    """The ranking table's headers in `lang`."""
    return [t(f"app.heads.col_{k}", lang) for k in RANK_KEYS]


RANK_COLUMNS = rank_columns("en")


def _localized(fig: Figure) -> Figure:
    """Chinese texts of `fig` drawn with the packaged CJK font (`attention.lesson.figure.localize_fonts`: Noto
    Sans SC by path, never a system font; English figures are left as they are)."""
    from attention.lesson.figure import localize_fonts
    localize_fonts(fig)
    return fig


def _per_head_plot(values: np.ndarray, title: str, ylabel: str, note: str = "", lang: str = "en") -> Figure:
    fig = Figure(figsize=(5.2, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    L = values.shape[0]
    for layer in range(L):
        v = values[layer]
        v = v[np.isfinite(v)]
        ax.scatter(np.full(v.shape, layer), v, s=14, alpha=0.7, color="tab:blue", linewidths=0)
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=1)
    ax.plot(np.arange(L), mean, color="tab:orange", lw=1.5, label=t("app.heads.mean_over_heads", lang))
    ax.set_xlabel(t("app.heads.depth", lang))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if L:
        ax.set_xticks(range(0, L, max(1, L // 12)))
    ax.legend(fontsize=8, loc="best")
    if note:
        ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, color="gray")
    return _localized(fig)


def _mass_plot(prefix: np.ndarray, registers: np.ndarray, lang: str = "en") -> Figure:
    fig = Figure(figsize=(5.2, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    with np.errstate(all="ignore"):
        p = np.nanmean(prefix, axis=1) if np.isfinite(prefix).any() else None
        r = np.nanmean(registers, axis=1) if np.isfinite(registers).any() else None
    L = prefix.shape[0]
    if p is not None:
        ax.plot(np.arange(L), p, marker="o", ms=3, label=t("app.heads.mass_prefix", lang))
    if r is not None:
        ax.plot(np.arange(L), r, marker="s", ms=3, label=t("app.heads.mass_registers", lang))
    if p is None and r is None:
        ax.text(0.5, 0.5, t("app.heads.no_prefix", lang), ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 1)
    if L:
        ax.set_xticks(range(0, L, max(1, L // 12)))
    ax.set_xlabel(t("app.heads.depth", lang))
    ax.set_ylabel(t("app.heads.mass_ylabel", lang))
    ax.set_title(t("app.heads.mass_title", lang), fontsize=10)
    ax.grid(alpha=0.3)
    if p is not None or r is not None:
        ax.legend(fontsize=8)
    return _localized(fig)


@dataclass(frozen=True)
class HeadNumbers:
    """What the Heads tab shows of one analysis, in no language (cached with the analysis; the figures and the
    summary are written from it in the page's language). Arrays are (spatial layers, heads)."""

    layers: int                          # spatial layers
    entropy: np.ndarray
    distance: np.ndarray
    prefix: np.ndarray
    registers: np.ndarray
    rows: tuple                          # ranking rows; None in a column `not_applicable` names
    not_applicable: tuple                # columns the model has nothing for (4: prefix, 5: registers)
    most_global: tuple                   # ((layer, head, px), ...)
    most_local: tuple
    register_head: Optional[tuple]       # (layer, head, share) of the head that looks most at the registers


def head_numbers(analysis: Analysis) -> HeadNumbers:
    """The head statistics of the analysis' spatial layers (`attention.diagnostics.head_stats`) and their
    ranking from the most focused (lowest normalised entropy) to the most diffuse."""
    from attention.diagnostics import head_stats, most_global, most_local
    from .views import spatial_layers
    stats = head_stats(analysis.result)
    keep = spatial_layers(analysis.result)
    sub = lambda a: a[keep] if a is not None else None  # noqa: E731
    ent, dist = sub(stats.entropy_normalized), sub(stats.mean_distance)
    pm, rm = sub(stats.prefix_mass), sub(stats.register_mass)
    rows = []
    for li in range(ent.shape[0]):
        for h in range(ent.shape[1]):
            if not np.isfinite(ent[li, h]):
                continue
            rows.append([li, h, _r(ent[li, h]), _r(dist[li, h], 1), _r(pm[li, h]), _r(rm[li, h])])
    # a column the model has nothing for says so (a blank cell reads as a bug): no prefix / no register tokens
    na = tuple(col for col, values in ((4, pm), (5, rm)) if values is None or not np.isfinite(values).any())
    for r in rows:
        for col in na:
            r[col] = None
    rows.sort(key=lambda r: (r[2] if r[2] is not None else 9.0))
    local_idx = {i: k for k, i in enumerate(keep)}
    g, lo = [], []
    try:
        g = [(local_idx.get(l), h, v) for l, h, v in most_global(stats, 3) if l in local_idx]
        lo = [(local_idx.get(l), h, v) for l, h, v in most_local(stats, 3) if l in local_idx]
    except ValueError:
        pass
    reg = None
    if np.isfinite(rm).any():
        l, h = np.unravel_index(np.nanargmax(rm), rm.shape)
        reg = (int(l), int(h), float(rm[l, h]))
    return HeadNumbers(len(keep), ent, dist, pm, rm, tuple(tuple(r) for r in rows), na, tuple(g), tuple(lo), reg)


def diagnostics_figures(analysis: Analysis, lang: str = "en", numbers: Optional[HeadNumbers] = None):
    """(entropy figure, distance figure, prefix-mass figure, ranking rows, summary markdown) in `lang`;
    ``numbers``: the analysis' `head_numbers` when already computed."""
    n = numbers if numbers is not None else head_numbers(analysis)
    f1 = _per_head_plot(n.entropy, t("app.heads.entropy_title", lang), t("app.heads.entropy_ylabel", lang),
                        t("app.heads.entropy_note", lang), lang)
    f2 = _per_head_plot(n.distance, t("app.heads.distance_title", lang), t("app.heads.distance_ylabel", lang),
                        t("app.heads.distance_note", lang), lang)
    f3 = _mass_plot(n.prefix, n.registers, lang)
    na = t("app.heads.na", lang)
    rows = [[na if col in n.not_applicable else v for col, v in enumerate(r)] for r in n.rows]
    sep = t("app.heads.sep", lang)
    lines = [t("app.heads.summary", lang, layers=n.layers)]
    if n.most_global:
        lines.append(t("app.heads.most_global", lang, heads=sep.join(
            t("app.heads.head_px", lang, layer=l, head=h, px=v) for l, h, v in n.most_global)))
    if n.most_local:
        lines.append(t("app.heads.most_local", lang, heads=sep.join(
            t("app.heads.head_px", lang, layer=l, head=h, px=v) for l, h, v in n.most_local)))
    if n.register_head is not None:
        l, h, share = n.register_head
        lines.append(t("app.heads.register_head", lang, layer=l, head=h, share=share))
    return f1, f2, f3, rows, "  \n".join(lines)


#: the cell of a column that does not apply to this model (e.g. register mass without register tokens)
NOT_APPLICABLE = "n/a"


def _r(v, nd: int = 3):
    v = float(v)
    return round(v, nd) if np.isfinite(v) else None


@dataclass(frozen=True)
class FaithfulnessRun:
    """The deletion / insertion curves of one map (and of a random patch order), in no language."""

    target: int
    name: str                            # the explained class's name
    steps: int
    curves: object                       # `attention.faithfulness.Curves`
    random: Optional[object]


def faithfulness_run(analysis: Analysis, loaded, mapped, view, steps: int = 20,
                     progress: Optional[Callable[[float, str], None]] = None, with_random: bool = True,
                     lang: str = "en") -> FaithfulnessRun:
    """The curves of the view's map: ``2 (steps + 1)`` forward passes (twice that with the random order)."""
    from attention.faithfulness import perturbation_curves
    steps = int(min(max(steps, 2), 50))
    target = analysis.top1 if view.target is None else int(view.target)
    x = analysis.prepared.tensor
    if progress:
        progress(0.1, t("app.faithfulness.progress_curves", lang, steps=steps, forwards=2 * (steps + 1)))
    heat = torch.from_numpy(np.nan_to_num(mapped.heat, nan=0.0))
    curves = perturbation_curves(loaded.model, x, heat, target, steps=steps, batch_size=16)
    rand = None
    if with_random:
        if progress:
            progress(0.55, t("app.faithfulness.progress_random", lang))
        g = torch.Generator().manual_seed(0)
        rand = perturbation_curves(loaded.model, x, torch.rand(heat.shape, generator=g), target, steps=steps,
                                   batch_size=16)
    name = analysis.class_names[target] if 0 <= target < len(analysis.class_names) else str(target)
    return FaithfulnessRun(target, name, steps, curves, rand)


def faithfulness_text(run: FaithfulnessRun, caption: str, lang: str = "en") -> tuple[Figure, str]:
    """(figure, markdown) of a `FaithfulnessRun` in `lang`; `caption`: the map's caption."""
    curves, rand, name = run.curves, run.random, run.name
    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    f = curves.fractions
    ax.plot(f, curves.deletion[0], color="tab:red", lw=2,
            label=t("app.faithfulness.legend_deletion", lang, auc=curves.deletion_auc[0]))
    ax.plot(f, curves.insertion[0], color="tab:green", lw=2,
            label=t("app.faithfulness.legend_insertion", lang, auc=curves.insertion_auc[0]))
    if rand is not None:
        ax.plot(f, rand.deletion[0], color="tab:red", lw=1, ls="--", alpha=0.6,
                label=t("app.faithfulness.legend_deletion_random", lang, auc=rand.deletion_auc[0]))
        ax.plot(f, rand.insertion[0], color="tab:green", lw=1, ls="--", alpha=0.6,
                label=t("app.faithfulness.legend_insertion_random", lang, auc=rand.insertion_auc[0]))
    ax.set_xlabel(t("app.faithfulness.xlabel", lang))
    ax.set_ylabel(f"p({name})")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(t("app.faithfulness.title", lang), fontsize=10)
    md = t("app.faithfulness.result", lang, name=name, caption=caption, deletion=curves.deletion_auc[0],
           insertion=curves.insertion_auc[0])
    if rand is not None:
        md += "  \n" + t("app.faithfulness.random", lang, deletion=rand.deletion_auc[0],
                          insertion=rand.insertion_auc[0])
    md += "  \n" + t("app.faithfulness.baseline", lang)
    return _localized(fig), md


def faithfulness_figure(analysis: Analysis, loaded, mapped, view, steps: int = 20,
                        progress: Optional[Callable[[float, str], None]] = None, with_random: bool = True,
                        per_method: bool = True, grad_lock=None, lang: str = "en", caption: Optional[str] = None):
    """(figure, markdown) with the deletion and insertion curves of the current map and their AUCs, and
    (``per_method``) a table of every registered method's deletion / insertion AUC on this image, in `lang`
    (``caption``: the map's caption in `lang`; default the map's own)."""
    run = faithfulness_run(analysis, loaded, mapped, view, steps, progress, with_random, lang)
    fig, md = faithfulness_text(run, mapped.caption if caption is None else caption, lang)
    if per_method:
        md += "\n\n" + method_table(analysis, loaded, run.target, progress, grad_lock, lang)
    return fig, md


TABLE_STEPS = 10


def method_label(name: str, lang: str = "en") -> str:
    """A registered method's menu name in `lang`."""
    from attention.methods import get_method
    return get_method(name).label_in(lang)


def method_table(analysis: Analysis, loaded, target: int, progress=None, grad_lock=None, lang: str = "en") -> str:
    """Markdown: every registered method's deletion / insertion AUC on this image (library:
    `attention.faithfulness.method_faithfulness`; maps come from the analysis cache where computed), in `lang`."""
    from attention.faithfulness import method_faithfulness
    said = t("app.faithfulness.progress_table", lang, steps=TABLE_STEPS)
    step = (lambda f, d: progress(0.6 + 0.4 * f, said)) if progress else None
    rows = analysis.cached(("faithfulness_table", target, TABLE_STEPS), lambda: method_faithfulness(
        loaded.model, analysis.result, analysis.prepared.tensor, target, steps=TABLE_STEPS, batch_size=16,
        cache=analysis.cached, grad_lock=grad_lock, progress=step))
    lines = [t("app.faithfulness.table_intro", lang, steps=TABLE_STEPS), "",
             t("app.faithfulness.table_header", lang), "|---|---|---|"]
    for r in rows:
        label = method_label(r["method"], lang)
        if "reason" in r:
            lines.append(t("app.faithfulness.table_undefined", lang, method=label))
        else:
            lines.append(f"| {label} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} |")
    return "\n".join(lines)
