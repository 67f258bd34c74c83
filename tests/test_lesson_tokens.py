"""Lesson steps "From image to tokens" and "Special tokens": every number checked against a plain,
independent computation from the model's own parameters and modules."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from attention.capture import capture
from attention.errors import MethodNotDefinedError
from attention.layout import TokenLayout
from attention.lesson.figure import figure_to_rgb, message_picture, new_figure, stack_pictures
from attention.lesson.special_tokens import (HighNormTokens, high_norm_tokens, norms_picture, prefix_attention,
                                             special_tokens_picture, token_norms, transformer_blocks)
from attention.lesson.tokens import (model_input_image, position_picture, position_similarity, token_sequence,
                                     tokens_picture)
from attention.models import load_model


# --------------------------------------------------------------------------- models (small, random where possible)

@pytest.fixture(scope="module")
def demo_vit():
    return load_model("demo-vit")


@pytest.fixture(scope="module")
def demo_torch_vit():
    return load_model("demo-torch-vit")


@pytest.fixture(scope="module")
def reg4():
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=28, depth=4).eval()


@pytest.fixture(scope="module")
def deit_distilled():
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32).eval()


@pytest.fixture(scope="module")
def tv_vit():
    torch.manual_seed(0)
    return TorchvisionViT(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64).eval()


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    a[20:60, 30:80] = (250, 40, 40)
    return Image.fromarray(a)


def _cos_by_hand(e: torch.Tensor) -> np.ndarray:
    e = e.double()
    out = np.zeros((e.shape[0], e.shape[0]))
    for i in range(e.shape[0]):
        for j in range(e.shape[0]):
            out[i, j] = float(e[i] @ e[j] / (e[i].norm() * e[j].norm()))
    return out


def _is_picture(a):
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert 300 <= a.shape[0] <= 3000 and 300 <= a.shape[1] <= 3000, a.shape
    assert a.std() > 5  # not blank


# --------------------------------------------------------------------------- token sequence

def test_token_sequence_demo_vit(demo_vit, photo):
    prepared = demo_vit.prepare(photo)
    seq = token_sequence(demo_vit.model, prepared)
    assert seq.names[0] == "CLS" and len(seq.names) == 65 and seq.num_prefix == 1
    assert seq.names[1] == "p(0,0)" and seq.names[2] == "p(0,1)" and seq.names[9] == "p(1,0)"
    assert seq.names[-1] == "p(7,7)"
    assert seq.grid == (8, 8) and seq.layout.stride == (8.0, 8.0) and seq.input_hw == (64, 64)
    assert seq.patch_box(1, 2) == (8.0, 16.0, 16.0, 24.0)
    # the model's own sequence: the blocks' input has exactly as many tokens, CLS first (= cls_token + pos 0)
    m = demo_vit.model
    with torch.no_grad():
        tokens = m._pos_embed(m.patch_embed(prepared.tensor))
    assert tokens.shape[1] == len(seq.names)
    assert torch.allclose(tokens[0, 0], (m.cls_token + m.pos_embed[:, 0])[0, 0])
    # demo-vit's pos_embed has a CLS row: every token gets a position
    assert m.pos_embed.shape[1] == 65
    assert all(seq.has_position(i) for i in range(65))
    assert "CLS included" in seq.position


def test_token_sequence_distilled_and_registers(deit_distilled, reg4):
    x = torch.zeros(1, 3, 32, 32)
    seq = token_sequence(deit_distilled, x)
    assert seq.names == ("CLS", "DIST", "p(0,0)", "p(0,1)", "p(1,0)", "p(1,1)")
    with torch.no_grad():
        n = deit_distilled._pos_embed(deit_distilled.patch_embed(x)).shape[1]
    assert n == len(seq.names)
    assert deit_distilled.pos_embed.shape[1] == 6 and seq.prefix_positions == 2

    x = torch.zeros(1, 3, 28, 28)
    seq = token_sequence(reg4, x)
    assert seq.names[:5] == ("CLS", "REG0", "REG1", "REG2", "REG3") and seq.names[5:] == (
        "p(0,0)", "p(0,1)", "p(1,0)", "p(1,1)")
    with torch.no_grad():
        t = reg4._pos_embed(reg4.patch_embed(x))
    assert t.shape[1] == 9
    assert torch.allclose(t[0, 1:5], reg4.reg_token[0])  # registers: no position added (no_embed_class)
    assert reg4.pos_embed.shape[1] == 4 and seq.prefix_positions == 0
    assert [seq.has_position(i) for i in range(9)] == [False] * 5 + [True] * 4
    assert "patch tokens only" in seq.position


def test_token_sequence_torchvision(tv_vit):
    seq = token_sequence(tv_vit, (32, 32))
    assert seq.names[0] == "CLS" and len(seq.names) == 17 and seq.grid == (4, 4)
    assert tv_vit.encoder.pos_embedding.shape[1] == 17 and seq.prefix_positions == 1


def test_model_input_image(demo_vit, photo):
    prepared = demo_vit.prepare(photo)
    cfg = demo_vit.preprocess.config
    exact = model_input_image(prepared, cfg["mean"], cfg["std"])
    x = prepared.tensor[0]
    by_hand = np.stack([(x[c] * cfg["std"][c] + cfg["mean"][c]).clamp(0, 1).numpy() for c in range(3)], -1)
    assert exact.shape == (64, 64, 3) and exact.dtype == np.uint8
    assert np.abs(exact.astype(float) - np.round(by_hand * 255)).max() <= 1
    approx = model_input_image(prepared)  # the photo cut by the geometry box: same content, resampled
    assert approx.shape == (64, 64, 3)
    assert np.abs(approx.astype(float) - exact.astype(float)).mean() < 40


# --------------------------------------------------------------------------- position similarity

def test_position_similarity_by_hand(demo_vit, demo_torch_vit, reg4, tv_vit):
    cases = [(demo_vit.model, demo_vit.model.pos_embed[0, 1:], (8, 8)),
             (demo_torch_vit.model, demo_torch_vit.model.pos_embed[0, 1:], (8, 8)),
             (reg4, reg4.pos_embed[0], (2, 2)),                       # no prefix rows (no_embed_class)
             (tv_vit, tv_vit.encoder.pos_embedding[0, 1:], (4, 4))]
    for model, rows, grid in cases:
        ps = position_similarity(model)
        gh, gw = grid
        assert ps.similarity.shape == (gh, gw, gh, gw) and ps.grid == grid and ps.learned
        by_hand = _cos_by_hand(rows.detach())
        np.testing.assert_allclose(ps.similarity.reshape(gh * gw, gh * gw), by_hand, atol=1e-5)
        for r in range(gh):
            for c in range(gw):
                assert ps.similarity[r, c, r, c] == pytest.approx(1.0, abs=1e-5)


def test_position_similarity_dynamic_size_matches_the_model():
    torch.manual_seed(1)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, dynamic_img_size=True).eval()
    ps = position_similarity(m, grid=(3, 5))
    # what the model itself adds for a 48x80 input: the patch part of _pos_embed(0) is the resampled table
    with torch.no_grad():
        pos = m._pos_embed(torch.zeros(1, 3, 5, m.embed_dim))[0, 1:]
    np.testing.assert_allclose(ps.similarity.reshape(15, 15), _cos_by_hand(pos), atol=1e-5)
    assert "resampled" in ps.note
    with pytest.raises(MethodNotDefinedError):
        position_similarity(load_model("demo-vit").model, grid=(3, 5))  # not dynamic: refused


# --------------------------------------------------------------------------- prefix attention

def test_prefix_attention_demo_vit(demo_vit, photo):
    x = demo_vit.prepare(photo).tensor
    res = capture(demo_vit.model, x)
    pa = prefix_attention(res)
    assert pa.names == ("CLS",) and pa.attends_to.shape == (1, 4, 8, 8) and pa.received.shape == (1, 4, 4)
    assert pa.num_tokens == 65
    for l, m in enumerate(res.maps):
        w = m.weights[0]  # (heads, 65, 65)
        np.testing.assert_allclose(pa.attends_to[0, l], w.mean(0)[0, 1:].reshape(8, 8).numpy(), atol=1e-6)
        for h in range(w.shape[0]):
            assert pa.received[0, l, h] == pytest.approx(float(w[h, 1:, 0].mean()), abs=1e-6)
        assert pa.attends_to_prefix[0, l, 0] == pytest.approx(float(w.mean(0)[0, 0]), abs=1e-6)
        # a row sums to one: patches + prefix
        assert pa.attends_to[0, l].sum() + pa.attends_to_prefix[0, l].sum() == pytest.approx(1.0, abs=1e-5)


def test_prefix_attention_registers(reg4):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 28, 28)
    res = capture(reg4, x)
    pa = prefix_attention(res)
    assert pa.names == ("CLS", "REG0", "REG1", "REG2", "REG3")
    assert pa.attends_to.shape == (5, 4, 2, 2) and pa.received.shape == (5, 4, 6)
    w = res.maps[2].weights[0]  # (6 heads, 9, 9)
    reg2 = 3
    np.testing.assert_allclose(pa.attends_to[reg2, 2], w.mean(0)[reg2, 5:].reshape(2, 2).numpy(), atol=1e-6)
    assert pa.received[reg2, 2, 4] == pytest.approx(float(w[4, 5:, reg2].mean()), abs=1e-6)


def test_prefix_attention_distilled(deit_distilled):
    res = capture(deit_distilled, torch.randn(1, 3, 32, 32))
    pa = prefix_attention(res)
    assert pa.names == ("CLS", "DIST")
    w = res.maps[-1].weights[0]
    np.testing.assert_allclose(pa.attends_to[1, -1], w.mean(0)[1, 2:].reshape(2, 2).numpy(), atol=1e-6)


# --------------------------------------------------------------------------- token norms

def test_token_norms_timm_by_hand(demo_vit, photo):
    m = demo_vit.model
    x = demo_vit.prepare(photo).tensor
    tn = token_norms(m, x)
    with torch.no_grad():
        t = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        expected = []
        for blk in m.blocks:
            t = blk(t)
            expected.append(t.norm(dim=-1))
    expected = torch.stack(expected, 1).numpy()
    assert tn.norms.shape == (1, 4, 65) and tn.layers == ("blocks.0", "blocks.1", "blocks.2", "blocks.3")
    np.testing.assert_allclose(tn.norms, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tn.patch_maps()[2], expected[0, 2, 1:].reshape(8, 8), rtol=1e-5)
    np.testing.assert_allclose(tn.prefix_norms()[:, 0], expected[0, :, 0], rtol=1e-5)
    assert all(len(b._forward_hooks) == 0 for _, b in transformer_blocks(m))  # hooks removed


def test_token_norms_torch_encoder_and_torchvision_by_hand(demo_torch_vit, tv_vit, photo):
    m = demo_torch_vit.model
    x = demo_torch_vit.prepare(photo).tensor
    tn = token_norms(m, x)
    with torch.no_grad():
        t = m.embed(x)
        expected = []
        for layer in m.encoder.layers:
            t = layer(t)
            expected.append(t.norm(dim=-1))
    np.testing.assert_allclose(tn.norms, torch.stack(expected, 1).numpy(), rtol=1e-4, atol=1e-4)

    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    tn = token_norms(tv_vit, x)
    with torch.no_grad():
        t = tv_vit._process_input(x)
        t = torch.cat([tv_vit.class_token.expand(2, -1, -1), t], 1) + tv_vit.encoder.pos_embedding
        expected = []
        for layer in tv_vit.encoder.layers:
            t = layer(t)
            expected.append(t.norm(dim=-1))
    assert tn.norms.shape == (2, 2, 17)
    np.testing.assert_allclose(tn.norms, torch.stack(expected, 1).numpy(), rtol=1e-5, atol=1e-5)


def test_token_norms_restores_training_mode():
    torch.manual_seed(4)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, drop_rate=0.5).train()
    x = torch.randn(1, 3, 32, 32)
    a = token_norms(m, x).norms
    b = token_norms(m, x).norms
    np.testing.assert_array_equal(a, b)  # eval mode inside: dropout off, deterministic
    assert m.training and all(mod.training for mod in m.modules())


def test_high_norm_planted_outlier(demo_vit, photo):
    m = demo_vit.model
    x = demo_vit.prepare(photo).tensor
    assert len(high_norm_tokens(token_norms(m, x))) == 0  # the trained demo model: nothing flagged

    row, col, layer = 3, 5, 2
    idx = 1 + row * 8 + col

    def plant(mod, args, out):
        out = out.clone()
        out[:, idx] *= 10.0
        return out

    h = m.blocks[layer].register_forward_hook(plant)
    try:
        tn = token_norms(m, x)
    finally:
        h.remove()
    flags = high_norm_tokens(tn)
    assert isinstance(flags, HighNormTokens) and len(flags) >= 1
    assert all((t.row, t.col, t.index) == (row, col, idx) and t.layer >= layer for t in flags)
    hit = [t for t in flags if t.layer == layer]
    assert len(hit) == 1
    median = float(np.median(tn.norms[0, layer, 1:]))
    assert hit[0].norm == pytest.approx(float(tn.norms[0, layer, idx]))
    assert hit[0].ratio == pytest.approx(hit[0].norm / median) and hit[0].ratio > 3
    assert flags.medians[layer] == pytest.approx(median)
    assert "median" in flags.rule and "3x" in flags.rule
    assert "patch (3,5)" in flags.describe()


def test_high_norm_constructed_norms():
    layout = TokenLayout(("cls", "reg0"), (3, 4), (16.0, 16.0))
    norms = np.ones((3, 2 + 12), dtype=np.float32)
    norms[:, :2] = 50.0                           # prefix tokens: large, but never flagged
    norms[2, 2 + 1 * 4 + 2] = 2.9                 # under the 3x rule
    norms[1, 2 + 2 * 4 + 3] = 7.0                 # flagged: ratio 7
    flags = high_norm_tokens(norms, layout)
    assert [(t.layer, t.row, t.col, t.index) for t in flags] == [(1, 2, 3, 13)]
    assert flags.tokens[0].ratio == pytest.approx(7.0)
    assert [(t.layer, t.row, t.col) for t in high_norm_tokens(norms, layout, factor=2.5)] == [(1, 2, 3), (2, 1, 2)]
    assert len(high_norm_tokens(norms, layout, layers=[0, 2])) == 0
    assert len(high_norm_tokens(np.ones((4, 14), np.float32), layout)) == 0
    with pytest.raises(ValueError):
        high_norm_tokens(norms)  # a bare array needs its layout


# --------------------------------------------------------------------------- pictures

def test_pictures(demo_vit, reg4, photo):
    prepared = demo_vit.prepare(photo)
    cfg = demo_vit.preprocess.config
    seq = token_sequence(demo_vit.model, prepared)
    _is_picture(tokens_picture(prepared, seq, cfg["mean"], cfg["std"]))
    _is_picture(position_picture(position_similarity(demo_vit.model)))
    res = capture(demo_vit.model, prepared.tensor)
    _is_picture(special_tokens_picture(prefix_attention(res)))
    tn = token_norms(demo_vit.model, prepared.tensor)
    _is_picture(norms_picture(tn, high_norm_tokens(tn)))
    _is_picture(special_tokens_picture(prefix_attention(capture(reg4, torch.randn(1, 3, 28, 28)))))


def test_figure_helpers():
    fig = new_figure(4, 3)
    fig.add_subplot().plot([0, 1], [1, 0])
    a = figure_to_rgb(fig)
    assert a.shape == (300, 400, 3) and a.dtype == np.uint8
    msg = message_picture("no position embedding here")
    assert msg.dtype == np.uint8 and msg.ndim == 3 and msg.std() > 0
    s = stack_pictures([a, msg])
    assert s.shape == (300 + 16 + msg.shape[0], max(400, msg.shape[1]), 3)
    assert stack_pictures([a, msg], vertical=False).shape == (max(300, msg.shape[0]), 400 + 16 + msg.shape[1], 3)
    assert (s[:300, (s.shape[1] - 400) // 2:(s.shape[1] - 400) // 2 + 400] == a).all()


# --------------------------------------------------------------------------- models where a step is not defined

def test_cnn_self_attention_is_refused_with_a_message():
    lm = load_model("demo-cnn-selfattn")
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(MethodNotDefinedError, match="not a token-based vision transformer"):
        token_sequence(lm.model, x)
    with pytest.raises(MethodNotDefinedError, match="no absolute position embedding"):
        position_similarity(lm.model)
    with pytest.raises(MethodNotDefinedError, match="no special tokens"):
        prefix_attention(capture(lm.model, x))
    with pytest.raises(MethodNotDefinedError, match="no flat stack of transformer blocks"):
        token_norms(lm.model, x)


def test_relative_position_models_have_no_similarity_picture():
    torch.manual_seed(5)
    m = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, depth=1, embed_dim=32,
                          num_heads=2).eval()
    with pytest.raises(MethodNotDefinedError, match="relative position bias"):
        position_similarity(m)
    seq = token_sequence(m, (32, 32))
    assert "No absolute position embedding" in seq.position and not seq.patch_positions
