"""Behaviour of the capture engine: threads, batches, non-square inputs, storage dtype, autograd,
Swin's window-to-image mapping, and the labels of non-standard attention (channel, reduced, class).

Expected values are computed here independently (conv arithmetic, a hand-written window partition of
a grid of token ids, single-item / single-thread captures), never read back from the engine.
"""
from __future__ import annotations

import threading

import pytest
import timm
import torch
import torchvision
from torch import nn

from attention import capture
from attention.capture import AttentionCapture
from concurrency import run_in_threads

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("single_intra_op_thread")


def state(model):
    """Everything a capture may touch: training and fused flags, instance attributes, hooks, globals."""
    mods = {}
    for name, m in model.named_modules():
        mods[name] = (m.training, vars(m).get("fused_attn", "<absent>"), "forward" in vars(m),
                      tuple(tuple(getattr(m, k).keys()) for k in ("_forward_hooks", "_forward_pre_hooks",
                                                                   "_forward_hooks_with_kwargs",
                                                                   "_forward_pre_hooks_with_kwargs")))
    return mods, torch.backends.mha.get_fastpath_enabled(), torch.is_grad_enabled()


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def vit_small_input():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64)


def swin_small(img_size=(96, 128)):
    # stage grids at 96x128: 24x32 (padded 28x35), 12x16 (14x21), 6x8 (window 6x7), 3x4
    m = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=img_size,
                          depths=(2, 2, 2, 2), embed_dim=32, num_heads=(1, 2, 4, 8))
    with torch.no_grad():
        for blk in m.modules():
            if type(blk).__name__ == "WindowAttention":
                blk.relative_position_bias_table.normal_()
    return m


# --------------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------------

def _run_threads(model, inputs, refs, reps=25):
    barrier = threading.Barrier(len(inputs), timeout=60)
    failures = []

    def worker(i):
        try:
            for r in range(reps):
                barrier.wait()
                res = capture(model, inputs[i])
                ref = refs[i]
                if [m.name for m in res.maps] != [m.name for m in ref.maps]:
                    failures.append((i, r, "names", [m.name for m in res.maps]))
                    continue
                for got, want in zip(res.maps, ref.maps):
                    if got.weights.shape != want.weights.shape or max_err(got.weights, want.weights) > 1e-6:
                        failures.append((i, r, got.name, tuple(got.weights.shape)))
                if max_err(res.logits, ref.logits) > 1e-6:
                    failures.append((i, r, "logits"))
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append((i, "exception", repr(e)))
            barrier.abort()

    failures += [(i, "exception", repr(e)) for i, e in run_in_threads(worker, range(len(inputs))).items()]
    return failures


@pytest.mark.parametrize("which", ["timm_vit", "torchvision_mha_training_mode"])
def test_two_threads_same_model_get_their_own_maps(which):
    torch.manual_seed(0)
    if which == "timm_vit":
        model = vit_small_input().eval()
        inputs = [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 64, 64)]
    else:
        # dropout in the attention: a thread running in training mode would get different maps,
        # and the model (in training mode) must be left in training mode
        model = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4,
                                                     hidden_dim=32, mlp_dim=64, dropout=0.1,
                                                     attention_dropout=0.1, num_classes=10).train()
        inputs = [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 64, 64)]
    before = state(model)
    refs = [capture(model, x) for x in inputs]
    assert state(model) == before
    assert max_err(refs[0].maps[0].weights[0], refs[1].maps[0].weights[0]) > 1e-3  # inputs really differ

    failures = _run_threads(model, inputs, refs)
    assert failures == []
    assert state(model) == before


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------

def test_batch_item_equals_capture_of_item_alone_vit():
    torch.manual_seed(0)
    model = vit_small_input()
    x = torch.randn(3, 3, 64, 64)
    res = capture(model, x)
    for b in range(3):
        alone = capture(model, x[b:b + 1])
        for m_batch, m_alone in zip(res.maps, alone.maps, strict=True):
            assert m_batch.weights.shape[0] == 3
            assert max_err(m_batch.weights[b:b + 1], m_alone.weights) <= TOL
        assert max_err(res.logits[b:b + 1], alone.logits) <= TOL


def test_batch_item_equals_capture_of_item_alone_swin():
    torch.manual_seed(0)
    model = swin_small()
    x = torch.randn(2, 3, 96, 128)
    res = capture(model, x)
    for b in range(2):
        alone = capture(model, x[b:b + 1])
        for m_batch, m_alone in zip(res.maps, alone.maps, strict=True):
            nw = m_batch.window.windows_per_image
            assert m_batch.weights.shape[0] == 2 * nw and m_alone.weights.shape[0] == nw
            assert max_err(m_batch.weights[b * nw:(b + 1) * nw], m_alone.weights) <= TOL


# --------------------------------------------------------------------------------------------
# non-square input, storage dtype, autograd
# --------------------------------------------------------------------------------------------

def test_non_square_input_layout_matches_patch_embedding():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, dynamic_img_size=True)
    x = torch.randn(1, 3, 160, 224)
    emb = {}
    h = model.patch_embed.register_forward_hook(lambda m, a, out: emb.setdefault("x", out.detach()))
    try:
        res = capture(model, x)
    finally:
        h.remove()
    assert res.tokens.grid == (10, 14)
    for m in res.maps:
        assert m.kind == "self"
        assert m.weights.shape == (1, 3, 141, 141)
        assert m.layout.prefix_names == ("cls",)
        assert m.layout.grid == (10, 14) and m.layout.stride == (16.0, 16.0)
        assert m.layout.num_tokens == 141
    # token patch_index(r, c) must hold the pixels of rows 16r.., cols 16c.. : check against a conv by hand
    layout = res.maps[0].layout
    w, bias = model.patch_embed.proj.weight, model.patch_embed.proj.bias
    tokens = emb["x"].reshape(1, -1, w.shape[0])
    for r, c in [(0, 0), (0, 13), (9, 0), (4, 7), (9, 13)]:
        crop = x[0, :, 16 * r:16 * (r + 1), 16 * c:16 * (c + 1)]
        expected = (w.flatten(1) @ crop.flatten()) + bias
        got = tokens[0, layout.patch_index(r, c) - layout.num_prefix]
        assert max_err(got, expected) <= 1e-4


def test_float16_storage():
    torch.manual_seed(0)
    model = vit_small_input()
    x = torch.randn(2, 3, 64, 64)
    full = capture(model, x)
    half = capture(model, x, dtype=torch.float16)
    assert all(m.weights.dtype == torch.float16 for m in half.maps)
    assert half.nbytes() * 2 == full.nbytes()
    for a, b in zip(half.maps, full.maps, strict=True):
        assert max_err(a.weights, b.weights) <= 1e-3
    assert half.logits.dtype == torch.float32 and max_err(half.logits, full.logits) <= TOL


@pytest.mark.parametrize("which", ["timm_vit", "torchvision_mha", "swin"])
def test_keep_graph(which):
    torch.manual_seed(0)
    if which == "timm_vit":
        model, x = vit_small_input(), torch.randn(1, 3, 64, 64)
    elif which == "swin":
        model, x = swin_small(), torch.randn(1, 3, 96, 128)
    else:
        model = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4,
                                                     hidden_dim=32, mlp_dim=64, num_classes=10)
        nn.init.normal_(model.heads.head.weight)   # torchvision zero-initialises the head
        x = torch.randn(1, 3, 64, 64)
    before = state(model)
    res = capture(model, x, keep_graph=True)
    assert state(model) == before
    assert res.logits.grad_fn is not None
    assert all(m.weights.grad_fn is not None for m in res.maps)
    # The stored map is the tensor the forward used, or a view of it (MHA returns a .view, CaiT a
    # permute): then the gradient reaches its _base.
    sources = [m.weights for m in res.maps] + [m.weights._base for m in res.maps if m.weights._base is not None]
    grads = dict(zip(map(id, sources), torch.autograd.grad(res.logits[0, 3], sources, allow_unused=True)))
    for m in res.maps[:-1]:
        g = grads[id(m.weights)]
        if g is None and m.weights._base is not None:
            g = grads[id(m.weights._base)]
        assert g is not None and g.abs().sum() > 0, m.name

    res = capture(model, x, keep_graph=False)
    assert res.logits.grad_fn is None and not res.logits.requires_grad
    assert all(m.weights.grad_fn is None and not m.weights.requires_grad for m in res.maps)


def test_context_manager_form_matches_capture():
    torch.manual_seed(0)
    model = vit_small_input().eval()
    x = torch.randn(2, 3, 64, 64)
    ref = capture(model, x)
    before = state(model)
    with AttentionCapture(model, (64, 64)) as cap:
        logits = model(x)
    assert state(model) == before
    assert max_err(logits, ref.logits) <= TOL
    assert [m.name for m in cap.maps] == [m.name for m in ref.maps]
    for a, b in zip(cap.maps, ref.maps):
        assert max_err(a.weights, b.weights) <= TOL and a.layout == b.layout


def test_fastpath_flag_left_off_when_it_was_off():
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=3)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        res = capture(model, torch.randn(1, 3, 32, 32))
        assert not torch.backends.mha.get_fastpath_enabled()
        assert len(res.maps) == 1
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


# --------------------------------------------------------------------------------------------
# Swin: window -> image mapping
# --------------------------------------------------------------------------------------------

def hand_partition_ids(grid, window, shift):
    """Token ids r*W + c of the stage grid, rolled by -shift, padded with -1, cut into windows:
    (num_windows, wh*ww) ids, windows in row-major order, tokens row-major inside a window."""
    H, W = grid
    wh, ww = window
    ids = torch.arange(H * W).view(H, W)
    ids = torch.roll(ids, shifts=(-shift[0], -shift[1]), dims=(0, 1))
    hp, wp = -(-H // wh) * wh, -(-W // ww) * ww
    padded = torch.full((hp, wp), -1, dtype=torch.long)
    padded[:H, :W] = ids
    out = []
    for wy in range(hp // wh):
        for wx in range(wp // ww):
            out.append(padded[wy * wh:(wy + 1) * wh, wx * ww:(wx + 1) * ww].reshape(-1))
    return torch.stack(out), (hp, wp)


@pytest.mark.parametrize("hw,layer,expect", [
    ((112, 112), "layers.0.blocks.1.attn", dict(grid=(28, 28), window=(7, 7), shift=(3, 3), padded=(28, 28))),
    ((112, 112), "layers.1.blocks.1.attn", dict(grid=(14, 14), window=(7, 7), shift=(3, 3), padded=(14, 14))),
    ((96, 128), "layers.0.blocks.1.attn", dict(grid=(24, 32), window=(7, 7), shift=(3, 3), padded=(28, 35))),
    ((96, 128), "layers.1.blocks.1.attn", dict(grid=(12, 16), window=(7, 7), shift=(3, 3), padded=(14, 21))),
    ((96, 128), "layers.2.blocks.1.attn", dict(grid=(6, 8), window=(6, 7), shift=(0, 3), padded=(6, 14))),
    ((96, 128), "layers.0.blocks.0.attn", dict(grid=(24, 32), window=(7, 7), shift=(0, 0), padded=(28, 35))),
])
def test_swin_window_to_image_mapping(hw, layer, expect):
    torch.manual_seed(0)
    model = swin_small(hw)
    x = torch.randn(2, 3, *hw)
    res = capture(model, x)
    amap = next(m for m in res.maps if m.name == layer)
    info = amap.window
    assert amap.kind == "window"
    assert (info.grid, info.window, info.shift, info.padded) == (
        expect["grid"], expect["window"], expect["shift"], expect["padded"])
    block = dict(model.named_modules())[layer.rsplit(".", 1)[0]]
    assert tuple(block.window_size) == info.window and tuple(block.shift_size) == info.shift

    H, W = info.grid
    ids, (hp, wp) = hand_partition_ids(info.grid, info.window, info.shift)
    nw = ids.shape[0]
    assert info.windows_per_image == nw and amap.weights.shape[0] == 2 * nw
    assert amap.weights.shape[-1] == info.window[0] * info.window[1]
    assert amap.layout.grid == (H, W) and amap.layout.stride == (hw[0] / H, hw[1] / W)

    # every stage-grid token: locate() finds the slot that holds its id
    for r in range(H):
        for c in range(W):
            w, p = info.locate(r, c)
            assert ids[w, p].item() == r * W + c
    # every window slot: token_position() gives back the id's (row, col), None for padding
    for w in range(nw):
        for p in range(ids.shape[1]):
            i = ids[w, p].item()
            assert info.token_position(w, p) == (None if i < 0 else divmod(i, W))

    # The corner query (0, 0): in a shifted block its window also holds tokens from the far side of the
    # image (wrapped round by the roll); the mask must give those zero weight, its true neighbours not.
    # (Only without padding: timm lays its mask regions out on the padded map, so with padding some
    # wrapped tokens share a region; the exactness test covers that case against timm's own rule.)
    if info.padded != info.grid:
        return
    w, p = info.locate(0, 0)
    row = amap.weights[w, :, p]                       # image 0: (heads, n)
    wh, ww = info.window
    for q in range(ids.shape[1]):
        pos = info.token_position(w, q)
        if pos is None:
            continue
        near = pos[0] < wh and pos[1] < ww            # no wrap: same corner of the image as (0, 0)
        if near:
            assert (row[:, q] > 1e-6).all(), (q, pos)
        else:
            assert info.shift != (0, 0)
            assert (row[:, q] < 1e-20).all(), (q, pos)


# --------------------------------------------------------------------------------------------
# labels of non-standard attention
# --------------------------------------------------------------------------------------------

def test_xcit_channel_attention_is_labelled_channel():
    torch.manual_seed(0)
    model = timm.create_model("xcit_nano_12_p16_224", pretrained=False, depth=2, cls_attn_layers=1,
                              img_size=112)
    res = capture(model, torch.randn(1, 3, 112, 112))
    xca = [m for m in res.maps if m.name.startswith("blocks.")]
    assert [m.name for m in xca] == ["blocks.0.attn", "blocks.1.attn"]
    for m in xca:
        blk = dict(model.named_modules())[m.name]
        dh = blk.qkv.out_features // 3 // blk.num_heads
        assert m.kind == "channel" and not m.is_spatial and m.layout is None
        assert m.weights.shape == (1, blk.num_heads, dh, dh)
    (cls,) = [m for m in res.maps if m.name.startswith("cls_attn_blocks.")]
    assert cls.kind == "class" and cls.weights.shape[-2:] == (1, 50)
    assert res.self_attention() == []


def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@pytest.mark.parametrize("hw", [(224, 224), (320, 184)])
def test_pvt_v2_reduced_attention_key_grid(hw):
    torch.manual_seed(0)
    model = timm.create_model("pvt_v2_b0", pretrained=False, depths=(1, 1, 1, 1))
    H, W = hw
    res = capture(model, torch.randn(1, 3, H, W))
    # stage grids by hand: overlapping patch embeddings (k7 s4 p3, then k3 s2 p1), reductions 8, 4, 2, 1
    qh, qw = conv_out(H, 7, 4, 3), conv_out(W, 7, 4, 3)
    srs = (8, 4, 2, 1)
    assert [m.name for m in res.maps] == [f"stages.{i}.blocks.0.attn" for i in range(4)]
    for i, (m, sr) in enumerate(zip(res.maps, srs)):
        if i:
            qh, qw = conv_out(qh, 3, 2, 1), conv_out(qw, 3, 2, 1)
        kh, kw = qh // sr, qw // sr
        q_stride = (H / qh, W / qw)
        assert m.query_layout.grid == (qh, qw) and m.query_layout.stride == q_stride
        assert m.weights.shape[-2:] == (qh * qw, kh * kw)
        if sr > 1:
            assert m.kind == "reduced"
            assert m.layout.grid == (kh, kw), (m.name, m.layout.grid, (kh, kw))
            assert m.layout.stride == (q_stride[0] * sr, q_stride[1] * sr)
        else:
            assert m.kind == "self" and m.layout.grid == (qh, qw)
    # the model's own token description: stride-4 patch grid, no prefix tokens
    assert res.tokens.grid == (conv_out(H, 7, 4, 3), conv_out(W, 7, 4, 3))
    assert res.tokens.prefix_names == ()


def test_cait_class_attention_has_one_query():
    torch.manual_seed(0)
    model = timm.create_model("cait_xxs24_224", pretrained=False, depth=2, depth_token_only=2, img_size=112)
    res = capture(model, torch.randn(2, 3, 112, 112))
    kinds = [(m.name, m.kind) for m in res.maps]
    assert kinds == [("blocks.0.attn", "self"), ("blocks.1.attn", "self"),
                     ("blocks_token_only.0.attn", "class"), ("blocks_token_only.1.attn", "class")]
    for m in res.maps[:2]:       # self-attention runs on the 7x7 patches before the CLS token exists
        assert m.weights.shape == (2, 4, 49, 49)
        assert m.layout.prefix_names == () and m.layout.grid == (7, 7)
    for m in res.maps[2:]:
        assert m.weights.shape == (2, 4, 1, 50)
        assert m.layout.prefix_names == ("cls",) and m.layout.grid == (7, 7)
        assert m.query_layout.prefix_names == ("cls",) and m.query_layout.num_patches == 0
        assert (m.weights.sum(-1) - 1).abs().max().item() <= TOL
