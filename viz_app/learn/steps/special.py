"""Step 5 · Special tokens: what CLS / DIST / registers attend to, and the high-norm tokens of large ViTs."""
from __future__ import annotations

from attention.errors import MethodNotDefinedError
from attention.lesson.figure import message_picture

from ..step import Step, analysis_and_model, cached, pictures_beside_text, reason_of, scale_of, signed


class SpecialTokensStep(Step):
    id, title, order = "special", "5 · Special tokens", 50
    pictures = ("learn_prefix_img", "learn_norms_img")
    texts = ("learn_special_md",)

    def build(self, ui) -> None:
        pictures_beside_text(ui, self, [("learn_prefix_img", "app.learn.prefix_pic", "learn-prefix-img"),
                                        ("learn_norms_img", "app.learn.norms_pic", "learn-norms-img")],
                             "app.learn.special_btn", height=520)

    def compute(self, ctx) -> dict:
        """Left: what the prefix tokens attend to and receive; right: the patch tokens whose output norm is far
        above the layer's median (``‖x_i‖ > factor · median_j ‖x_j‖``)."""
        from attention.lesson.explain import explain_special
        from attention.lesson.special_tokens import (high_norm_tokens, norms_picture, prefix_attention,
                                                     special_tokens_picture, token_norms)
        a, loaded = analysis_and_model(ctx)
        scale, lang, notes = scale_of(ctx), ctx.lang, []
        try:
            prefix_pic = special_tokens_picture(prefix_attention(a.result, lang=lang), scale=scale, lang=lang)
        except MethodNotDefinedError as e:
            notes.append(reason_of(e, lang, "deck.why_prefix"))
            prefix_pic = message_picture(notes[-1], scale=scale)
        try:
            tn = cached(ctx, a, ("token_norms",), lambda: token_norms(loaded.model, a.prepared.tensor))
            flags = high_norm_tokens(tn)
            norm_pic = norms_picture(tn, flags, scale=scale, lang=lang)
            notes.append(flags.describe(lang=lang).replace("\n", "  \n"))
        except MethodNotDefinedError as e:
            notes.append(reason_of(e, lang, "deck.why_norms"))
            norm_pic = message_picture(notes[-1], scale=scale)
        md = explain_special(notes, lang).markdown()
        return {"learn_prefix_img": prefix_pic, "learn_norms_img": norm_pic, "learn_special_md": signed(md, ctx, a)}


STEP = SpecialTokensStep()
