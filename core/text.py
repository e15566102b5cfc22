"""Words for counts in messages: "1 image", "2 images", "1 batch", "3 batches"."""

from __future__ import annotations

_IRREGULAR = {"batch": "batches", "this": "these"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is 1."""
    return f"{n} {word if n == 1 else (many or _IRREGULAR.get(word) or word + 's')}"
