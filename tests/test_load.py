"""The load benchmark (benchmarks/load.py) at CI size: 4 concurrent client sessions x 5 /predict requests."""
from __future__ import annotations

import pytest

from attention.models import demo_names

pytestmark = pytest.mark.skipif(
    "demo-vit" not in demo_names(),
    reason="assets/demo-vit.safetensors/.json missing (train it: python -m attention.demo train --arch demo-vit)")


def test_concurrent_sessions_get_their_own_correct_answers_without_leaking(tmp_path):
    from benchmarks.load import make_probes, run_load, serve

    probes = make_probes(str(tmp_path), "demo-vit", n_shapes=5, n_photos=1)
    assert sum(p.kind == "shapes" for p in probes) >= 3 and len({p.sha256 for p in probes}) == len(probes)
    with serve("demo-vit") as (url, pid):
        report = run_load(url, probes, clients=4, requests=5, model="demo-vit", pid=pid, rss_budget_mb=150.0)
    table = report.table()
    assert report.requests == 20, table
    assert report.errors == [], table
    assert report.mismatches == [], table
    assert len(report.latencies) == 20 and report.percentile(95) < 60, table
    assert report.rss_before_mb > 100 and report.rss_growth_mb <= 150.0, table
    assert report.ok and "PASS" in table


def test_many_sessions_sending_the_same_image_at_once(tmp_path):
    """Identical answers to concurrent sessions: the heatmap file is the same bytes for all of them, so the
    server must never serve one session a file that another session's answer is rewriting."""
    from benchmarks.load import make_probes, run_load, serve

    probes = make_probes(str(tmp_path), "demo-vit", n_shapes=1, n_photos=0)
    with serve("demo-vit") as (url, pid):
        report = run_load(url, probes, clients=6, requests=4, model="demo-vit", pid=pid)
    assert report.errors == [] and report.mismatches == [] and report.requests == 24, report.table()


def test_answer_checks_catch_a_wrong_answer(tmp_path):
    """The per-answer check really compares: another image's checksum or class is a mismatch."""
    from benchmarks.load import Probe, check_answer

    heat = tmp_path / "h.png"
    heat.write_bytes(b"x")
    probe = Probe(str(tmp_path / "a.png"), "a" * 64, "star", "shapes")
    good = ({"label": "star"}, str(heat), {"input_sha256": "a" * 64, "model": "demo-vit",
                                            "predictions": [{"label": "star"}]})
    assert check_answer(probe, good, "demo-vit") == []
    wrong_image = (good[0], good[1], {**good[2], "input_sha256": "b" * 64})
    assert any("input_sha256" in p for p in check_answer(probe, wrong_image, "demo-vit"))
    wrong_class = ({"label": "circle"}, good[1], {**good[2], "predictions": [{"label": "circle"}]})
    assert any("top-1" in p for p in check_answer(probe, wrong_class, "demo-vit"))
