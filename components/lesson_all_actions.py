"""Every lesson action: importing this module imports each module that registers some (one line
per module). Apart from :mod:`components.lesson_actions`, whose ``@action`` they import: the
registry importing its users made an import loop (tests/test_architecture.py)."""

from __future__ import annotations

import components.lesson_images  # noqa: F401
import components.lesson_models  # noqa: F401
import components.lesson_quality  # noqa: F401
import components.lesson_story  # noqa: F401
from components.lesson_actions import ACTIONS, Action


def known_actions() -> dict[str, Action]:
    """Every registered action."""
    return ACTIONS
