"""Head diagnostics against loop-based computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from attention.capture import AttentionMap, CaptureResult, capture
from attention.diagnostics import head_stats, looks_at_registers, most_global, most_local, most_object_focused
from attention.layout import ModelTokens, TokenLayout


pytestmark = pytest.mark.usefixtures("single_intra_op_thread")


def _make(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **kw).eval()


def _x(size, b=2):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(3))


def _sharpen(r, power=4.0):
    """Random-init attention is nearly uniform; sharpen it (rows still sum to 1) so statistics differ."""
    for m in r.maps:
        w = m.weights.double() ** power
        m.weights = (w / w.sum(-1, keepdim=True)).float()
    return r


def entropy(p):
    p = [v / sum(p) for v in p]
    return -sum(v * math.log(v) for v in p if v > 0)


@pytest.fixture(scope="module")
def reg_result():
    model = _make("vit_small_patch14_reg4_dinov2", img_size=42, depth=2, embed_dim=48, num_heads=2)
    return _sharpen(capture(model, _x(42)))


def test_entropy_distance_and_mass_match_loops(reg_result):
    r = reg_result
    mask = np.zeros((42, 42), dtype=bool)
    mask[:20, 5:30] = True
    st = head_stats(r, mask)
    assert st.entropy.shape == (2, 2)
    P, gh, gw, s = 5, 3, 3, 14.0
    cells = [(i, j) for i in range(gh) for j in range(gw)]
    cover = [mask[i * 14:(i + 1) * 14, j * 14:(j + 1) * 14].mean() for i, j in cells]
    for layer, m in enumerate(r.maps):
        A = m.weights.double().numpy()
        for h in range(2):
            ent, dist, pre, regm, obj = [], [], [], [], []
            for b in range(2):
                cls_row = A[b, h, 0, P:]
                ent.append(entropy(list(cls_row)))
                obj.append(sum(cls_row[k] * cover[k] for k in range(9)) / cls_row.sum())
                dq, pq, rq = [], [], []
                for qi, (qr, qc) in enumerate(cells):
                    row = A[b, h, P + qi]
                    tot = row[P:].sum()
                    d = 0.0
                    for ki, (kr, kc) in enumerate(cells):
                        d += row[P + ki] / tot * math.hypot((qr - kr) * s, (qc - kc) * s)
                    dq.append(d)
                    pq.append(row[:P].sum())
                    rq.append(row[1:P].sum())
                dist.append(np.mean(dq))
                pre.append(np.mean(pq))
                regm.append(np.mean(rq))
            assert st.entropy[layer, h] == pytest.approx(np.mean(ent), rel=1e-6)
            assert st.entropy_normalized[layer, h] == pytest.approx(np.mean(ent) / math.log(9), rel=1e-6)
            assert st.mean_distance[layer, h] == pytest.approx(np.mean(dist), rel=1e-6)
            assert st.prefix_mass[layer, h] == pytest.approx(np.mean(pre), rel=1e-6)
            assert st.register_mass[layer, h] == pytest.approx(np.mean(regm), rel=1e-6)
            assert st.object_fraction[layer, h] == pytest.approx(np.mean(obj), rel=1e-6)


def test_mask_at_patch_grid_and_uint8(reg_result):
    grid_mask = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8) * 255
    st = head_stats(reg_result, grid_mask)
    A = reg_result.maps[1].weights.double()
    row = A[:, 0, 0, 5:]
    want = ((row[:, [0, 3, 4]].sum(-1)) / row.sum(-1)).mean()
    assert st.object_fraction[1, 0] == pytest.approx(float(want), rel=1e-6)


def test_identity_and_uniform_heads():
    """Head 0 attends to itself only (local: distance 0, entropy 0); head 1 is uniform over patches."""
    gh, gw, s = 3, 4, 8.0
    n = gh * gw
    lay = TokenLayout(("cls",), (gh, gw), (s, s))
    w = torch.zeros(1, 2, n + 1, n + 1)
    w[0, 0] = torch.eye(n + 1)
    w[0, 1, :, 1:] = 1.0 / n
    r = CaptureResult(torch.zeros(1, 3, gh * 8, gw * 8), torch.zeros(1, 3),
                      [AttentionMap("l0", w, "self", lay)], ModelTokens(("cls",), (gh, gw), (s, s)))
    st = head_stats(r)
    pos = [((i + 0.5) * s, (j + 0.5) * s) for i in range(gh) for j in range(gw)]
    mean_pair = np.mean([np.mean([math.dist(p, q) for q in pos]) for p in pos])
    assert st.mean_distance[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert st.mean_distance[0, 1] == pytest.approx(mean_pair, rel=1e-9)
    assert st.entropy[0, 1] == pytest.approx(math.log(n), rel=1e-9)
    assert st.entropy_normalized[0, 1] == pytest.approx(1.0, rel=1e-9)
    assert np.isnan(st.register_mass).all()
    assert most_global(st, 1)[0][:2] == (0, 1)
    assert most_local(st, 1)[0][:2] == (0, 0)


def test_swin_windows_match_loops():
    model = _make("swin_tiny_patch4_window7_224", img_size=96, embed_dim=24, num_heads=(1, 2, 3, 4),
                  depths=(2, 2, 2, 2))
    r = _sharpen(capture(model, _x(96, 1)))
    st = head_stats(r)
    assert st.shape == (8, 4) and np.isnan(st.entropy[0, 1:]).all()
    m = r.maps[1]                                    # shifted by 3, 24x24 grid padded to 28
    H, ws, shift, s = 24, 7, 3, 4.0
    A = m.weights.double().numpy()
    ents, dists = [], []
    for w in range(16):
        wy, wx = divmod(w, 4)
        toks = []
        for p in range(ws * ws):
            sy, sx = wy * ws + p // ws, wx * ws + p % ws
            toks.append(((sy + shift) % H, (sx + shift) % H) if sy < H and sx < H else None)
        for qi, qpos in enumerate(toks):
            if qpos is None:
                continue
            row = [A[w, 0, qi, ki] for ki, kpos in enumerate(toks) if kpos is not None]
            kp = [kpos for kpos in toks if kpos is not None]
            ents.append(entropy(row))
            tot = sum(row)
            dists.append(sum(v / tot * math.hypot((qpos[0] - k[0]) * s, (qpos[1] - k[1]) * s) for v, k in zip(row, kp)))
    assert len(ents) == 24 * 24
    assert st.entropy[1, 0] == pytest.approx(np.mean(ents), rel=1e-6)
    assert st.mean_distance[1, 0] == pytest.approx(np.mean(dists), rel=1e-6)


def test_rankings():
    from attention.diagnostics import HeadStats
    nan = np.nan
    obj = np.array([[0.1, 0.9], [0.5, nan]])
    dist = np.array([[10.0, 50.0], [30.0, nan]])
    regm = np.array([[0.0, 0.2], [0.7, nan]])
    st = HeadStats(["a", "b"], ["self", "self"], np.array([2, 1]), dist, dist, dist, regm, regm, obj)
    assert [t[:2] for t in most_object_focused(st, 2)] == [(0, 1), (1, 0)]
    assert [t[:2] for t in most_global(st, 3)] == [(0, 1), (1, 0), (0, 0)]
    assert [t[:2] for t in most_local(st, 1)] == [(0, 0)]
    assert looks_at_registers(st, 1)[0] == (1, 0, 0.7)
    with pytest.raises(ValueError):
        most_object_focused(HeadStats(["a"], ["self"], np.array([1]), dist, dist, dist, regm, regm), 1)
