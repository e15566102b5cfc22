"""A small bounded, thread-safe memo shared by sessions (pipeline stages, model results, SAM embeddings)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class BoundedCache:
    """Least-recently-used memo of at most ``max_entries`` values. Values are shared, not copied:
    callers must not change them. Two threads asking for the same missing key may both compute it."""

    def __init__(self, max_entries: int = 64) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        found = self.get(key)
        if found is not None:
            return found
        value = compute()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return value

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key ``predicate`` accepts (e.g. a deleted model's results); how many."""
        with self._lock:
            doomed = [key for key in self._data if predicate(key)]
            for key in doomed:
                del self._data[key]
        return len(doomed)
