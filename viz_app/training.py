"""Step 6 of the Learn tab, "watch it learn": one lesson training run at a time, owned by one browser session.

The laptop has a couple of cores, so the whole app runs at most one training run at a time: the
session that started it sees it (progress, curves, probe maps) and can stop or save it; any other
session that tries to start one is told who is busy and for how long. The run trains in its own
thread, so the other tabs keep answering (more slowly while it trains).
"""
from __future__ import annotations

import os
import tempfile
import threading
from typing import Optional

from attention.errors import UserError
from attention.lesson.learning import LESSON_ARCH, LESSON_RECIPE, TrainingRun, TrainingState

from .models import ModelManager

MIN_STEPS, MAX_STEPS = 10, 3000


def _clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "…"
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def describe(state: Optional[TrainingState]) -> str:
    """One Markdown paragraph: where the run is."""
    if state is None:
        return (f"No run yet. **Start** trains `{LESSON_ARCH}` from scratch (random weights) on freshly generated "
                f"shapes: {LESSON_RECIPE['steps']} steps of {LESSON_RECIPE['batch_size']} images by default, about 2–3 "
                f"minutes on a laptop CPU.")
    text = (f"**{state.status}** · step {state.step} / {state.total_steps} · {_clock(state.elapsed)} elapsed"
            + (f" · about {_clock(state.eta)} left" if state.active else ""))
    if state.history.step:
        n = min(20, len(state.history.loss))
        loss = sum(state.history.loss[-n:]) / n
        acc = sum(state.history.acc[-n:]) / n
        text += f"  \nlast {n} batches: loss **{loss:.3f}**, accuracy **{100 * acc:.0f}%**"
    if state.snapshots:
        first, last = state.snapshots[0], state.snapshots[-1]
        text += (f"  \nprobe maps on the object: **{100 * first.pointing_game:.0f}%** at step {first.step} → "
                 f"**{100 * last.pointing_game:.0f}%** at step {last.step} (object mass {100 * first.object_mass:.0f}% → "
                 f"{100 * last.object_mass:.0f}%)")
    if state.error:
        text += f"  \nError: {state.error}"
    return text


def progress_bar(state: Optional[TrainingState]) -> str:
    """HTML of a progress bar (the page's CSS styles ``.train-bar``); its width is the share of steps done."""
    pct = 0.0 if state is None else 100.0 * state.progress
    return (f'<div class="train-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
            f'aria-valuenow="{pct:.0f}"><div style="width: {pct:.1f}%"></div></div>')


class TrainingRoom:
    """The app's single training slot; every method takes the browser session id first."""

    def __init__(self, manager: ModelManager, out_root: Optional[str] = None):
        self.manager = manager
        self.out_root = out_root or os.path.join(tempfile.gettempdir(), "viz_app_lessons")
        self._lock = threading.Lock()
        self._run: Optional[TrainingRun] = None
        self._owner: Optional[str] = None
        self._saved = 0

    def _busy_elsewhere(self, session: str) -> Optional[TrainingState]:
        if self._run is not None and self._owner != session:
            st = self._run.state()
            if st.active:
                return st
        return None

    def start(self, session: str, steps: int, seed: int = 0) -> TrainingState:
        steps = int(steps)
        if not MIN_STEPS <= steps <= MAX_STEPS:
            raise UserError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}, got {steps}")
        with self._lock:
            other = self._busy_elsewhere(session)
            if other is not None:
                raise UserError(f"another browser tab is training a model (step {other.step} of {other.total_steps}, "
                                f"about {_clock(other.eta)} left); one run at a time on this computer — try again "
                                f"when it ends")
            if self._run is not None and self._owner == session and self._run.state().active:
                raise UserError("your run is still training: stop it first")
            self._run = TrainingRun(seed=int(seed), steps=steps)
            self._owner = session
            self._run.start()
            return self._run.state()

    def run_of(self, session: str) -> Optional[TrainingRun]:
        """The session's run (None if it has none, or the slot belongs to another session)."""
        with self._lock:
            return self._run if self._owner == session else None

    def stop(self, session: str) -> Optional[TrainingState]:
        run = self.run_of(session)
        if run is None:
            return None
        return run.stop()

    def state(self, session: str) -> Optional[TrainingState]:
        run = self.run_of(session)
        return None if run is None else run.state()

    def save(self, session: str) -> str:
        """Save the session's model and add it to the model picker; returns its name there."""
        run = self.run_of(session)
        if run is None:
            raise UserError("nothing to save: start a training run first")
        with self._lock:
            self._saved += 1
            k = self._saved
        st = run.state()
        name = f"lesson-{k}"
        folder = tempfile.mkdtemp(prefix=f"{name}_", dir=_ensure(self.out_root))
        try:
            weights, _ = run.save(folder, name)
        except RuntimeError as e:
            raise UserError(str(e)) from None
        label = f"{LESSON_ARCH} trained here #{k} ({st.step} steps)"
        return self.manager.register(LESSON_ARCH, weights, name=label)


def _ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


__all__ = ["TrainingRoom", "describe", "progress_bar", "MIN_STEPS", "MAX_STEPS"]
