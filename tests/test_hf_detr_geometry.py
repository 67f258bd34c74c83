"""Where the tokens of the DETR family and of the windowed detector backbones sit, found without the families.

Windowed backbones (LW-DETR ViT, RF-DETR DINOv2): each test model is built with its *first* layer windowed
and again with its first layer global, at a non-square input (RF-DETR's partition interleaves rows there).
The positions are found by marking the image: a batch holds the plain image and one copy per patch
cell with that cell's pixels changed; the tokens of the first attention module's own input that change
in copy k are exactly the tokens of cell k (patch embedding and LayerNorm act per token), and tokens
that change for no cell are the windows' CLS tokens. The captured geometry must agree token by token,
and the views (click a patch, each window's CLS, received) must equal the aten-level reference record
written out with those positions.

DETR, Table Transformer, Conditional DETR, DAB-DETR: the encoder attends over the backbone's last feature
map (its grid read off a forward hook on the backbone), the decoder's object queries attend among
themselves (a token matrix) and over the feature map (one map per object query).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from attention import capture  # noqa: E402
from attention.layout import TOKENS, WINDOW, TokenWindows  # noqa: E402
from attention.methods.raw import raw_attention  # noqa: E402
from attention.methods.received import received_heads  # noqa: E402
from tests.attention_reference import reference_attention  # noqa: E402

H, W, P = 32, 48, 4          # input and patch size: an 8 x 12 patch grid, 2 x 2 windows of 4 x 6
from tests.hf_sweep import quiet_two_threads  # noqa: E402

_quiet_two_threads = pytest.fixture(autouse=True, scope="module")(quiet_two_threads)


def windowed_model(kind: str, first_windowed: bool):
    """A tiny LW-DETR ViT or RF-DETR DINOv2 backbone, random init, 2 layers: layer 0 windowed or global."""
    import transformers
    blocks = [0] if first_windowed else [1]
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=P, mlp_ratio=2)
    if kind == "lw_detr_vit":
        cfg = transformers.LwDetrViTConfig(image_size=W, pretrain_image_size=32, num_windows=4,
                                           window_block_indices=blocks, **common)
        cls = transformers.LwDetrViTBackbone
    else:
        cfg = transformers.RfDetrDinov2Config(image_size=W, num_windows=2, window_block_indexes=blocks, **common)
        cls = transformers.RfDetrDinov2Backbone
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return cls(cfg).eval()


def marked_tokens(model, module_name: str, x: torch.Tensor):
    """{(row, col): (sequence row, token index)} of every patch cell at the input of `module_name`, and the
    set of (sequence row, token index) that no cell changes, for batch item 0."""
    module = dict(model.named_modules())[module_name]
    gh, gw = H // P, W // P
    batch = [x[0]]
    for r in range(gh):
        for c in range(gw):
            y = x[0].clone()
            y[:, r * P:(r + 1) * P, c * P:(c + 1) * P] += 3.0
            batch.append(y)
    seen = []
    hook = module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(torch.stack(batch))
    finally:
        hook.remove()
    h = seen[0]                                   # (B * rows per image, n, C)
    per_image = h.shape[0] // len(batch)
    h = h.reshape(len(batch), per_image, h.shape[1], h.shape[2])
    where, changed_any = {}, torch.zeros(per_image, h.shape[2], dtype=torch.bool)
    for k in range(1, len(batch)):
        changed = (h[k] - h[0]).abs().sum(-1) > 1e-6
        rows, toks = torch.nonzero(changed, as_tuple=True)
        assert len(rows) == 1, f"cell {divmod(k - 1, gw)} changed {len(rows)} tokens at {module_name}'s input"
        where[divmod(k - 1, gw)] = (int(rows[0]), int(toks[0]))
        changed_any |= changed
    unmarked = {(int(a), int(b)) for a, b in torch.nonzero(~changed_any).tolist()}
    return where, unmarked


WINDOWED = [(kind, first) for kind in ("lw_detr_vit", "rf_detr_dinov2") for first in (True, False)]


@pytest.mark.parametrize("kind,first_windowed", WINDOWED)
def test_windowed_backbone_tokens_sit_where_the_image_puts_them(kind, first_windowed):
    model = windowed_model(kind, first_windowed)
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    res = capture(model, x)
    m = res.maps[0]
    assert m.kind == WINDOW and m.layout_source == "known" and m.window is not None
    info = m.window
    where, unmarked = marked_tokens(model, m.name, x)
    # every patch cell: the window and in-window index the capture gives are where the image put it
    for cell, (row, tok) in where.items():
        assert info.locate(*cell) == (row, tok), (cell, info.locate(*cell), (row, tok))
        assert info.token_position(row, tok) == cell
    n_windows = 4
    assert info.windows_per_image == (n_windows if first_windowed else 1)
    assert info.tokens_per_window * info.windows_per_image == len(where) + len(unmarked)
    # the tokens no pixel reaches are the windows' CLS tokens (RF-DETR), named, one per window
    positionless = {(w, p) for w in range(info.windows_per_image) for p in range(info.tokens_per_window)
                    if info.token_position(w, p) is None}
    assert positionless == unmarked
    if kind == "rf_detr_dinov2":
        assert len(unmarked) == n_windows and isinstance(info, TokenWindows)
        names = [n for w in range(info.windows_per_image) for _, n in info.special_tokens(w)]
        assert names == (["cls"] * 4 if first_windowed else ["cls0", "cls1", "cls2", "cls3"])
    else:
        assert not unmarked
    # RF-DETR's partition on a non-square grid: a window is no rectangle (its rows interleave)
    if kind == "rf_detr_dinov2" and first_windowed:
        cells = [cell for cell, (w, _) in where.items() if w == 0]
        rows, cols = {r for r, _ in cells}, {c for _, c in cells}
        assert len(cells) == 24 and len(rows) * len(cols) > len(cells)   # its bounding box holds other cells


@pytest.mark.parametrize("kind,first_windowed", WINDOWED)
def test_windowed_backbone_views_equal_the_reference_written_out(kind, first_windowed):
    model = windowed_model(kind, first_windowed)
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    res = capture(model, x)
    _, ref = reference_attention(model, x)
    m = res.maps[0]
    where, unmarked = marked_tokens(model, m.name, x)
    cell_of = {tok: cell for cell, tok in where.items()}
    X, heads, n, _ = m.weights.shape
    A = ref.records[0].reshape(X, heads, n, n).mean(1)          # the reference, head mean
    assert torch.allclose(m.weights.double().reshape(-1, n), ref.records[0], atol=1e-6)
    gh, gw = H // P, W // P

    def written_out(row: int, query_tokens: list[int]) -> torch.Tensor:
        out = torch.zeros(gh, gw, dtype=torch.float64)
        for k in range(n):
            if (row, k) in cell_of:
                out[cell_of[(row, k)]] = A[row, query_tokens, k].mean()
        return out

    for cell in [(0, 0), (3, 5), (5, 7), (gh - 1, gw - 1)]:      # click a patch
        row, tok = where[cell]
        got = raw_attention(res, 0, "mean", cell)[0].double()
        assert torch.allclose(got, written_out(row, [tok]), atol=1e-6), cell
    # received: each position's attention averaged over its sequence's queries
    want = torch.zeros(gh, gw, dtype=torch.float64)
    for (row, k), cell in cell_of.items():
        want[cell] = A[row, :, k].mean()
    assert torch.allclose(received_heads(m)[0].mean(0).double(), want, atol=1e-6)
    if kind == "rf_detr_dinov2":   # each window's CLS over its own window; global: the CLS tokens' mean
        want = torch.zeros(gh, gw, dtype=torch.float64)
        for row in range(X):
            cls_toks = sorted(t for r, t in unmarked if r == row)
            want += written_out(row, cls_toks)
        got = raw_attention(res, 0, "mean", "cls")[0].double()
        assert torch.allclose(got, want, atol=1e-6)
        assert torch.allclose(raw_attention(res, 0, "mean", "auto")[0].double(), want, atol=1e-6)


def windowed_detector(kind: str):
    """A tiny whole LW-DETR / RF-DETR detector (windowed backbone, 1 decoder layer, 6 object queries)."""
    import transformers
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=P, mlp_ratio=2)
    head = dict(d_model=32, decoder_layers=1, decoder_self_attention_heads=2, decoder_cross_attention_heads=2,
                num_queries=6, group_detr=1, decoder_ffn_dim=32, c2f_num_blocks=1)
    if kind == "lw_detr_vit":
        bb = dict(model_type=kind, image_size=W, pretrain_image_size=32, num_windows=4, window_block_indices=[0],
                  out_indices=[2], **common)
        cfg = transformers.LwDetrConfig(backbone_config=bb, projector_scale_factors=[1.0], **head)
        cls = transformers.LwDetrForObjectDetection
    else:
        bb = dict(model_type=kind, image_size=32, num_windows=2, window_block_indexes=[0], out_features=["stage2"],
                  **common)
        cfg = transformers.RfDetrConfig(backbone_config=bb, intermediate_size=32, **head)
        cls = transformers.RfDetrForObjectDetection
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return cls(cfg).eval()


@pytest.mark.parametrize("kind", ["lw_detr_vit", "rf_detr_dinov2"])
def test_whole_windowed_detector_backbone_placed_and_object_queries_no_grid(kind):
    """In the whole detector the backbone's windows are placed as in the bare backbone (marked again here),
    the decoder's object-query self-attention is a token matrix, and the deformable cross-attention's
    softmax over sampling points is no map."""
    model = windowed_detector(kind)
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(4))
    res = capture(model, x)
    _, ref = reference_attention(model, x)
    assert [m.kind for m in res.maps] == [WINDOW, WINDOW, TOKENS]
    assert all(m.layout_source == "known" for m in res.maps)
    assert len(ref.records) == len(res.maps) + 1        # + the deformable attention's sampling-point softmax
    for m, want in zip(res.maps, ref.records):
        assert torch.allclose(m.weights.double().reshape(want.shape), want, atol=1e-6)
    where, _ = marked_tokens(model, res.maps[0].name, x)
    assert all(res.maps[0].window.locate(*cell) == tok for cell, tok in where.items())
    assert res.maps[2].weights.shape[-1] == model.config.num_queries and res.maps[2].layout is None


# ------------------------------------------------------------------------------------------------ DETR family

DETR_TYPES = ("detr", "table-transformer", "conditional_detr", "dab-detr")
DH, DW = 100, 130            # not multiples of 32: the last row and column of cells reach past the input


def detr_model(model_type: str):
    from tests.hf_sweep import build_tiny
    return build_tiny(model_type)[0]


def feature_cells(model, x: torch.Tensor):
    """(the backbone's projected feature map (d, gh, gw), {encoder token index: (row, col)}): each token of
    the encoder's input matched to the feature-map cell holding the same vector."""
    grabbed = {}

    def projected(mod, args, out):
        grabbed["fm"] = out.detach()

    def encoder_input(mod, args, kwargs):
        t = kwargs.get("inputs_embeds")
        grabbed["tokens"] = (t if t is not None else args[0]).detach()

    h1 = model.input_projection.register_forward_hook(projected)
    h2 = model.encoder.register_forward_pre_hook(encoder_input, with_kwargs=True)
    try:
        with torch.no_grad():
            model(x)
    finally:
        h1.remove()
        h2.remove()
    fm, tokens = grabbed["fm"][0], grabbed["tokens"][0]
    d, gh, gw = fm.shape
    cells = {}
    for t in range(tokens.shape[0]):
        hit = [(r, c) for r in range(gh) for c in range(gw) if torch.equal(tokens[t], fm[:, r, c])]
        assert len(hit) == 1, f"token {t} matches {len(hit)} cells"
        cells[t] = hit[0]
    assert sorted(cells.values()) == [(r, c) for r in range(gh) for c in range(gw)]
    return fm, cells


@pytest.mark.parametrize("model_type", DETR_TYPES)
def test_detr_maps_are_the_feature_map_and_the_object_queries(model_type):
    from attention.methods.layers import query_grid, spatial_layers
    from attention.methods.stacks import layer_head_stack
    from attention.errors import MethodNotDefinedError
    model = detr_model(model_type)
    x = torch.randn(1, 3, DH, DW, generator=torch.Generator().manual_seed(2))
    fm, cells = feature_cells(model, x)
    gh, gw = fm.shape[-2:]
    assert (gh, gw) == (4, 5)                                   # ceil(100 / 32), ceil(130 / 32)
    res = capture(model, x)
    _, ref = reference_attention(model, x)
    assert len(res.records) == len(ref.records) == 3
    for got, want in zip(res.records, ref.records):
        assert torch.allclose(got.weights.double().reshape(want.shape), want, atol=1e-6)
    assert tuple(res.tokens.grid) == (gh, gw) and tuple(res.tokens.stride) == (32.0, 32.0)   # ResNet: stride 32
    enc, dec_self, cross = res.maps
    n_queries = model.config.num_queries
    # encoder: feature-map positions x positions, on the backbone's grid
    assert enc.kind == "self" and enc.layout_source == "known" and enc.layout.grid == (gh, gw)
    assert enc.layout.num_prefix == 0 and enc.layout.stride == (32.0, 32.0)
    # decoder self-attention: object queries among themselves, a token matrix with nothing on a grid
    assert dec_self.kind == TOKENS and dec_self.layout is None and dec_self.weights.shape[-1] == n_queries
    assert "no image positions" in dec_self.not_spatial_reason()
    with pytest.raises(MethodNotDefinedError):
        raw_attention(res, 1, "mean", "auto")
    # cross-attention: one map per object query over the feature grid; the queries sit on no grid
    assert cross.kind == "pooling" and cross.layout.grid == (gh, gw)
    assert cross.query_layout.prefix_names == tuple(f"query{i}" for i in range(n_queries))
    assert cross.query_layout.num_patches == 0 and query_grid(cross) is None
    assert [res.maps[i].name for i in spatial_layers(res)] == [enc.name, cross.name]
    for m in res.maps:       # nothing whose queries are the object queries is fitted to a grid
        if m.weights.shape[-2] == n_queries and m.query_layout is not None:
            assert m.query_layout.num_patches == 0
    cell_of = cells
    A = ref.records[2].reshape(1, -1, n_queries, gh * gw).mean(1)[0]    # (queries, keys), head mean
    for k in range(n_queries):
        want = torch.zeros(gh, gw, dtype=torch.float64)
        for t, cell in cell_of.items():
            want[cell] = A[k, t]
        got = raw_attention(res, 2, "mean", f"query{k}")[0].double()
        assert torch.allclose(got, want, atol=1e-6), k
    want = torch.zeros(gh, gw, dtype=torch.float64)
    for t, cell in cell_of.items():
        want[cell] = A[:, t].mean()
    assert torch.allclose(received_heads(cross)[0].mean(0).double(), want, atol=1e-6)
    assert torch.allclose(raw_attention(res, 2, "mean", "prefix_mean")[0].double(), want, atol=1e-6)
    # encoder: click a cell -> that cell's row over the grid, written out from the reference
    E = ref.records[0].reshape(1, -1, gh * gw, gh * gw).mean(1)[0]
    tok_of = {cell: t for t, cell in cell_of.items()}
    for cell in [(0, 0), (2, 3), (gh - 1, gw - 1)]:
        want = torch.zeros(gh, gw, dtype=torch.float64)
        for t, c in cell_of.items():
            want[c] = E[tok_of[cell], t]
        assert torch.allclose(raw_attention(res, 0, "mean", cell)[0].double(), want, atol=1e-6), cell
    # the per-head grid: the encoder and one map per head of the cross-attention, on the feature grid
    stack, names = layer_head_stack(res)
    assert names == [enc.name, cross.name] and [s.shape for s in stack] == [(2, gh, gw), (2, gh, gw)]


def test_detr_grid_follows_the_input_size():
    model = detr_model("detr")
    for hw, grid in (((64, 96), (2, 3)), ((33, 200), (2, 7)), ((32, 32), (1, 1))):
        x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(3))
        fm, _ = feature_cells(model, x)
        res = capture(model, x)
        assert tuple(fm.shape[-2:]) == grid and res.maps[0].layout.grid == grid
        assert res.maps[2].layout.grid == grid and tuple(res.tokens.grid) == grid


def test_detr_processor_of_a_real_checkpoint_is_refused_with_its_rule_and_the_way_out(tmp_path):
    """DETR's processor resizes the shortest edge to 800 with the longest at most 1333 (a size per photo): the
    loader says that and how to view the model at a fixed size; saved with a fixed size it loads, exactly."""
    import transformers
    from attention.errors import CheckpointError
    from attention.models import load_model
    model = detr_model("detr")
    model.save_pretrained(tmp_path)
    transformers.DetrImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_model(str(tmp_path))
    msg = str(e.value)
    assert "shortest edge to 800" in msg and "at most 1333" in msg and "size={'height': H, 'width': W}" in msg
    transformers.DetrImageProcessor(size={"height": 96, "width": 128}).save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    import numpy as np
    from PIL import Image
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 210, 3), dtype=np.uint8))
    x = lm.prepare(photo).tensor
    assert tuple(x.shape[-2:]) == (96, 128)
    res = capture(lm.model, x)
    assert [m.kind for m in res.maps] == ["self", TOKENS, "pooling"] and res.maps[2].layout.grid == (3, 4)


@pytest.mark.parametrize("model_type", DETR_TYPES)
def test_detr_token_norms_are_the_encoder_outputs_on_the_feature_grid(model_type):
    from attention.lesson.special_tokens import token_norms
    model = detr_model(model_type)
    x = torch.randn(1, 3, DH, DW, generator=torch.Generator().manual_seed(5))
    _, cells = feature_cells(model, x)
    layer = model.encoder.layers[-1]
    grabbed = []

    def keep(mod, args, out):
        grabbed.append((out[0] if isinstance(out, (tuple, list)) else out).detach())

    h = layer.register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    tn = token_norms(model, x)
    assert tn.layout.grid == (4, 5) and tn.layout.num_prefix == 0 and len(tn.layers) == len(model.encoder.layers)
    got = tn.patch_maps()[-1]
    for t, cell in cells.items():     # the encoder keeps its input's token order: token t is cell `cells[t]`
        assert abs(got[cell] - float(grabbed[0][0, t].norm())) < 1e-4


def test_windowed_backbone_token_norms_refused_with_the_reason():
    from attention.errors import MethodNotDefinedError
    from attention.lesson.special_tokens import token_norms
    model = windowed_model("rf_detr_dinov2", True)
    with pytest.raises(MethodNotDefinedError, match="window by window.*own CLS token"):
        token_norms(model, torch.randn(1, 3, H, W))


def test_token_windows_refuse_an_inconsistent_table():
    grid = (2, 2)
    ok = TokenWindows((1, 2), (0, 0), grid, grid, table=((-1, 0, 1), (-1, 2, 3)), special=(("cls",), ("cls",)))
    assert ok.locate(1, 0) == (1, 1) and ok.token_position(0, 0) is None and ok.tokens_per_window == 3
    assert ok.positions() == ((-1, 0, 1), (-1, 2, 3)) and ok.special_tokens(1) == [(0, "cls")]
    with pytest.raises(ValueError, match="in two windows"):
        TokenWindows((1, 2), (0, 0), grid, grid, table=((0, 1), (1, 2)), special=((), ()))
    with pytest.raises(ValueError, match="no position, in order"):
        TokenWindows((1, 2), (0, 0), grid, grid, table=((-1, 0, 1), (-1, 2, 3)), special=(("cls",), ()))
    with pytest.raises(ValueError, match="same length"):
        TokenWindows((1, 2), (0, 0), grid, grid, table=((0, 1), (2,)), special=((), ()))
    with pytest.raises(IndexError, match="in no window"):
        TokenWindows((1, 1), (0, 0), grid, grid, table=((0,), (3,)), special=((), ())).locate(0, 1)
