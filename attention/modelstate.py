"""Leave a model exactly as found: training flags, and optionally the parameters' grad state.

Explanation methods run the model in eval mode (dropout off) and, for gradients with respect to
activations only, with the weights frozen (no weight gradients: about 3x less backward work on a
ViT). `preserved` does both and restores every module's ``training`` flag and every parameter's
``requires_grad`` and ``.grad`` afterwards, even on an exception.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def preserved(model: nn.Module, eval_mode: bool = True, freeze: bool = False) -> Iterator[nn.Module]:
    flags = [(m, m.training) for m in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()] if freeze else []
    if eval_mode:
        model.eval()
    for p, _, _ in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
        for p, g, req in params:
            p.requires_grad_(req)
            p.grad = g


__all__ = ["preserved"]
