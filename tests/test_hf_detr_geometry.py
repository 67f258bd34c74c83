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
