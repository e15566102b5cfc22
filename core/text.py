"""Words for counts and times in messages: "1 image", "3 batches", "40 s", "12 min", "3.5 h", "4 days"."""

from __future__ import annotations

_IRREGULAR = {"batch": "batches", "this": "these"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is 1."""
    return f"{n} {word if n == 1 else (many or _IRREGULAR.get(word) or word + 's')}"


def duration(seconds: float) -> str:
    """A time span as people say it: seconds up to 90 s, minutes up to 90 min, hours up to 48 h, then days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
