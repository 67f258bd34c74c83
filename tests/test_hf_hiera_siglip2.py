"""Hiera (mask units in the unrolled token order) and SigLIP2 (NaFlex) in their true geometry.

Hiera: every view of every layer (the raw map from each query cell, per head; the attention each
position receives; the layer x head stack) equals the model's own ``output_attentions`` tensors
(B, heads, windows, Nq, Nk) placed on the photo by the unroll written out in `tests.hf_sweep`
(`hiera_sequence_cells`, from the paper), not by the family's mapping.

SigLIP 2: a tiny classifier saved with its NaFlex processor, loaded by `load_model`, fed non-square
photos: the prepared image is the processor's grid for that photo, the maps over the real patches are
the model's own ``output_attentions`` (fed the processor's three inputs directly) with the padding
keys exactly zero, and no view draws or averages the padding.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tests.hf_sweep import (build_tiny, hiera_geometry, hiera_query, hiera_sequence_cells,  # noqa: E402
                            input_size, quiet_two_threads)


_quiet_two_threads = pytest.fixture(autouse=True, scope="module")(quiet_two_threads)


# ------------------------------------------------------------------------------------------- Hiera

def test_unroll_written_out_matches_a_hand_count():
    # 4 x 4 grid, one stride-2 step: the four (r mod 2, c mod 2) offsets are the slowest index, each a 2 x 2 map
    cells = hiera_sequence_cells((4, 4), [(2, 2)])
    assert cells == [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15]
    # two steps on 8 x 8: the 2 x 2 map left is the four 4 x 4 mask units, fastest; token 0..3 = their corners
    cells = hiera_sequence_cells((8, 8), [(2, 2), (2, 2)])
    assert cells[:4] == [0, 4, 32, 36] and sorted(cells) == list(range(64))


@pytest.fixture(scope="module")
def hiera():
    model, cfg = build_tiny("hiera")
    x = torch.randn(1, 3, *input_size(cfg), generator=torch.Generator().manual_seed(1))
    from attention import capture
    res = capture(model, x)
    with torch.no_grad():
        theirs = model(x, output_attentions=True).attentions   # (B, heads, windows, Nq, Nk) per stage's last layer
    return model, x, res, theirs


def _placed(geo, a, cell, head):
    """(in_grid) map of the query at `cell` from a (B, heads, windows, Nq, Nk) tensor, by the written-out unroll."""
    w, j = hiera_query(geo, cell)
    n_keys = len(geo.in_cells) // geo.windows
    row = a[0, :, w, j].mean(0) if head == "mean" else a[0, head, w, j]
    out = torch.zeros(len(geo.in_cells), dtype=torch.float64)
    for k in range(n_keys):
        out[geo.in_cells[k * geo.windows + w]] = float(row[k])
    return out.view(*geo.in_grid)


def test_hiera_layers_are_placed_with_their_kinds(hiera):
    _, _, res, _ = hiera
    kinds = [(m.kind, m.layout_source) for m in res.maps]
    # stage 0: 4 x 4 mask units (windows); stage 1: pooling mask-unit layer, global layer; stage 2: pooling global
    assert kinds == [("window", "known"), ("reduced", "known"), ("self", "known"), ("reduced", "known")]
    w = res.maps[0].window
    assert w.window == (4, 4) and w.grid == (16, 16) and w.windows_per_image == 16
    assert res.maps[1].layout.grid == (16, 16) and res.maps[1].query_layout.grid == (8, 8)
    assert res.maps[3].layout.grid == (8, 8) and res.maps[3].query_layout.grid == (4, 4)
    assert all(m.is_spatial for m in res.maps)


def test_hiera_raw_view_of_every_cell_and_head_equals_the_models_attentions(hiera):
    from attention.methods.raw import raw_attention
    model, x, res, theirs = hiera
    # HF returns the last layer of each stage: maps 0 (stage 0), 2 (stage 1, layer 1), 3 (stage 2)
    for i, a in ((0, theirs[0]), (2, theirs[1]), (3, theirs[2])):
        m = res.maps[i]
        geo = hiera_geometry(model, m.name, tuple(x.shape[-2:]))
        for r in range(geo.q_grid[0]):
            for c in range(geo.q_grid[1]):
                for head in ["mean"] + list(range(m.num_heads)):
                    got = raw_attention(res, i, head, (r, c))[0].double()
                    want = _placed(geo, a, (r, c), head)
                    assert torch.allclose(got, want, atol=1e-6), (m.name, (r, c), head)


def test_hiera_pooling_mask_unit_layer_against_its_record(hiera):
    # the stage-1 pooling layer is not in output_attentions (only each stage's last layer): its own record
    from attention.methods.raw import raw_attention
    model, x, res, _ = hiera
    m, rec = res.maps[1], res.records[1].weights
    geo = hiera_geometry(model, m.name, tuple(x.shape[-2:]))
    a = rec.reshape(1, m.num_heads, geo.windows, *rec.shape[-2:])
    assert geo.windows == 16 and geo.pooled
    for cell in [(0, 0), (3, 5), (7, 7), (4, 1)]:
        got = raw_attention(res, 1, "mean", cell)[0].double()
        want = _placed(geo, a, cell, "mean")
        assert torch.allclose(got, want, atol=1e-6)
        # the query sees its own mask unit only: a 4 x 4 block of the 16 x 16 key grid, summing to one
        nz = got.nonzero()
        assert nz[:, 0].max() - nz[:, 0].min() == 3 and nz[:, 1].max() - nz[:, 1].min() == 3
        assert abs(float(got.sum()) - 1) < 1e-6


def test_hiera_received_and_head_stack_place_the_windows(hiera):
    from attention.methods.received import received_heads
    from attention.methods.stacks import layer_head_stack
    model, x, res, theirs = hiera
    m = res.maps[0]
    geo = hiera_geometry(model, m.name, tuple(x.shape[-2:]))
    a = theirs[0][0]                          # (heads, windows, n, n)
    want = torch.zeros(m.num_heads, 256, dtype=torch.float64)
    for w in range(geo.windows):
        for k in range(a.shape[-1]):
            want[:, geo.in_cells[k * geo.windows + w]] = a[:, w, :, k].double().mean(-1)
    got = received_heads(m)[0].double()
    assert torch.allclose(got, want.view(m.num_heads, 16, 16), atol=1e-6)
    stack, names = layer_head_stack(res, query=lambda mm: (2, 3) if mm is res.maps[0] else None)
    assert names[0] == m.name
    for h in range(m.num_heads):
        assert torch.allclose(torch.from_numpy(stack[0][h]).double(), _placed(geo, theirs[0], (2, 3), h), atol=1e-6)


def test_hiera_at_the_released_geometry():
    """HieraConfig's own geometry (224 px, stride 4, 8 x 8 mask units, mask units in stages 0-1, three
    pooling stages), narrow: 7 x 7 windows of 8 x 8 and 7 x 7 of 4 x 4, pooled and global layers; every map
    passes the sweep's probe and raw-view check against the unroll written out."""
    import transformers
    from tests.hf_sweep import Row, check_model
    cfg = transformers.HieraConfig(embed_dim=16, depths=[1, 2, 2, 1], num_heads=[1, 1, 2, 2])
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.HieraForImageClassification(cfg).eval()
    row = Row("hiera")
    problems, res = check_model(row, model, torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4)))
    assert problems == [] and row.probes == 6 and row.max_err == 0.0
    assert [(m.kind, m.window.window if m.window else None) for m in res.maps] == [
        ("window", (8, 8)), ("reduced", None), ("window", (4, 4)), ("reduced", None), ("self", None), ("reduced", None)]
    assert res.maps[0].window.windows_per_image == 49 and res.maps[2].window.grid == (28, 28)


def test_hiera_backbone_without_unroll_is_placed_as_it_computes():
    """HieraBackbone's forward (transformers 5) does not unroll: its stage-0 "mask units" are then the
    sequence indices w, w + 16, ... of the row-major grid, i.e. grid columns; its pooling layers pool rows
    r, r + 4, ... (no block of the grid), so neither they nor the later stages' tokens are grid cells: left
    unplaced rather than drawn somewhere they are not."""
    import transformers
    from attention import capture
    from attention.methods.raw import raw_attention
    from tests.hf_sweep import tiny_config
    if "unroll(" in __import__("inspect").getsource(transformers.HieraBackbone.forward):
        pytest.skip("this transformers' HieraBackbone unrolls")
    torch.manual_seed(0)
    model = transformers.HieraBackbone(tiny_config("hiera", transformers.HieraConfig)).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    res = capture(model, x)
    with torch.no_grad():
        a = model(x, output_attentions=True).attentions[0]          # (1, 1, 16, 16, 16): window w = column w
    assert res.maps[0].window.window == (16, 1)
    got = raw_attention(res, 0, "mean", (5, 9))[0].double()
    want = torch.zeros(16, 16, dtype=torch.float64)
    want[:, 9] = a[0, 0, 9, 5].double()                             # query (5, 9) is index 5 of window 9
    assert torch.allclose(got, want, atol=1e-6)
    assert [m.layout_source for m in res.maps] == ["known", "unknown", "unknown", "unknown"]


def test_hiera_through_the_loader(tmp_path):
    from attention.models import load_model
    from tests.hf_sweep import Row, check_model, processor_for, _photo
    model, cfg = build_tiny("hiera")
    model.save_pretrained(tmp_path)
    processor_for("hiera", input_size(cfg)).save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    x = lm.prepare(_photo()).tensor
    problems, res = check_model(Row("hiera"), lm.model, x)
    assert problems == [] and [m.kind for m in res.maps] == ["window", "reduced", "self", "reduced"]


# ------------------------------------------------------------------------------------------- SigLIP 2

CHELSEA = "/work/shared/images/public_domain/skimage_chelsea.png"     # 451 x 300: wider than tall
GRACE = "/work/shared/images/public_domain/matplotlib_grace_hopper.jpg"  # 512 x 600: taller than wide


@pytest.fixture(scope="module")
def siglip2_folder(tmp_path_factory):
    """A tiny random SigLIP 2 classifier saved with its NaFlex processor (8 px patches, at most 64)."""
    from transformers import Siglip2Config, Siglip2ForImageClassification, Siglip2ImageProcessor
    cfg = Siglip2Config(vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, patch_size=8, num_patches=64),
                        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, vocab_size=100))
    cfg.vision_config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Siglip2ForImageClassification(cfg).eval()
    folder = tmp_path_factory.mktemp("siglip2")
    model.save_pretrained(folder)
    Siglip2ImageProcessor(patch_size=8, max_num_patches=64).save_pretrained(folder)
    return folder


def _photo(path):
    from PIL import Image
    return Image.open(path).convert("RGB")


def test_siglip2_non_square_photo_through_the_loader(siglip2_folder):
    from transformers import AutoImageProcessor
    from attention import capture
    from attention.methods.raw import raw_attention
    from attention.methods.received import received
    from attention.models import load_model
    lm = load_model(str(siglip2_folder))
    photo = _photo(CHELSEA)
    prepared = lm.prepare(photo)
    proc = AutoImageProcessor.from_pretrained(siglip2_folder)
    theirs = proc(images=photo, return_tensors="pt")
    h, w = (int(v) for v in theirs["spatial_shapes"][0])
    n, pad = h * w, 64 - h * w
    assert (h, w) != (8, 8) and w > h and pad > 0                   # the processor's own grid, padded
    assert prepared.tensor.shape == (1, 3, 8 * h, 8 * w)
    assert prepared.geometry.box == (0.0, 0.0, 300.0, 451.0)        # the whole photo, resized
    res = capture(lm.model, prepared.tensor)
    assert res.tokens.grid == (h, w) and len(res.tokens.suffix_names) == pad
    # the model's own attentions, fed the processor's three inputs directly
    with torch.no_grad():
        out = lm.model.model(**theirs, output_attentions=True)
    assert torch.equal(res.logits, out.logits)
    selfs = [m for m in res.maps if m.kind == "self"]
    assert len(selfs) == 2 and [m.kind for m in res.maps].count("pooling") == 1
    for m, a in zip(selfs, out.attentions):
        assert a.shape[-1] == 64 and float(a[..., n:].abs().max()) == 0.0   # padding keys: exactly zero weight
        assert m.weights.shape == (1, 2, n, n) and m.layout.grid == (h, w) and not m.layout.suffix_names
        assert torch.equal(m.weights, a[:, :, :n, :n])                      # the real patches: the model's own
        for cell in [(0, 0), (h - 1, w - 1), (h // 2, w // 3)]:
            got = raw_attention(res, res.maps.index(m), "mean", cell)[0]
            want = a[0, :, cell[0] * w + cell[1], :n].mean(0).view(h, w)
            assert got.shape == (h, w) and torch.allclose(got, want, atol=1e-7)
        # received: over the real patch queries only (the padding rows are no positions)
        assert torch.allclose(received(m)[0], a[0, :, :n, :n].mean(0).mean(0).view(h, w), atol=1e-7)
    pool = next(m for m in res.maps if m.kind == "pooling")
    assert pool.weights.shape == (1, 2, 1, n) and pool.layout.grid == (h, w)
    rec = next(r for r in res.records if r.name == pool.name)
    assert float(rec.weights[..., n:].abs().max()) == 0.0                  # the head honours the mask too
    assert torch.allclose(pool.weights.sum(-1), torch.ones(1, 2, 1))


def test_siglip2_each_photo_gets_its_own_grid(siglip2_folder):
    from attention import capture
    from attention.models import load_model
    lm = load_model(str(siglip2_folder))
    wide, tall = lm.prepare(_photo(CHELSEA)), lm.prepare(_photo(GRACE))
    gw, gt = (tuple(s // 8 for s in p.tensor.shape[-2:]) for p in (wide, tall))
    assert gw[1] > gw[0] and gt[0] > gt[1]
    assert capture(lm.model, tall.tensor).maps[0].layout.grid == gt


def test_siglip2_wrapper_refuses_what_is_no_patch_grid(siglip2_folder):
    from attention.models import load_model
    lm = load_model(str(siglip2_folder))
    with pytest.raises(ValueError, match="whole 8 x 8 patches"):
        lm.model(torch.zeros(1, 3, 20, 24))
    with pytest.raises(ValueError, match="max_num_patches=64"):
        lm.model(torch.zeros(1, 3, 8 * 9, 8 * 9))


def test_siglip2_token_norms_leave_the_padding_out():
    """The lesson's token norms: per block, the real patches on the photo's grid (the padding is no patch)."""
    from attention.families.hf_siglip2 import NaFlexImageModel
    from attention.lesson.special_tokens import token_norms
    from tests.hf_sweep import naflex_reference_inputs
    model, _ = build_tiny("siglip2")
    wrapped = NaFlexImageModel(model, 8, 16)
    x = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(3))      # 3 x 5 patches + 1 padding
    norms = token_norms(wrapped, x)
    with torch.no_grad():
        hidden = model(**naflex_reference_inputs(x, 8, 16), output_hidden_states=True).hidden_states[1:]
    want = torch.stack([h[0, :15].norm(dim=-1) for h in hidden]).view(len(hidden), 3, 5)
    assert torch.allclose(torch.from_numpy(norms.patch_maps()), want, atol=1e-5)


def test_siglip2_bare_model_capture_says_how():
    from attention import capture
    model, _ = build_tiny("siglip2")
    model.train()
    with pytest.raises(ValueError, match=r"NaFlexImageModel\(model, patch_size=8"):
        capture(model, torch.zeros(1, 3, 24, 40))
    assert all(m.training for m in model.modules())       # left as found


def test_siglip2_gradcam_on_a_padded_photo_uses_the_real_patches(siglip2_folder):
    """Grad-CAM where padding tokens follow the patches: the map over the processor's (h, w) grid equals the
    formula written out on the target layer's first h*w tokens (the real patches), the padding left out."""
    from attention import capture
    from attention.methods import compute_map
    from attention.methods.gradcam import default_target_layer
    from attention.models import load_model
    lm = load_model(str(siglip2_folder))
    photo = _photo(CHELSEA)
    x = lm.prepare(photo).tensor
    res = capture(lm.model, x)
    h, w = res.tokens.grid
    n = h * w
    assert len(res.tokens.suffix_names) > 0                      # this photo is padded
    target = int(res.logits.argmax())
    got = compute_map("gradcam", res, model=lm.model, x=x, target=target).maps[0]
    # the formula, by hand: activations and gradients of the target layer's real patch tokens
    layer = default_target_layer(lm.model)
    seen = {}
    hook = layer.register_forward_hook(lambda mod, inp, out: seen.__setitem__("F", out[0] if isinstance(out, tuple)
                                                                                else out))
    try:
        with torch.enable_grad():
            logits = lm.model(x)
            logits = getattr(logits, "logits", logits)
            F = seen["F"]
            grad, = torch.autograd.grad(logits[0, target], F)
    finally:
        hook.remove()
    a, g = F[0, :n].detach(), grad[0, :n]                      # (n, C): the real patches, padding after them
    alpha = g.mean(0)                                           # mean-pooled gradient per channel
    want = (a * alpha).sum(-1).clamp_min(0).view(h, w)
    assert got.shape == (h, w)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5), (got, want)
