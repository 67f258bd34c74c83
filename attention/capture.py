"""Capture every attention matrix of a model in the same forward pass that gives its logits.

Data flow: input tensor -> `capture(model, x)` -> `CaptureResult` (logits + one `AttentionMap` per
attention layer, in forward order). *Where* attention is computed is found at the operation
(`attention.interception`: every softmax and scaled-dot-product attention of the forward, attributed
to the innermost module that ran it); *what* each recorded tensor is (token layout, windows, which
tensor is the attention shown) is the business of the model's family descriptor
(`attention.families`, one file per family), with a shape-based inference for unknown models whose
result is labelled ``layout_source="inferred"`` (or ``"unknown"`` when nothing fits).

Concurrency: the op patches are shared by concurrent captures (reference counted), and each op
records into the capture session of the *calling* context (a `contextvars.ContextVar`): two threads
capturing on the same model at once never see each other's tensors. The model itself is not touched
(no hooks, no flags) except its training flags, which are saved by the first concurrent capture and
restored by the last, also when the forward raised.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from . import interception
from .device import to_model
from .layout import (CHANNEL, CLASS, INFERRED, KINDS, KNOWN, LAYOUT_SOURCES, POOLING, REDUCED, SELF, TOKENS, UNKNOWN,
                     WINDOW, ModelTokens, TokenLayout, WindowInfo)


@dataclass
class AttentionMap:
    """One attention layer's weights for one forward pass.

    ``weights`` is (B, heads, Nq, Nk) for global attention and (B * nW, heads, n, n) for windowed
    attention (see ``window``). ``layout`` describes the keys; ``query_layout`` the queries where they
    differ (class attention, spatial-reduction attention). ``layout_source`` says how the layout was
    found: ``known`` (the family descriptor), ``inferred`` (from shapes; a best guess, labelled as such)
    or ``unknown`` (no layout: a token x token matrix only; spatial views refuse it). ``op`` is the
    operation that produced the weights (``softmax``, ``sdpa``, ``recorded``, or a family's own tap).
    """

    name: str
    weights: torch.Tensor
    kind: str
    layout: Optional[TokenLayout]
    query_layout: Optional[TokenLayout] = None
    window: Optional[WindowInfo] = None
    module_type: str = ""
    layout_source: str = KNOWN
    op: str = ""
    #: why the family left this layer off the image, when it knows (None: the generic reason below)
    unplaced_reason: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown attention kind {self.kind!r}; expected one of {KINDS}")
        if self.layout_source not in LAYOUT_SOURCES:
            raise ValueError(f"unknown layout source {self.layout_source!r}; expected one of {LAYOUT_SOURCES}")
        if self.layout is None and self.kind not in (CHANNEL, TOKENS):
            self.layout_source = UNKNOWN
        if self.query_layout is None:
            self.query_layout = self.layout

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    @property
    def is_spatial(self) -> bool:
        """Whether the map can be put on the image: a known or inferred layout, and not channel attention."""
        return self.kind != CHANNEL and self.layout is not None and (self.kind != WINDOW or self.window is not None)

    def not_spatial_reason(self) -> Optional[str]:
        """Why spatial views refuse this layer (None if they can show it)."""
        if self.kind == CHANNEL:
            return f"layer {self.name} is channel attention (channels x channels), not attention over positions"
        if self.kind == TOKENS:
            return (f"layer {self.name} attends among tokens that are no image positions (GroupViT's group tokens, "
                    f"Perceiver's latents), so it can only be shown as a token x token matrix")
        if self.unplaced_reason and (self.layout is None or (self.kind == WINDOW and self.window is None)):
            return f"layer {self.name}: {self.unplaced_reason}, so it can only be shown as a token x token matrix"
        if self.layout is None or (self.kind == WINDOW and self.window is None):
            return (f"layer {self.name}: the token layout of its {tuple(self.weights.shape)} attention is unknown "
                    "(no family descriptor, and the shapes fit no patch grid), so it can only be shown as a "
                    "token x token matrix")
        return None

    def describe(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "module_type": self.module_type,
             "shape": list(self.weights.shape), "layout_source": self.layout_source, "op": self.op}
        if self.layout is not None:
            d["layout"] = self.layout.to_dict()
        if self.query_layout is not None and self.query_layout is not self.layout:
            d["query_layout"] = self.query_layout.to_dict()
        if self.window is not None:
            d["window"] = self.window.to_dict()
        return d


@dataclass
class CaptureResult:
    """Logits and attention maps of one forward pass; ``input`` is exactly the tensor fed in.

    ``logits`` is the model's prediction tensor (for a Hugging Face ``ModelOutput`` its ``logits``, or
    its pooled / last hidden state for a headless model; for a tuple the first tensor); ``output`` is
    what the model returned. ``maps`` are the attention layers shown to users; ``records`` every
    attention op recorded, in order (they differ only where a family combines ops, e.g. ConViT).
    """

    input: torch.Tensor
    logits: torch.Tensor
    maps: list[AttentionMap]
    tokens: ModelTokens = field(default_factory=ModelTokens)
    records: list[AttentionMap] = field(default_factory=list)
    family: str = ""
    output: Any = None

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, i) -> AttentionMap:
        return self.maps[i]

    @property
    def layer_names(self) -> list[str]:
        return [m.name for m in self.maps]

    def self_attention(self) -> list[AttentionMap]:
        """The square global layers with a layout, in forward order (what rollout chains)."""
        return [m for m in self.maps if m.kind == SELF and m.layout is not None]

    def nbytes(self) -> int:
        return sum(m.weights.element_size() * m.weights.nelement() for m in self.maps)


class CaptureSession:
    """Collects the maps recorded in one context. The interception and `record_attention` call it."""

    def __init__(self, model: nn.Module, prepared: "_Prepared", tokens: ModelTokens, input_hw: tuple[int, int],
                 batch: int, dtype: Optional[torch.dtype], keep_graph: bool):
        self.model = model
        self.prepared = prepared
        self.family = prepared.family
        self.names = prepared.names
        self.tokens = tokens
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.batch = int(batch)
        self.dtype = dtype
        self.keep_graph = keep_graph
        self.maps: list[AttentionMap] = []

    def owns(self, module: nn.Module) -> bool:
        return id(module) in self.names

    def name_of(self, module: nn.Module) -> str:
        return self.names.get(id(module), type(module).__name__)

    # -- called by the interception -------------------------------------------------------------
    def record(self, op: str, weights: torch.Tensor, site) -> bool:
        """An attention op ran at `site`: describe it and keep it. False: not attention / not ours."""
        module = site.module
        if module is None or getattr(module, "records_attention", False):
            return False  # not inside this model, or a module that records itself
        key = (id(module), op, tuple(weights.shape), self.input_hw)
        spec = self.prepared.specs.get(key)
        if spec is None:
            spec = self.describe(module, weights, site)
            if spec is None:
                return False
            if spec.cacheable:
                self.prepared.specs[key] = spec
        heads = getattr(spec, "heads", None)
        if heads and weights.shape[1] != heads:   # windows folded into the head axis: (B*nW, heads, n, n)
            weights = weights.reshape(-1, heads, *weights.shape[-2:])
        self.add(module, weights, spec.kind, spec.layout, spec.query_layout, spec.window, spec.source, op)
        return True

    def describe(self, module: nn.Module, weights: torch.Tensor, site):
        """The family's description of a recorded tensor; a descriptor that fails falls back to inference,
        and that to an unknown layout: a capture never raises because of a layout."""
        from .families import generic
        for fam in (self.family, generic()):
            try:
                return fam.describe(self, module, weights, site)
            except Exception:  # noqa: BLE001 - knowledge of a family must not break the user's forward
                continue
        from .families import MapSpec
        return MapSpec(SELF if weights.shape[-1] == weights.shape[-2] else POOLING, None, source=UNKNOWN)

    def add(self, module: nn.Module, weights: torch.Tensor, kind: str = SELF,
            layout: Optional[TokenLayout] = None, query_layout: Optional[TokenLayout] = None,
            window: Optional[WindowInfo] = None, source: str = KNOWN, op: str = "recorded") -> None:
        if not self.keep_graph:
            weights = weights.detach()
        if self.dtype is not None and weights.dtype != self.dtype:
            weights = weights.to(self.dtype)
        self.maps.append(AttentionMap(self.name_of(module), weights, kind, layout, query_layout, window,
                                      type(module).__name__, source, op))

    # -- geometry helpers for families ----------------------------------------------------------
    def stride_for(self, grid: tuple[int, int]) -> tuple[float, float]:
        """Input pixels per cell of a `grid` laid over the whole input."""
        return (self.input_hw[0] / grid[0], self.input_hw[1] / grid[1])

    def layout_for(self, num_tokens: int) -> Optional[TokenLayout]:
        """Layout of a sequence of `num_tokens` tokens in this model: prefix tokens + patch grid."""
        t = self.tokens
        if t.grid is None:
            return None
        n_patch = t.grid[0] * t.grid[1]
        if t.suffix_names and num_tokens == len(t.prefix_names) + n_patch + len(t.suffix_names):
            return TokenLayout(t.prefix_names, t.grid, t.stride, t.suffix_names)   # tokens after the patches too
        n_prefix = num_tokens - n_patch
        if n_prefix < 0 or n_prefix > 64:
            return None
        names = t.prefix_names
        if n_prefix != len(names):
            # e.g. CaiT's self-attention blocks run before the CLS token is appended
            names = names[:n_prefix] if n_prefix < len(names) else names + tuple(
                f"tok{i}" for i in range(len(names), n_prefix))
        return TokenLayout(tuple(names), t.grid, t.stride)


_current: contextvars.ContextVar[Optional[CaptureSession]] = contextvars.ContextVar("attention_capture", default=None)
interception.current = _current.get


def current_session(module: nn.Module) -> Optional[CaptureSession]:
    """The capture session of the calling context that owns `module`, if any."""
    s = _current.get()
    return s if s is not None and s.owns(module) else None


def record_attention(module: nn.Module, weights: torch.Tensor, *, grid: Optional[tuple[int, int]] = None,
                     stride: Optional[tuple[float, float]] = None, prefix_names: tuple[str, ...] = (),
                     kind: str = SELF, key_grid: Optional[tuple[int, int]] = None) -> None:
    """Protocol for attention that is *not* a softmax (sigmoid, linear attention), or to declare a layout.

    Call it inside ``forward`` with the weights (B, heads, Nq, Nk) (add a heads axis of 1 for
    single-head attention); ``grid`` / ``stride``: the (h, w) feature map the positions come from and
    its stride in input pixels. Set the class attribute ``records_attention = True`` on the module:
    softmaxes inside it are then not recorded a second time. A softmax attention does not need this
    (the capture finds it). Outside a capture this is a no-op costing one context-variable lookup.
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
    elif kind == CLASS and layout is not None:
        query_layout = TokenLayout(layout.prefix_names[: weights.shape[-2]], (0, 0), layout.stride)
    s.add(module, weights, kind, layout, query_layout, source=KNOWN, op="recorded")


class _Prepared:
    """What is computed once per model (and redone when its modules change): the module paths, the
    family descriptor, whether the MHA fast path must be off, and the per-layer layout decisions."""

    def __init__(self, model: nn.Module):
        from .families import family_of
        named = list(model.named_modules())
        # The cache is keyed weakly by the model, so nothing here may hold the model itself (it would
        # never be freed): the root is passed in by the caller, only its descendants are kept.
        self.submodules = [m for _, m in named[1:]]
        # each module's children, in order: checking the tree is one flat comparison, not a module walk
        self.children = self._children(model)
        self.names: dict[int, str] = {id(m): n for n, m in named}
        self.family = family_of(model)
        self.needs_fastpath_off = any(isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer))
                                      for _, m in named)
        self.specs: dict = {}
        self.tokens: dict = {}

    def _children(self, model: nn.Module) -> list:
        return [tuple(model._modules.values())] + [tuple(m._modules.values()) for m in self.submodules]

    def still_valid(self, model: nn.Module) -> bool:
        """True while no submodule was added, removed or replaced anywhere in the tree."""
        return self._children(model) == self.children  # modules compare by identity

    def modules(self, model: nn.Module) -> list:
        return [model] + self.submodules

    def tokens_for(self, model: nn.Module, hw: tuple[int, int]) -> ModelTokens:
        t = self.tokens.get(hw)
        if t is None:
            try:
                t = self.family.tokens(model, hw)
            except Exception:  # noqa: BLE001 - an unexpected variant of the family: infer instead
                t = None
            t = self.tokens[hw] = t or ModelTokens()
        return t


_prepared: "weakref.WeakKeyDictionary[nn.Module, _Prepared]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def prepare(model: nn.Module) -> _Prepared:
    """The model's cached instrumentation (built on first use, rebuilt if its module tree changed)."""
    p = _prepared.get(model)
    if p is None or not p.still_valid(model):
        p = _Prepared(model)
        with _lock:
            _prepared[model] = p
    return p


class _TrainingFlags:
    """Eval mode shared by concurrent captures of one model: saved by the first, restored by the last."""

    def __init__(self):
        self.count = 0
        self.undo: Optional[Callable[[], None]] = None


_flags: "weakref.WeakKeyDictionary[nn.Module, _TrainingFlags]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def instrumented(model: nn.Module, eval_mode: bool = False) -> Iterator[_Prepared]:
    """Patch the attention ops for this context (shared by concurrent captures) and restore afterwards.

    ``eval_mode``: also put the model in eval mode while this capture runs; the training flags are saved
    by the first such capture and restored by the last, so that a concurrent capture neither runs in
    training mode nor saves (and later restores) another capture's eval mode.
    """
    prepared = prepare(model)
    undo_family = []
    interception.acquire(prepared.needs_fastpath_off)
    try:
        if eval_mode:
            with _lock:
                fl = _flags.setdefault(model, _TrainingFlags())
                if fl.count == 0:
                    fl.undo = _training_flags(prepared.modules(model))
                fl.count += 1
        try:
            undo_family = prepared.family.instrument(model)
            yield prepared
        finally:
            for u in reversed(undo_family):
                u()
            if eval_mode:
                with _lock:
                    fl.count -= 1
                    if fl.count == 0:
                        fl.undo()
                        fl.undo = None
                        del _flags[model]
    finally:
        interception.release(prepared.needs_fastpath_off)


def _training_flags(modules: list) -> Callable[[], None]:
    """Put every module in eval mode; return the undo. A model already in eval mode (the usual case)
    costs one pass over the flags and nothing is written."""
    flags = [(m, m.training) for m in modules if m.training]
    for m, _ in flags:
        m.training = False

    def undo():
        for m, t in flags:
            m.training = t
    return undo


def prediction_tensor(output) -> torch.Tensor:
    """The prediction tensor of a model output: a tensor; a ModelOutput's ``logits`` (else its pooled or
    last hidden state); the first tensor of a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "logits_per_image", "image_embeds", "pooler_output", "last_hidden_state"):
        v = getattr(output, key, None) if not isinstance(output, dict) else output.get(key)
        if isinstance(v, torch.Tensor):
            return v
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
        if v is not None and not isinstance(v, (int, float, str)):
            try:
                return prediction_tensor(v)
            except TypeError:
                pass
    raise TypeError(f"cannot find a prediction tensor in a {type(output).__name__} output")


def _session(model, x, keep_graph, dtype, tokens, prepared) -> CaptureSession:
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    tokens = tokens or prepared.tokens_for(model, hw)
    return CaptureSession(model, prepared, tokens, hw, x.shape[0], None if keep_graph else dtype, keep_graph)


def capture(model: nn.Module, x: torch.Tensor, *, keep_graph: bool = False,
            dtype: Optional[torch.dtype] = None, tokens: Optional[ModelTokens] = None) -> CaptureResult:
    """Run ``model(x)`` once and return its logits with every attention matrix, in forward order.

    The model runs in eval mode (dropout off) and is left exactly as found. ``keep_graph=True`` keeps
    the autograd graph (the recorded maps are the tensors the logits are computed from, so
    ``torch.autograd.grad(logit, map.weights)`` is the true ∂y/∂A); otherwise the forward runs under
    ``torch.no_grad``. ``dtype=torch.float16`` halves the memory of the stored maps. ``x`` is moved to
    the model's device and floating dtype (``result.input`` is the tensor fed in).
    """
    if x.dim() != 4:
        raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
    # the input follows the model: its device and floating dtype (attention.device)
    x = to_model(model, x)
    with instrumented(model, eval_mode=True) as prepared:
        session = _session(model, x, keep_graph, dtype, tokens, prepared)
        token = _current.set(session)
        try:
            with torch.set_grad_enabled(keep_graph):
                output = model(x)
        finally:
            _current.reset(token)
        maps = prepared.family.finish(session, session.maps)
    logits = prediction_tensor(output)
    if not keep_graph:
        logits = logits.detach()
    return CaptureResult(x, logits, maps, session.tokens, session.maps, prepared.family.name, output)


class AttentionCapture:
    """Context-manager form: ``with AttentionCapture(model, (H, W)) as cap: logits = model(x)``; then ``cap.maps``.

    Useful when your own code runs the forward (e.g. a custom training loop). ``input_size`` is the
    (H, W) of the input, needed to lay out the patch grid; ``batch`` its batch size.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int], *, keep_graph: bool = True,
                 dtype: Optional[torch.dtype] = None, batch: int = 1):
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch = batch
        self.keep_graph = keep_graph
        self.dtype = dtype
        self.session: Optional[CaptureSession] = None
        self._stack = contextlib.ExitStack()

    @property
    def maps(self) -> list[AttentionMap]:
        s = self.session
        return s.family.finish(s, s.maps) if s is not None else []

    def __enter__(self) -> "AttentionCapture":
        prepared = self._stack.enter_context(instrumented(self.model))
        hw = self.input_size
        self.session = CaptureSession(self.model, prepared, prepared.tokens_for(self.model, hw), hw, self.batch,
                                      self.dtype, self.keep_graph)
        token = _current.set(self.session)
        self._stack.callback(_current.reset, token)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


__all__ = ["AttentionMap", "CaptureResult", "CaptureSession", "AttentionCapture", "capture", "prepare",
           "record_attention", "current_session", "prediction_tensor", "SELF", "CLASS", "WINDOW", "REDUCED",
           "CHANNEL", "POOLING", "KNOWN", "INFERRED", "UNKNOWN"]
