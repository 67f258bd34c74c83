"""AttnLRP's propagation rules (Achtibat et al., ICML 2024) applied to a model for one forward, via `lxt`.

AttnLRP in its Gradient x Input form (the authors' ``lxt.efficient``): with the rules below in place,
one ordinary backward of the explained logit ``y_c`` gives modified gradients ``g̃`` and the
relevance of any tensor ``t`` is ``R_t = t ⊙ g̃_t``. The rules, all from `lxt.efficient.rules`:

* LayerNorm: the identity rule on ``1/σ`` (Prop. 3.4): ``y = (x - μ) / stop_gradient(σ) · w + b``,
  so the layer is linear in ``x`` (lxt's ``layer_norm_forward``).
* Element-wise non-linearities (GELU, SiLU, tanh, sigmoid, …): the identity rule (Eq. 9),
  ``identity_rule_implicit``: ``g̃_in = f(x)/x · g̃_out``, so ``R_in = R_out``.
* Attention ``softmax(q kᵀ) v``: the uniform rule on the two products (Eq. 7, ``divide_gradient``):
  the gradients reaching q and k are divided by 4, the one reaching v by 2 (lxt's
  ``wrap_attention_forward``); the softmax keeps its true gradient, which in the Gradient x Input
  form is exactly the paper's softmax rule (Prop. 3.1), ``R_x = x ⊙ (R_s − s Σ R_s)``.
* Linear layers, convolutions, additions and eval-mode BatchNorm: plain Gradient x Input (the
  epsilon rule with ε → 0); biases absorb their share ``b ⊙ g̃_b``.

Attention modules recognised: timm's ``Attention`` / ``WindowAttention`` (a fused ``qkv`` linear;
a forward hook splits its output), ``nn.MultiheadAttention`` (its forward restated for the duration,
with the rule after the in-projection; ``nn.TransformerEncoder``, torchvision's ViT) and modules with
``query`` / ``key`` / ``value`` (or ``q_proj`` / ``k_proj`` / ``v_proj``) sub-modules (SAGAN
self-attention). A captured attention layer of any other module type is refused with its name.

Why not ``lxt.efficient.monkey_patch``: it replaces the ``forward`` of whole classes (every
``nn.LayerNorm`` in the process, for every thread), and lxt 2.1's ``lxt.efficient`` package imports
its Hugging Face LLM patches, which need transformers < 5. The rule functions are taken from the
installed ``lxt/efficient/rules.py`` (loaded by path, torch-only) and applied per instance, for the
duration of one `lrp_rules` block only.

While the rules are in place the forward *values* are unchanged (σ detached, identity-rule
activations, gradient-only divisions, the restated attention), so another thread's plain forward on
the same model is unaffected; another thread's *gradients* on that model would see the rules, which
is why the app runs every gradient method of one model under one lock (`MethodContext.grad_lock`),
and `model_lock` keeps two rule blocks on one model apart.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MethodNotDefinedError

ACTIVATIONS = ("GELU", "SiLU", "Tanh", "Sigmoid", "ELU", "Mish", "Hardswish", "QuickGELU", "GELUTanh", "Softplus")
_rules = None
_rules_lock = threading.Lock()
_model_locks: dict[int, threading.Lock] = {}


def lxt_rules():
    """lxt's rule module (``divide_gradient``, ``identity_rule_implicit``, ``stop_gradient``)."""
    global _rules
    with _rules_lock:
        if _rules is None:
            spec = importlib.util.find_spec("lxt")
            if spec is None or not spec.submodule_search_locations:
                raise MethodNotDefinedError("AttnLRP needs the lxt package: pip install --no-deps lxt")
            path = os.path.join(list(spec.submodule_search_locations)[0], "efficient", "rules.py")
            if not os.path.exists(path):
                raise MethodNotDefinedError(f"this lxt version has no efficient/rules.py ({path})")
            mod_spec = importlib.util.spec_from_file_location("attention.methods._lxt_efficient_rules", path)
            mod = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(mod)
            _rules = mod
        return _rules


def _layer_norm_forward(self, x):
    """lxt's ``layer_norm_forward``: the identity rule on 1/σ (σ detached)."""
    r = lxt_rules()
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (x - mean) / r.stop_gradient((var + self.eps).sqrt())
    if self.weight is not None:
        y = y * self.weight
    if self.bias is not None:
        y = y + self.bias
    return y


def _mha_forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                 average_attn_weights=True, is_causal=False):
    """``nn.MultiheadAttention.forward`` restated with the uniform rule on q, k, v *after* the
    in-projection (torch's forward has no seam there; dividing the gradient at its inputs instead would
    leave the in-projection biases 4x / 2x too much relevance: the conservation test catches it)."""
    r = lxt_rules()
    if key_padding_mask is not None or attn_mask is not None or self.bias_k is not None \
            or not self._qkv_same_embed_dim or self.in_proj_weight is None:
        raise MethodNotDefinedError("AttnLRP: nn.MultiheadAttention with masks, add_bias_kv or separate "
                                    "key/value sizes is not supported")
    if not self.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    B, L, E = query.shape
    S = key.shape[1]
    w_q, w_k, w_v = self.in_proj_weight.chunk(3)
    b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
    h = self.num_heads
    hd = E // h
    q = r.divide_gradient(F.linear(query, w_q, b_q), 4).view(B, L, h, hd).transpose(1, 2)
    k = r.divide_gradient(F.linear(key, w_k, b_k), 4).view(B, S, h, hd).transpose(1, 2)
    v = r.divide_gradient(F.linear(value, w_v, b_v), 2).view(B, S, h, hd).transpose(1, 2)
    p = self.dropout if self.training else 0.0
    weights = None
    if need_weights:
        a = F.softmax((q * hd ** -0.5) @ k.transpose(-2, -1), dim=-1)
        o = F.dropout(a, p, self.training) @ v
        weights = a.mean(dim=1) if average_attn_weights else a
    else:
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=is_causal)
    o = self.out_proj(o.transpose(1, 2).reshape(B, L, E))
    if not self.batch_first:
        o = o.transpose(0, 1)
    return o, weights


def attention_rule_target(module: nn.Module) -> Optional[str]:
    """How the attention rule is attached to `module`: "qkv", "mha", "separate", or None (not recognised)."""
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(getattr(module, "qkv", None), nn.Linear):
        return "qkv"
    for names in (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q", "k", "v")):
        if all(isinstance(getattr(module, n, None), nn.Module) for n in names):
            return "separate"
    return None


def _separate_names(module):
    for names in (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q", "k", "v")):
        if all(isinstance(getattr(module, n, None), nn.Module) for n in names):
            return names
    raise AssertionError


def check_covered(model: nn.Module, layer_names) -> None:
    """MethodNotDefinedError naming the first captured attention layer AttnLRP has no rule for."""
    modules = dict(model.named_modules())
    for name in layer_names:
        mod = modules.get(name)
        if mod is None or attention_rule_target(mod) is None:
            kind = type(mod).__name__ if mod is not None else "unknown module"
            raise MethodNotDefinedError(
                f"AttnLRP has no rule for the attention layer {name} ({kind}): its queries, keys and values are "
                f"not separate projections the rules can reach")


def model_lock(model: nn.Module) -> threading.Lock:
    """One rules block at a time per model (the rules change the model's instances while active)."""
    with _rules_lock:
        return _model_locks.setdefault(id(model), threading.Lock())


@contextmanager
def lrp_rules(model: nn.Module, attention_modules=None) -> Iterator[nn.Module]:
    """Apply AttnLRP's rules to `model` (see the module docstring) and remove them on exit.

    ``attention_modules``: the modules to treat as attention (default: every module
    `attention_rule_target` recognises). Callers hold `model_lock(model)`.
    """
    r = lxt_rules()
    undo = []

    def set_attr(obj, name, value):
        had = name in obj.__dict__
        old = obj.__dict__.get(name)
        setattr(obj, name, value)
        undo.append(lambda: setattr(obj, name, old) if had else delattr(obj, name))

    def hook(h):
        undo.append(h.remove)

    for mod in model.modules():
        if isinstance(mod, nn.LayerNorm):
            set_attr(mod, "forward", _layer_norm_forward.__get__(mod))
        elif type(mod).__name__ in ACTIVATIONS:
            orig = mod.forward
            set_attr(mod, "forward", lambda x, f=orig: r.identity_rule_implicit(f, x))
        if isinstance(mod, nn.TransformerEncoderLayer) and callable(mod.activation) \
                and not isinstance(mod.activation, nn.Module):
            set_attr(mod, "activation", lambda x, f=mod.activation: r.identity_rule_implicit(f, x))
            if hasattr(mod, "activation_relu_or_gelu"):
                set_attr(mod, "activation_relu_or_gelu", 0)
    mods = attention_modules if attention_modules is not None else \
        [m for m in model.modules() if attention_rule_target(m) is not None]
    for mod in mods:
        how = attention_rule_target(mod)
        if how == "mha":
            set_attr(mod, "forward", _mha_forward.__get__(mod))
        elif how == "qkv":
            def split(m, inp, out):
                q, k, v = out.chunk(3, dim=-1)
                return torch.cat([r.divide_gradient(q, 4), r.divide_gradient(k, 4), r.divide_gradient(v, 2)], -1)
            hook(mod.qkv.register_forward_hook(split))
        elif how == "separate":
            for n, f in zip(_separate_names(mod), (4, 4, 2)):
                hook(getattr(mod, n).register_forward_hook(lambda m, i, o, f=f: r.divide_gradient(o, f)))
    try:
        yield model
    finally:
        for u in reversed(undo):
            u()


__all__ = ["lrp_rules", "lxt_rules", "check_covered", "attention_rule_target", "model_lock", "ACTIVATIONS"]
