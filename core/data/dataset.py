"""The set of loaded images a session works on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pandas as pd

from core.data.images import UNASSIGNED, CellImage


@dataclass
class Dataset:
    """Images by unique name, in the order they were added."""

    images: dict[str, CellImage] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[CellImage]:
        return iter(self.images.values())

    def __contains__(self, name: str) -> bool:
        return name in self.images

    def __getitem__(self, name: str) -> CellImage:
        return self.images[name]

    @property
    def names(self) -> list[str]:
        return list(self.images)

    def add(self, images: Iterable[CellImage]) -> list[str]:
        """Add images; returns the names skipped because an image of that name is loaded."""
        skipped = []
        for img in images:
            if img.name in self.images:
                skipped.append(img.name)
            else:
                self.images[img.name] = img
        return skipped

    def put(self, image: CellImage) -> None:
        """Replace the image of the same name (metadata edits)."""
        self.images[image.name] = image

    def remove(self, names: Iterable[str]) -> None:
        for n in names:
            self.images.pop(n, None)

    def signature(self) -> tuple:
        """What results made from these images depend on: names, pixels, channels, batches,
        conditions and ground truth. Equal signatures: the results still fit."""
        return tuple((img.name, img.hash, img.channels, img.batch, img.condition, img.gt_hash) for img in self)

    def batches(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for img in self:
            counts[img.batch] = counts.get(img.batch, 0) + 1
        return counts

    def summary(self) -> dict[str, object]:
        return {
            "images": len(self),
            "batches": len(set(self.batches()) - {UNASSIGNED}),  # images without a batch are no batch
            "without_batch": self.batches().get(UNASSIGNED, 0),
            "with_gt": sum(img.gt is not None for img in self),
            "channels": sorted({img.shape[2] for img in self}),
        }

    def table(self) -> pd.DataFrame:
        """One row per image: what the Data page lists and the CLI prints."""
        rows = [
            {
                "name": img.name,
                "height": img.shape[0],
                "width": img.shape[1],
                "dtype": str(img.pixels.dtype),
                "channels": ", ".join(c.name for c in img.channels),
                "batch": img.batch,
                "condition": img.condition,
                "has_gt": img.gt is not None,
                "gt_cells": img.n_cells_gt if img.gt is not None else None,
                "labels": (img.gt_source or "file") if img.gt is not None else "",
            }
            for img in self
        ]
        table = pd.DataFrame(
            rows,
            columns=["name", "height", "width", "dtype", "channels", "batch", "condition", "has_gt", "gt_cells",
                     "labels"],
        )
        return table.astype({"gt_cells": "Int64"})  # a count, blank (not None or 88.0) without ground truth
