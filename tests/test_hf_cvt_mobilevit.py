"""CvT, MobileViT (v1, v2) and ImageGPT in their true geometry, checked against computations written out here.

The positions are worked out in this file from the models' definitions (convolution output sizes, the
unfold of MobileViT written as index arithmetic, ImageGPT's raster order), never from the families'
own mapping, and every map is compared with the eager forward's softmax recomputed here from the
module's own weights and inputs.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from attention import capture  # noqa: E402
from attention.layout import KNOWN, POOLING, REDUCED  # noqa: E402
from attention.methods.raw import raw_attention  # noqa: E402
from tests.hf_sweep import quiet_two_threads  # noqa: E402

_quiet_two_threads = pytest.fixture(autouse=True, scope="module")(quiet_two_threads)


def _inputs_of(model, module_type: str, x, **kw) -> list:
    """Positional arguments of every call of the modules of one class during ``model(x)``."""
    calls = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: calls.append((mod, a)))
             for m in model.modules() if type(m).__name__ == module_type]
    try:
        with torch.no_grad():
            model(x, **kw)
    finally:
        for h in hooks:
            h.remove()
    return calls


# ------------------------------------------------------------------------------------------------ CvT

def _tiny_cvt(stride_kv=2, image=(32, 32)):
    from transformers import CvtConfig, CvtForImageClassification
    cfg = CvtConfig(embed_dim=[16, 32], num_heads=[1, 2], depth=[1, 2], patch_sizes=[7, 3], patch_stride=[4, 2],
                    patch_padding=[2, 1], mlp_ratio=[2.0, 2.0], attention_drop_rate=[0.0, 0.0], drop_rate=[0.0, 0.0],
                    drop_path_rate=[0.0, 0.0], qkv_bias=[True, True], cls_token=[False, True],
                    qkv_projection_method=["dw_bn", "dw_bn"], kernel_qkv=[3, 3], padding_kv=[1, 1],
                    stride_kv=[stride_kv, stride_kv], padding_q=[1, 1], stride_q=[1, 1], num_labels=5)
    torch.manual_seed(0)
    model = CvtForImageClassification(cfg).eval()   # depth [1, 2]: transformers indexes its drop-path rates by stage
    for m in model.modules():   # BatchNorm statistics away from the identity: the projections matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(1, 3, *image, generator=torch.Generator().manual_seed(1))


def _conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _cvt_attention(att, hidden, H, W):
    """softmax(q kᵀ · scale) of one CvtSelfAttention written out: CLS split off, map folded, depth-wise
    convolution + batch norm per projection, CLS put back first, linear projections, heads."""
    cls = None
    if att.with_cls_token:
        cls, hidden = hidden[:, :1], hidden[:, 1:]
    B, N, C = hidden.shape
    fmap = hidden.transpose(1, 2).reshape(B, C, H, W)

    def project(which):
        conv = getattr(att, f"convolution_projection_{which}").convolution_projection
        y = F.conv2d(fmap, conv.convolution.weight, None, conv.convolution.stride, conv.convolution.padding,
                     groups=C)
        bn = conv.normalization
        y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
        t = y.flatten(2).transpose(1, 2)
        return torch.cat([cls, t], 1) if cls is not None else t

    heads = att.num_heads
    q = att.projection_query(project("query")).reshape(B, -1, heads, C // heads).transpose(1, 2)
    k = att.projection_key(project("key")).reshape(B, -1, heads, C // heads).transpose(1, 2)
    return (q @ k.transpose(-1, -2) * att.embed_dim ** -0.5).softmax(-1)


@pytest.mark.parametrize("image", [(32, 32), (32, 48)])
def test_cvt_queries_on_the_stage_grid_keys_on_the_strided_grid_with_cls(image):
    model, x = _tiny_cvt(image=image)
    res = capture(model, x)
    calls = _inputs_of(model, "CvtSelfAttention", x)
    assert len(res.maps) == len(calls) == 3
    H0 = tuple(_conv_out(n, 7, 4, 2) for n in image)          # stage 0: 7x7 conv, stride 4, padding 2
    H1 = tuple(_conv_out(n, 3, 2, 1) for n in H0)             # stage 1: 3x3 conv, stride 2, padding 1
    for m, (att, (hidden, h, w)), grid, prefix in zip(res.maps, calls, (H0, H1, H1), ((), ("cls",), ("cls",))):
        keys = tuple(_conv_out(n, 3, 2, 1) for n in grid)     # stride_kv 2, kernel 3, padding 1
        assert (h, w) == grid
        assert m.kind == REDUCED and m.layout_source == KNOWN
        assert m.query_layout.grid == grid and m.layout.grid == keys
        assert m.query_layout.prefix_names == m.layout.prefix_names == prefix
        assert m.query_layout.stride == (image[0] / grid[0], image[1] / grid[1])
        assert m.layout.stride == (image[0] / keys[0], image[1] / keys[1])
        want = _cvt_attention(att, hidden, h, w)
        torch.testing.assert_close(m.weights, want, atol=1e-6, rtol=1e-5)
    # the CLS query of the last stage over its key grid: the CLS row without the CLS key, row-major
    last = res.maps[-1]
    kh, kw = last.layout.grid
    cls_row = last.weights[0, :, 0, 1:].mean(0).reshape(kh, kw)
    torch.testing.assert_close(raw_attention(res, -1, "mean", "cls")[0], cls_row)
    # a patch query: query token 1 + r * gw + c
    r, c = 1, 2
    row = last.weights[0, :, 1 + r * H1[1] + c, 1:].mean(0).reshape(kh, kw)
    torch.testing.assert_close(raw_attention(res, -1, "mean", (r, c))[0], row)


def test_cvt_key_stride_one_is_self_attention():
    model, x = _tiny_cvt(stride_kv=1)
    res = capture(model, x)
    assert [m.kind for m in res.maps] == ["self", "self", "self"]
    assert res.maps[1].layout.prefix_names == ("cls",) and res.maps[1].layout.grid == (4, 4)


def test_cvt_key_cell_is_where_its_convolution_centres():
    """Key (i, j) of a stride-2, padding-1, 3x3 depth-wise projection is centred on query cell (2i, 2j):
    a change of the stage's input at that one token moves key token (i, j) (and no key outside its
    3x3 neighbourhood)."""
    model, x = _tiny_cvt()
    att, (hidden, h, w) = [c for c in _inputs_of(model, "CvtSelfAttention", x) if c[0].with_cls_token][-1]
    res = capture(model, x)
    m = res.maps[-1]
    i, j = 1, 0
    bumped = hidden.clone()
    bumped[0, 1 + (2 * i) * w + 2 * j] += 5.0
    with torch.no_grad():
        k0 = att.convolution_projection_key(hidden[:, 1:].transpose(1, 2).reshape(1, -1, h, w))
        k1 = att.convolution_projection_key(bumped[:, 1:].transpose(1, 2).reshape(1, -1, h, w))
    moved = (k1 - k0).abs().sum(-1)[0]
    assert torch.nonzero(moved > 1e-9).flatten().tolist() == [m.layout.patch_index(i, j) - m.layout.num_prefix]


# ------------------------------------------------------------------------------------------ MobileViT

def _tiny(model_type: str, image):
    from tests.hf_sweep import build_tiny
    model, _ = build_tiny(model_type)
    return model, torch.randn(1, 3, *image, generator=torch.Generator().manual_seed(2))


def _pixel_ids(layer, feature_hw, channels_last: bool):
    """Which feature pixel each unfolded token is, by the model's *own* unfold: a map whose value at
    (r, c) is r * W + c, unfolded by the layer. v1: (P, N) from ``(B*P, N, C)``; v2: (P, N) from
    ``(B, C, P, N)``; ``feature_hw`` a whole number of patches (v1 resizes other maps first)."""
    H, W = feature_hw
    ids = torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W)
    out = layer.unfolding(ids)[0]
    t = out[:, :, 0] if channels_last else out[0, 0]
    return t.round().long()


def _self_attention(att, hidden):
    """softmax(q kᵀ / √d) of a MobileViTSelfAttention, written out: (X, heads, N, N)."""
    X, N, C = hidden.shape
    h = att.num_attention_heads
    q = att.query(hidden).reshape(X, N, h, -1).transpose(1, 2)
    k = att.key(hidden).reshape(X, N, h, -1).transpose(1, 2)
    return (q @ k.transpose(-1, -2) / (C // h) ** 0.5).softmax(-1)


@pytest.mark.parametrize("image", [(32, 32), (64, 32)])
def test_mobilevit_maps_are_the_pixels_of_one_offset_placed_where_the_unfold_takes_them(image):
    from attention.layout import WINDOW
    model, x = _tiny("mobilevit", image)
    res = capture(model, x)
    calls = _inputs_of(model, "MobileViTSelfAttention", x)
    layers = {id(a): lay for lay in model.modules() if type(lay).__name__ == "MobileViTLayer"
              for a in lay.modules()}
    assert len(res.maps) == len(calls) > 0
    checked_unfold = 0
    for m, (att, (hidden,)) in zip(res.maps, calls):
        layer = layers[id(att)]
        ph, pw = layer.patch_height, layer.patch_width
        P = ph * pw
        assert m.kind == WINDOW and m.layout_source == KNOWN
        X, heads, N, _ = m.weights.shape
        assert X == P and hidden.shape[0] == P and hidden.shape[1] == N
        torch.testing.assert_close(m.weights, _self_attention(att, hidden), atol=1e-6, rtol=1e-5)
        H, W = m.window.grid
        assert (H // ph) * (W // pw) == N and m.window.windows_per_image == P
        # every unfolded token is a distinct feature pixel, by the layer's own unfold of a pixel-id map
        ids = _pixel_ids(layer, (H, W), channels_last=True)
        for p in range(P):
            for n in range(N):
                assert m.window.token_position(p, n) == divmod(int(ids[p, n]), W)
        checked_unfold += 1
        # a click on feature pixel (r, c): its row over the pixels at its own offset, zeros elsewhere
        r, c = H // 2, W // 2 - 1
        flat = ids.flatten().tolist()
        p, n = divmod(flat.index(r * W + c), N)
        want = torch.zeros(H * W)
        want[ids[p]] = m.weights[p, :, n].mean(0)
        got = raw_attention(res, m.name, "mean", (r, c))[0]
        torch.testing.assert_close(got, want.reshape(H, W))
        assert int((got != 0).sum()) == N
        assert m.layout.stride == (image[0] / H, image[1] / W)
    assert checked_unfold == len(res.maps)


def test_mobilevit_resized_feature_map_is_the_grid_the_patches_are_cut_from():
    """32 px: the last stage's 1 x 1 feature map is resized to 2 x 2 (one patch) before the unfold."""
    model, x = _tiny("mobilevit", (32, 32))
    res = capture(model, x)
    last = res.maps[-1]
    assert last.window.grid == (2, 2) and last.weights.shape[-1] == 1 and last.window.windows_per_image == 4
    assert sorted(last.window.token_position(p, 0) for p in range(4)) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def _context_scores(att, hidden):
    """MobileViTv2's separable attention written out: the first channel of the 1x1 qkv convolution,
    softmax over the patches (last axis): (B, 1, P, N)."""
    conv = att.qkv_proj.convolution
    q = F.conv2d(hidden, conv.weight[:1], conv.bias[:1])
    return q.softmax(-1)


@pytest.mark.parametrize("image", [(64, 64), (64, 96)])
def test_mobilevitv2_context_scores_are_pooling_over_the_patch_grid_per_offset(image):
    model, x = _tiny("mobilevitv2", image)
    res = capture(model, x)
    calls = _inputs_of(model, "MobileViTV2LinearSelfAttention", x)
    layers = {id(a): lay for lay in model.modules() if type(lay).__name__ == "MobileViTV2Layer"
              for a in lay.modules()}
    assert len(res.maps) == len(calls) > 0
    for m, (att, (hidden,)) in zip(res.maps, calls):
        layer = layers[id(att)]
        ph, pw = layer.patch_height, layer.patch_width
        B, C, P, N = hidden.shape
        assert m.kind == POOLING and m.layout_source == KNOWN and P == ph * pw
        torch.testing.assert_close(m.weights, _context_scores(att, hidden), atol=1e-6, rtol=1e-5)
        assert m.query_layout.prefix_names == tuple(f"offset{py}{px}" for py in range(ph) for px in range(pw))
        nh, nw = m.layout.grid
        assert nh * nw == N
        # the feature map the layer unfolded: N = (H // ph) * (W // pw) patches of it
        fh, fw = _output_hw(model, layer.conv_1x1, x)
        assert (nh, nw) == (fh // ph, fw // pw)
        ids = _pixel_ids(layer, (fh, fw), channels_last=False)
        for p in range(P):
            for n in range(N):
                r, c = divmod(int(ids[p, n]), fw)
                # key n of every offset is the pixel inside patch cell (r // ph, c // pw) of the key grid
                assert m.layout.patch_index(r // ph, c // pw) == n
        # a key cell covers ph x pw feature pixels: feature stride times the patch size
        assert m.layout.stride == (image[0] / fh * ph, image[1] / fw * pw)
        # the raw view of the first offset is its row of context scores on the patch grid
        torch.testing.assert_close(raw_attention(res, m.name, "mean", "auto")[0],
                                   m.weights[0, 0, 0].reshape(nh, nw))
        # each offset's map by name (offset (py, px) is row py * pw + px), and their mean
        last = f"offset{ph - 1}{pw - 1}"
        torch.testing.assert_close(raw_attention(res, m.name, "mean", last)[0], m.weights[0, 0, P - 1].reshape(nh, nw))
        torch.testing.assert_close(raw_attention(res, m.name, "mean", "prefix_mean")[0],
                                   m.weights[0, 0].mean(0).reshape(nh, nw))


def _output_hw(model, module, x):
    out = []
    hook = module.register_forward_hook(lambda mod, a, o: out.append(o.shape[-2:]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return tuple(out[0])


def test_mobilevit_received_attention_lands_on_each_pixel_of_each_offset():
    """Attention each feature pixel receives (mean over the queries of its own offset), written out from
    the layer's own unfold of a pixel-id map: every feature pixel gets its value, none is left at 0."""
    from attention.methods.received import received_heads
    model, x = _tiny("mobilevit", (64, 32))
    res = capture(model, x)
    layer = next(lay for lay in model.modules() if type(lay).__name__ == "MobileViTLayer")
    m = res.maps[0]
    H, W = m.window.grid
    ids = _pixel_ids(layer, (H, W), channels_last=True)          # (P, N) feature pixel of each token
    per_token = m.weights.mean(2)                                 # (P, heads, N): mean over the queries
    want = torch.zeros(m.num_heads, H * W)
    for p in range(ids.shape[0]):
        want[:, ids[p]] = per_token[p]
    got = received_heads(m)[0]
    torch.testing.assert_close(got, want.reshape(-1, H, W))
    assert bool((got > 0).all())


# ------------------------------------------------------------------------------------------- ImageGPT

def _tiny_imagegpt():
    from tests.hf_sweep import build_tiny
    from tests.hf_sweep_colour_clusters import tiny_processor
    model, cfg = build_tiny("imagegpt")
    return model, tiny_processor(cfg)


def _photo(seed=3):
    import numpy as np
    from PIL import Image
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8))


def test_imagegpt_loads_from_its_folder_and_feeds_the_processors_own_input_ids(tmp_path):
    from attention.models import load_model
    model, proc = _tiny_imagegpt()
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    photo = _photo()
    x = lm.prepare(photo).tensor
    assert x.shape == (1, 3, 8, 8)
    ids = proc(images=photo, return_tensors="pt")["input_ids"]
    assert ids.shape == (1, 64)
    assert torch.equal(lm.model.input_ids(x), ids)
    res = lm.capture(photo)
    with torch.no_grad():
        want = model(input_ids=ids).logits
    torch.testing.assert_close(res.logits, want)
    assert [(m.kind, m.layout.grid, m.layout.num_prefix) for m in res.maps] == [("self", (8, 8), 0)] * 2
    assert "colour-cluster" in lm.info["input"]


def test_imagegpt_without_colour_clusters_is_refused_with_the_reason(tmp_path):
    from transformers import ImageGPTImageProcessor
    from attention.errors import CheckpointError
    from attention.models import load_model
    model, _ = _tiny_imagegpt()
    model.save_pretrained(tmp_path)
    ImageGPTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no colour clusters"):
        load_model(str(tmp_path))


def _causal_attention(attn, hidden):
    """ImageGPT's attention written out: q, k from ``c_attn`` (a transposed linear), scaled dot products,
    keys after the query masked, softmax: (B, heads, N, N)."""
    B, N, C = hidden.shape
    h = attn.num_heads
    q, k, _ = (hidden @ attn.c_attn.weight + attn.c_attn.bias).split(C, dim=-1)
    q = q.reshape(B, N, h, -1).transpose(1, 2)
    k = k.reshape(B, N, h, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / (C // h) ** 0.5
    later = torch.ones(N, N, dtype=torch.bool).triu(1)
    return scores.masked_fill(later, float("-inf")).softmax(-1)


def test_imagegpt_maps_are_causal_self_attention_over_the_pixels_in_raster_order():
    from attention.families.hf_imagegpt import ColourClusterInput
    model, proc = _tiny_imagegpt()
    wrapped = ColourClusterInput(model, proc)
    x = proc(images=_photo(), return_tensors="pt", do_color_quantize=False)["pixel_values"]
    res = capture(wrapped, x)
    hidden = []
    hooks = [b.attn.register_forward_pre_hook(lambda mod, a, kw: hidden.append(a[0] if a else kw["hidden_states"]),
                                               with_kwargs=True) for b in model.transformer.h]
    try:
        with torch.no_grad():
            model(input_ids=wrapped.input_ids(x))
    finally:
        for hk in hooks:
            hk.remove()
    for m, block, hs in zip(res.maps, model.transformer.h, hidden):
        torch.testing.assert_close(m.weights, _causal_attention(block.attn, hs), atol=1e-6, rtol=1e-5)
        assert float(m.weights[0].triu(1).abs().max()) == 0.0          # no pixel attends to a later one
    # pixel (r, c) is token r * 8 + c: give that one pixel another cluster's colour and only that token's
    # input to the first attention changes
    r, c = 5, 2
    ids = wrapped.input_ids(x)[0]
    other = (int(ids[r * 8 + c]) + 1) % proc.clusters.shape[0]
    x2 = x.clone()
    x2[0, :, r, c] = torch.as_tensor(proc.clusters[other], dtype=x.dtype)
    assert int((wrapped.input_ids(x2)[0] != ids).sum()) == 1
    seen = []
    hook = model.transformer.h[0].attn.register_forward_pre_hook(
        lambda mod, a, kw: seen.append(a[0] if a else kw["hidden_states"]), with_kwargs=True)
    try:
        with torch.no_grad():
            wrapped(x)
            wrapped(x2)
    finally:
        hook.remove()
    changed = torch.nonzero((seen[1] - seen[0]).abs().sum(-1)[0] > 0).flatten().tolist()
    assert changed == [res.maps[0].layout.patch_index(r, c)] == [r * 8 + c]
    # the raw view of a clicked pixel: its row, zero on every pixel after it in raster order
    view = raw_attention(res, 0, "mean", (r, c))[0]
    torch.testing.assert_close(view.flatten(), res.maps[0].weights[0, :, r * 8 + c].mean(0))
    assert float(view.flatten()[r * 8 + c + 1:].abs().max()) == 0.0


def test_imagegpt_attention_gradients_are_the_models_own_with_the_parameters_frozen():
    """∂y/∂A through the pixel wrapper (parameters frozen, the graph rooted at the pixels, as the gradient
    methods run it) equals ∂y/∂A of the plain model fed the processor's ids (``output_attentions``, the
    graph through its parameters); the logits are bit for bit those of the ids."""
    from attention.families.hf_imagegpt import ColourClusterInput
    from attention.methods import compute_map
    model, proc = _tiny_imagegpt()
    wrapped = ColourClusterInput(model, proc)
    x = proc(images=_photo(), return_tensors="pt", do_color_quantize=False)["pixel_values"]
    ids = proc(images=_photo(), return_tensors="pt")["input_ids"]
    out = model(input_ids=ids, output_attentions=True)
    want = torch.autograd.grad(out.logits[0, 1], out.attentions)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        res = capture(wrapped, x.clone().requires_grad_(True), keep_graph=True)
        assert torch.equal(res.logits.detach(), out.logits.detach())
        got = torch.autograd.grad(res.logits[0, 1], [m.weights for m in res.maps])
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
        assert float(g.abs().max()) > 0
    res = capture(wrapped, x)
    assert compute_map("grad_rollout", res, model=wrapped, target=1).maps.shape == (1, 8, 8)
