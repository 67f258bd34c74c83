"""Watch it learn: train ``demo-vit`` from scratch in a background thread and watch its attention.

A `TrainingRun` trains the demo ViT (64 x 64 input, 8 x 8 patches + CLS, 4 layers x 4 heads) on fresh
batches of the synthetic shapes (``attention.demo.train.batch_tensors``: batch ``step`` of seed
``seed``), with AdamW, linear warmup then cosine decay and gradient clipping, exactly the loss and
schedule of ``attention.demo.train.train``. At step 0 (untrained), every ``snapshot_every`` steps and
at the end it takes a `ProbeSnapshot` of a fixed set of probe images (`probe_set`, one per class):

* ``rollout``: attention rollout of the CLS token (``rollout(capture(model, x))``), (P, gh, gw);
* ``last_cls``: the last layer's CLS -> patch attention, mean over the heads, (P, gh, gw);
* ``pointing_game``: fraction of probes whose rollout argmax cell touches the object mask
  (`attention.demo.quality.pointing_hits`); ``object_mass``: mean share of the rollout mass on the cells
  the object touches (chance level: the share of those cells, ``Probes.object_cells``);
* the predictions and class probabilities.

`TrainingRun.state` returns an immutable `TrainingState` (status, step, timings, loss / accuracy
history, snapshots) that a UI can poll from any thread; `TrainingRun.stop` asks the run to end
before its next step.

Process-wide torch settings: the run never calls ``torch.set_num_threads`` nor
``torch.use_deterministic_algorithms`` (inside a web app they would change every user's requests).
The training thread inherits the process's intra-op thread count (``python -m viz_app`` sets
``cores // concurrency``). The only global state touched is the default CPU random generator while the
model is built (its initialisation draws from it): that happens inside ``torch.random.fork_rng``, so
the generator's state is restored afterwards.
"""
from __future__ import annotations

import copy
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..capture import capture
from ..demo.models import build_model, default_config
from ..demo.quality import cell_fractions, evaluate_model, pointing_hits, to_tensor
from ..demo.shapes import CLASS_NAMES, make_dataset
from ..demo.train import (MEAN, STD, VAL_SEED, _lr_at, _param_groups, batch_tensors, metadata, optimizer_step,
                          save_model)
from ..methods.raw import raw_attention
from ..methods.rollout import rollout

log = logging.getLogger(__name__)

LESSON_ARCH = "demo-vit"
# The default in-app run: ~0.2 s per step at batch 64 on one intra-op thread of a 2-core CPU, so about
# 2 minutes. Warmup 100 matters: with 50, some seeds stall at ~50 % accuracy within 600 steps.
LESSON_RECIPE = {"steps": 600, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "warmup": 100}
PROBE_SEED = 4242          # the probe images: make_dataset(.., PROBE_SEED), first of each class
DEFAULT_PROBES = len(CLASS_NAMES)
DEFAULT_SNAPSHOT_EVERY = 25
STATUSES = ("idle", "running", "stopping", "stopped", "finished", "failed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------- probes

@dataclass(frozen=True)
class Probes:
    """The fixed probe images: uint8 images (P, H, W, 3), masks (P, H, W) (255 = object), labels (P,)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    seed: int
    class_names: tuple[str, ...] = tuple(CLASS_NAMES)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.class_names[int(k)] for k in self.labels)

    def tensor(self) -> torch.Tensor:
        """The model input (P, 3, H, W), normalised as in training."""
        return to_tensor(np.array(self.images), MEAN, STD)

    def object_cells(self, grid: tuple[int, int] = (8, 8)) -> np.ndarray:
        """(P, gh, gw) bool: the cells each object touches (where a pointing-game hit lands)."""
        return cell_fractions(self.masks, grid) > 0


def probe_set(count: int = DEFAULT_PROBES, seed: int = PROBE_SEED) -> Probes:
    """`count` fixed probe images from ``make_dataset(.., seed)``: the first image of each class in class
    order, then (for more than one per class) the next unused images in dataset order."""
    count = int(count)
    if not 1 <= count <= 64:
        raise ValueError(f"probe count must be between 1 and 64, got {count}")
    images, masks, labels = make_dataset(max(60, 4 * count), seed)
    picked = []
    for k in range(len(CLASS_NAMES)):
        hits = np.flatnonzero(labels == k)
        if len(hits):
            picked.append(int(hits[0]))
    picked = picked[:count]
    picked += [i for i in range(len(labels)) if i not in picked][: count - len(picked)]
    idx = np.array(picked)
    return Probes(_frozen(images[idx]), _frozen(masks[idx]), _frozen(labels[idx]), int(seed))


# --------------------------------------------------------------------------- snapshots and state

@dataclass(frozen=True)
class ProbeSnapshot:
    """The model's view of the probes after `step` training steps (arrays are read-only)."""

    step: int
    rollout: np.ndarray             # (P, gh, gw) float32, CLS rollout over the patches (rows sum to 1 with CLS)
    last_cls: np.ndarray            # (P, gh, gw) float32, last layer CLS -> patches, mean over heads
    pointing_game: float            # fraction of probes whose rollout argmax cell touches the object
    hits: tuple[bool, ...]          # per probe: rollout argmax on the object
    object_mass: float              # mean share of the rollout mass on the object's cells
    last_cls_pointing_game: float
    predictions: tuple[int, ...]    # predicted class index per probe
    probabilities: np.ndarray       # (P, classes) float32 softmax
    accuracy: float                 # fraction of probes predicted correctly


@dataclass(frozen=True)
class History:
    """Per-step training curve: loss and accuracy of each training batch, and the learning rate."""

    step: tuple[int, ...] = ()
    loss: tuple[float, ...] = ()
    acc: tuple[float, ...] = ()
    lr: tuple[float, ...] = ()


@dataclass(frozen=True)
class TrainingState:
    """An immutable picture of a `TrainingRun` at one moment."""

    status: str                     # one of STATUSES
    step: int                       # training steps finished
    total_steps: int
    elapsed: float                  # seconds since start (frozen when the run ends)
    eta: Optional[float]            # seconds left (None before the first step; 0 once ended)
    history: History
    snapshots: tuple[ProbeSnapshot, ...]
    error: Optional[str] = None     # the failure message when status == "failed"

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def active(self) -> bool:
        return self.status in ("running", "stopping")

    @property
    def latest(self) -> Optional[ProbeSnapshot]:
        return self.snapshots[-1] if self.snapshots else None


def probe_snapshot(model: nn.Module, probes: Probes, step: int) -> ProbeSnapshot:
    """`ProbeSnapshot` of `model` on `probes` (one captured forward; the model's mode is left as found)."""
    res = capture(model, probes.tensor())
    roll = rollout(res).float()
    last = raw_attention(res, layer=-1, head="mean", query="cls").float()
    probs = res.logits.float().softmax(-1)
    pred = probs.argmax(-1).numpy()
    r = roll.numpy()
    hits = pointing_hits(r, probes.masks)
    cells = probes.object_cells(tuple(r.shape[-2:]))
    mass = float(np.mean((r * cells).sum((1, 2)) / np.maximum(r.sum((1, 2)), 1e-12)))
    return ProbeSnapshot(
        step=int(step), rollout=_frozen(r), last_cls=_frozen(last.numpy()),
        pointing_game=float(hits.mean()), hits=tuple(bool(h) for h in hits), object_mass=mass,
        last_cls_pointing_game=float(pointing_hits(last, probes.masks).mean()),
        predictions=tuple(int(p) for p in pred), probabilities=_frozen(probs.numpy()),
        accuracy=float((pred == probes.labels).mean()))


# --------------------------------------------------------------------------- the run

class TrainingRun:
    """Train demo-vit from scratch in a daemon thread, with probe snapshots; see the module docstring.

    ``TrainingRun(seed=0, steps=.., batch_size=.., lr=.., weight_decay=.., warmup=.., probes=5,
    snapshot_every=25)``: unset hyper-parameters come from `LESSON_RECIPE`. `start` begins a run (from
    scratch; also after an earlier run of this object has ended), `stop` asks it to end, `state`
    reads it, `wait` blocks until it ends, `save` writes the weights, `model` returns a copy.
    """

    arch = LESSON_ARCH

    def __init__(self, seed: int = 0, *, steps: Optional[int] = None, batch_size: Optional[int] = None,
                 lr: Optional[float] = None, weight_decay: Optional[float] = None, warmup: Optional[int] = None,
                 probes: int = DEFAULT_PROBES, snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
                 probe_seed: int = PROBE_SEED):
        r = dict(LESSON_RECIPE)
        if warmup is None and steps is not None and int(steps) < r["steps"]:
            warmup = max(1, round(r["warmup"] * int(steps) / r["steps"]))   # shorter runs: the same share
        for k, v in (("steps", steps), ("batch_size", batch_size), ("lr", lr), ("weight_decay", weight_decay),
                     ("warmup", warmup)):
            if v is not None:
                r[k] = v
        r["steps"], r["batch_size"], r["warmup"] = int(r["steps"]), int(r["batch_size"]), int(r["warmup"])
        r["lr"], r["weight_decay"] = float(r["lr"]), float(r["weight_decay"])
        if r["steps"] < 1 or r["batch_size"] < 1:
            raise ValueError(f"steps and batch_size must be positive, got {r['steps']} and {r['batch_size']}")
        if not (r["lr"] > 0 and math.isfinite(r["lr"])) or r["weight_decay"] < 0 or r["warmup"] < 0:
            raise ValueError(f"invalid learning rate / weight decay / warmup: {r}")
        r["warmup"] = max(1, min(r["warmup"], r["steps"]))
        if int(snapshot_every) < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {snapshot_every}")
        self.recipe = r
        self.seed = int(seed)
        self.snapshot_every = int(snapshot_every)
        self.config = default_config(LESSON_ARCH)
        self.probes = probe_set(probes, probe_seed)
        self._lock = threading.Lock()          # guards the fields below
        self._model_lock = threading.Lock()    # held during each optimiser step; readers copy under it
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._model: Optional[nn.Module] = None
        self._reset("idle")

    # ---------------------------------------------------------------- control

    def _reset(self, status: str) -> None:
        self._status = status
        self._error: Optional[str] = None
        self._step = 0
        self._t0: Optional[float] = None
        self._t_end: Optional[float] = None
        self._hist: dict[str, list] = {"step": [], "loss": [], "acc": [], "lr": []}
        self._hist_view = History()
        self._snaps: tuple[ProbeSnapshot, ...] = ()

    def start(self) -> "TrainingRun":
        """Start training from scratch in a daemon thread; returns self. Raises RuntimeError while a run
        of this object is still running or stopping."""
        with self._lock:
            if self._status in ("running", "stopping"):
                raise RuntimeError(f"this training run is already {self._status}; stop it (and wait for it "
                                   f"to end) before starting again")
            self._stop.clear()
            self._reset("running")
            self._t0 = time.perf_counter()
            self._thread = threading.Thread(target=self._worker, name="lesson-training", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> TrainingState:
        """Ask the run to stop before its next step (returns at once; the run ends within about a step).
        A no-op when nothing runs."""
        with self._lock:
            if self._status == "running":
                self._status = "stopping"
                self._stop.set()
        return self.state()

    def wait(self, timeout: Optional[float] = None) -> TrainingState:
        """Block until the run ends (or `timeout` seconds pass); returns the state."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return self.state()

    def state(self) -> TrainingState:
        with self._lock:
            step, total = self._step, self.recipe["steps"]
            now = self._t_end if self._t_end is not None else time.perf_counter()
            elapsed = 0.0 if self._t0 is None else now - self._t0
            if self._status in ("stopped", "finished", "failed"):
                eta = 0.0
            elif self._status == "idle" or step == 0:
                eta = None
            else:
                eta = elapsed / step * (total - step)
            return TrainingState(self._status, step, total, elapsed, eta, self._hist_view, self._snaps,
                                 self._error)

    # ---------------------------------------------------------------- the training thread

    def _build(self) -> nn.Module:
        # timm initialises from the default CPU generator: seed a fork of it, restore it afterwards
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)
            return build_model(LESSON_ARCH, self.config, len(CLASS_NAMES))

    def _snapshot(self, model: nn.Module, step: int) -> None:
        snap = probe_snapshot(model, self.probes, step)
        with self._lock:
            self._snaps = self._snaps + (snap,)

    def _worker(self) -> None:
        r = self.recipe
        steps, bs = r["steps"], r["batch_size"]
        try:
            model = self._build()
            with self._model_lock:
                self._model = model
            self._snapshot(model, 0)
            opt = torch.optim.AdamW(_param_groups(model, r["weight_decay"]), lr=r["lr"], betas=(0.9, 0.999))
            model.train()
            done = 0
            for step in range(steps):
                if self._stop.is_set():
                    break
                cur_lr = _lr_at(step, steps, r["lr"], r["warmup"])
                x, y = batch_tensors(self.seed, step, bs)
                with self._model_lock:   # a failure is raised before the update: the weights stay finite
                    l, a = optimizer_step(model, opt, x, y, cur_lr, check_finite=True, step=step + 1)
                done = step + 1
                with self._lock:
                    self._step = done
                    h = self._hist
                    h["step"].append(done)
                    h["loss"].append(l)
                    h["acc"].append(a)
                    h["lr"].append(cur_lr)
                    self._hist_view = History(tuple(h["step"]), tuple(h["loss"]), tuple(h["acc"]), tuple(h["lr"]))
                if done % self.snapshot_every == 0 or done == steps:
                    self._snapshot(model, done)
            if done and self._snaps[-1].step != done:   # stopped between snapshots: show the final model
                self._snapshot(model, done)
            model.eval()
            with self._lock:
                self._status = "stopped" if done < steps else "finished"
                self._t_end = time.perf_counter()
        except BaseException as e:  # noqa: BLE001 - reported through state()
            if isinstance(e, FloatingPointError):
                log.warning("lesson training run failed: %s", e)
            else:
                log.exception("lesson training run failed")
            with self._lock:
                self._status = "failed"
                self._error = f"{type(e).__name__}: {e}"
                self._t_end = time.perf_counter()

    # ---------------------------------------------------------------- results

    def model(self) -> nn.Module:
        """A copy of the model as it is now (eval mode); safe while the run trains (copied between steps)."""
        with self._model_lock:
            if self._model is None:
                raise RuntimeError("no model yet: start the run first")
            m = copy.deepcopy(self._model)
        return m.eval()

    def _trained(self) -> tuple[nn.Module, int]:
        with self._model_lock:
            with self._lock:
                step, status, error = self._step, self._status, self._error
            if status == "failed":
                raise RuntimeError(f"this run failed ({error}); its weights are not worth keeping")
            if self._model is None or step == 0:
                raise RuntimeError("nothing to save yet: the model has not finished a single training step; "
                                   "start the run and let it train first")
            return copy.deepcopy(self._model).eval(), step

    def save(self, out_dir: str, name: str = "demo-vit-lesson") -> tuple[str, str]:
        """Write ``<out_dir>/<name>.safetensors`` + ``<name>.json`` (the shipped demo format); returns both
        paths. Load with ``load_model("demo-vit", checkpoint=<.safetensors>)`` (or ``load_demo(<.json>)``).
        Allowed while running (the weights between two steps); RuntimeError before the first step and
        after a failed run."""
        if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith((".json", ".safetensors")):
            raise ValueError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (no paths)")
        model, step = self._trained()
        st = self.state()
        training = {"steps": step, "total_steps": self.recipe["steps"], "batch_size": self.recipe["batch_size"],
                    "lr": self.recipe["lr"], "weight_decay": self.recipe["weight_decay"],
                    "warmup": self.recipe["warmup"], "seed": self.seed, "seconds": round(st.elapsed, 1),
                    "status": st.status, "source": "attention.lesson.learning (watch it learn)"}
        last = [s for s in st.snapshots if s.step == step]
        if last:
            training["probe_pointing_game"] = round(last[-1].pointing_game, 4)
        return save_model(model, metadata(name, LESSON_ARCH, self.config, training), out_dir)

    def evaluate(self, n: int = 300, seed: int = VAL_SEED) -> dict:
        """Accuracy, rollout pointing game and AUROC of the current model on `n` held-out images
        (``make_dataset(n, seed)``; training batches come from other random streams)."""
        model = self.model()
        images, masks, labels = make_dataset(int(n), seed)
        return evaluate_model(model, LESSON_ARCH, images, masks, labels, MEAN, STD, map_name="rollout")


__all__ = ["LESSON_ARCH", "LESSON_RECIPE", "PROBE_SEED", "Probes", "probe_set", "ProbeSnapshot", "History",
           "TrainingState", "TrainingRun", "probe_snapshot", "STATUSES"]
