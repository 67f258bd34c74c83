"""Step 1 · Tokens: how the image becomes a sequence of patch tokens, and what the position embeddings know."""
from __future__ import annotations

from attention.errors import MethodNotDefinedError
from attention.lesson.figure import message_picture

from ..step import Step, analysis_and_model, pictures_beside_text, scale_of, signed


class TokensStep(Step):
    id, title, order = "tokens", "1 · Tokens", 10
    pictures = ("learn_tokens_img", "learn_pos_img")
    texts = ("learn_tokens_md",)

    def build(self, ui) -> None:
        pictures_beside_text(ui, self, [("learn_tokens_img", "Patches and the token sequence", "learn-tokens-img"),
                                        ("learn_pos_img", "Position embeddings: similarity of each patch's to all "
                                                          "others", "learn-pos-img")],
                             "Show how this image becomes tokens", height=520)

    def compute(self, ctx) -> dict:
        from attention.lesson.tokens import position_picture, position_similarity, token_sequence, tokens_picture
        a, loaded = analysis_and_model(ctx)
        scale = scale_of(ctx)
        try:
            seq = token_sequence(loaded.model, a.prepared)
        except MethodNotDefinedError as e:
            return {"learn_tokens_img": message_picture(str(e), scale=scale), "learn_pos_img": None,
                    "learn_tokens_md": signed(f"**Not defined for this model.** {e}", ctx, a)}
        config = getattr(loaded.preprocess, "config", {})     # de-normalise: the exact pixels fed to the model
        pic = tokens_picture(a.prepared, seq, config.get("mean"), config.get("std"), scale=scale)
        try:
            pos = position_picture(position_similarity(loaded.model, seq.grid), scale=scale)
        except MethodNotDefinedError as e:
            pos = message_picture(str(e), scale=scale)
        gh, gw = seq.grid
        sy, sx = seq.layout.stride
        md = (f"**From image to tokens.** The {seq.input_hw[1]}×{seq.input_hw[0]} input is cut into {gh}×{gw} "
              f"patches of {sx:g}×{sy:g} pixels; each patch becomes one token (a vector of the model's width). "
              f"{seq.summary()}.  \n{seq.position}  \n"
              f"**Position embeddings** (right): each small square is one patch; its colours show how similar that "
              f"patch's position embedding is to every other patch's (cosine similarity, as in the ViT paper's "
              f"Fig. 7). Nearby patches have similar embeddings: this is how the model knows where a patch is.")
        return {"learn_tokens_img": pic, "learn_pos_img": pos, "learn_tokens_md": signed(md, ctx, a)}


STEP = TokensStep()
