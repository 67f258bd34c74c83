"""Capture every attention matrix of a model in the same forward pass that gives its logits.

Data flow: input tensor -> `capture(model, x)` -> `CaptureResult` (logits + one `AttentionMap` per
attention layer, in forward order). Which modules are attention, and how their weights are
obtained, is the business of the adapters in `attention.adapters` (a registry; one file per kind).

Concurrency: hooks are installed on a model while at least one capture runs on it (reference
counted), and each hook records into the capture session of the *calling* context (a
`contextvars.ContextVar`). Two threads capturing on the same model at the same time therefore
never see each other's tensors, and the model is restored (fused-attention flags, hooks, training
mode) when the last capture leaves, also when the forward raised.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from .layout import CHANNEL, CLASS, KINDS, POOLING, REDUCED, SELF, WINDOW, ModelTokens, TokenLayout, WindowInfo


@dataclass
class AttentionMap:
    """One attention layer's weights for one forward pass.

    ``weights`` is (B, heads, Nq, Nk) for global attention and (B * nW, heads, n, n) for Swin's
    windowed attention (see ``window``). ``layout`` describes the keys; ``query_layout`` the
    queries where they differ (class attention, spatial-reduction attention).
    """

    name: str
    weights: torch.Tensor
    kind: str
    layout: Optional[TokenLayout]
    query_layout: Optional[TokenLayout] = None
    window: Optional[WindowInfo] = None
    module_type: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown attention kind {self.kind!r}; expected one of {KINDS}")
        if self.query_layout is None:
            self.query_layout = self.layout

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    @property
    def is_spatial(self) -> bool:
        return self.kind != CHANNEL

    def describe(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "module_type": self.module_type,
             "shape": list(self.weights.shape)}
        if self.layout is not None:
            d["layout"] = self.layout.to_dict()
        if self.query_layout is not None and self.query_layout is not self.layout:
            d["query_layout"] = self.query_layout.to_dict()
        if self.window is not None:
            d["window"] = self.window.to_dict()
        return d


@dataclass
class CaptureResult:
    """Logits and attention maps of one forward pass; ``input`` is exactly the tensor fed in."""

    input: torch.Tensor
    logits: torch.Tensor
    maps: list[AttentionMap]
    tokens: ModelTokens = field(default_factory=ModelTokens)

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, i) -> AttentionMap:
        return self.maps[i]

    @property
    def layer_names(self) -> list[str]:
        return [m.name for m in self.maps]

    def self_attention(self) -> list[AttentionMap]:
        """The square global layers, in forward order (what rollout chains)."""
        return [m for m in self.maps if m.kind == SELF]

    def nbytes(self) -> int:
        return sum(m.weights.element_size() * m.weights.nelement() for m in self.maps)


class CaptureSession:
    """Collects the maps recorded in one context. Adapters call `add`; nothing else should."""

    def __init__(self, model: nn.Module, tokens: ModelTokens, input_hw: tuple[int, int],
                 dtype: Optional[torch.dtype], keep_graph: bool):
        self.model = model
        self.tokens = tokens
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.dtype = dtype
        self.keep_graph = keep_graph
        self.maps: list[AttentionMap] = []
        self.scratch: dict = {}  # per-call facts adapters pass from a pre-hook to their weights hook
        self._names: dict[int, str] = {id(m): n for n, m in model.named_modules()}

    def owns(self, module: nn.Module) -> bool:
        return id(module) in self._names

    def name_of(self, module: nn.Module) -> str:
        return self._names.get(id(module), type(module).__name__)

    def add(self, module: nn.Module, weights: torch.Tensor, kind: str = SELF,
            layout: Optional[TokenLayout] = None, query_layout: Optional[TokenLayout] = None,
            window: Optional[WindowInfo] = None) -> None:
        if not self.keep_graph:
            weights = weights.detach()
        if self.dtype is not None and weights.dtype != self.dtype:
            weights = weights.to(self.dtype)
        if layout is None and kind in (SELF, CLASS):
            layout = self.layout_for(weights.shape[-1])
        if query_layout is None and kind == CLASS:
            query_layout = TokenLayout(layout.prefix_names[: weights.shape[-2]], (0, 0), layout.stride)
        self.maps.append(AttentionMap(self.name_of(module), weights, kind, layout, query_layout, window,
                                      type(module).__name__))

    def stride_for(self, grid: tuple[int, int]) -> tuple[float, float]:
        """Input pixels per cell of a `grid` laid over the whole input."""
        return (self.input_hw[0] / grid[0], self.input_hw[1] / grid[1])

    def layout_for(self, num_tokens: int) -> Optional[TokenLayout]:
        """Layout of a sequence of `num_tokens` tokens in this model: prefix tokens + patch grid."""
        t = self.tokens
        if t.grid is None:
            return None
        n_patch = t.grid[0] * t.grid[1]
        n_prefix = num_tokens - n_patch
        if n_prefix < 0:
            return None
        names = t.prefix_names
        if n_prefix != len(names):
            # e.g. CaiT's self-attention blocks run before the CLS token is appended
            names = names[:n_prefix] if n_prefix < len(names) else names + tuple(
                f"tok{i}" for i in range(len(names), n_prefix))
        return TokenLayout(tuple(names), t.grid, t.stride)


_current: contextvars.ContextVar[Optional[CaptureSession]] = contextvars.ContextVar("attention_capture", default=None)


def current_session(module: nn.Module) -> Optional[CaptureSession]:
    """The capture session of the calling context that owns `module`, if any (used by hooks)."""
    s = _current.get()
    return s if s is not None and s.owns(module) else None


def record_attention(module: nn.Module, weights: torch.Tensor, *, grid: Optional[tuple[int, int]] = None,
                     stride: Optional[tuple[float, float]] = None, prefix_names: tuple[str, ...] = (),
                     kind: str = SELF, key_grid: Optional[tuple[int, int]] = None) -> None:
    """Protocol for your own attention modules: call this inside ``forward`` with the softmax output.

    ``weights``: (B, heads, Nq, Nk), rows summing to 1 (add a heads axis of 1 for single-head
    attention). ``grid`` / ``stride``: the (h, w) feature map the positions come from and its stride in
    input pixels. Set the class attribute ``records_attention = True`` on the module so that the
    capture knows about it. Outside a capture this is a no-op costing one context-variable lookup.
    """
    s = current_session(module)
    if s is None:
        return
    layout = None
    if grid is not None:
        layout = TokenLayout(tuple(prefix_names), tuple(grid), tuple(stride or s.tokens.stride))
    elif kind in (SELF, CLASS):
        layout = s.layout_for(weights.shape[-1])
    query_layout = None
    if kind == REDUCED and key_grid is not None:
        query_layout, layout = layout, TokenLayout(tuple(prefix_names), tuple(key_grid), (
            layout.stride[0] * layout.grid[0] / key_grid[0], layout.stride[1] * layout.grid[1] / key_grid[1]))
    elif kind == POOLING:
        query_layout = TokenLayout(("query",), (0, 0), layout.stride if layout else (1.0, 1.0))
    s.add(module, weights, kind, layout, query_layout)


class _Instrumentation:
    """Hooks and flag flips on one model, installed while >= 1 capture is running on it."""

    def __init__(self):
        self.count = 0
        self.restore: list[Callable[[], None]] = []
        self.eval_count = 0  # captures that need eval mode; flags saved by the first, restored by the last
        self.undo_train: Optional[Callable[[], None]] = None


_instrumented: "weakref.WeakKeyDictionary[nn.Module, _Instrumentation]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@contextlib.contextmanager
def instrumented(model: nn.Module, eval_mode: bool = False) -> Iterator[None]:
    """Install the adapters' hooks on `model` (shared by concurrent captures) and restore it afterwards.

    ``eval_mode``: also put the model in eval mode while this capture runs. The training flags are
    saved by the first such capture and restored by the last, so that a concurrent capture neither
    runs in training mode nor saves (and later restores) another capture's eval mode.
    """
    from .adapters import install_all  # late: adapters import this module

    with _lock:
        inst = _instrumented.setdefault(model, _Instrumentation())
        if inst.count == 0:
            try:
                inst.restore = install_all(model)
            except BaseException:
                inst.restore = []
                raise
        inst.count += 1
        if eval_mode:
            if inst.eval_count == 0:
                inst.undo_train = _training_flags(model)
                model.eval()
            inst.eval_count += 1
    try:
        yield
    finally:
        with _lock:
            if eval_mode:
                inst.eval_count -= 1
                if inst.eval_count == 0:
                    inst.undo_train()
                    inst.undo_train = None
            inst.count -= 1
            if inst.count == 0:
                for undo in reversed(inst.restore):
                    undo()
                inst.restore = []
                del _instrumented[model]


def _training_flags(model: nn.Module) -> Callable[[], None]:
    flags = [(m, m.training) for m in model.modules()]

    def undo():
        for m, t in flags:
            m.training = t
    return undo


def capture(model: nn.Module, x: torch.Tensor, *, keep_graph: bool = False,
            dtype: Optional[torch.dtype] = None, tokens: Optional[ModelTokens] = None) -> CaptureResult:
    """Run ``model(x)`` once and return its logits with every attention matrix, in forward order.

    The model runs in eval mode (dropout off) and is left exactly as found. ``keep_graph=True`` keeps
    the autograd graph so that gradient methods can differentiate the logits w.r.t. the maps;
    otherwise the forward runs under ``torch.no_grad``. ``dtype=torch.float16`` halves the memory
    of the stored maps.
    """
    from .adapters import model_tokens

    if x.dim() != 4:
        raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
    tokens = tokens or model_tokens(model, (x.shape[-2], x.shape[-1]))
    session = CaptureSession(model, tokens, x.shape[-2:], None if keep_graph else dtype, keep_graph)
    with instrumented(model, eval_mode=True):
        token = _current.set(session)
        try:
            with torch.set_grad_enabled(keep_graph):
                logits = model(x)
        finally:
            _current.reset(token)
    if isinstance(logits, (tuple, list)):  # e.g. distilled DeiT in training mode returns a pair
        logits = logits[0]
    if not keep_graph:
        logits = logits.detach()
    return CaptureResult(x, logits, session.maps, tokens)


class AttentionCapture:
    """Context-manager form: ``with AttentionCapture(model) as cap: logits = model(x)``; then ``cap.maps``.

    Useful when your own code runs the forward (e.g. a custom training loop). ``input_size`` is the
    (H, W) of the input, needed to lay out the patch grid.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int], *, keep_graph: bool = True,
                 dtype: Optional[torch.dtype] = None):
        from .adapters import model_tokens
        self.model = model
        self.session = CaptureSession(model, model_tokens(model, input_size), input_size, dtype, keep_graph)
        self._stack = contextlib.ExitStack()

    @property
    def maps(self) -> list[AttentionMap]:
        return self.session.maps

    def __enter__(self) -> "AttentionCapture":
        self._stack.enter_context(instrumented(self.model))
        token = _current.set(self.session)
        self._stack.callback(_current.reset, token)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


__all__ = ["AttentionMap", "CaptureResult", "CaptureSession", "AttentionCapture", "capture",
           "record_attention", "current_session", "SELF", "CLASS", "WINDOW", "REDUCED", "CHANNEL", "POOLING"]
