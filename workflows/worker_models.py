"""The models a worker process has loaded: each once per process and device, shared by every image
and block it runs (the batch job's units, a large image's blocks)."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=8)
def worker_model(name: str, device: str) -> Any:
    """Model ``name`` loaded once in this process. ``device`` as the user gave it (``auto`` too) is
    resolved here, on the worker: a GPU machine's worker uses its GPU whatever machine started the job."""
    from models.registry import load_model

    return load_model(name, worker_device(device), allow_download=True)


@functools.lru_cache(maxsize=4)
def worker_device(device: str) -> str:
    from models.device import resolve_device

    return resolve_device(device)
