"""The lesson's explanations, in words and formulas, with the numbers of the user's image, in a chosen language.

Each step's explanation is an `Explanation`: a title and blocks, each either text (Markdown: ``**bold**``,
```code```) or a formula (LaTeX in the subset that both matplotlib's mathtext and KaTeX draw, so the deck can
draw it to a picture offline and the app can hand it to its Markdown). No formula holds a word: the words
around it come from the catalogue (`attention.i18n`), so a formula reads the same in every language.

- `explain_tokens(seq)`: patches, the token sequence, position embeddings.
- `explain_scores(step)`, `explain_softmax(step, T)`, `explain_weights(step, T)`, `explain_output(step)`: one
  query in four steps, ``s_j = q_i · k_j``, ``a_j = softmax(s_j / √d)``, ``z_i = Σ_j a_j v_j``.
- `explain_heads(...)`: many heads, mean attention distance; `explain_layers(maps)`: raw attention vs rollout;
  `explain_special(...)`: CLS / DIST / registers and high-norm tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..i18n import t as tr
from .query import QueryStep, entropy_bits

TEXT, MATH = "text", "math"


@dataclass(frozen=True)
class Explanation:
    """A step's title and its blocks: ``(TEXT, markdown)`` or ``(MATH, latex)``."""

    title: str
    blocks: tuple[tuple[str, str], ...]

    def markdown(self) -> str:
        """One Markdown string: the title in bold, formulas as ``$$ … $$`` (KaTeX in the app)."""
        stop = "。" if self.title and ord(self.title[-1]) >= 0x2E80 else "."     # a Chinese title ends with 。
        parts = [f"**{self.title}{stop}**"]
        for kind, body in self.blocks:
            parts.append(f"$${body}$$" if kind == MATH else body)
        return " ".join(parts)

    def text(self) -> str:
        """Every word of it (formulas left out): what a test of the language reads."""
        return " ".join([self.title] + [b for k, b in self.blocks if k == TEXT])


def _e(title: str, *blocks: tuple[str, str]) -> Explanation:
    return Explanation(title, tuple(b for b in blocks if b[1]))


def explain_tokens(seq, lang: str = "en") -> Explanation:
    """Step "from image to tokens" for a `attention.lesson.tokens.TokenSequence` made in `lang`."""
    gh, gw = seq.grid
    sy, sx = seq.layout.stride
    return _e(tr("explain.tokens_title", lang),
              (TEXT, tr("explain.tokens_cut", lang, W=seq.input_hw[1], H=seq.input_hw[0], gh=gh, gw=gw, sx=sx, sy=sy,
                        summary=seq.summary(lang))),
              (TEXT, seq.position),
              (TEXT, seq.note),
              (TEXT, tr("explain.tokens_position", lang)))


def explain_scores(step: QueryStep, lang: str = "en") -> Explanation:
    s = step.scores
    j = int(np.argmax(s))
    d = step.head_dim
    return _e(tr("explain.scores_title", lang),
              (TEXT, tr("explain.scores_project", lang, d=d)),
              (MATH, r"q_i = W_Q\,x_i,\quad k_j = W_K\,x_j,\quad v_j = W_V\,x_j"),
              (TEXT, tr("explain.scores_dot", lang, query=step.token_name(step.query, lang))),
              (MATH, rf"s_j = q_i \cdot k_j = \sum_{{c=1}}^{{{d}}} q_{{i,c}}\, k_{{j,c}}"),
              (TEXT, tr("explain.scores_range", lang, lo=float(s.min()), hi=float(s.max()),
                        best=step.token_name(j, lang))))


def explain_softmax(step: QueryStep, temperature: float = 1.0, lang: str = "en") -> Explanation:
    w = step.weights_at(temperature)
    w1 = step.weights_at(1.0)
    return _e(tr("explain.softmax_title", lang),
              (TEXT, tr("explain.softmax_scale", lang, sqrt_d=step.sqrt_d)),
              (MATH, r"a_j(T) = \frac{\exp\left(s_j / (\sqrt{d}\,T)\right)}{\sum_k \exp\left(s_k / (\sqrt{d}\,T)\right)}"),
              (TEXT, tr("explain.softmax_numbers", lang, top1=float(w1.max()), H1=entropy_bits(w1), T=temperature,
                        top=float(w.max()), H=entropy_bits(w), n=len(w), Hmax=float(np.log2(len(w))))))


def explain_weights(step: QueryStep, temperature: float = 1.0, lang: str = "en") -> Explanation:
    err = float(np.abs(step.weights - step.captured).max())
    top = ", ".join(f"{step.token_name(j, lang)} {100 * a:.1f}%" for j, a in step.top_contributors(3, temperature))
    head = (tr("explain.weights_exact", lang) if abs(temperature - 1.0) < 1e-9
            else tr("explain.weights_not", lang, T=temperature))
    return _e(tr("explain.weights_title", lang),
              (TEXT, tr("explain.weights_top", lang, head=head, top=top)),
              (TEXT, tr("explain.weights_check", lang, err=err)))


def explain_output(step: QueryStep, lang: str = "en") -> Explanation:
    d = step.head_dim
    return _e(tr("explain.output_title", lang),
              (TEXT, tr("explain.output_mix", lang)),
              (MATH, rf"z_i = \sum_j a_j\, v_j \in \mathbb{{R}}^{{{d}}}"),
              (TEXT, tr("explain.output_concat", lang)),
              (MATH, r"\mathrm{out}_i = W_O\,[z_i^1; \dots; z_i^H]"),
              (TEXT, tr("explain.output_norm", lang, norm=float(np.linalg.norm(step.output)))))


def explain_heads(layer: int, num_heads: int, mean_distance: np.ndarray, uniform: float,
                  lang: str = "en") -> Explanation:
    """`mean_distance`: (layers, heads) mean attention distance of every head (`attention.diagnostics.head_stats`)."""
    d = np.asarray(mean_distance, dtype=np.float64)
    lo = np.unravel_index(np.nanargmin(d), d.shape)
    hi = np.unravel_index(np.nanargmax(d), d.shape)
    return _e(tr("explain.heads_title", lang),
              (TEXT, tr("explain.heads_own", lang, layer=layer, heads=num_heads)),
              (MATH, r"\bar{d} = \frac{1}{N}\sum_i \sum_j a_{ij}\, \Vert p_i - p_j \Vert"),
              (TEXT, tr("explain.heads_distance", lang)),
              (TEXT, tr("explain.heads_numbers", lang, lo_layer=int(lo[0]), lo_head=int(lo[1]), lo=float(d[lo]),
                        hi_layer=int(hi[0]), hi_head=int(hi[1]), hi=float(d[hi]), u=uniform)))


def _peak(m: np.ndarray) -> float:
    return 100 * float(m.max() / max(m.sum(), 1e-12))


def explain_layers(maps, lang: str = "en") -> Explanation:
    """Raw attention against rollout, for `attention.lesson.layers.LayerMaps`."""
    return _e(tr("explain.layers_title", lang),
              (TEXT, tr("explain.layers_rows", lang)),
              (MATH, r"\tilde{A}_l[i,j] = \frac{\bar{A}_l[i,j] + I[i,j]}{\sum_k (\bar{A}_l[i,k] + I[i,k])},"
                     r"\qquad R_l = \tilde{A}_l\,\tilde{A}_{l-1} \cdots \tilde{A}_0"),
              (TEXT, tr("explain.layers_noid", lang)),
              (TEXT, tr("explain.layers_numbers", lang, raw=_peak(maps.raw[-1]), rollout=_peak(maps.rollout[-1]),
                        noid=_peak(maps.rollout_no_identity[-1]))))


def explain_special(notes: Sequence[str] = (), lang: str = "en") -> Explanation:
    """Special tokens and high-norm tokens; `notes`: what was found (`HighNormTokens.describe(lang=…)`) or why a
    picture is not defined, already in `lang`."""
    return _e(tr("explain.special_title", lang),
              (TEXT, tr("explain.special_body", lang)),
              *[(TEXT, n) for n in notes if n])


__all__ = ["TEXT", "MATH", "Explanation", "explain_tokens", "explain_scores", "explain_softmax", "explain_weights",
           "explain_output", "explain_heads", "explain_layers", "explain_special"]
