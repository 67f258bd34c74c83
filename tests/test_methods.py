"""Methods against independent, plainly written implementations (loops, numpy) on real timm models
with random weights at small input sizes."""
from __future__ import annotations

import types

import numpy as np
import pytest
import timm
import torch
from torch import nn

from attention.capture import capture, record_attention
from attention.errors import MethodNotDefinedError
from attention.export import method_arrays
from attention.methods import compute_map, get_method
from attention.methods.grad_rollout import grad_rollout, grad_rollout_from
from attention.methods.gradcam import gradcam
from attention.methods.raw import raw_attention, raw_cls_maps
from attention.methods.rollout import discard_smallest, rollout, rollout_tokens



pytestmark = pytest.mark.usefixtures("single_intra_op_thread")


def _make(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=7, **kw).eval()


@pytest.fixture(scope="module")
def vit():
    return _make("vit_tiny_patch16_224", img_size=48, depth=4)  # 3x3 patches + CLS


@pytest.fixture(scope="module")
def deit():
    return _make("deit_tiny_distilled_patch16_224", img_size=48, depth=3)  # CLS + DIST


@pytest.fixture(scope="module")
def reg():
    return _make("vit_small_patch14_reg4_dinov2", img_size=42, depth=2, embed_dim=48, num_heads=2)  # CLS + 4 regs


@pytest.fixture(scope="module")
def swin():
    # 96 px: stage grids 24, 12, 6, 3 with 7x7 windows: padding (24 -> 28) and shifted windows
    return _make("swin_tiny_patch4_window7_224", img_size=96, embed_dim=24, num_heads=(1, 2, 3, 4), depths=(2, 2, 2, 2))


@pytest.fixture(scope="module")
def cait():
    return _make("cait_xxs24_224", img_size=48, depth=2, init_values=0.5)


def _x(size, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g)


# ----------------------------------------------------------------------------- references

def ref_fuse(A, how):
    """A (heads, N, M) numpy -> (N, M), element by element."""
    H, N, M = A.shape
    out = np.zeros((N, M))
    f = {"mean": np.mean, "max": np.max, "min": np.min}[how]
    for i in range(N):
        for j in range(M):
            out[i, j] = f([A[h, i, j] for h in range(H)])
    return out


def ref_discard(a, ratio, cls):
    a = a.copy()
    vals = sorted(a[i, j] for i in range(a.shape[0]) if i != cls for j in range(a.shape[1]))
    k = int(ratio * len(vals))
    if k:
        thr = vals[k - 1]
        for i in range(a.shape[0]):
            if i == cls:
                continue
            for j in range(a.shape[1]):
                if a[i, j] <= thr:
                    a[i, j] = 0.0
    return a


def ref_normalise_rows(a):
    a = a.copy()
    for i in range(a.shape[0]):
        a[i] = a[i] / a[i].sum()
    return a


def ref_rollout(weights, fusion="mean", ratio=0.0, start=0, num_prefix=1, cls=0, identity=True):
    """weights: list of (heads, N, N) numpy arrays for one image; R = a_L ... a_s, CLS row over patches."""
    N = weights[0].shape[-1]
    R = np.eye(N)
    for A in weights[start:]:
        a = ref_fuse(A, fusion)
        if ratio:
            a = ref_discard(a, ratio, cls)
        a = ref_normalise_rows(a + np.eye(N) if identity else a)
        R = a @ R
    if cls is None:
        return R[num_prefix:, num_prefix:].mean(axis=0)
    return R[cls, num_prefix:]


def ref_chefer(attns, grads, num_prefix=1):
    """R = I; R <- R + mean_h((dy/dA * A)^+) R per layer; CLS row over patches (one image)."""
    N = attns[0].shape[-1]
    R = np.eye(N)
    for A, G in zip(attns, grads):
        H = A.shape[0]
        abar = np.zeros((N, N))
        for h in range(H):
            abar += np.maximum(G[h] * A[h], 0.0)
        abar /= H
        R = R + abar @ R
    return R[0, num_prefix:]


def manual_vit(model, x):
    """timm ViT forward written out, attention computed by hand with retain_grad on every map."""
    t = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    attns = []
    for blk in model.blocks:
        y = blk.norm1(t)
        B, N, C = y.shape
        at = blk.attn
        qkv = at.qkv(y).reshape(B, N, 3, at.num_heads, C // at.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = at.q_norm(q), at.k_norm(k)
        a = ((q * at.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        a.retain_grad()
        attns.append(a)
        o = at.proj(at.norm((a @ v).transpose(1, 2).reshape(B, N, C)))
        t = t + blk.ls1(o)
        t = t + blk.ls2(blk.mlp(blk.norm2(t)))
    return model.forward_head(model.norm(t)), attns


# ----------------------------------------------------------------------------- rollout

@pytest.mark.parametrize("fusion,ratio,start", [("mean", 0.0, 0), ("max", 0.0, 0), ("min", 0.0, 1),
                                                ("mean", 0.5, 0), ("max", 0.9, 1)])
def test_rollout_matches_hand_written_formula(vit, fusion, ratio, start):
    r = capture(vit, _x(48))
    got = rollout(r, head_fusion=fusion, discard_ratio=ratio, start_layer=start)
    assert got.shape == (2, 3, 3)
    for b in range(2):
        ws = [m.weights[b].double().numpy() for m in r.maps]
        want = ref_rollout(ws, fusion, ratio, start).reshape(3, 3)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("end,identity", [(0, True), (1, True), (-1, False), (0, False)])
def test_rollout_up_to_a_layer_with_and_without_identity(vit, end, identity):
    r = capture(vit, _x(48))
    got = rollout(r, end_layer=end, add_identity=identity)
    n = len(r.maps)
    for b in range(2):
        ws = [m.weights[b].double().numpy() for m in r.maps][: (end % n) + 1]
        want = ref_rollout(ws, identity=identity).reshape(3, 3)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-4, atol=1e-6)
    if end == 0 and not identity:   # one layer, no residual: exactly the raw CLS row of layer 0
        raw = r.maps[0].weights[:, :, 0, 1:].mean(1).reshape(2, 3, 3)
        np.testing.assert_allclose(got.numpy(), raw.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="end_layer"):
        rollout(r, end_layer=n)


@pytest.mark.parametrize("start,end", [(1, 2), (0, 1), (2, 2), (1, -1), (-3, -2)])
def test_rollout_layer_range_is_the_product_written_out(vit, start, end):
    """R = ã_e · … · ã_s with ã = rownorm(mean_h A + I), written as explicit loops; through compute_map."""
    r = capture(vit, _x(48))
    out = compute_map("rollout", r, start_layer=start, end_layer=end)
    n = len(r.maps)
    s, e = start % n, end % n
    assert out.details["start_layer"] == s and out.details["end_layer"] == e
    for b in range(2):
        N = r.maps[0].weights.shape[-1]
        R = np.eye(N)
        for layer in range(s, e + 1):
            A = r.maps[layer].weights[b].double().numpy()
            a = np.zeros((N, N))
            for i in range(N):
                for j in range(N):
                    a[i, j] = sum(A[h, i, j] for h in range(A.shape[0])) / A.shape[0] + (i == j)
                a[i] /= a[i].sum()
            R = a @ R
        np.testing.assert_allclose(out.maps[b].numpy(), R[0, 1:].reshape(3, 3), rtol=1e-4, atol=1e-6)
    # the same range for the gradient-weighted rollout: R = Π (I + Ā_l) over the range only (Chefer's formula)
    got = compute_map("grad_rollout", r, model=vit, target=[1, 1], start_layer=start, end_layer=end).maps
    logits, attns = manual_vit(vit, _x(48))
    logits[:, 1].sum().backward()
    for b in range(2):
        want = ref_chefer([a[b].detach().double().numpy() for a in attns][s:e + 1],
                          [a.grad[b].double().numpy() for a in attns][s:e + 1])
        np.testing.assert_allclose(got[b].flatten().numpy(), want, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_rows_sum_to_one(deit, fusion):
    r = capture(deit, _x(48))
    for q in ["cls", "dist", "cls+dist", "prefix_mean", "patch_mean", (0, 0), (2, 1)]:
        v, full = rollout_tokens(r, head_fusion=fusion, discard_ratio=0.7, query=q)
        assert v.shape == (2, full.num_tokens)
        torch.testing.assert_close(v.sum(-1), torch.ones(2), atol=1e-5, rtol=0)
        assert (v >= 0).all()


def test_discard_never_touches_cls_row():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 10, 10, generator=g)
    before = a.clone()
    discard_smallest(a, 0.9, keep_rows=[0])
    torch.testing.assert_close(a[:, 0], before[:, 0])
    # 90% of the 90 other entries are zeroed, the rest unchanged
    assert ((a[:, 1:] == 0).sum(dim=(1, 2)) == 81).all()
    kept = a[:, 1:] != 0
    torch.testing.assert_close(a[:, 1:][kept], before[:, 1:][kept])
    # the CLS row survives even when its entries are the smallest of all
    b = torch.rand(1, 5, 5, generator=g) + 1.0
    b[0, 0] = 0.001
    discard_smallest(b, 0.5, keep_rows=[0])
    assert (b[0, 0] == 0.001).all()


def test_rollout_without_cls_uses_mean_over_patch_queries(cait):
    # CaiT's self-attention layers alone: no CLS token in their layout
    r = capture(cait, _x(48))
    sa = [m for m in r.maps if m.kind == "self"]
    r_sa = types.SimpleNamespace(maps=sa)
    got = rollout(r_sa)
    for b in range(2):
        want = ref_rollout([m.weights[b].double().numpy() for m in sa], num_prefix=0, cls=None)
        np.testing.assert_allclose(got[b].flatten().numpy(), want, rtol=1e-4, atol=1e-7)


def test_cait_rollout_in_joint_token_space(cait):
    """Self-attention on the patch rows, class attention on the CLS row, written as full matrices."""
    r = capture(cait, _x(48))
    got = rollout(r)
    n = 9
    for b in range(2):
        R = np.eye(n + 1)
        for m in r.maps:
            a = ref_fuse(m.weights[b].double().numpy(), "mean")
            M = np.eye(n + 1)
            if m.kind == "self":            # (n, n) over the patches
                M[1:, 1:] = ref_normalise_rows(a + np.eye(n))
            else:                           # (1, n + 1): the CLS row over [cls, patches]
                row = a[0].copy()
                row[0] += 1.0
                M[0] = row / row.sum()
            R = M @ R
        np.testing.assert_allclose(got[b].flatten().numpy(), R[0, 1:], rtol=1e-4, atol=1e-7)


def test_rollout_query_dist_and_start_layer(deit):
    r = capture(deit, _x(48))
    for b in range(2):
        ws = [m.weights[b].double().numpy() for m in r.maps]
        want = ref_rollout(ws, "mean", 0.0, 1, num_prefix=2, cls=1).reshape(3, 3)
        np.testing.assert_allclose(rollout(r, query="dist", start_layer=1)[b].numpy(), want, rtol=1e-4, atol=1e-7)


def test_rollout_not_defined(swin):
    r = capture(swin, _x(96, 1))
    with pytest.raises(MethodNotDefinedError, match="Swin"):
        rollout(r)
    with pytest.raises(MethodNotDefinedError):
        grad_rollout(swin, _x(96, 1))
    with pytest.raises(MethodNotDefinedError, match="CLS"):
        raw_cls_maps(r)
    with pytest.raises(MethodNotDefinedError):
        raw_attention(r, 0, query="cls")


class _OneAttentionCNN(nn.Module):
    """A CNN with one SAGAN-style self-attention block (recording its weights itself)."""

    records_attention = True

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.q, self.k = nn.Conv2d(8, 2, 1), nn.Conv2d(8, 2, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        f = self.conv(x)
        B, C, h, w = f.shape
        a = torch.softmax(self.q(f).flatten(2).transpose(1, 2) @ self.k(f).flatten(2), dim=-1)
        record_attention(self, a.unsqueeze(1), grid=(h, w), stride=(4.0, 4.0))
        out = (a @ f.flatten(2).transpose(1, 2)).mean(1)
        return self.fc(out)


def test_rollout_needs_a_stack():
    model = _OneAttentionCNN().eval()
    r = capture(model, _x(32))
    with pytest.raises(MethodNotDefinedError, match="at least two"):
        rollout(r)
    with pytest.raises(MethodNotDefinedError, match="CLS"):
        raw_cls_maps(r)
    # the patch view still works
    torch.testing.assert_close(raw_attention(r, 0, 0, (1, 2)), r.maps[0].weights[:, 0, 1 * 8 + 2].view(2, 8, 8))


# ----------------------------------------------------------------------------- gradient-weighted attention

@pytest.mark.parametrize("which", ["vit", "deit"])
def test_grad_rollout_matches_formula_with_independent_gradients(which, request):
    model = request.getfixturevalue(which)
    x = _x(48)
    targets = [3, 5]
    logits, attns = manual_vit(model, x)
    torch.testing.assert_close(logits, capture(model, x).logits, atol=1e-5, rtol=1e-5)
    logits[0, targets[0]].backward(retain_graph=True)   # item 0, its class
    g0 = [a.grad[0].clone() for a in attns]
    for a in attns:
        a.grad = None
    logits[1, targets[1]].backward()                     # item 1, another class
    g1 = [a.grad[1].clone() for a in attns]
    p = model.num_prefix_tokens
    got = grad_rollout(model, x, target=targets)
    for b, gs in ((0, g0), (1, g1)):
        want = ref_chefer([a[b].detach().double().numpy() for a in attns], [g.double().numpy() for g in gs], p)
        np.testing.assert_allclose(got[b].flatten().numpy(), want, rtol=1e-4, atol=1e-8)


def test_grad_rollout_is_class_specific_and_top1_default(vit):
    x = _x(48)
    a, b = grad_rollout(vit, x, target=0), grad_rollout(vit, x, target=1)
    assert not torch.allclose(a, b)
    top1 = capture(vit, x).logits.argmax(-1)
    torch.testing.assert_close(grad_rollout(vit, x), grad_rollout(vit, x, target=top1))
    # from an existing capture with the graph kept: same result
    r = capture(vit, x, keep_graph=True)
    torch.testing.assert_close(grad_rollout_from(r, 1), b)


def test_grad_rollout_cait_runs(cait):
    out = grad_rollout(cait, _x(48))
    assert out.shape == (2, 3, 3) and torch.isfinite(out).all() and (out >= 0).all()


# ----------------------------------------------------------------------------- raw attention

def test_raw_views_match_captured_tensors(deit, reg):
    r = capture(deit, _x(48))
    w = r.maps[1].weights
    torch.testing.assert_close(raw_attention(r, 1, 2, "cls"), w[:, 2, 0, 2:].reshape(2, 3, 3))
    torch.testing.assert_close(raw_attention(r, 1, 0, "dist"), w[:, 0, 1, 2:].reshape(2, 3, 3))
    torch.testing.assert_close(raw_attention(r, 1, "mean", "cls"), w[:, :, 0, 2:].mean(1).reshape(2, 3, 3))
    torch.testing.assert_close(raw_attention(r, 1, "max", "cls"), w[:, :, 0, 2:].amax(1).reshape(2, 3, 3))
    torch.testing.assert_close(raw_attention(r, 1, "min", (2, 1)), w[:, :, 2 + 2 * 3 + 1, 2:].amin(1).reshape(2, 3, 3))
    torch.testing.assert_close(raw_attention(r, 1, 1, "prefix_mean"), w[:, 1, :2, 2:].mean(1).reshape(2, 3, 3))
    torch.testing.assert_close(raw_attention(r, "blocks.2.attn", 0), r.maps[2].weights[:, 0, 0, 2:].reshape(2, 3, 3))
    maps = raw_cls_maps(r)
    assert maps.shape == (2, 3, 3, 3, 3)
    for layer in range(3):
        for h in range(3):
            torch.testing.assert_close(maps[:, layer, h], r.maps[layer].weights[:, h, 0, 2:].reshape(2, 3, 3))

    r = capture(reg, _x(42))
    w = r.maps[0].weights
    for i in range(4):
        torch.testing.assert_close(raw_attention(r, 0, 1, f"reg{i}"), w[:, 1, 1 + i, 5:].reshape(2, 3, 3))
    with pytest.raises(MethodNotDefinedError, match="dist"):
        raw_attention(r, 0, 0, "dist")


def test_swin_patch_view_against_window_tensor(swin):
    r = capture(swin, _x(96))
    H = W = 24
    ws, nWw, nW = 7, 28 // 7, 16
    for layer, shift in ((0, 0), (1, 3)):
        m = r.maps[layer]
        assert m.window.shift == (shift, shift)
        for (row, col) in [(5, 5), (0, 23), (23, 0), (13, 20)]:
            got = raw_attention(r, layer, 0, (row, col))
            assert got.shape == (2, H, W)
            sy, sx = (row - shift) % H, (col - shift) % W            # position on the rolled grid
            w, p = (sy // ws) * nWw + sx // ws, (sy % ws) * ws + sx % ws
            want = torch.zeros(2, H, W)
            for b in range(2):
                for q in range(ws * ws):
                    qy, qx = (sy // ws) * ws + q // ws, (sx // ws) * ws + q % ws
                    if qy < H and qx < W:                            # else a padding token
                        want[b, (qy + shift) % H, (qx + shift) % W] = m.weights[b * nW + w, 0, p, q]
            torch.testing.assert_close(got, want)
        # an interior query of the shifted layer sees exactly its 7x7 shifted window, and its row sums to 1
        view = raw_attention(r, 1, 0, (5, 5))
        support = torch.zeros(H, W, dtype=torch.bool)
        support[3:10, 3:10] = True
        assert (view[:, ~support] == 0).all() and (view[:, support] > 0).all()
        torch.testing.assert_close(view.sum((1, 2)), torch.ones(2))


def test_reduced_attention_views():
    model = _make("pvt_v2_b0", depths=(1, 1, 1, 1))
    r = capture(model, _x(64))
    m = next(m for m in r.maps if m.kind == "reduced")
    qh, qw = m.query_layout.grid
    kh, kw = m.layout.grid
    got = raw_attention(r, r.maps.index(m), "mean", (3, 4))
    assert got.shape == (2, kh, kw)
    torch.testing.assert_close(got, m.weights[:, :, 3 * qw + 4].mean(1).reshape(2, kh, kw))
    torch.testing.assert_close(raw_attention(r, r.maps.index(m), 0, "patch_mean"),
                               m.weights[:, 0].mean(1).reshape(2, kh, kw))
    with pytest.raises(MethodNotDefinedError, match="spatial-reduction"):
        rollout(r)


# ----------------------------------------------------------------------------- Grad-CAM

def ref_gradcam(model, layer, x, target, to_grid):
    """Activations x mean-pooled gradients, ReLU, with the layout handled by `to_grid` (B, C, h, w)."""
    store = {}

    def hook(mod, inp, out):
        out.retain_grad()
        store["a"] = out

    h = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            logits[torch.arange(x.shape[0]), torch.as_tensor(target)].sum().backward()
    finally:
        h.remove()
        model.zero_grad(set_to_none=True)
    act, grad = to_grid(store["a"].detach()), to_grid(store["a"].grad)
    B, C = act.shape[:2]
    cam = torch.zeros(B, *act.shape[2:])
    for b in range(B):
        for c in range(C):
            cam[b] += grad[b, c].mean() * act[b, c]
    return cam.clamp_min(0)


def _tokens_to_grid(num_prefix, gh, gw):
    return lambda t: t[:, num_prefix:].reshape(t.shape[0], gh, gw, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("which,size,prefix,grid", [("deit", 48, 2, 3), ("reg", 42, 5, 3), ("vit", 48, 1, 3)])
def test_gradcam_matches_hand_written_on_token_models(which, size, prefix, grid, request):
    model = request.getfixturevalue(which)
    x = _x(size)
    got = gradcam(model, x, target=[2, 4])
    want = ref_gradcam(model, model.blocks[-1].norm1, x, [2, 4], _tokens_to_grid(prefix, grid, grid))
    assert got.shape == (2, grid, grid)
    torch.testing.assert_close(got, want, atol=1e-6 * float(want.abs().max()) + 1e-12, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())   # the model is left as found
    assert not model.training


def test_gradcam_swin_nhwc_and_class_specific(swin):
    x = _x(96)
    layer = swin.layers[-1].blocks[-1].norm1
    got = gradcam(swin, x, target=1)
    want = ref_gradcam(swin, layer, x, [1, 1], lambda t: t.permute(0, 3, 1, 2))
    assert got.shape == (2, 3, 3)
    torch.testing.assert_close(got, want, atol=1e-6 * float(want.abs().max()), rtol=1e-4)
    assert not torch.allclose(got, gradcam(swin, x, target=5))


def test_gradcam_other_input_size(vit):
    # dynamic input size: 64 x 48 -> 4 x 3 patches (the library's default reshape assumes 14 x 14)
    model = _make("vit_tiny_patch16_224", img_size=48, depth=2, dynamic_img_size=True)
    x = torch.randn(1, 3, 64, 48)
    got = gradcam(model, x, target=0)
    want = ref_gradcam(model, model.blocks[-1].norm1, x, [0], _tokens_to_grid(1, 4, 3))
    assert got.shape == (1, 4, 3)
    torch.testing.assert_close(got, want, atol=1e-6 * float(want.abs().max()), rtol=1e-4)


# ----------------------------------------------------------------------------- export contract

def test_export_method_arrays(deit, swin):
    x = _x(48, 1)
    loaded, prepared = types.SimpleNamespace(model=deit), types.SimpleNamespace(tensor=x)
    r = capture(deit, x)
    arrays, skipped = method_arrays(loaded, prepared, r, ["rollout", "grad_rollout", "gradcam", "raw"])
    assert not skipped
    for name in ("rollout", "grad_rollout", "gradcam"):
        assert arrays[name].shape == (3, 3) and arrays[name].dtype == np.float32
    # raw: the README's (layers, heads, gh, gw), the CLS row of every layer and head
    want = np.stack([m.weights[0, :, 0, 2:].float().reshape(-1, 3, 3).numpy() for m in r.maps])
    np.testing.assert_array_equal(arrays["raw"], want)
    assert raw_cls_maps(r).shape == (1, 3, 3, 3, 3)
    assert get_method("grad_rollout").needs_model and get_method("gradcam").needs_model

    x = _x(96, 1)
    arrays, skipped = method_arrays(types.SimpleNamespace(model=swin), types.SimpleNamespace(tensor=x),
                                    capture(swin, x), ["rollout", "grad_rollout", "gradcam", "raw"])
    # Swin has no CLS token: the README's raw (CLS -> patch of every layer and head) is left out, with the reason
    assert set(skipped) == {"rollout", "grad_rollout", "raw"} and "CLS token" in skipped["raw"]
    assert arrays["gradcam"].shape == (3, 3)
