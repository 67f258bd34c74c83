"""Step 3 · Heads: one query seen by every head of a layer, and which heads look locally or globally."""
from __future__ import annotations

import gradio as gr

from attention.errors import MethodNotDefinedError
from attention.lesson.heads import distance_vs_depth_picture, heads_picture, query_distance, uniform_distance

from ...words import said, tr
from ..step import Step, cached, layer_index, model_view, picture_box, scale_of, self_attention, signed, text_box
from .query import query_of


class HeadsStep(Step):
    id, title, order = "heads", "3 · Heads", 30
    pictures = ("learn_heads_img", "learn_depth_img")
    texts = ("learn_heads_md",)
    why = "app.learn.no_heads"

    def build(self, ui) -> None:
        with gr.Row(equal_height=False, elem_id="learn-heads-pics"):
            ui.learn_heads_img = picture_box("app.learn.heads_pic", "learn-heads-img", 300)
            ui.learn_depth_img = picture_box("app.learn.depth_pic", "learn-depth-img", 300)
        with gr.Row(equal_height=False):
            ui.learn_heads_btn = said(gr.Button(variant="primary", elem_id="learn-heads-btn", size="sm", scale=0,
                                                min_width=150), value="app.learn.heads_btn")
            ui.learn_heads_md = text_box(elem_id="learn-heads-md")

    def compute(self, ctx) -> dict:
        """The page's query (step 2's) on every head of its layer; the mean attention distance of every head,
        ``d̄ = 1/N Σ_i Σ_j a_ij ‖p_i − p_j‖`` (input pixels, over the patch queries)."""
        from attention.diagnostics import head_stats
        from attention.lesson.explain import explain_heads
        a = ctx.analysis()
        layers = self_attention(a)
        if not layers:
            raise MethodNotDefinedError(tr(ctx, "app.learn.no_heads"))
        place, scale, lang = ctx.page.lesson, scale_of(ctx), ctx.lang
        k = layer_index(place, len(layers))
        index = a.result.maps.index(layers[k])
        query = query_of(place)
        dist = query_distance(layers[k], query)
        pic = heads_picture(a.result, index, query, model_view(ctx, a), distances=dist, scale=scale, lang=lang)
        stats = cached(ctx, a, ("head_stats",), lambda: head_stats(a.result))
        depth = distance_vs_depth_picture(stats, layers[k].layout, highlight_layer=k, scale=scale, lang=lang)
        md = explain_heads(k, layers[k].num_heads, stats.mean_distance, uniform_distance(layers[k].layout),
                           lang).markdown()
        return {"learn_heads_img": pic, "learn_depth_img": depth, "learn_heads_md": signed(md, ctx, a)}


STEP = HeadsStep()
