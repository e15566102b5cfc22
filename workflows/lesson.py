"""The lesson's slow work, done once in the background when a lesson opens: each step whose action
needs a model trained or a map made has a *preparation* (registered here under the action's name),
run in the lesson's order on a worker thread, so the class never waits in front of a step.

A preparation is a plain function ``(images, params, progress) -> result`` of the lesson's images
and the step's ``params``; the step's action reads its result (or runs it live with the student's
own settings). :mod:`workflows.lesson_preparation` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.data.images import CellImage

Progress = Callable[[float, str], None]
Prepare = Callable[[Sequence[CellImage], Mapping[str, Any], Progress], Any]
PREPARATIONS: dict[str, Prepare] = {}


def preparation(action: str) -> Callable[[Prepare], Prepare]:
    def register(fn: Prepare) -> Prepare:
        if action in PREPARATIONS:
            raise ValueError(f"a preparation for {action!r} is registered twice")
        PREPARATIONS[action] = fn
        return fn

    return register


def lesson_images(dataset: str) -> list[CellImage]:
    """The images a lesson runs on: the lesson plates (two plates differing in the background
    alone) or the app's example dataset."""
    from core.io.example import make_example_dataset, make_lesson_dataset

    return make_lesson_dataset() if dataset == "lesson" else make_example_dataset()
