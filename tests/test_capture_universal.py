"""The universal capture's contract beyond the sweep: gradients through SDPA-recorded maps, layouts
inferred or unknown (and labelled), re-preparation when the module tree changes, never raising."""
from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from attention import capture
from attention.capture import prepare
from attention.families import family_of
from attention.layout import INFERRED, KNOWN, UNKNOWN
from tests.capture_sweep import _HandViT


def test_gradient_through_sdpa_recorded_maps_equals_unfused_hook_gradient():
    """timm with fused attention on: the capture records SDPA's weights; ∂y/∂A must equal the gradient
    taken on the unfused path at the tensor that multiplies the values (attn_drop's output)."""
    torch.manual_seed(0)
    fused = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64, num_classes=5).eval()
    unfused = copy.deepcopy(fused)
    taps = []
    for blk in unfused.blocks:
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_hook(lambda m, i, o: taps.append(o))
    assert all(b.attn.fused_attn for b in fused.blocks)
    x = torch.randn(2, 3, 64, 64)
    res = capture(fused, x, keep_graph=True)
    assert [m.op for m in res.maps] == ["sdpa", "sdpa"]
    y = res.logits[:, 3].sum()
    got = torch.autograd.grad(y, [m.weights for m in res.maps])
    y_ref = unfused(x)[:, 3].sum()
    want = torch.autograd.grad(y_ref, taps)
    for g, w, m, t in zip(got, want, res.maps, taps):
        assert (m.weights.detach() - t.detach()).abs().max() < 1e-5
        assert (g - w).abs().max() < 1e-5 * max(1.0, float(w.abs().max()))


def test_hand_written_vit_layout_is_inferred_and_labelled():
    res = capture(_HandViT("module"), torch.randn(1, 3, 32, 32))
    assert len(res.maps) == 2
    for m in res.maps:
        assert m.layout_source == INFERRED and m.describe()["layout_source"] == INFERRED
        assert m.layout.prefix_names == ("cls",) and m.layout.grid == (4, 4) and m.layout.stride == (8.0, 8.0)
        assert m.name == "" and m.is_spatial   # the top-level module ran it


class _OddTokens(nn.Module):
    """23 tokens from a 32 x 32 image: no prefix + grid fits, so the layout is unknown."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 32 * 32, 23 * 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.proj(x.flatten(1)).view(len(x), 23, 8)
        a = (t @ t.transpose(1, 2)).softmax(-1)
        return self.head((a @ t).mean(1))


def test_unknown_layout_is_kept_as_a_matrix_and_refused_by_spatial_views():
    model = _OddTokens()
    x = torch.randn(2, 3, 32, 32)
    res = capture(model, x)
    (m,) = res.maps
    assert m.weights.shape == (2, 1, 23, 23) and m.layout is None and m.layout_source == UNKNOWN
    assert not m.is_spatial and "layout" in m.not_spatial_reason() and "(2, 1, 23, 23)" in m.not_spatial_reason()
    with torch.no_grad():
        assert torch.equal(res.logits, model(x))
    # the matrix itself is exact
    t = model.proj(x.flatten(1)).view(2, 23, 8)
    assert (m.weights[:, 0] - (t @ t.transpose(1, 2)).softmax(-1)).abs().max() < 1e-6


def test_module_tree_change_is_noticed():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8).eval()
    x = torch.randn(1, 3, 32, 32)
    first = prepare(model)
    assert prepare(model) is first
    capture(model, x)
    model.blocks[1] = copy.deepcopy(model.blocks[0])
    assert not first.still_valid(model)
    res = capture(model, x)
    assert prepare(model) is not first
    assert res.layer_names == ["blocks.0.attn", "blocks.1.attn"]
    assert all(m.layout_source == KNOWN for m in res.maps)


def test_a_captured_model_is_freed_when_the_user_drops_it():
    """The per-model cache is keyed weakly: it must not hold the model (an app that switches models
    would otherwise keep every model it ever served)."""
    import gc
    import weakref
    model = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8).eval()
    capture(model, torch.randn(1, 3, 32, 32))
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_families_registry_names_every_family_once():
    from attention.families import families
    names = [f.name for f in families()]
    assert len(names) == len(set(names))
    assert family_of(_HandViT("sdpa")).name == "generic"


class _Crashy(nn.Module):
    """A softmax over a 5-D tensor with a batch the input does not have: still no exception."""

    def forward(self, x):
        a = torch.randn(3, 2, 2, 5, 5, generator=torch.Generator().manual_seed(0)).softmax(-1)
        return x.mean((1, 2, 3)).unsqueeze(1) + a.sum()


def test_capture_never_raises_on_strange_softmaxes():
    res = capture(_Crashy(), torch.randn(2, 3, 8, 8))
    assert len(res.maps) == 1 and res.maps[0].weights.shape == (6, 2, 5, 5)
    assert res.maps[0].layout_source == UNKNOWN


def test_davit_windows_and_channels_are_known():
    """The DaViT family file: window maps carry a geometry that covers the stage grid exactly once per
    window token, and channel attention is labelled as such."""
    torch.manual_seed(0)
    model = timm.create_model("davit_tiny", depths=(1, 1, 1, 1)).eval()  # fully convolutional stem
    res = capture(model, torch.randn(2, 3, 96, 128))
    assert family_of(model).name == "timm-davit"
    kinds = [m.kind for m in res.maps]
    assert kinds == ["window", "channel"] * 4
    for m in res.maps:
        assert m.layout_source == KNOWN
        if m.kind == "window":
            w = m.window
            assert m.weights.shape[0] == 2 * w.windows_per_image
            seen = {w.token_position(i, p) for i in range(w.windows_per_image) for p in range(w.window[0] * w.window[1])}
            seen.discard(None)
            assert seen == {(r, c) for r in range(w.grid[0]) for c in range(w.grid[1])}
            for r, c in [(0, 0), (w.grid[0] - 1, w.grid[1] - 1), (w.grid[0] // 2, 1)]:
                assert w.token_position(*w.locate(r, c)) == (r, c)
        else:
            assert not m.is_spatial and "channel" in m.not_spatial_reason()


def test_keep_freed_memory_takes_effect_on_glibc():
    """The app's allocator setting (attention/allocator.py) is applied on Linux/glibc, once."""
    import platform
    import subprocess
    import sys
    code = ("from attention.allocator import keep_freed_memory as k; a = k(); b = k(); print(a, b)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    expected = "True" if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else "False"
    assert out == [expected, expected]
