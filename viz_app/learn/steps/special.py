"""Step 5 · Special tokens: what CLS / DIST / registers attend to, and the high-norm tokens of large ViTs."""
from __future__ import annotations

from attention.errors import MethodNotDefinedError
from attention.lesson.figure import message_picture

from ..step import Step, analysis_and_model, cached, pictures_beside_text, scale_of, signed


class SpecialTokensStep(Step):
    id, title, order = "special", "5 · Special tokens", 50
    pictures = ("learn_prefix_img", "learn_norms_img")
    texts = ("learn_special_md",)

    def build(self, ui) -> None:
        pictures_beside_text(ui, self, [("learn_prefix_img", "CLS / DIST / register tokens", "learn-prefix-img"),
                                        ("learn_norms_img", "Token norms: high-norm tokens", "learn-norms-img")],
                             "Show the special tokens", height=520)

    def compute(self, ctx) -> dict:
        from attention.lesson.special_tokens import (high_norm_tokens, norms_picture, prefix_attention,
                                                     special_tokens_picture, token_norms)
        a, loaded = analysis_and_model(ctx)
        scale, parts = scale_of(ctx), []
        try:
            prefix_pic = special_tokens_picture(prefix_attention(a.result), scale=scale)
        except MethodNotDefinedError as e:
            prefix_pic = message_picture(str(e), scale=scale)
            parts.append(str(e))
        try:
            tn = cached(ctx, a, ("token_norms",), lambda: token_norms(loaded.model, a.prepared.tensor))
            flags = high_norm_tokens(tn)
            norm_pic = norms_picture(tn, flags, scale=scale)
            parts.append(flags.describe().replace("\n", "  \n"))
        except MethodNotDefinedError as e:
            norm_pic = message_picture(str(e), scale=scale)
            parts.append(str(e))
        md = ("**Special tokens.** CLS (and DIST, registers) are learned tokens with no patch of their own: they "
              "gather information from the patches (left: what they attend to per layer, and how much attention the "
              "patches give them). **High-norm tokens** (right; Darcet et al. 2023, *Vision Transformers Need "
              "Registers*): large ViTs recycle a few background patches as scratch space; their output norm is far "
              "above the rest, and they soak up attention. Register tokens give the model that space instead.  \n"
              + "  \n".join(p for p in parts if p))
        return {"learn_prefix_img": prefix_pic, "learn_norms_img": norm_pic, "learn_special_md": signed(md, ctx, a)}


STEP = SpecialTokensStep()
