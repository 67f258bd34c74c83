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
from attention.layout import KNOWN, REDUCED  # noqa: E402
from attention.methods.raw import raw_attention  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _quiet_two_threads():
    import transformers
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(level)
    torch.set_num_threads(old)


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
