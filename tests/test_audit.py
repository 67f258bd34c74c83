"""The dataset audit (`python -m attention audit`, local engine): its numbers against independent
computations, the input layouts, resuming, bad images and the exit code."""
from __future__ import annotations

import csv
import json
import os
import zlib

import cv2
import numpy as np
import pytest
import torch

from attention.audit import run_audit
from attention.audit.compute import band_masks
from attention.audit.dataset import label_indices, read_dataset
from attention.audit.report import bootstrap_ci
from attention.audit.shards import iter_shards, shard_path
from attention.cli import main as cli_main
from attention.demo import quality
from attention.demo.shapes import CLASS_NAMES, write_dataset
from attention.diagnostics import head_stats
from attention.errors import UserError
from attention.faithfulness import perturbation_curves
from attention.models import demo_names, load_model

pytestmark = [pytest.mark.skipif("demo-vit" not in demo_names(), reason="bundled demo-vit missing"),
              pytest.mark.usefixtures("single_intra_op_thread")]

N = 24
STEPS = 4
METHODS = ["rollout", "gradcam"]


def _add_padded_photo(root: str, src: str = "00000.png") -> None:
    """A 64 x 96 photo: image 00000 with 16 random columns each side. demo-vit's preprocessing (resize the
    short side to 64, centre crop 64) gives back exactly the original 64 x 64 image."""
    img = cv2.imread(os.path.join(root, "images", src))
    mask = cv2.imread(os.path.join(root, "masks", src), cv2.IMREAD_GRAYSCALE)
    rng = np.random.default_rng(5)
    pad = lambda a, fill: np.concatenate([fill(a.shape[0], 16), a, fill(a.shape[0], 16)], axis=1)  # noqa: E731
    wide = pad(img, lambda h, w: rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    wmask = pad(mask, lambda h, w: np.zeros((h, w), np.uint8))
    cv2.imwrite(os.path.join(root, "images", "wide.png"), wide)
    cv2.imwrite(os.path.join(root, "masks", "wide.png"), wmask)
    with open(os.path.join(root, "labels.csv")) as f:
        rows = list(csv.reader(f))
    label = dict(rows[1:])[src]
    with open(os.path.join(root, "labels.csv"), "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(["wide.png", label])


@pytest.fixture(scope="module")
def audit(tmp_path_factory, single_intra_op_thread):
    root = str(tmp_path_factory.mktemp("shapes"))
    write_dataset(N, 11, root)
    _add_padded_photo(root)
    out = str(tmp_path_factory.mktemp("audit"))
    outcome = run_audit(root, out, "demo-vit", methods=METHODS, batch_size=8, shard_size=10,
                        faithfulness_steps=STEPS, quiet=True)
    g = {}
    shards = list(iter_shards(out, outcome.report["run"]["shards"]))
    for k in shards[0]:
        if k not in ("shard", "failed_ids", "failed_reasons", "notes", "time_start", "time_end"):
            g[k] = np.concatenate([s[k] for s in shards])
    lm = load_model("demo-vit")
    ds = read_dataset(root)
    ids = [it.id for it in ds.items]
    from PIL import Image
    x = torch.cat([lm.prepare(Image.open(it.path).convert("RGB")).tensor for it in ds.items])
    masks = np.stack([(cv2.imread(it.mask, cv2.IMREAD_GRAYSCALE) > 0)[:, 16:80] if it.id == "wide.png" else
                      cv2.imread(it.mask, cv2.IMREAD_GRAYSCALE) > 0 for it in ds.items])
    labels = np.array(label_indices(ds.items, lm.class_names))
    return {"root": root, "out": out, "outcome": outcome, "report": outcome.report, "g": g, "lm": lm, "x": x,
            "masks": masks, "labels": labels, "ids": ids}


def test_reads_the_shapes_layout_as_is(audit):
    ds = read_dataset(audit["root"])
    assert ds.layout == "shapes" and len(ds.items) == N + 1 and ds.has_labels and ds.has_masks
    assert list(audit["g"]["ids"]) == sorted(audit["ids"])
    with open(os.path.join(audit["root"], "labels.csv")) as f:
        truth = dict(list(csv.reader(f))[1:])
    assert [CLASS_NAMES[k] for k in audit["g"]["label"]] == [truth[i] for i in audit["g"]["ids"]]


def test_logits_and_rollout_match_the_model_run_directly(audit):
    lm, x, g = audit["lm"], audit["x"], audit["g"]
    with torch.no_grad():
        logits = lm.model(x)
    np.testing.assert_allclose(g["logits"], logits.numpy(), atol=1e-5)
    # rollout recomputed by the demo's own implementation (hooks, no capture engine)
    _, ref = quality.demo_maps(lm.model, "demo-vit", x, "rollout")
    assert g["map_rollout"].dtype == np.float16
    np.testing.assert_allclose(g["map_rollout"].astype(np.float32), ref.numpy(), rtol=2e-3, atol=1e-6)


def test_the_padded_photo_is_audited_through_its_geometry(audit):
    g = audit["g"]
    i, j = list(g["ids"]).index("wide.png"), list(g["ids"]).index("00000.png")
    assert tuple(g["original_size"][i]) == (64, 96) and tuple(g["box"][i]) == (0, 16, 64, 80)
    for k in ("logits", "map_rollout", "map_gradcam", "pointing_rollout", "auroc_rollout", "deletion_rollout",
              "border_rollout", "head_object_fraction"):
        np.testing.assert_allclose(g[k][i].astype(np.float64), g[k][j].astype(np.float64), atol=1e-5, err_msg=k)


def test_border_and_corner_mass_are_the_band_sums(audit):
    g = audit["g"]
    for name in METHODS:
        m = np.clip(g[f"map_{name}"].astype(np.float64), 0, None)      # (N, 8, 8)
        p = m / m.sum((1, 2), keepdims=True)
        border = p[:, [0, -1], :].sum((1, 2)) + p[:, 1:-1, [0, -1]].sum((1, 2))   # outer ring of an 8x8 grid
        corner = p[:, 0, 0] + p[:, 0, -1] + p[:, -1, 0] + p[:, -1, -1]
        np.testing.assert_allclose(g[f"border_{name}"], border, atol=2e-3)
        np.testing.assert_allclose(g[f"corner_{name}"], corner, atol=2e-3)
    b, c = band_masks((8, 8))
    assert b.sum() == 28 and c.sum() == 4
    b, c = band_masks((20, 20))      # 10 % of 20 = 2 cells
    assert b.sum() == 400 - 16 * 16 and c.sum() == 16


def test_pointing_auroc_and_deletion_against_the_reference_evaluation(audit):
    lm, x, g, rep = audit["lm"], audit["x"], audit["g"], audit["report"]
    logits, ref = quality.demo_maps(lm.model, "demo-vit", x, "rollout")
    ev = quality.evaluate_maps(ref, audit["masks"], audit["labels"], logits)
    loc = rep["localisation"]["rollout"]
    assert loc["images_with_mask"] == N + 1
    assert loc["pointing_game"]["mean"] == pytest.approx(ev["pointing_game"], abs=1e-9)
    assert loc["auroc"]["n"] == ev["auroc_n"]
    assert loc["auroc"]["mean"] == pytest.approx(ev["auroc"], abs=1e-6)
    curves = perturbation_curves(lm.model, x, ref, logits.argmax(-1), steps=STEPS)
    np.testing.assert_allclose(g["deletion_rollout"], curves.deletion_auc, atol=1e-5)
    np.testing.assert_allclose(g["insertion_rollout"], curves.insertion_auc, atol=1e-5)
    assert loc["deletion_auc"]["mean"] == pytest.approx(curves.deletion_auc.mean(), abs=1e-5)
    assert rep["classification"]["accuracy"]["mean"] == pytest.approx(ev["accuracy"], abs=1e-12)


def _hooked_attention(model, x) -> list[torch.Tensor]:
    """Per-block softmax weights of a timm ViT, read by a hook on ``attn_drop`` with fused attention off
    (independent of the capture engine)."""
    store, handles, flags = [], [], []
    for blk in model.blocks:
        flags.append((blk.attn, blk.attn.fused_attn))
        blk.attn.fused_attn = False
        handles.append(blk.attn.attn_drop.register_forward_hook(lambda m, i, o: store.append(o.detach())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, f in flags:
            m.fused_attn = f
    return store


def test_head_statistics_per_image(audit):
    lm, x, g = audit["lm"], audit["x"], audit["g"]
    i = 3
    st = head_stats(lm.capture(x[i:i + 1]), audit["masks"][i])
    np.testing.assert_allclose(g["head_entropy"][i], st.entropy, atol=1e-5)
    np.testing.assert_allclose(g["head_mean_distance"][i], st.mean_distance, atol=1e-4)
    np.testing.assert_allclose(g["head_object_fraction"][i], st.object_fraction, atol=1e-5)
    # the formula written out: entropy of layer 0's CLS row over the patches, from hooked attention
    layers = _hooked_attention(lm.model, x[i:i + 1])
    a = layers[0][0, :, 0, 1:].double()
    p = a / a.sum(-1, keepdim=True)
    np.testing.assert_allclose(g["head_entropy"][i, 0], -(p * p.log()).sum(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(g["head_prefix_mass"][i, 0], layers[0][0, :, 1:, 0].double().mean(-1).numpy(), atol=1e-5)
    heads = audit["report"]["heads"]["stats"]["entropy"]
    np.testing.assert_allclose(np.array(heads["mean"]), np.nanmean(g["head_entropy"].astype(np.float64), 0), atol=1e-9)
    np.testing.assert_allclose(np.array(heads["p50"]), np.median(g["head_entropy"].astype(np.float64), 0), atol=1e-9)


def test_confusion_matrix_and_per_class_numbers(audit):
    g, rep = audit["g"], audit["report"]
    cls = rep["classification"]
    names = cls["confusion"]["labels"]
    idx = [list(CLASS_NAMES).index(n) for n in names]
    cm = np.array([[int(((g["label"] == a) & (g["pred"] == b)).sum()) for b in idx] for a in idx])
    assert cls["confusion"]["matrix"] == cm.tolist() and cm.sum() == N + 1
    sc = rep["shortcuts"]["rollout"]
    for cn, v in sc["per_class"].items():
        sel = g["label"] == list(CLASS_NAMES).index(cn)
        assert v["n"] == sel.sum()
        assert v["border_mass"]["mean"] == pytest.approx(g["border_rollout"][sel].mean(), abs=1e-12)
        assert v["border_lift"] == pytest.approx(v["border_mass"]["mean"] / (28 / 64), abs=1e-12)
    lifts = [e["lift"] for e in sc["leaning_most"]["border"]]
    assert lifts == sorted(lifts, reverse=True)


def test_class_mean_maps_by_hand(audit):
    """The class of the padded photo: square photos put the grid stretched over the canvas; the padded
    photo's outer 16 of 96 columns were never seen (NaN) and its 64 seen columns carry its grid."""
    g, out, rep = audit["g"], audit["out"], audit["report"]
    z = np.load(os.path.join(out, rep["class_maps"]["file"]))
    S = rep["class_maps"]["canvas"][0]
    assert S % 8 == 0
    ids = list(g["ids"])
    c = int(g["label"][ids.index("wide.png")])
    k = rep["class_maps"]["classes"].index(CLASS_NAMES[c])
    unit = lambda m: np.clip(m.astype(np.float64), 0, None) / np.clip(m.astype(np.float64), 0, None).sum() * 64  # noqa: E731
    sel = [i for i in np.flatnonzero(g["label"] == c) if ids[i] != "wide.png"]
    up = [np.kron(unit(g["map_rollout"][i]), np.ones((S // 8, S // 8))) for i in sel]
    w = np.kron(unit(g["map_rollout"][ids.index("wide.png")]), np.ones((S // 8, 1)))      # rows stretched
    cols = np.floor(((np.arange(S) + 0.5) * 96 / S - 16) / 8).astype(int)              # photo x -> grid column
    up.append(np.where((cols >= 0) & (cols < 8), w[:, np.clip(cols, 0, 7)], np.nan))
    np.testing.assert_allclose(z["rollout"][k], np.nanmean(np.stack(up), 0), rtol=1e-5, atol=1e-5)
    assert rep["class_maps"]["counts"][k] == len(sel) + 1


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    v = (rng.random(400) < 0.8).astype(float)
    ci = bootstrap_ci(v, "x")
    se = np.sqrt(v.mean() * (1 - v.mean()) / v.size)
    assert ci["mean"] == v.mean() and ci["n"] == 400
    assert ci["low"] == pytest.approx(v.mean() - 1.96 * se, abs=0.01)
    assert ci["high"] == pytest.approx(v.mean() + 1.96 * se, abs=0.01)
    assert bootstrap_ci(v, "x") == ci and bootstrap_ci([np.nan], "x")["mean"] is None
    assert zlib.crc32(b"x") != zlib.crc32(b"y") and bootstrap_ci(v, "y") != ci   # seeded per quantity


def test_report_files(audit):
    out = audit["out"]
    rep = json.load(open(os.path.join(out, "report.json")))
    assert rep["images"] == {"computed": N + 1, "skipped": 0, "skipped_list": [], "notes": []}
    html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert "http://" not in html and "https://" not in html and "<script" not in html   # self-contained
    assert html.count('src="data:image/png;base64,') >= len(rep["class_maps"]["classes"]) * len(METHODS)


def test_resume_skips_finished_shards_and_redoes_broken_ones(audit, tmp_path):
    import shutil
    out = str(tmp_path / "resume")
    shutil.copytree(audit["out"], out)
    first, third = shard_path(out, 0), shard_path(out, 2)
    t0 = os.stat(first).st_mtime_ns
    os.remove(shard_path(out, 1))                       # never finished
    with open(third, "r+b") as f:                       # a crash mid-write (no rename would leave this, but a
        f.truncate(200)                                 # copied or damaged file may)
    open(third + ".tmp-999", "wb").write(b"partial")    # what a crashed write leaves
    logs = []
    outcome = run_audit(audit["root"], out, "demo-vit", methods=METHODS, batch_size=8, shard_size=10,
                        faithfulness_steps=STEPS, quiet=True, log=logs.append)
    assert "resuming" in logs[0] and "1 of 3 shards done, computing 2" in logs[0]
    assert outcome.computed_shards == 2 and outcome.reused_shards == 1
    assert os.stat(first).st_mtime_ns == t0
    assert not os.path.exists(third + ".tmp-999")
    a, b = dict(audit["report"]), dict(outcome.report)
    a.pop("run"), b.pop("run")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    with pytest.raises(UserError, match="asked differently.*faithfulness_steps"):
        run_audit(audit["root"], out, "demo-vit", methods=METHODS, batch_size=8, shard_size=10,
                  faithfulness_steps=STEPS + 1, quiet=True)


def test_bad_image_is_named_skipped_and_sets_the_exit_code(tmp_path, capsys):
    root = tmp_path / "data"
    write_dataset(6, 3, str(root))
    (root / "images" / "00002.png").write_bytes(b"this is not a png")
    out = tmp_path / "out"
    rc = cli_main(["audit", "--model", "demo-vit", "--data", str(root), "--out", str(out), "--methods", "rollout",
                   "--faithfulness-steps", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "00002.png" in err and "skipped" in err and "1 of 6 image(s) skipped" in err
    rep = json.load(open(out / "report.json"))
    assert rep["images"]["computed"] == 5 and [s["image"] for s in rep["images"]["skipped_list"]] == ["00002.png"]
    assert rep["localisation"]["rollout"]["deletion_auc"]["mean"] is None      # steps 0: not computed
    # a clean dataset exits 0
    (root / "images" / "00002.png").unlink()
    rows = [r for r in csv.reader(open(root / "labels.csv")) if r[0] != "00002.png"]
    csv.writer(open(root / "labels.csv", "w", newline=""), lineterminator="\n").writerows(rows)
    assert cli_main(["audit", "--model", "demo-vit", "--data", str(root), "--out", str(tmp_path / "o2"),
                     "--methods", "rollout", "--faithfulness-steps", "0", "--quiet"]) == 0


def test_usage_errors_exit_2_with_a_message(tmp_path, capsys):
    root = tmp_path / "data"
    write_dataset(3, 3, str(root))
    base = ["audit", "--model", "demo-vit", "--data", str(root), "--out", str(tmp_path / "o"), "--quiet"]
    assert cli_main(base + ["--methods", "nonsense"]) == 2
    assert "unknown audit method 'nonsense'" in capsys.readouterr().err
    assert cli_main(base + ["--methods", "raw"]) == 2
    assert "raw" in capsys.readouterr().err
    assert cli_main(["audit", "--model", "demo-vit", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_csv_class_folders_and_plain_folders(tmp_path):
    root = tmp_path / "d"
    write_dataset(4, 2, str(root))
    names = sorted(os.listdir(root / "images"))
    csv_path = tmp_path / "list.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "mask"])
        for n in names:
            w.writerow([f"d/images/{n}", "2", f"d/masks/{n}"])
    ds = read_dataset(str(csv_path))
    assert ds.layout == "csv" and [it.id for it in ds.items] == [f"d/images/{n}" for n in names]
    assert all(it.mask == str(root / "masks" / n) for it, n in zip(ds.items, names))
    assert label_indices(ds.items, list(CLASS_NAMES)) == [2] * 4          # an index as label
    cf = tmp_path / "cf"
    for cls, n in zip(["star", "star", "circle", "circle"], names):
        (cf / cls).mkdir(parents=True, exist_ok=True)
        os.link(root / "images" / n, cf / cls / n)
    ds = read_dataset(str(cf), masks=str(root / "masks"))
    assert ds.layout == "class-folders" and {it.label for it in ds.items} == {"star", "circle"}
    assert all(it.mask and os.path.basename(it.mask) == os.path.basename(it.path) for it in ds.items)
    ds = read_dataset(str(root / "images"))
    assert ds.layout == "folder" and not ds.has_labels and len(ds.items) == 4
    with pytest.raises(UserError, match="not classes of the model.*dog"):
        label_indices([type(ds.items[0])("a", "a", "dog")], list(CLASS_NAMES))


@pytest.mark.slow
def test_audit_benchmark_prints_its_table():
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-m", "benchmarks.audit", "--images", "20", "--rounds", "1", "--shard-size", "10",
                        "--engines", "local", "--export-images", "1", "--vitb-images", "0"], cwd=root, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    row = next(line for line in p.stdout.splitlines() if line.startswith("| local | 1 |"))
    wall, per_s = float(row.split("|")[3].split()[0]), float(row.split("|")[4].split()[0])
    assert per_s == pytest.approx(20 / wall, rel=0.02)          # the rate is the images over the wall clock
    assert "one `python -m attention export" in p.stdout


def test_shortcut_flag_fires_for_a_class_that_looks_at_the_border():
    """Synthetic per-image numbers: class 0's maps sit on the outer ring, class 1's are uniform."""
    from attention.audit.compute import border_corner
    from attention.audit.report import shortcuts
    rng = np.random.default_rng(1)
    border, corner = band_masks((8, 8))
    maps = []
    for i in range(40):
        m = rng.random((8, 8)) * 0.1
        if i < 20:
            m[border] += 1.0                  # class 0: on the border
        else:
            m[:] = 1.0                        # class 1: uniform
        maps.append(m)
    bc = np.array([border_corner(m) for m in maps])
    assert bc[20:, 0] == pytest.approx(28 / 64) and bc[20:, 1] == pytest.approx(4 / 64)
    g = {"label": np.array([0] * 20 + [1] * 20), "pred": np.zeros(40, int), "map_m": np.stack(maps).astype(np.float16),
         "border_m": bc[:, 0], "corner_m": bc[:, 1]}
    s = shortcuts(g, ["m"], ["edge", "fair"], seed=0)["m"]
    assert s["border_area"] == 28 / 64 and s["corner_area"] == 4 / 64
    assert s["per_class"]["edge"]["border_flag"] and s["per_class"]["edge"]["border_lift"] > 2
    assert not s["per_class"]["fair"]["border_flag"] and s["per_class"]["fair"]["border_lift"] == pytest.approx(1)
    assert [e["class"] for e in s["leaning_most"]["border"]] == ["edge", "fair"]


def test_engine_registry():
    from attention.audit.engines import ENGINES, get_engine
    assert ENGINES == ("local", "ray")
    for name in ENGINES:
        assert callable(get_engine(name))
    with pytest.raises(KeyError, match="unknown engine 'spark'"):
        get_engine("spark")
