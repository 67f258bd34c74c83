"""What the Learn tab does, as plain functions (values in; pictures and Markdown out), one browser session each.

Every number comes from the session's cached forward pass (`Callbacks.analyse`) or, for the query
steps, from one extra forward of the same model on the same input that recomputes q, k, v and is
checked against the captured attention before it is shown (`attention.lesson.query`).
The explanations carry the formulas (LaTeX, `$$ … $$`) and the current numbers.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from attention.errors import MethodNotDefinedError, UserError
from attention.lesson.figure import message_picture
from attention.lesson.heads import distance_vs_depth_picture, heads_picture, query_distance, uniform_distance
from attention.lesson.layers import layer_maps, raw_vs_rollout_picture
from attention.lesson.query import LayerProjections, QueryStep, entropy_bits, layer_projections, self_attention_layers
from attention.lesson.query_pictures import (output_picture, query_steps_picture, scores_picture, softmax_picture,
                                             weights_picture)

from .callbacks import Callbacks
from .errors import user_facing
from .state import Analysis

PICK_SIZE = 384          # long side of the clickable patch picker


@dataclass(frozen=True)
class QueryChoice:
    """The lesson's query: layer (among the self-attention layers), head, and a patch or a prefix token."""

    layer: int = -1
    head: int = 0
    token: str = "patch"       # "patch" or a prefix token name ("cls", "dist", "reg0", ...)
    row: int = 0
    col: int = 0
    temperature: float = 1.0

    def query(self):
        return (self.row, self.col) if self.token == "patch" else self.token


def model_view(analysis: Analysis) -> np.ndarray:
    """What the model saw, as RGB (the photo cut to the input's box, at the input size)."""
    from attention.lesson.tokens import model_input_image

    def compute():
        return model_input_image(analysis.prepared)
    return analysis.cached(("lesson", "view"), compute)


def picker_picture(view: np.ndarray, grid: tuple[int, int], row: int, col: int, active: bool = True) -> np.ndarray:
    """The model's view enlarged, with the patch grid and the chosen patch outlined (click to choose)."""
    H, W = view.shape[:2]
    f = PICK_SIZE / max(H, W)
    big = cv2.resize(view, (round(W * f), round(H * f)),
                     interpolation=cv2.INTER_NEAREST if f >= 2 else cv2.INTER_AREA)
    out = big.copy()
    gh, gw = grid
    h, w = out.shape[:2]
    for r in range(1, gh):
        y = round(r * h / gh)
        out[max(0, y - 1):y + 1] = (out[max(0, y - 1):y + 1] * 0.4 + 255 * 0.6).astype(np.uint8)
    for c in range(1, gw):
        x = round(c * w / gw)
        out[:, max(0, x - 1):x + 1] = (out[:, max(0, x - 1):x + 1] * 0.4 + 255 * 0.6).astype(np.uint8)
    if active:
        y0, y1 = round(row * h / gh), round((row + 1) * h / gh)
        x0, x1 = round(col * w / gw), round((col + 1) * w / gw)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 45, 85), max(2, round(h / 128)))
    return out


def picker_cell(shape: tuple[int, int], grid: tuple[int, int], x: float, y: float) -> tuple[int, int]:
    """(row, col) of a click at pixel (x, y) of a picker picture of `shape` (H, W)."""
    h, w = shape
    gh, gw = grid
    return min(gh - 1, max(0, int(y * gh / h))), min(gw - 1, max(0, int(x * gw / w)))


def explain_scores(step: QueryStep) -> str:
    s = step.scores
    j = int(np.argmax(s))
    return (f"**Step 1 — scores.** Each token is projected to a query, a key and a value by the layer's own weights: "
            f"$$q_i = W_Q x_i,\\quad k_j = W_K x_j,\\quad v_j = W_V x_j \\quad (d = {step.head_dim} \\text{{ per head}})$$ "
            f"The score of key $j$ for query $i$ = {step.token_name(step.query)} is the dot product "
            f"$$s_j = q_i \\cdot k_j = \\sum_{{c=1}}^{{{step.head_dim}}} q_{{i,c}}\\, k_{{j,c}}$$ "
            f"Here the scores run from **{s.min():.2f}** to **{s.max():.2f}** (highest: {step.token_name(j)}). "
            f"High score = this key matches what the query is looking for.")


def explain_softmax(step: QueryStep, temperature: float) -> str:
    w = step.weights_at(temperature)
    w1 = step.weights_at(1.0)
    return (f"**Step 2 — scale and softmax.** Scores are divided by $\\sqrt{{d}} = {step.sqrt_d:.3g}$ (so they do not "
            f"grow with $d$) and by a temperature $T$, then turned into weights that are positive and sum to 1: "
            f"$$a_j(T) = \\frac{{\\exp\\big(s_j / (\\sqrt{{d}}\\,T)\\big)}}{{\\sum_k \\exp\\big(s_k / (\\sqrt{{d}}\\,T)\\big)}}$$ "
            f"The model uses $T = 1$: top weight **{w1.max():.3f}**, entropy **{entropy_bits(w1):.2f}** bits. "
            f"At $T = {temperature:g}$: top weight **{w.max():.3f}**, entropy **{entropy_bits(w):.2f}** bits "
            f"(uniform over {len(w)} keys: {np.log2(len(w)):.2f} bits). Small $T$ sharpens, large $T$ flattens.")


def explain_weights(step: QueryStep, temperature: float) -> str:
    err = float(np.abs(step.weights - step.captured).max())
    # the weights of the picture beside it: at this temperature
    top = ", ".join(f"{step.token_name(j)} {100 * a:.1f}%" for j, a in step.top_contributors(3, temperature))
    head = ("These are exactly the model's attention weights" if abs(temperature - 1.0) < 1e-9 else
            f"At $T = {temperature:g}$ these are *not* the model's weights (set $T = 1$ to see those)")
    return (f"**Step 3 — attention weights.** {head}. Most weight: {top}.  \n"
            f"Check: softmax of the scores at $T = 1$ vs. the attention captured from the model's forward pass: "
            f"max difference **{err:.1e}**.")


def explain_output(step: QueryStep) -> str:
    return (f"**Step 4 — weighted sum of values.** The head's output for this query mixes the values of all "
            f"tokens with those weights: $$z_i = \\sum_j a_j\\, v_j \\in \\mathbb{{R}}^{{{step.head_dim}}}$$ "
            f"The heads' outputs are concatenated and projected back, $\\text{{out}}_i = W_O\\,[z_i^1; \\dots; z_i^H]$, "
            f"and added to $x_i$ (the residual). ‖z‖ = {np.linalg.norm(step.output):.3f}.")


class Lesson:
    """The Learn tab's computations; every method takes the browser session id first."""

    PICTURES_KEPT = 48        # drawn query pictures kept (about 0.6 MB each): revisits cost nothing

    def __init__(self, cb: Callbacks):
        self.cb = cb
        self._pictures: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._pictures_lock = threading.Lock()

    def picture(self, session: str, a: Analysis, key: tuple, draw) -> np.ndarray:
        """A query picture from a small LRU keyed by (session, model, image, key): the same (layer, head,
        query, temperature) is drawn once."""
        k = (session, a.model_key, a.image_sha) + tuple(key)
        with self._pictures_lock:
            hit = self._pictures.get(k)
            if hit is not None:
                self._pictures.move_to_end(k)
                return hit
        pic = draw()
        with self._pictures_lock:
            self._pictures[k] = pic
            while len(self._pictures) > self.PICTURES_KEPT:
                self._pictures.popitem(last=False)
        return pic

    def analysis(self, session: str, model_name: str, sha: Optional[str], image=None) -> Analysis:
        if not sha and image is None:
            raise UserError("no image yet: pick one on the left (upload, paste, webcam or an example)")
        return self.cb._get(session, model_name, sha, image)

    def cached(self, session: str, a: Analysis, key, compute):
        """``a.cached`` for the lesson's derived data; the session cache re-measures the entry (byte bound)."""
        value = a.cached(("lesson",) + tuple(key), compute)
        self.cb.store.touch(session, a)
        return value

    # ------------------------------------------------------------------ step 1: image to tokens
    @user_facing
    def tokens(self, session: str, model_name: str, sha: Optional[str], image=None, scale: float = 1.0):
        """(tokens picture, position-embedding picture, Markdown); ``scale``: presenter mode draws larger."""
        from attention.lesson.tokens import position_picture, position_similarity, token_sequence, tokens_picture
        a = self.analysis(session, model_name, sha, image)
        loaded = self.cb.manager.get(a.model_key)
        model = loaded.model
        try:
            seq = token_sequence(model, a.prepared)
        except MethodNotDefinedError as e:
            return message_picture(str(e), scale=scale), None, f"**Not defined for this model.** {e}"
        config = getattr(loaded.preprocess, "config", {})     # de-normalise: the exact pixels fed to the model
        pic = tokens_picture(a.prepared, seq, config.get("mean"), config.get("std"), scale=scale)
        try:
            pos = position_picture(position_similarity(model, seq.grid), scale=scale)
        except MethodNotDefinedError as e:
            pos = message_picture(str(e), scale=scale)
        gh, gw = seq.grid
        sy, sx = seq.layout.stride
        md = (f"**From image to tokens.** The {seq.input_hw[1]}×{seq.input_hw[0]} input is cut into {gh}×{gw} patches of "
              f"{sx:g}×{sy:g} pixels; each patch becomes one token (a vector of the model's width). {seq.summary()}.  \n"
              f"{seq.position}  \n"
              f"**Position embeddings** (right): each small square is one patch; its colours show how similar that patch's "
              f"position embedding is to every other patch's (cosine similarity, as in the ViT paper's Fig. 7). "
              f"Nearby patches have similar embeddings: this is how the model knows where a patch is.")
        return pic, pos, md

    # ------------------------------------------------------------------ step 2: one query, step by step
    def projections(self, session: str, a: Analysis, layer: int) -> LayerProjections:
        model = self.cb.manager.get(a.model_key).model

        def compute():
            return layer_projections(model, a.prepared.tensor, layer)
        n = len(self.layers(a))
        return self.cached(session, a, ("projections", layer % max(n, 1)), compute)

    @staticmethod
    def layers(a: Analysis) -> list:
        return self_attention_layers(a.result)

    def step(self, session: str, a: Analysis, choice: QueryChoice) -> QueryStep:
        proj = self.projections(session, a, choice.layer)
        head = min(max(0, int(choice.head)), proj.num_heads - 1)
        return proj.step(head, choice.query())

    @user_facing
    def controls(self, session: str, model_name: str, sha: Optional[str], image=None) -> dict:
        """Ranges of the lesson's controls for this model: layers, heads, grid, prefix tokens."""
        a = self.analysis(session, model_name, sha, image)
        layers = self.layers(a)
        if not layers:
            return {"layers": 0, "heads": 0, "grid": (1, 1), "prefix": []}
        m = layers[0]
        return {"layers": len(layers), "heads": m.num_heads, "grid": m.layout.grid,
                "prefix": list(m.layout.prefix_names)}

    @user_facing
    def picker(self, session: str, model_name: str, sha: Optional[str], choice: QueryChoice, image=None):
        a = self.analysis(session, model_name, sha, image)
        layers = self.layers(a)
        grid = layers[0].layout.grid if layers else a.result.tokens.grid or (1, 1)
        return picker_picture(model_view(a), grid, choice.row, choice.col, choice.token == "patch")

    @user_facing
    def click(self, session: str, model_name: str, sha: Optional[str], shape: tuple[int, int], x: float, y: float,
              image=None) -> tuple[int, int]:
        a = self.analysis(session, model_name, sha, image)
        layers = self.layers(a)
        if not layers:
            raise MethodNotDefinedError("this model has no self-attention over patch tokens to query")
        return picker_cell(shape, layers[0].layout.grid, x, y)

    def _pictures_of(self, session: str, a: Analysis, choice: QueryChoice, scale: float, which=(0, 1, 2, 3)):
        step = self.step(session, a, choice)
        view = model_view(a)
        T = float(choice.temperature)
        key = (choice.layer, step.head, str(choice.query()), scale)
        draw = {0: (("scores",), lambda: scores_picture(step, view, scale)),
                1: (("softmax", T), lambda: softmax_picture(step, T, scale)),
                2: (("weights", T), lambda: weights_picture(step, view, T, scale)),
                3: (("output",), lambda: output_picture(step, scale=scale))}
        return step, [self.picture(session, a, key + draw[k][0], draw[k][1]) for k in which]

    @user_facing
    def query_steps(self, session: str, model_name: str, sha: Optional[str], choice: QueryChoice, image=None,
                    scale: float = 1.0):
        """[scores pic, md, softmax pic, md, weights pic, md, output pic, md] for the chosen query
        (``scale``: presenter mode draws everything larger)."""
        a = self.analysis(session, model_name, sha, image)
        step, pics = self._pictures_of(session, a, choice, scale)
        T = float(choice.temperature)
        return [pics[0], explain_scores(step), pics[1], explain_softmax(step, T),
                pics[2], explain_weights(step, T), pics[3], explain_output(step)]

    @user_facing
    def temperature(self, session: str, model_name: str, sha: Optional[str], choice: QueryChoice, image=None,
                    scale: float = 1.0):
        """Only what the temperature changes: [softmax pic, md, weights pic, md]."""
        a = self.analysis(session, model_name, sha, image)
        step, pics = self._pictures_of(session, a, choice, scale, which=(1, 2))
        T = float(choice.temperature)
        return [pics[0], explain_softmax(step, T), pics[1], explain_weights(step, T)]

    @user_facing
    def slide(self, session: str, model_name: str, sha: Optional[str], choice: QueryChoice, image=None,
              scale: float = 1.0) -> np.ndarray:
        """All four steps in one picture (for a slide)."""
        a = self.analysis(session, model_name, sha, image)
        return query_steps_picture(self.step(session, a, choice), model_view(a), float(choice.temperature), scale)

    # ------------------------------------------------------------------ step 3: many heads
    @user_facing
    def heads(self, session: str, model_name: str, sha: Optional[str], choice: QueryChoice, image=None,
              scale: float = 1.0):
        """(heads picture, distance-vs-depth picture, Markdown); ``scale``: presenter mode draws larger."""
        from attention.diagnostics import head_stats
        a = self.analysis(session, model_name, sha, image)
        layers = self.layers(a)
        if not layers:
            raise MethodNotDefinedError("this model has no self-attention layers over its patches")
        k = choice.layer % len(layers)
        index = a.result.maps.index(layers[k])
        query = choice.query()
        dist = query_distance(layers[k], query)
        pic = heads_picture(a.result, index, query, model_view(a), distances=dist, scale=scale)
        stats = self.cached(session, a, ("head_stats",), lambda: head_stats(a.result))
        depth = distance_vs_depth_picture(stats, layers[k].layout, highlight_layer=k, scale=scale)
        d = stats.mean_distance
        u = uniform_distance(layers[k].layout)
        lo = np.unravel_index(np.nanargmin(d), d.shape)
        hi = np.unravel_index(np.nanargmax(d), d.shape)
        md = (f"**Many heads.** Each head has its own $W_Q, W_K, W_V$, so the same query looks at different places "
              f"(left: layer {k}, all {layers[k].num_heads} heads). A head's **mean attention distance** "
              f"$$\\bar d = \\frac{{1}}{{N}}\\sum_i \\sum_j a_{{ij}}\\, \\lVert p_i - p_j \\rVert$$ "
              f"(in input pixels, averaged over the patch queries) says whether it looks **locally** or **globally** "
              f"(right, one dot per head, as in the ViT paper's Fig. 7). The numbers over the heads on the left are "
              f"the distance of **this query** alone; the dots on the right average **all patch queries**. For this "
              f"image the most local head (all queries) is layer {lo[0]} head {lo[1]} ({d[lo]:.1f} px), the most "
              f"global layer {hi[0]} head {hi[1]} ({d[hi]:.1f} px); attending uniformly would give {u:.1f} px.")
        return pic, depth, md

    # ------------------------------------------------------------------ step 4: across layers
    @user_facing
    def across_layers(self, session: str, model_name: str, sha: Optional[str], image=None, scale: float = 1.0):
        """(raw vs rollout picture, Markdown); ``scale``: presenter mode draws larger."""
        a = self.analysis(session, model_name, sha, image)
        maps = self.cached(session, a, ("layer_maps",), lambda: layer_maps(a.result))
        pic = raw_vs_rollout_picture(maps, model_view(a), scale=scale)

        def peak(m):
            return 100 * float(m.max() / max(m.sum(), 1e-12))
        md = (f"**Across layers.** Row 1: each layer's own attention from CLS (mean over heads). Row 2: **rollout** "
              f"(Abnar & Zuidema 2020) multiplies the layers to follow attention back to the input, with the identity "
              f"standing for the residual connection: $$\\tilde A_l = \\frac{{\\bar A_l + I}}{{\\text{{rowsum}}}},\\qquad "
              f"R_l = \\tilde A_l\\,\\tilde A_{{l-1}} \\cdots \\tilde A_0$$ Row 3: the same product **without** "
              f"$I$. A product of attention matrices alone blurs towards the same row for every token, because the residual "
              f"path that keeps each token's own content is ignored. At the last layer the top patch holds "
              f"{peak(maps.raw[-1]):.0f}% (raw), {peak(maps.rollout[-1]):.0f}% (rollout) and "
              f"{peak(maps.rollout_no_identity[-1]):.0f}% (no identity).")
        return pic, md

    # ------------------------------------------------------------------ step 5: special tokens
    @user_facing
    def special_tokens(self, session: str, model_name: str, sha: Optional[str], image=None, scale: float = 1.0):
        """(prefix-token picture, token-norm picture, Markdown); ``scale``: presenter mode draws larger."""
        from attention.lesson.special_tokens import (high_norm_tokens, norms_picture, prefix_attention,
                                                     special_tokens_picture, token_norms)
        a = self.analysis(session, model_name, sha, image)
        model = self.cb.manager.get(a.model_key).model
        parts = []
        try:
            pa = prefix_attention(a.result)
            prefix_pic = special_tokens_picture(pa, scale=scale)
        except MethodNotDefinedError as e:
            prefix_pic = message_picture(str(e), scale=scale)
            parts.append(str(e))
        try:
            tn = self.cached(session, a, ("token_norms",), lambda: token_norms(model, a.prepared.tensor))
            flags = high_norm_tokens(tn)
            norm_pic = norms_picture(tn, flags, scale=scale)
            parts.append(flags.describe().replace("\n", "  \n"))
        except MethodNotDefinedError as e:
            norm_pic = message_picture(str(e), scale=scale)
            parts.append(str(e))
        md = ("**Special tokens.** CLS (and DIST, registers) are learned tokens with no patch of their own: they "
              "gather information from the patches (left: what they attend to per layer, and how much attention the "
              "patches give them). **High-norm tokens** (right; Darcet et al. 2023, *Vision Transformers Need "
              "Registers*): large ViTs recycle a few background patches as scratch space; their output norm is far above "
              "the rest, and they soak up attention. Register tokens give the model that space instead.  \n"
              + "  \n".join(p for p in parts if p))
        return prefix_pic, norm_pic, md


__all__ = ["Lesson", "QueryChoice", "picker_picture", "picker_cell", "model_view", "explain_scores",
           "explain_softmax", "explain_weights", "explain_output"]
