"""Workspaces: a browser tab's work kept on the server under an unguessable id, so that a reload
of the tab (or its link, bookmarked or shared) brings the work back.

A workspace is a snapshot of plain values (the dataset, the recipe, chosen models and settings,
results). Several tabs may hold one workspace (its link opened twice): each writes only what it
changed (:meth:`WorkspaceStore.update`), so the last change of each value wins. The store is bounded three ways: an idle lifetime, a number of workspaces and a total
size; past those, the least recently used workspace goes first. It lives in the server's memory:
a server restart forgets every workspace.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

DEFAULT_TTL_S = 24 * 3600
DEFAULT_MAX_BYTES = 4 * 2**30
DEFAULT_MAX_ENTRIES = 200

# A snapshot's value: a name, or (group, name) for an entry of the dict the snapshot holds under group.
Key: TypeAlias = str | tuple[str, str]


def new_workspace_id() -> str:
    """128 random bits, URL-safe: a link is the only way into a workspace."""
    return secrets.token_urlsafe(16)


def approx_nbytes(value: Any, skip: frozenset[int] = frozenset(), _seen: set[int] | None = None) -> int:
    """Memory a snapshot value holds, counting each array once and ignoring arrays in ``skip``
    (ids of arrays shared by every session, such as the example dataset's)."""
    seen = set() if _seen is None else _seen
    if id(value) in seen or id(value) in skip:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        base = value.base if isinstance(value.base, np.ndarray) else None
        return 0 if base is not None and (id(base) in skip or id(base) in seen) else value.nbytes
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, pd.DataFrame | pd.Series):
        return int(value.memory_usage(deep=False).sum()) if isinstance(value, pd.DataFrame) else int(value.nbytes)
    if isinstance(value, Mapping):
        return sum(approx_nbytes(k, skip, seen) + approx_nbytes(v, skip, seen) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(approx_nbytes(v, skip, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(approx_nbytes(getattr(value, f.name), skip, seen) for f in dataclasses.fields(value))
    if callable(getattr(value, "parameters", None)) and callable(getattr(value, "buffers", None)):  # a torch module
        return sum(int(t.nbytes) for t in (*value.parameters(), *value.buffers()))
    return 64


def merged(values: Mapping[str, Any], changes: Mapping[Key, Any], removed: Iterable[Key] = (),
           defaults: Mapping[Key, Any] | None = None) -> dict[str, Any]:
    """``values`` with ``changes`` set, ``removed`` dropped and ``defaults`` set where ``values`` has
    no value yet. Nothing is changed in place: a group with an entry changed is a new dict."""
    out, groups = dict(values), set()

    def group(name: str) -> dict[str, Any]:
        if name not in groups:
            groups.add(name)
            out[name] = dict(out.get(name) or {})
        return out[name]

    for key in removed:
        if isinstance(key, tuple):
            group(key[0]).pop(key[1], None)
        else:
            out.pop(key, None)
    for key, value in changes.items():
        if isinstance(key, tuple):
            group(key[0])[key[1]] = value
        else:
            out[key] = value
    for key, value in (defaults or {}).items():
        if not _holds(out, key):
            if isinstance(key, tuple):
                group(key[0])[key[1]] = value
            else:
                out[key] = value
    return out


def _holds(values: Mapping[str, Any], key: Key) -> bool:
    return key[1] in (values.get(key[0]) or {}) if isinstance(key, tuple) else key in values


@dataclasses.dataclass
class _Entry:
    values: dict[str, Any]
    nbytes: int
    touched: float


class WorkspaceStore:
    """Snapshots by workspace id, thread-safe (every session of the server shares one store)."""

    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_entries: int = DEFAULT_MAX_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_bytes, self.max_entries, self._clock = ttl_s, max_bytes, max_entries, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def save(self, workspace_id: str, values: dict[str, Any], nbytes: int) -> bool:
        """Keep ``values`` (replacing the workspace's previous snapshot). False when the workspace
        alone is larger than the whole store may hold: it is then not kept."""
        with self._lock:
            return self._put(workspace_id, values, nbytes)

    def update(self, workspace_id: str, changes: Mapping[Key, Any], removed: Iterable[Key] = (),
               defaults: Mapping[Key, Any] | None = None, *,
               nbytes_of: Callable[[dict[str, Any]], int]) -> int | None:
        """Merge one tab's changes into the workspace's snapshot (see :func:`merged`), in one step:
        another tab's update waits, so neither undoes the other's. ``nbytes_of`` sizes the merged
        snapshot. Keeps the workspace alive even when nothing changes.

        Returns the snapshot's size, or None when the store does not hold the workspace (unknown,
        expired, dropped): the caller then has its whole snapshot to :meth:`save`. A merged snapshot
        larger than the store may hold is dropped, as :meth:`save` does (its size is returned)."""
        removed = list(removed)
        with self._lock:
            self._expire()
            entry = self._entries.get(workspace_id)
            if entry is None:
                return None
            entry.touched = self._clock()
            self._entries.move_to_end(workspace_id)
            if not changes and not removed and all(_holds(entry.values, k) for k in defaults or {}):
                return entry.nbytes
            values = merged(entry.values, changes, removed, defaults)
            nbytes = nbytes_of(values)
            self._put(workspace_id, values, nbytes)
            return nbytes

    def _put(self, workspace_id: str, values: dict[str, Any], nbytes: int) -> bool:
        self._entries.pop(workspace_id, None)
        if nbytes > self.max_bytes:
            return False
        self._entries[workspace_id] = _Entry(values, nbytes, self._clock())
        self._expire()
        total = sum(e.nbytes for e in self._entries.values())
        while total > self.max_bytes or len(self._entries) > self.max_entries:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.nbytes
        return workspace_id in self._entries

    def load(self, workspace_id: str) -> dict[str, Any] | None:
        """The workspace's last snapshot, or None when unknown or expired; loading keeps it alive."""
        with self._lock:
            self._expire()
            entry = self._entries.get(workspace_id)
            if entry is None:
                return None
            entry.touched = self._clock()
            self._entries.move_to_end(workspace_id)
            return dict(entry.values)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._entries.items() if now - e.touched > self.ttl_s]:
            del self._entries[key]
