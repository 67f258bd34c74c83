"""`python benchmarks/run.py --quick` runs end to end (< 90 s) and writes the JSON with every section.

A smoke test of the benchmark's structure, not of speed: the machine running the tests is shared,
so it runs with one torch thread (two threads on a loaded machine measure the scheduler, see
benchmarks/RESULTS.md) and checks no timing against a target.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("capture_overhead", "rollout", "gradient", "rendering", "browser", "memory", "scaling", "peers")

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "results.json"
    md = tmp_path / "RESULTS.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--threads", "1",
                        "--out", str(out), "--markdown", str(md)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    assert elapsed < 90, f"--quick took {elapsed:.0f} s"
    res = json.loads(out.read_text())

    assert res["config"]["quick"] is True
    assert {"cpu", "usable_cores", "torch", "torch_threads", "load_at_start"} <= set(res["machine"])
    for name in SECTIONS:
        assert name in res, f"section {name} missing"
        assert "error" not in res[name], f"section {name} failed: {res[name].get('traceback', res[name])}"
    assert res["browser"].get("skipped")            # --quick skips Chromium, with the reason

    row = next(r for r in res["capture_overhead"]["rows"] if r["weights"] == "random init")
    assert row["logits_equal_plain"] and row["fused_attn_on_in_plain"]
    for side in ("plain", "capture", "capture_fp16"):
        assert {"median_ms", "min_ms", "max_ms", "n"} <= set(row["sides"][side])
    assert row["ratio_to_plain"]["capture"]["median"] > 0

    assert {(r["head_fusion"], r["maps_dtype"]) for r in res["rollout"]["rows"]} >= {("mean", "float32"),
                                                                                   ("max", "float16")}
    assert "grad_rollout" in res["gradient"]["ratio_to_plain_fwd_bwd_input"]
    assert any(r["what"].startswith("overlay") for r in res["rendering"]["rows"])
    assert any(r["what"].startswith("grid_sheet") for r in res["rendering"]["rows"])
    assert res["rendering"]["app"].get("rows") or res["rendering"]["app"].get("skipped")
    mem = res["memory"]
    assert mem["cached_per_image"].get("rows") or mem["cached_per_image"].get("skipped")
    assert all(r["rc"] == 0 and r["peak_rss_mb"] > 0 for r in mem["export_rss"]["rows"])
    assert [r["tokens"] for r in res["scaling"]["by_input_size"]] == [197, 577]
    assert "N^2" in res["scaling"]["complexity"]

    peers = {r["peer"]: r for r in res["peers"]["rows"]}
    ae = next(r for name, r in peers.items() if name.startswith("timm.utils.AttentionExtract"))
    assert ae.get("same_output") is True, ae      # the equality check ran and held
    gc = next(r for name, r in peers.items() if name.startswith("pytorch-grad-cam"))
    assert gc.get("same_output") is True, gc

    names = {t["target"] for t in res["targets"]}
    assert any(n.startswith("capture overhead") for n in names)
    assert any(n.startswith("rollout") for n in names)
    assert all(t["verdict"] in ("met", "missed", "n/a") for t in res["targets"])
    assert md.read_text().startswith("# Benchmark results")


def test_lesson_benchmark_prints_its_table():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "benchmarks.lesson", "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith("| demo-vit |")]
    assert len(rows) == 7, p.stdout
    assert all(float(r.split("|")[3]) > 0 for r in rows)
    assert "watch it learn: 20 steps" in p.stdout
