"""Lesson steps for the "Learn" tab (issue #8): UI-free data + RGB pictures with the model's real numbers."""

# From image to tokens / special tokens (attention.lesson.tokens, attention.lesson.special_tokens)
from .figure import figure_to_rgb, message_picture, new_figure, stack_pictures  # noqa: F401
from .tokens import (PositionSimilarity, TokenSequence, model_input_image, position_picture,  # noqa: F401
                     position_similarity, token_sequence, tokens_picture)
from .special_tokens import (HighNormTokens, PrefixAttention, TokenNorms, high_norm_tokens,  # noqa: F401
                             norms_picture, prefix_attention, special_tokens_picture, token_norms)
# Watch it learn (attention.lesson.learning)
from .learning import (LESSON_RECIPE, History, Probes, ProbeSnapshot, TrainingRun,  # noqa: F401
                       TrainingState, probe_set, probe_snapshot)
