"""Both audit engines give the same numbers: 120 shapes images with masks on the local engine and on
2 local Ray workers (one model actor each), one of which is killed mid-run (Ray Data restarts it and
redoes its shard). Every number of report.json (<= 1e-6), the per-image maps and the class maps agree."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from attention.audit import run_audit
from attention.audit.shards import SHARD_DIR, iter_shards
from attention.demo.shapes import write_dataset
from attention.models import demo_names

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.skipif("demo-vit" not in demo_names(), reason="bundled demo-vit missing")]

N, SHARD = 120, 20
KW = dict(methods=["rollout", "grad_rollout", "gradcam"], batch_size=10, shard_size=SHARD, faithfulness_steps=4,
          quiet=True)


def _ray_map_workers() -> list[int]:
    """PIDs of this machine's Ray Data map actors (their process title is ``ray::MapWorker(...)``)."""
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if f.read().startswith(b"ray::MapWorker"):
                        pids.append(int(p))
            except OSError:
                pass
    return pids


def _kill_one_worker_after_first_shard(out: str, done: threading.Event, killed: list) -> None:
    """Once a first shard is written, SIGKILL one of the map actors this test's Ray started."""
    shard_dir = os.path.join(out, SHARD_DIR)
    while not done.is_set():
        if os.path.isdir(shard_dir) and any(f.endswith(".npz") for f in os.listdir(shard_dir)):
            pids = _ray_map_workers()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
        time.sleep(0.2)


def _compare(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _compare(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _compare(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-6, f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def test_local_and_ray_engines_agree(tmp_path, single_intra_op_thread):
    data = str(tmp_path / "shapes")
    write_dataset(N, 21, data)
    local = run_audit(data, str(tmp_path / "local"), "demo-vit", engine="local", **KW)
    assert not ray.is_initialized()
    out = str(tmp_path / "ray")
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_worker_after_first_shard, args=(out, done, killed), daemon=True)
    killer.start()
    try:
        remote = run_audit(data, out, "demo-vit", engine="ray", workers=2, **KW)
    finally:
        done.set()
        killer.join(5)
    assert not ray.is_initialized(), "the Ray engine shuts down the Ray it started"
    assert killed, "no Ray map worker was seen to kill"
    assert remote.computed_shards == N // SHARD and remote.skipped == []

    a, b = dict(local.report), dict(remote.report)
    assert a.pop("run")["engine"] == "local" and b.pop("run")["engine"] == "ray"
    _compare(a, b)
    assert a["images"]["computed"] == N and a["localisation"]["rollout"]["images_with_mask"] == N

    for za, zb in zip(iter_shards(str(tmp_path / "local"), N // SHARD), iter_shards(out, N // SHARD)):
        assert za.keys() == zb.keys()
        for k in za:
            if k.startswith("time_"):          # when the shard ran
                continue
            if za[k].dtype.kind == "f":
                np.testing.assert_allclose(za[k], zb[k], atol=1e-6, rtol=0, err_msg=k)
            else:
                np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
        assert za["map_rollout"].dtype == np.float16 and za["map_rollout"].shape == (SHARD, 8, 8)
    ca, cb = np.load(tmp_path / "local" / "class_maps.npz"), np.load(tmp_path / "ray" / "class_maps.npz")
    for k in ca.files:
        np.testing.assert_allclose(ca[k], cb[k], atol=1e-6, rtol=0) if ca[k].dtype.kind == "f" else \
            np.testing.assert_array_equal(ca[k], cb[k])
    assert json.load(open(tmp_path / "ray" / "report.json"))["run"]["workers"] == 2
