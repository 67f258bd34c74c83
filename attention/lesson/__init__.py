"""The Learn tab's lesson steps (UI-free): the model's real numbers, and RGB pictures of them.

- `query`: one query step by step (q, k, v from the layer's weights, checked against the capture);
  `query_pictures` draws it.
- `tokens`: from image to tokens, position embeddings; `special_tokens`: CLS / DIST / registers,
  token norms and high-norm tokens.
- `heads`: every head for one query, mean attention distance vs depth; `layers`: raw vs rollout.
- `learning`: "watch it learn", training demo-vit in a background thread; `learning_pictures` draws it.
- `figure`: matplotlib figures as RGB arrays (no pyplot: thread-safe).
- `explain`: each step's explanation (words from the catalogue, formulas as LaTeX) with the image's numbers.
- `deck`: the whole lesson on one image as one self-contained HTML slide deck and a PDF (`write_deck`).

Every picture and explanation takes ``lang="en"`` or ``lang="zh-CN"`` (`attention.i18n`: the catalogues, the
glossary, the packaged CJK font).
"""
from .deck import DeckInfo, write_deck
from .explain import (Explanation, explain_heads, explain_layers, explain_output, explain_scores, explain_softmax,
                      explain_special, explain_tokens, explain_weights)
from .figure import figure_to_rgb, message_picture, new_figure, stack_pictures
from .learning import (LESSON_RECIPE, History, Probes, ProbeSnapshot, TrainingRun, TrainingState, probe_set,
                       probe_snapshot)
from .query import LayerProjections, QueryStep, layer_projections, self_attention_layers
from .special_tokens import (HighNormTokens, PrefixAttention, TokenNorms, high_norm_tokens, norms_picture,
                             prefix_attention, special_tokens_picture, token_norms)
from .tokens import (PositionSimilarity, TokenSequence, model_input_image, position_picture, position_similarity,
                     token_sequence, tokens_picture)

__all__ = ["DeckInfo", "write_deck", "Explanation", "explain_heads", "explain_layers", "explain_output",
           "explain_scores", "explain_softmax", "explain_special", "explain_tokens", "explain_weights", "figure_to_rgb", "message_picture", "new_figure", "stack_pictures", "LESSON_RECIPE", "History", "Probes",
           "ProbeSnapshot", "TrainingRun", "TrainingState", "probe_set", "probe_snapshot", "LayerProjections",
           "QueryStep", "layer_projections", "self_attention_layers", "HighNormTokens", "PrefixAttention", "TokenNorms",
           "high_norm_tokens", "norms_picture", "prefix_attention", "special_tokens_picture", "token_norms",
           "PositionSimilarity", "TokenSequence", "model_input_image", "position_picture", "position_similarity",
           "token_sequence", "tokens_picture"]
