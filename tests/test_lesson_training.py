"""Watch it learn: a real (short) training run of demo-vit in a background thread, with probe snapshots.

One module-scoped run (``SHORT``) serves most tests: its probe maps become object-focused, it saves
weights that load back with identical logits, its snapshots are the rollout of the model itself, and it
leaves the process-wide torch settings alone. No mocks.
"""
import json
import threading
import time

import numpy as np
import pytest
import torch

from attention.capture import capture
from attention.demo.shapes import CLASS_NAMES
from attention.lesson.learning import (LESSON_RECIPE, TrainingRun, TrainingState, probe_set)
from attention.methods.raw import raw_attention
from attention.methods.rollout import rollout
from attention.models import load_model

# chosen across seeds 0-4: object mass of the probe rollouts +0.08..+0.17, pointing game up on every seed
SHORT = dict(seed=0, steps=200, batch_size=32, lr=2e-3, warmup=100, snapshot_every=50, probes=10)


pytestmark = pytest.mark.usefixtures("single_intra_op_thread")


def new_thread_num_threads() -> int:
    """The intra-op thread count a fresh thread starts with: torch's process-wide setting."""
    out = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


def globals_now():
    return (torch.get_num_threads(), new_thread_num_threads(), torch.are_deterministic_algorithms_enabled())


@pytest.fixture(scope="module")
def short_run():
    before = globals_now()
    rng_before = torch.get_rng_state()
    run = TrainingRun(**SHORT)
    assert run.state().status == "idle" and run.state().eta is None
    run.start()
    seen, during = [], []
    while True:
        st = run.state()
        seen.append(st)
        during.append(globals_now())
        if not st.active:
            break
        time.sleep(0.1)
    run.wait(30)
    return run, before, during, rng_before, seen


def test_probes_one_per_class():
    p = probe_set()
    assert len(p) == len(CLASS_NAMES)
    assert sorted(p.labels.tolist()) == list(range(len(CLASS_NAMES)))
    assert p.images.shape == (5, 64, 64, 3) and p.images.dtype == np.uint8
    assert p.masks.shape == (5, 64, 64) and (p.masks > 0).any(axis=(1, 2)).all()
    assert not p.images.flags.writeable
    q = probe_set()
    assert np.array_equal(p.images, q.images) and np.array_equal(p.masks, q.masks)
    assert len(probe_set(7)) == 7 and len(probe_set(3)) == 3


def test_attention_moves_to_the_object(short_run):
    run, *_ = short_run
    st = run.state()
    assert st.status == "finished", st.error
    assert st.step == st.total_steps == SHORT["steps"]
    snaps = st.snapshots
    assert [s.step for s in snaps] == [0, 50, 100, 150, 200]
    first, last = snaps[0], snaps[-1]
    chance = float(run.probes.object_cells().mean())
    print(f"\nprobe pointing game {first.pointing_game:.2f} -> {last.pointing_game:.2f}, object mass "
          f"{first.object_mass:.3f} -> {last.object_mass:.3f} (chance {chance:.3f}), elapsed {st.elapsed:.1f} s")
    # untrained: rollout ~ uniform, its mass on the object ~ the object's share of the cells
    assert abs(first.object_mass - chance) < 0.05
    assert last.pointing_game > first.pointing_game
    assert last.pointing_game >= 0.6
    assert last.object_mass > first.object_mass + 0.05
    for s in snaps:
        assert s.rollout.shape == s.last_cls.shape == (10, 8, 8)
        assert s.probabilities.shape == (10, len(CLASS_NAMES)) and len(s.predictions) == 10
        assert not s.rollout.flags.writeable


def test_history_and_state_consistent(short_run):
    run, *_ = short_run
    st = run.state()
    h = st.history
    assert list(h.step) == list(range(1, SHORT["steps"] + 1))
    assert len(h.loss) == len(h.acc) == len(h.lr) == SHORT["steps"]
    assert all(np.isfinite(h.loss)) and all(0 <= a <= 1 for a in h.acc)
    assert np.mean(h.loss[-30:]) < np.mean(h.loss[:30])
    assert st.eta == 0.0 and st.progress == 1.0 and st.error is None
    assert run.state().elapsed == st.elapsed          # frozen once ended
    with pytest.raises(AttributeError):
        st.status = "running"                          # immutable


def test_states_seen_while_running(short_run):
    *_, seen = short_run
    assert all(isinstance(s, TrainingState) for s in seen)
    assert {s.status for s in seen[:-1]} == {"running"} and seen[-1].status == "finished"
    for a, b in zip(seen, seen[1:]):
        assert a.step <= b.step and len(a.snapshots) <= len(b.snapshots) and a.elapsed <= b.elapsed
        assert all(x is y for x, y in zip(a.snapshots, b.snapshots))    # earlier snapshots never change
    for s in seen:
        assert len(s.history.loss) == s.step
        assert all(sn.step <= s.step for sn in s.snapshots)
    mid = [s for s in seen if 0 < s.step < SHORT["steps"]]
    assert mid and all(s.eta is not None and s.eta > 0 for s in mid)


def test_global_torch_state_untouched(short_run):
    run, before, during, rng_before, _ = short_run
    assert before[0] == 1
    assert all(d == before for d in during), set(during)
    assert globals_now() == before
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_save_load_identical_logits_and_snapshot_maps(short_run, tmp_path):
    run, *_ = short_run
    st_path, js_path = run.save(str(tmp_path), "lesson-test")
    assert st_path.endswith("lesson-test.safetensors") and js_path.endswith("lesson-test.json")
    loaded = load_model("demo-vit", checkpoint=st_path)
    x = run.probes.tensor()
    mem = run.model()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), mem(x))
    res = capture(loaded.model, x)
    last = run.state().snapshots[-1]
    np.testing.assert_allclose(last.rollout, rollout(res).numpy(), atol=1e-6)
    np.testing.assert_allclose(last.last_cls, raw_attention(res, -1, "mean", "cls").numpy(), atol=1e-6)
    assert last.predictions == tuple(res.logits.argmax(-1).tolist())
    with open(js_path) as f:
        meta = json.load(f)
    assert meta["arch"] == "demo-vit" and meta["training"]["steps"] == SHORT["steps"]
    with pytest.raises(ValueError):
        run.save(str(tmp_path), "../escape")


def test_save_before_training_refused(tmp_path):
    run = TrainingRun(seed=0, steps=5, batch_size=4)
    with pytest.raises(RuntimeError, match="not finished a single training step"):
        run.save(str(tmp_path), "nothing")
    with pytest.raises(RuntimeError):
        run.model()
    assert not list(tmp_path.iterdir())


def test_stop_ends_early_and_one_run_at_a_time():
    before = globals_now()
    run = TrainingRun(seed=1, steps=5000, batch_size=8, snapshot_every=10)
    run.start()
    with pytest.raises(RuntimeError, match="already running"):
        run.start()
    deadline = time.monotonic() + 60
    while run.state().step < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.perf_counter()
    st = run.stop()
    assert st.status in ("stopping", "stopped")
    with pytest.raises(RuntimeError, match="already"):
        run.start()
    st = run.wait(10)
    assert time.perf_counter() - t0 < 5
    assert st.status == "stopped", st.error
    assert 12 <= st.step < 5000
    assert len(st.history.loss) == st.step == st.history.step[-1]
    assert st.snapshots[0].step == 0 and st.snapshots[-1].step == st.step    # final model shown
    assert all(s.step % 10 == 0 for s in st.snapshots[:-1])
    assert st.eta == 0.0 and st.progress < 1
    assert globals_now() == before
    # a stopped run can be saved and restarted from scratch
    run.stop()                                           # no-op once stopped
    assert run.state().status == "stopped"
    run.start()
    run.stop()
    st2 = run.wait(10)
    assert st2.status == "stopped" and st2.snapshots[0].step == 0 and st2.step < 5000


def test_diverging_run_fails_with_message(tmp_path):
    run = TrainingRun(seed=0, steps=30, batch_size=4, lr=1e4, snapshot_every=10)
    st = run.start().wait(30)
    assert st.status == "failed" and "smaller learning rate" in st.error
    assert st.step < 30 and st.eta == 0.0
    with pytest.raises(RuntimeError, match="failed"):
        run.save(str(tmp_path), "diverged")
    assert not list(tmp_path.iterdir())


def test_recipe_and_validation():
    r = TrainingRun()
    assert r.recipe == LESSON_RECIPE
    assert TrainingRun(steps=300).recipe["warmup"] == LESSON_RECIPE["warmup"] // 2
    assert TrainingRun(steps=5000).recipe["warmup"] == LESSON_RECIPE["warmup"]
    assert TrainingRun(steps=50, warmup=3).recipe["warmup"] == 3
    for bad in (dict(steps=0), dict(batch_size=0), dict(lr=-1.0), dict(snapshot_every=0)):
        with pytest.raises(ValueError):
            TrainingRun(**bad)
