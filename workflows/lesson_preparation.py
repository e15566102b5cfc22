"""A lesson's preparations run one after another on a daemon thread, when the lesson first opens:
each step's state (waiting, running, done, failed, none) and result. One failing preparation is
recorded with its message and the others go on."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.data.images import CellImage
from core.lesson.spec import Lesson
from workflows.lesson import PREPARATIONS, Prepare


def known_preparations() -> dict[str, Prepare]:
    """Every registered preparation (importing the modules that register them: one line per module)."""
    import workflows.lesson_models  # noqa: F401
    import workflows.lesson_story  # noqa: F401

    return PREPARATIONS


@dataclass
class StepState:
    state: str = "waiting"  # waiting | running | done | failed | none (nothing to prepare)
    fraction: float = 0.0
    message: str = ""
    seconds: float | None = None
    result: Any = None


@dataclass
class Preparation:
    """A lesson's preparations, run one after another on a daemon thread (:meth:`start`)."""

    lesson: Lesson
    images: Sequence[CellImage]
    steps: dict[str, StepState] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        known = known_preparations()
        for step in self.lesson.steps:
            self.steps[step.id] = StepState() if step.action in known else StepState(state="none")

    def start(self) -> Preparation:
        with self._lock:
            if self._thread is None:
                self.started = time.perf_counter()
                self._thread = threading.Thread(target=self.run, name=f"lesson-{self.lesson.id}", daemon=True)
                self._thread.start()
        return self

    def run(self) -> None:
        known = known_preparations()
        for step in self.lesson.steps:
            state = self.steps[step.id]
            if state.state != "waiting":
                continue
            state.state, t0 = "running", time.perf_counter()

            def progress(fraction: float, what: str, state: StepState = state) -> None:
                state.fraction, state.message = min(max(float(fraction), 0.0), 1.0), what

            try:
                state.result = known[step.action](self.images, step.params, progress)
                state.state, state.fraction, state.message = "done", 1.0, ""
            except Exception as exc:  # one step's failure must not stop the others
                state.state, state.message = "failed", f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            state.seconds = time.perf_counter() - t0
        self.finished = time.perf_counter()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done

    @property
    def done(self) -> bool:
        return all(s.state in ("done", "failed", "none") for s in self.steps.values())

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.perf_counter()) - self.started

    def result(self, step_id: str) -> Any:
        state = self.steps.get(step_id)
        return state.result if state is not None and state.state == "done" else None
