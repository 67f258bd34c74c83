"""AttnLRP and transformer attribution against the paper's conservation law and against lxt's own
explicit (relevance-form) rules, on small models with random weights in float64."""
from __future__ import annotations

import lxt.explicit.functional as lf
import lxt.explicit.rules as lr
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from attention.capture import capture
from attention.demo.models import TorchViT
from attention.methods import compute_map, get_method
from attention.methods.attnlrp import attention_modules, attnlrp, input_relevance
from attention.methods.grad_rollout import attention_gradients
from attention.methods.lrp_rules import lrp_rules
from attention.methods.transformer_attribution import relevance_weighted_layers

pytestmark = pytest.mark.usefixtures("single_intra_op_thread")

ADDITIVE = ("bias", "pos_embed", "cls_token", "dist_token", "reg_token")


def _randomise_biases(model):
    # timm and torch start biases at zero; the conservation law must account for real ones
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or n.endswith("_token") or n.endswith("pos_embed"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def vit():
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, depth=2,
                          embed_dim=24, num_heads=2)
    return _randomise_biases(m).double().eval()


def deit():
    torch.manual_seed(1)
    m = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=5, img_size=32, depth=2,
                          embed_dim=24, num_heads=2)
    return _randomise_biases(m).double().eval()


def torch_vit():
    torch.manual_seed(2)
    m = TorchViT(img_size=32, patch_size=8, dim=24, depth=2, heads=2, mlp_dim=48, dropout=0.0)
    return _randomise_biases(m).double().eval()


def _x(size=32, seed=3):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def conservation_terms(model, x, target):
    """(Σ R_x, Σ bias relevance, ½ Σ softmax bias, y_c), all from one backward with the rules in place.

    Softmax bias of one row (Prop. 3.1, R_x = x ⊙ (R_s − s Σ R_s) with x = log s + const):
    ``Σ_j s_j g_j − Σ_j s_j log s_j (g_j − Σ_k s_k g_k)``, g the modified gradient at s.
    """
    mods = attention_modules(model, capture(model, x))
    params = [p for n, p in model.named_parameters() if n.endswith(ADDITIVE)]
    with lrp_rules(model, mods), torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        r = capture(model, xg, keep_graph=True)
        y = r.logits[0, target]
        gx, *gp = torch.autograd.grad(y, [xg] + params, retain_graph=True)
        ga = attention_gradients(r, r.maps, target)
    rel_x = float((x * gx).sum())
    rel_b = float(sum((p.detach() * g).sum() for p, g in zip(params, gp)))
    soft = 0.0
    for m, g in zip(r.maps, ga):
        s, g = m.weights.detach(), g.detach()
        gbar = (s * g).sum(-1, keepdim=True)
        soft += float((s * g).sum() - (s * torch.log(s) * (g - gbar)).sum())
    return rel_x, rel_b, 0.5 * soft, float(y.detach())


@pytest.mark.parametrize("build", [vit, deit, torch_vit], ids=["timm-vit", "timm-deit-distilled", "nn-transformer"])
def test_conservation_input_relevance_is_the_logit_minus_bias_relevance(build):
    model, x = build(), _x()
    for target in (0, 3):
        rel_x, rel_b, soft, y = conservation_terms(model, x, target)
        assert rel_x + rel_b + soft == pytest.approx(y, rel=1e-7, abs=1e-9)
        assert abs(rel_x) > 1e-5 and abs(rel_b) > 1e-5 and abs(soft) > 1e-5    # every term is really there
        # the method's map is exactly this input relevance, summed per patch
        heat = compute_map("attnlrp", capture(model, x), model=model, target=target).maps
        assert float(heat.sum()) == pytest.approx(rel_x, rel=1e-7)


def test_rules_are_not_the_plain_gradient_and_leave_the_model_untouched():
    model, x = vit(), _x()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    fwd = {type(m).__name__: m.forward for m in model.modules()}
    model.train()
    rel, logits = input_relevance(model, x, 2)
    xg = x.clone().requires_grad_(True)
    model.eval()
    plain, = torch.autograd.grad(model(xg)[0, 2], xg)
    assert not torch.allclose(rel, x * plain, rtol=1e-3)
    torch.testing.assert_close(logits, model(x).detach())       # the forward values are unchanged
    model.train()
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert {type(m).__name__: m.forward for m in model.modules()}.keys() == fwd.keys()


def _ln(t, norm):
    # lf.layer_norm with its relevance stabiliser at 1e-15 (the public function fixes it at 1e-6)
    return lf.layer_norm_grad_fn.apply(t, norm.weight, norm.bias, norm.eps, 1e-15)


def explicit_vit_relevance(model, x, target):
    """timm ViT forward written out with lxt.explicit's relevance rules; relevance per patch."""
    B, C, H, W = x.shape
    pe = model.patch_embed.proj
    p = pe.kernel_size[0]
    patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)
    patches = patches.clone().requires_grad_(True)
    t = lf.linear_epsilon(patches, pe.weight.reshape(pe.weight.shape[0], -1), pe.bias, epsilon=1e-12)
    t = torch.cat([model.cls_token.expand(B, -1, -1), t], 1)
    t = lf.add2(t, model.pos_embed.expand(B, -1, -1), epsilon=1e-12)
    for blk in model.blocks:
        at = blk.attn
        Nt, D = t.shape[1], t.shape[2]
        hd = D // at.num_heads
        h = _ln(t, blk.norm1)
        w, b = at.qkv.weight.clone(), at.qkv.bias.clone()
        w[:D] *= at.scale      # q · scale folded into the projection (a constant factor is no LRP step)
        b[:D] *= at.scale
        qkv = lf.linear_epsilon(h, w, b, epsilon=1e-12).reshape(B, Nt, 3, at.num_heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = lf.softmax(lf.matmul(q, k.transpose(-2, -1), epsilon=1e-12), -1)
        o = lf.matmul(a, v, epsilon=1e-12).transpose(1, 2).reshape(B, Nt, D)
        t = lf.add2(t, lf.linear_epsilon(o, at.proj.weight, at.proj.bias, epsilon=1e-12), epsilon=1e-12)
        h = _ln(t, blk.norm2)
        mlp = lf.linear_epsilon(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias, epsilon=1e-12)
        mlp = lr.identity(F.gelu, mlp)
        mlp = lf.linear_epsilon(mlp, blk.mlp.fc2.weight, blk.mlp.fc2.bias, epsilon=1e-12)
        t = lf.add2(t, mlp, epsilon=1e-12)
    t = _ln(t, model.norm)
    logits = lf.linear_epsilon(t[:, 0], model.head.weight, model.head.bias, epsilon=1e-12)
    y = logits[0, target]
    y.backward(y.detach())         # lxt's seed: the relevance at the output is the logit itself
    gh, gw = H // p, W // p
    return patches.grad.sum(-1).reshape(B, gh, gw), logits.detach()


def test_attnlrp_equals_lxt_explicit_rules_written_out():
    model, x = vit(), _x()
    torch.testing.assert_close(explicit_vit_relevance(model, x, 0)[1], model(x).detach())   # the same forward
    for target in (0, 4):
        want, _ = explicit_vit_relevance(model, x, target)
        got = attnlrp(model, x, target)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_transformer_attribution_matches_chefer_formula():
    """Ā = mean_h((∇A ⊙ R_A)⁺) with ∇A the plain gradient and R_A lxt's explicit relevance at A;
    R = I, R ← R + Ā R; CLS row over the patches."""
    model, x = vit(), _x()
    target = 1
    # the plain gradient at every attention map, from the model's own forward
    r = capture(model, x, keep_graph=True)
    grads = [g.detach() for g in attention_gradients(r, r.maps, target)]
    # lxt's explicit relevance at every attention map
    rel_a = []

    def keep(t):
        t.retain_grad()
        rel_a.append(t)
        return t
    orig = lf.softmax
    lf.softmax = lambda *a, **k: keep(orig(*a, **k))
    try:
        explicit_vit_relevance(model, x, target)
    finally:
        lf.softmax = orig
    N = grads[0].shape[-1]
    R = np.eye(N)
    for g, a in zip(grads, rel_a):
        abar = np.maximum(g[0].numpy() * a.grad[0].numpy(), 0).mean(0)
        R = R + abar @ R
    want = R[0, 1:].reshape(2, 2)
    got = compute_map("transformer_attribution", capture(model, x), model=model, target=target).maps[0]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=0)      # the map is float32
    mats = relevance_weighted_layers(model, x, target)
    assert len(mats) == 2 and all((m >= 0).all() for m in mats)


def test_attnlrp_on_conv_self_attention_and_refused_for_pooling():
    from attention.models import load_model
    lm = load_model("demo-cnn-selfattn")
    x = torch.rand(1, 3, 64, 64)
    r = capture(lm.model, x)
    heat = compute_map("attnlrp", r, model=lm.model).maps
    rel, _ = input_relevance(lm.model, x, r.logits.argmax(-1), attention_modules(lm.model, r))
    assert heat.shape == (1, 8, 8)
    torch.testing.assert_close(heat.sum(), rel.sum(), rtol=1e-5, atol=1e-6)
    pool = load_model("demo-cnn-attnpool")
    why = get_method("attnlrp").defined_for(capture(pool.model, x))
    assert why and "pooling" in why
