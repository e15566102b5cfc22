"""Which compute devices torch can use, the one to run on, and how many CPU threads torch takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# torch's CPU threads while our small networks train or run. Two threads made an epoch of the cell
# classifier 1.9 s instead of 0.30 s on the busy 2-core dev machine: at these sizes each op is too
# small to split, and with other work on the second core the threads wait on each other.
CPU_THREADS = 1


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # torch device string: "cpu", "cuda:0", "mps"
    description: str  # what a person reads: GPU model and memory


@lru_cache(maxsize=1)
def available_devices() -> tuple[DeviceInfo, ...]:
    """Devices torch sees on this machine, CPU always first."""
    import os

    import torch

    devices = [DeviceInfo("cpu", f"CPU ({os.cpu_count()} cores, torch {torch.__version__.split('+')[0]})")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(DeviceInfo(f"cuda:{i}", f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(DeviceInfo("mps", "Apple GPU (MPS)"))
    return tuple(devices)


def resolve_device(choice: str = "auto") -> str:
    """Turn a user's choice (auto / cpu / cuda / mps / cuda:N) into a device that exists.

    ``auto`` prefers CUDA, then Apple MPS, then CPU. Asking for a GPU that is absent raises
    ValueError with what is available instead.
    """
    names = [d.name for d in available_devices()]
    if choice == "auto":
        return next((n for n in names if n.startswith("cuda")), "mps" if "mps" in names else "cpu")
    if choice == "cuda":
        choice = "cuda:0"
    if choice not in names:
        raise ValueError(f"device {choice!r} is not available here; available: {', '.join(names)}")
    return choice


@contextmanager
def cpu_threads(device: str | torch.device, threads: int = CPU_THREADS) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` for the block, then put back (see :data:`CPU_THREADS`).
    torch's setting is process-wide: another session's torch work in that time also runs on
    ``threads``, which costs it speed, never correctness."""
    import torch

    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
