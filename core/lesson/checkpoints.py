"""Checkpoints: each reads a step's result (a mapping of plain numbers the step's action made) and
says whether the step worked, with the number it rests on.

A checkpoint is a function ``(result, **params) -> Check`` registered under a name with
:func:`checkpoint`; a lesson step names it and gives its ``params`` (thresholds), so a lesson file
can ask for more or less. A result without the numbers a checkpoint needs reads as not done yet
(``passed=None``), never as a failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Result = Mapping[str, Any]


@dataclass(frozen=True)
class Check:
    passed: bool | None  # None: nothing to check yet (the step's action has not run)
    value: float | None  # the number the verdict rests on
    text: str  # one sentence with the number, read to the class

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "value": self.value, "text": self.text}


CHECKPOINTS: dict[str, Callable[..., Check]] = {}


def checkpoint(name: str) -> Callable[[Callable[..., Check]], Callable[..., Check]]:
    def register(fn: Callable[..., Check]) -> Callable[..., Check]:
        if name in CHECKPOINTS:
            raise ValueError(f"checkpoint {name!r} is registered twice")
        CHECKPOINTS[name] = fn
        return fn

    return register


def number(value: Any) -> float | None:
    """``value`` as a finite float, else None (NaN: the data could not decide)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def not_determined(what: str) -> Check:
    return Check(False, None, f"Undetermined: {what} could not be measured on these images.")
