"""What a method needs from the shared forward + backward (`attention.methods.plan`): a value of its own,
below `base` (which declares ``Method.requirements``) and `plan` (which provides the pass)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Needs:
    """What a method needs from the shared pass (``|`` is the union)."""

    attention_gradients: bool = False
    activations: tuple[str, ...] = ()       # module names (``model.named_modules()``): output and gradient
    lrp_attention: bool = False             # the attention's LRP relevance (the pass with the rules)
    lrp_input: bool = False                 # the input's LRP relevance (the same pass)

    def __or__(self, other: "Needs") -> "Needs":
        return Needs(self.attention_gradients or other.attention_gradients,
                     tuple(sorted(set(self.activations) | set(other.activations))),
                     self.lrp_attention or other.lrp_attention, self.lrp_input or other.lrp_input)

    def covers(self, other: "Needs") -> bool:
        return (self.attention_gradients or not other.attention_gradients) and \
            set(other.activations) <= set(self.activations)

    @property
    def gradient_pass(self) -> bool:
        """Whether the plain forward + backward is needed (the LRP pass is separate)."""
        return self.attention_gradients or bool(self.activations)

    def key(self) -> tuple:
        return (self.attention_gradients, tuple(sorted(self.activations)))


NOTHING = Needs()


__all__ = ["Needs", "NOTHING"]
