"""Deletion / insertion curves on a tiny model whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attention.faithfulness import auc, cell_counts, deletion_curve, make_baseline, perturbation_curves, ranking

SIZE, GRID = 32, 4                       # 4 x 4 cells of 8 x 8 pixels
OBJECT = [(1, 1), (1, 2), (2, 1), (3, 3)]  # the cells the class depends on


def object_mask() -> torch.Tensor:
    m = torch.zeros(GRID, GRID)
    for r, c in OBJECT:
        m[r, c] = 1.0
    return m


class ObjectDetector(nn.Module):
    """Class 1's logit rises with the brightness of the object cells (nothing else matters)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pix", object_mask().repeat_interleave(8, 0).repeat_interleave(8, 1))
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        s = (x.mean(1) * self.pix).sum((1, 2)) / self.pix.sum()
        return torch.stack([torch.zeros_like(s), 12 * (s - 0.5)], dim=1)


def image(b=1) -> torch.Tensor:
    x = torch.zeros(b, 3, SIZE, SIZE)
    x[:, :, :, :] = 0.1
    x[:, :, object_mask().repeat_interleave(8, 0).repeat_interleave(8, 1).bool()] = 1.0
    return x


def test_curves_monotone_and_auc_by_hand():
    model = ObjectDetector()
    x = image()
    c = perturbation_curves(model, x, object_mask(), target=1, steps=16, baseline="mean", batch_size=8)
    assert np.all(np.diff(c.fractions) > 0) and c.fractions[0] == 0 and c.fractions[-1] == 1
    counts = cell_counts(16, 16)
    assert counts == list(range(17)) and all(a <= b for a, b in zip(counts, counts[1:]))
    # the model is monotone in the object's brightness, so removing (adding) cells never raises (lowers) p
    assert np.all(np.diff(c.deletion[0]) <= 1e-7)
    assert np.all(np.diff(c.insertion[0]) >= -1e-7)
    for curve, area in ((c.deletion[0], c.deletion_auc[0]), (c.insertion[0], c.insertion_auc[0])):
        by_hand = 0.0
        for k in range(len(curve) - 1):
            by_hand += (c.fractions[k + 1] - c.fractions[k]) * (curve[k] + curve[k + 1]) / 2
        assert area == pytest.approx(by_hand, rel=1e-12)
    # end points: the untouched image / the full baseline
    p_img = torch.softmax(model(x), -1)[0, 1].item()
    p_base = torch.softmax(model(make_baseline(x, "mean")), -1)[0, 1].item()
    assert c.deletion[0, 0] == pytest.approx(p_img, rel=1e-6) and c.deletion[0, -1] == pytest.approx(p_base, rel=1e-6)
    assert c.insertion[0, 0] == pytest.approx(p_base, rel=1e-6) and c.insertion[0, -1] == pytest.approx(p_img, rel=1e-6)
    # perturbed inputs went through in batches of at most 8
    assert max(model.calls[1:]) <= 8


def test_true_mask_beats_random_maps():
    model = ObjectDetector()
    x = image()
    truth = perturbation_curves(model, x, object_mask(), target=1, steps=16, baseline="blur")
    g = torch.Generator().manual_seed(0)
    rand_del, rand_ins = [], []
    for _ in range(5):
        c = perturbation_curves(model, x, torch.rand(GRID, GRID, generator=g), target=1, steps=16, baseline="blur")
        rand_del.append(c.deletion_auc[0])
        rand_ins.append(c.insertion_auc[0])
    assert truth.deletion_auc[0] < min(rand_del)
    assert truth.insertion_auc[0] > max(rand_ins)


def test_batch_of_images_and_batch_size_invariance():
    model = ObjectDetector()
    x = image(3)
    x[1] *= 0.8
    maps = torch.rand(3, GRID, GRID, generator=torch.Generator().manual_seed(1))
    a = perturbation_curves(model, x, maps, target=[1, 1, 0], steps=8, baseline="zero", batch_size=5)
    b = perturbation_curves(model, x, maps, target=[1, 1, 0], steps=8, baseline="zero", batch_size=32)
    np.testing.assert_allclose(a.deletion, b.deletion, rtol=1e-6)
    np.testing.assert_allclose(a.insertion, b.insertion, rtol=1e-6)
    assert a.deletion.shape == (3, 9)
    np.testing.assert_allclose(a.deletion_auc, auc(a.fractions, a.deletion))
    # item 2 scores class 0, whose probability is 1 - p(class 1)
    c = deletion_curve(model, x[2:], maps[2], target=1, steps=8, baseline="zero")
    np.testing.assert_allclose(a.deletion[2], 1 - c.deletion[0], atol=1e-6)


def test_ranking_highest_first_ties_stable():
    m = torch.tensor([[0.5, 0.9], [0.5, 0.1]])
    assert ranking(m).tolist() == [[1, 0, 2, 3]]


def test_non_divisible_grid_covers_every_pixel():
    """A 3 x 5 map over a 32 x 32 image: at fraction 1 every pixel is replaced."""
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2)

    x = torch.rand(1, 3, 32, 32)
    perturbation_curves(Spy(), x, torch.rand(3, 5), target=0, steps=3, baseline="zero", modes=("deletion",))
    last = seen[-1][-1]
    assert torch.count_nonzero(last) == 0


def test_method_faithfulness_scores_every_registered_method():
    from attention.capture import capture
    from attention.methods import compute_map, method_names
    from attention.models import load_model
    lm = load_model("demo-vit")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    r = capture(lm.model, x)
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[:, 16:40, 8:32] = 255
    from attention.faithfulness import method_faithfulness
    rows = method_faithfulness(lm.model, r, x, None, steps=6, masks=masks)
    assert [row["method"] for row in rows] == method_names()
    for row in rows:
        assert "reason" not in row                      # a ViT: every method is defined
        maps = compute_map(row["method"], r, model=lm.model, x=x).maps
        c = perturbation_curves(lm.model, x, maps, None, steps=6)
        assert row["deletion_auc"] == pytest.approx(float(c.deletion_auc.mean()), rel=1e-6)
        assert row["insertion_auc"] == pytest.approx(float(c.insertion_auc.mean()), rel=1e-6)
        assert 0 <= row["pointing_game"] <= 1 and 0 <= row["auroc"] <= 1
    pool = load_model("demo-cnn-attnpool")
    rows = method_faithfulness(pool.model, capture(pool.model, x), x, None, steps=2)
    undefined = {row["method"] for row in rows if "reason" in row}
    assert undefined == {"rollout", "grad_rollout", "transformer_attribution", "attnlrp"}


def test_demo_evaluate_reports_faithfulness_per_method_on_a_folder_with_masks(tmp_path):
    from attention.demo.evaluate import evaluate, markdown
    from attention.demo.shapes import write_dataset
    write_dataset(8, 5, str(tmp_path))                       # images/, masks/, labels.csv (PNG: lossless)
    from_folder = evaluate(["demo-vit"], folder=str(tmp_path), maps=["rollout", "attnlrp"], faith_n=4, steps=4)
    in_memory = evaluate(["demo-vit"], n=8, seed=5, maps=["rollout", "attnlrp"], faith_n=4, steps=4)
    assert [r["map"] for r in from_folder] == ["rollout", "attnlrp"]
    for a, b in zip(from_folder, in_memory):
        for key in ("accuracy", "pointing_game", "auroc", "deletion_auc", "insertion_auc"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
        assert a["faith_n"] == 4 and 0 <= a["deletion_auc"] <= 1
    assert "deletion AUC" in markdown(from_folder) and "| demo-vit | attnlrp |" in markdown(from_folder)
