"""Every lesson checkpoint: importing this module imports each module that registers some (one
line per module). Apart from :mod:`core.lesson.checkpoints`, whose ``@checkpoint`` they import:
the registry importing its users made an import loop (tests/test_architecture.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import core.lesson.image_checks  # noqa: F401
import core.lesson.model_checks  # noqa: F401
import core.lesson.quality_checks  # noqa: F401
import core.lesson.story_checks  # noqa: F401
from core.lesson.checkpoints import CHECKPOINTS, Check, Result


def known_checkpoints() -> dict[str, Callable[..., Check]]:
    """Every registered checkpoint."""
    return CHECKPOINTS


def run_checkpoint(name: str, result: Result | None, params: Mapping[str, Any] | None = None) -> Check:
    """The verdict of checkpoint ``name`` on ``result`` (None: not done yet)."""
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {name!r}; known: {', '.join(sorted(CHECKPOINTS))}")
    if result is None:
        return Check(None, None, "Not done yet: run the step above.")
    try:
        return CHECKPOINTS[name](result, **dict(params or {}))
    except KeyError as exc:
        return Check(None, None, f"Not done yet: the result has no {exc.args[0]!r}.")
