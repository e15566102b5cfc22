"""Run a model on an image: tiled when the image is large, with its peak memory recorded."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from core.data.images import CellImage
from core.data.instances import Instances
from models.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, predict_tiled


class PeakMemory:
    """Peak memory a block of work added: CUDA allocations on a GPU, else the process's resident
    memory sampled every 5 ms (so on the CPU it includes anything else the process did meanwhile)."""

    def __init__(self, device: str) -> None:
        self.device, self.peak_mb = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            import psutil

            self._proc = psutil.Process()
            self._base = self._peak = self._proc.memory_info().rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            import torch

            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_mb = max(peak - self._base, 0) / 2**20


def run_model(model: Any, image: CellImage, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
              progress: Callable[[int, int], None] | None = None, **params: Any) -> Instances:
    """``model.predict`` with peak memory recorded; images larger than ``tile`` go tile by tile."""
    with PeakMemory(getattr(model, "device", "cpu")) as memory:
        if max(image.shape[:2]) > tile:
            result = predict_tiled(model, image, tile=tile, overlap=overlap, progress=progress, **params)
        else:
            result = model.predict(image, **params)
    return replace(result, peak_memory_mb=memory.peak_mb)
