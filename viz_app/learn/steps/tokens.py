"""Step 1 · Tokens: how the image becomes a sequence of patch tokens, and what the position embeddings know."""
from __future__ import annotations

from attention.errors import MethodNotDefinedError
from attention.lesson.figure import message_picture

from ...words import tr
from ..step import Step, analysis_and_model, pictures_beside_text, reason_of, scale_of, signed


class TokensStep(Step):
    id, title, order = "tokens", "1 · Tokens", 10
    pictures = ("learn_tokens_img", "learn_pos_img")
    texts = ("learn_tokens_md",)

    def build(self, ui) -> None:
        pictures_beside_text(ui, self, [("learn_tokens_img", "app.learn.tokens_pic", "learn-tokens-img"),
                                        ("learn_pos_img", "app.learn.pos_pic", "learn-pos-img")],
                             "app.learn.tokens_btn", height=520)

    def compute(self, ctx) -> dict:
        from attention.lesson.explain import explain_tokens
        from attention.lesson.tokens import position_picture, position_similarity, token_sequence, tokens_picture
        a, loaded = analysis_and_model(ctx)
        scale, lang = scale_of(ctx), ctx.lang
        try:
            seq = token_sequence(loaded.model, a.prepared, lang)
        except MethodNotDefinedError as e:
            why = reason_of(e, lang)
            return {"learn_tokens_img": message_picture(why, scale=scale), "learn_pos_img": None,
                    "learn_tokens_md": signed(tr(lang, "app.learn.not_defined", reason=why), ctx, a)}
        config = getattr(loaded.preprocess, "config", {})     # de-normalise: the exact pixels fed to the model
        pic = tokens_picture(a.prepared, seq, config.get("mean"), config.get("std"), scale=scale, lang=lang)
        try:
            pos = position_picture(position_similarity(loaded.model, seq.grid, lang), scale=scale, lang=lang)
        except MethodNotDefinedError as e:
            pos = message_picture(reason_of(e, lang), scale=scale)
        md = explain_tokens(seq, lang).markdown()
        return {"learn_tokens_img": pic, "learn_pos_img": pos, "learn_tokens_md": signed(md, ctx, a)}


STEP = TokensStep()
