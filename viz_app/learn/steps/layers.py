"""Step 4 · Layers: each layer's own attention against rollout, with and without the residual's identity."""
from __future__ import annotations

from attention.lesson.layers import layer_maps, raw_vs_rollout_picture

from ..step import Step, cached, model_view, pictures_beside_text, scale_of, signed


class LayersStep(Step):
    id, title, order = "layers", "4 · Layers", 40
    pictures = ("learn_layers_img",)
    texts = ("learn_layers_md",)

    def build(self, ui) -> None:
        pictures_beside_text(ui, self, [("learn_layers_img", "Raw attention and rollout, layer by layer",
                                         "learn-layers-img")], "Compare raw attention and rollout")

    def compute(self, ctx) -> dict:
        a = ctx.analysis()
        maps = cached(ctx, a, ("layer_maps",), lambda: layer_maps(a.result))
        pic = raw_vs_rollout_picture(maps, model_view(ctx, a), scale=scale_of(ctx))

        def peak(m):
            return 100 * float(m.max() / max(m.sum(), 1e-12))
        md = (f"**Across layers.** Row 1: each layer's own attention from CLS (mean over heads). Row 2: **rollout** "
              f"(Abnar & Zuidema 2020) multiplies the layers to follow attention back to the input, with the "
              f"identity standing for the residual connection: $$\\tilde A_l = \\frac{{\\bar A_l + I}}"
              f"{{\\text{{rowsum}}}},\\qquad R_l = \\tilde A_l\\,\\tilde A_{{l-1}} \\cdots \\tilde A_0$$ Row 3: the "
              f"same product **without** $I$. A product of attention matrices alone blurs towards the same row for "
              f"every token, because the residual path that keeps each token's own content is ignored. At the last "
              f"layer the top patch holds {peak(maps.raw[-1]):.0f}% (raw), {peak(maps.rollout[-1]):.0f}% (rollout) "
              f"and {peak(maps.rollout_no_identity[-1]):.0f}% (no identity).")
        return {"learn_layers_img": pic, "learn_layers_md": signed(md, ctx, a)}


STEP = LayersStep()
