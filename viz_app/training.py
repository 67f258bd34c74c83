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
from attention.i18n import t
from attention.lesson.learning import LESSON_ARCH, LESSON_RECIPE, TrainingRun, TrainingState

from .models import ModelManager

MIN_STEPS, MAX_STEPS = 10, 3000


def _clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "…"
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def describe(state: Optional[TrainingState], lang: str = "en") -> str:
    """One Markdown paragraph in `lang`: where the run is (catalogue keys ``app.learn.train_*``)."""
    if state is None:
        return t("app.learn.train_none", lang, arch=LESSON_ARCH, steps=LESSON_RECIPE["steps"],
                 batch=LESSON_RECIPE["batch_size"])
    text = t("app.learn.train_status", lang, status=t(f"app.learn.status_{state.status}", lang), step=state.step,
             total=state.total_steps, elapsed=_clock(state.elapsed))
    if state.active:
        text += t("app.learn.train_left", lang, eta=_clock(state.eta))
    if state.history.step:
        n = min(20, len(state.history.loss))
        loss = sum(state.history.loss[-n:]) / n
        acc = sum(state.history.acc[-n:]) / n
        text += "  \n" + t("app.learn.train_loss", lang, n=n, loss=loss, acc=100 * acc)
    if state.snapshots:
        first, last = state.snapshots[0], state.snapshots[-1]
        text += "  \n" + t("app.learn.train_probes", lang, first=100 * first.pointing_game, s0=first.step,
                           last=100 * last.pointing_game, s1=last.step, m0=100 * first.object_mass,
                           m1=100 * last.object_mass)
    if state.error:
        text += "  \n" + t("app.learn.train_error", lang, error=state.error)
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
            raise _said_error("app.learn.train_range", lo=MIN_STEPS, hi=MAX_STEPS, n=steps)
        with self._lock:
            other = self._busy_elsewhere(session)
            if other is not None:
                raise _said_error("app.training.busy", step=other.step, total=other.total_steps,
                                  eta=_clock(other.eta))
            if self._run is not None and self._owner == session and self._run.state().active:
                raise _said_error("app.learn.train_own_active")
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

    def save(self, session: str, lang: str = "en") -> str:
        """Save the session's model and add it to the model picker; returns its name there (named in `lang`, the
        language of the page that saved it: a name, it stays as it was given)."""
        run = self.run_of(session)
        if run is None:
            raise _said_error("app.learn.train_nothing")
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
        label = t("app.training.saved_name", lang, arch=LESSON_ARCH, k=k, steps=st.step)
        return self.manager.register(LESSON_ARCH, weights, name=label)


def _said_error(key: str, **fmt) -> UserError:
    """A `UserError` in English that says which catalogue text it is (``i18n``): the page shows it in its own
    language (`viz_app.events.message_of`)."""
    e = UserError(t(key, "en", **fmt))
    e.i18n = (key, fmt)
    return e


def _ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


__all__ = ["TrainingRoom", "describe", "progress_bar", "MIN_STEPS", "MAX_STEPS"]
