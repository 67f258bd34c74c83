"""Step 4 · Layers: each layer's own attention against rollout, with and without the residual's identity."""
from __future__ import annotations

from attention.lesson.layers import layer_maps, raw_vs_rollout_picture

from ..step import Step, cached, model_view, pictures_beside_text, scale_of, signed


class LayersStep(Step):
    id, title, order = "layers", "4 · Layers", 40
    pictures = ("learn_layers_img",)
    texts = ("learn_layers_md",)
    why = "deck.why_layers"

    def build(self, ui) -> None:
        pictures_beside_text(ui, self, [("learn_layers_img", "app.learn.layers_pic", "learn-layers-img")],
                             "app.learn.layers_btn")

    def compute(self, ctx) -> dict:
        """Row 1: each layer's own attention; row 2: rollout
        ``R_l = Ã_l Ã_{l-1} … Ã_0`` with ``Ã = (Ā + I) / rowsum``; row 3: the product without I."""
        from attention.lesson.explain import explain_layers
        a = ctx.analysis()
        maps = cached(ctx, a, ("layer_maps",), lambda: layer_maps(a.result))
        pic = raw_vs_rollout_picture(maps, model_view(ctx, a), scale=scale_of(ctx), lang=ctx.lang)
        return {"learn_layers_img": pic, "learn_layers_md": signed(explain_layers(maps, ctx.lang).markdown(), ctx, a)}


STEP = LayersStep()
