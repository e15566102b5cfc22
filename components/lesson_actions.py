"""The live part of a lesson step: an *action* draws ONE thing to do on the real pages' widgets
and returns its result (a mapping of plain numbers the step's checkpoint reads), or None while
there is nothing to check yet.

An action is a function of a :class:`StepContext`, registered under the name lesson files use
(``action: gradcam``) with :func:`action`. Its widget keys start with ``ctx.key`` so each step's
settings are the student's own and kept across a reload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.data.images import CellImage
from core.lesson.spec import Lesson, Step


@dataclass(frozen=True)
class StepContext:
    lesson: Lesson
    step: Step
    images: Sequence[CellImage]  # the lesson's images (shared read-only)
    prepared: Any  # the background preparation's result for this step (None: not ready, or none)
    state: str  # the preparation's state: waiting | running | done | failed | none
    key: str  # widget key prefix of this step, e.g. "ls.cnn-microscopy.gradcam."
    device: str
    others: Mapping[str, Any] = field(default_factory=dict)  # other steps' prepared results, by action name

    @property
    def params(self) -> Mapping[str, Any]:
        return self.step.params


STEP_KEY_PREFIX = "ls."  # every step's widget keys start so (kept across a reload: components.lesson_state)

Action = Callable[[StepContext], Mapping[str, Any] | None]
ACTIONS: dict[str, Action] = {}


def action(name: str) -> Callable[[Action], Action]:
    def register(fn: Action) -> Action:
        if name in ACTIONS:
            raise ValueError(f"lesson action {name!r} is registered twice")
        ACTIONS[name] = fn
        return fn

    return register
