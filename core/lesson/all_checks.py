"""Every lesson checkpoint: importing this module imports each module that registers some (one
line per module). Apart from :mod:`core.lesson.checkpoints`, whose ``@checkpoint`` they import:
the registry importing its users made an import loop (tests/test_architecture.py)."""

from __future__ import annotations

from collections.abc import Callable

import core.lesson.image_checks  # noqa: F401
import core.lesson.model_checks  # noqa: F401
import core.lesson.quality_checks  # noqa: F401
import core.lesson.story_checks  # noqa: F401
from core.lesson.checkpoints import CHECKPOINTS, Check


def known_checkpoints() -> dict[str, Callable[..., Check]]:
    """Every registered checkpoint."""
    return CHECKPOINTS
