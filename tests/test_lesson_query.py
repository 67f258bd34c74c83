"""The Learn tab's numbers: one query step by step, many heads, raw vs. rollout.

Every check compares with an independent computation written here: q, k, v from the layer's own
weights and its recorded input, the attention captured by a separate `capture` call, loops for the
distances, the rollout product written out by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from attention.capture import capture
from attention.errors import MethodNotDefinedError
from attention.lesson.heads import query_distance, uniform_distance
from attention.lesson.layers import layer_maps
from attention.lesson.query import entropy_bits, layer_projections, softmax
from attention.methods.raw import raw_attention
from attention.models import load_model


pytestmark = pytest.mark.usefixtures("single_intra_op_thread")


def _x(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _timm(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw).eval()


def _inputs_of(model, module):
    """The positional/keyword inputs `module` receives in one forward of `model` (recorded by the test)."""
    seen = {}

    def hook(mod, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


def _hand_qkv(model, module, x):
    """q, k, v (B, H, N, d) written out from the module's weights (timm qkv Linear or nn.MultiheadAttention)."""
    seen, handle = _inputs_of(model, module)
    with torch.no_grad():
        model(x)
    handle.remove()
    if isinstance(module, nn.MultiheadAttention):
        t = seen["args"][0] if seen["args"] else seen["kwargs"]["query"]
        if not module.batch_first:
            t = t.transpose(0, 1)
        W, b = module.in_proj_weight.double(), module.in_proj_bias.double()
        E, H = module.embed_dim, module.num_heads
        out = []
        for part in range(3):
            y = t.double() @ W[part * E:(part + 1) * E].T + b[part * E:(part + 1) * E]
            out.append(y.reshape(y.shape[0], y.shape[1], H, E // H).transpose(1, 2).detach())
        return out
    t = seen["args"][0].double()
    W = module.qkv.weight.double()
    b = module.qkv.bias.double() if module.qkv.bias is not None else torch.zeros(W.shape[0], dtype=torch.float64)
    y = t @ W.T + b
    B, N, _ = y.shape
    H = module.num_heads
    d = W.shape[0] // (3 * H)
    q, k, v = y.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    return q.detach(), k.detach(), v.detach()


MODELS = {
    "demo-vit": lambda: (load_model("demo-vit").model, (1, 3, 64, 64)),
    "demo-torch-vit": lambda: (load_model("demo-torch-vit").model, (1, 3, 64, 64)),
    "deit_distilled": lambda: (_timm("deit_tiny_distilled_patch16_224", depth=2, img_size=64), (1, 3, 64, 64)),
    "reg4": lambda: (_timm("vit_small_patch14_reg4_dinov2", depth=2, img_size=56), (2, 3, 56, 56)),
}


@pytest.mark.parametrize("which", list(MODELS))
def test_scores_softmax_weights_and_captured_map_agree(which):
    model, shape = MODELS[which]()
    x = _x(shape)
    captured = capture(model, x)                       # an independent forward pass
    layers = [m for m in captured.maps if m.kind == "self"]
    for layer in (0, len(layers) - 1):
        proj = layer_projections(model, x, layer)
        assert proj.attention_error < 1e-5
        assert proj.output_error is not None and proj.output_error < 1e-4   # Σ a v through W_O = the layer's output
        module = model.get_submodule(layers[layer].name)
        q, k, v = _hand_qkv(model, module, x)
        d = q.shape[-1]
        layout = layers[layer].layout
        queries = [0, layout.num_tokens - 1, layout.patch_index(1, 2)]
        for item in range(x.shape[0]):
            for head in range(proj.num_heads):
                for i in queries:
                    step = proj.step(head, i, item)
                    want_scores = (k[item, head] @ q[item, head, i]).numpy()
                    np.testing.assert_allclose(step.scores, want_scores, rtol=1e-5, atol=1e-5)
                    assert step.scale == pytest.approx(1 / math.sqrt(d))
                    shown = softmax(step.scores / math.sqrt(d))          # softmax of the shown scores, T = 1
                    np.testing.assert_allclose(step.weights_at(1.0), shown, atol=1e-12)
                    row = layers[layer].weights[item, head, i].double().numpy()
                    np.testing.assert_allclose(shown, row, atol=1e-5)  # = the captured map
                    np.testing.assert_allclose(step.captured, row, atol=1e-7)
                    want_out = sum(shown[j] * v[item, head, j].numpy() for j in range(len(shown)))
                    np.testing.assert_allclose(step.output, want_out, rtol=1e-5, atol=1e-6)


def test_query_by_name_and_patch_and_errors():
    model = load_model("demo-vit").model
    proj = layer_projections(model, _x((1, 3, 64, 64)), -1)
    assert proj.layer == 3
    assert proj.step(0, "cls").query == 0
    assert proj.step(0, (2, 5)).query == 1 + 2 * 8 + 5
    with pytest.raises(ValueError, match="no 'dist' token"):
        proj.step(0, "dist")
    with pytest.raises(IndexError):
        proj.step(4, "cls")
    with pytest.raises(IndexError):
        proj.step(0, (8, 0))
    with pytest.raises(IndexError):
        layer_projections(model, _x((1, 3, 64, 64)), 4)


def test_temperature_sharpens_and_flattens():
    model = load_model("demo-vit").model
    step = layer_projections(model, _x((1, 3, 64, 64), 3), 2).step(1, (4, 4))
    temps = [0.05, 0.3, 1.0, 2.0, 10.0, 1000.0]
    ent = [entropy_bits(step.weights_at(t)) for t in temps]
    assert all(a < b for a, b in zip(ent, ent[1:])), ent
    top2 = np.sort(step.scores / math.sqrt(step.head_dim))[-2:]
    cold = (top2[1] - top2[0]) / 20                                   # T -> 0: all weight on the top score
    assert step.weights_at(cold).max() > 0.99
    assert int(np.argmax(step.weights_at(cold))) == int(np.argmax(step.scores))
    assert ent[-1] == pytest.approx(math.log2(len(step.scores)), abs=1e-3)   # T -> inf: uniform
    for t in temps:   # the definition, written out
        e = np.exp(step.scores / math.sqrt(step.head_dim) / t - (step.scores / math.sqrt(step.head_dim) / t).max())
        np.testing.assert_allclose(step.weights_at(t), e / e.sum(), atol=1e-12)
    with pytest.raises(ValueError):
        step.weights_at(0.0)


def test_layers_with_extra_terms_are_refused():
    beit = _timm("beit_base_patch16_224", depth=2, embed_dim=64, num_heads=4, img_size=64)
    with torch.no_grad():
        for n, p in beit.named_parameters():
            if n.endswith("relative_position_bias_table"):
                p.normal_(0, 1.0)
    with pytest.raises(MethodNotDefinedError, match="q·k"):
        layer_projections(beit, _x((1, 3, 64, 64)), 0)
    with pytest.raises(MethodNotDefinedError):
        layer_projections(load_model("demo-cnn-selfattn").model, _x((1, 3, 64, 64)), 0)


def test_query_distance_and_uniform_distance_by_hand():
    model = load_model("demo-vit").model
    r = capture(model, _x((1, 3, 64, 64), 5))
    m = r.maps[1]
    gh, gw = m.layout.grid
    s = m.layout.stride[0]
    got = query_distance(m, (2, 6))
    i = m.layout.patch_index(2, 6)
    for h in range(m.num_heads):
        a = m.weights[0, h, i, 1:].double().numpy()
        a = a / a.sum()
        want = 0.0
        for j in range(gh * gw):
            rj, cj = divmod(j, gw)
            want += a[j] * math.hypot((rj - 2) * s, (cj - 6) * s)
        assert got[h] == pytest.approx(want, rel=1e-9)
    total, n = 0.0, 0
    for a in range(gh * gw):
        for b in range(gh * gw):
            (ra, ca), (rb, cb) = divmod(a, gw), divmod(b, gw)
            total += math.hypot((ra - rb) * s, (ca - cb) * s)
            n += 1
    assert uniform_distance(m.layout) == pytest.approx(total / n)
    assert np.isnan(query_distance(m, "cls")).all()


def test_raw_vs_rollout_rows():
    model = load_model("demo-vit").model
    r = capture(model, _x((1, 3, 64, 64), 7))
    lm = layer_maps(r)
    N = r.maps[0].weights.shape[-1]
    R_with, R_without = np.eye(N), np.eye(N)
    for k, m in enumerate(r.maps):
        A = m.weights[0].double().numpy().mean(0)
        np.testing.assert_allclose(lm.raw[k], A[0, 1:].reshape(8, 8), atol=1e-6)
        a = A + np.eye(N)
        R_with = (a / a.sum(1, keepdims=True)) @ R_with
        R_without = (A / A.sum(1, keepdims=True)) @ R_without
        np.testing.assert_allclose(lm.rollout[k], R_with[0, 1:].reshape(8, 8), atol=1e-6)
        np.testing.assert_allclose(lm.rollout_no_identity[k], R_without[0, 1:].reshape(8, 8), atol=1e-6)
    np.testing.assert_allclose(lm.rollout_no_identity[0], lm.raw[0], atol=1e-6)   # one layer, no residual: raw
    np.testing.assert_allclose(lm.raw[2], raw_attention(r, 2)[0].numpy(), atol=1e-6)
