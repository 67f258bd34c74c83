"""Step 3 · Heads: one query seen by every head of a layer, and which heads look locally or globally."""
from __future__ import annotations

import gradio as gr
import numpy as np

from attention.errors import MethodNotDefinedError
from attention.lesson.heads import distance_vs_depth_picture, heads_picture, query_distance, uniform_distance

from ..step import Step, cached, layer_index, model_view, picture_box, scale_of, self_attention, signed, text_box
from .query import query_of


class HeadsStep(Step):
    id, title, order = "heads", "3 · Heads", 30
    pictures = ("learn_heads_img", "learn_depth_img")
    texts = ("learn_heads_md",)

    def build(self, ui) -> None:
        with gr.Row(equal_height=False, elem_id="learn-heads-pics"):
            ui.learn_heads_img = picture_box("One query, every head", "learn-heads-img", 300)
            ui.learn_depth_img = picture_box("Mean attention distance vs. depth", "learn-depth-img", 300)
        with gr.Row(equal_height=False):
            ui.learn_heads_btn = gr.Button("Show all heads", variant="primary", elem_id="learn-heads-btn",
                                           size="sm", scale=0, min_width=150)
            ui.learn_heads_md = text_box(elem_id="learn-heads-md")

    def compute(self, ctx) -> dict:
        """The page's query (step 2's) on every head of its layer; mean attention distance of every head."""
        from attention.diagnostics import head_stats
        a = ctx.analysis()
        layers = self_attention(a)
        if not layers:
            raise MethodNotDefinedError("this model has no self-attention layers over its patches")
        place, scale = ctx.page.lesson, scale_of(ctx)
        k = layer_index(place, len(layers))
        index = a.result.maps.index(layers[k])
        query = query_of(place)
        dist = query_distance(layers[k], query)
        pic = heads_picture(a.result, index, query, model_view(ctx, a), distances=dist, scale=scale)
        stats = cached(ctx, a, ("head_stats",), lambda: head_stats(a.result))
        depth = distance_vs_depth_picture(stats, layers[k].layout, highlight_layer=k, scale=scale)
        d = stats.mean_distance
        u = uniform_distance(layers[k].layout)
        lo = np.unravel_index(np.nanargmin(d), d.shape)
        hi = np.unravel_index(np.nanargmax(d), d.shape)
        md = (f"**Many heads.** Each head has its own $W_Q, W_K, W_V$, so the same query looks at different places "
              f"(left: layer {k}, all {layers[k].num_heads} heads). A head's **mean attention distance** "
              f"$$\\bar d = \\frac{{1}}{{N}}\\sum_i \\sum_j a_{{ij}}\\, \\lVert p_i - p_j \\rVert$$ "
              f"(in input pixels, averaged over the patch queries) says whether it looks **locally** or "
              f"**globally** (right, one dot per head, as in the ViT paper's Fig. 7). The numbers over the heads on "
              f"the left are the distance of **this query** alone; the dots on the right average **all patch "
              f"queries**. For this image the most local head (all queries) is layer {lo[0]} head {lo[1]} "
              f"({d[lo]:.1f} px), the most global layer {hi[0]} head {hi[1]} ({d[hi]:.1f} px); attending uniformly "
              f"would give {u:.1f} px.")
        return {"learn_heads_img": pic, "learn_depth_img": depth, "learn_heads_md": signed(md, ctx, a)}


STEP = HeadsStep()
