"""Morphology and intensity features as an embedding: the Preprocess page's measurements of each
cell (area, perimeter, eccentricity, solidity, mean and integrated intensity per channel) and of
its surroundings (a ring around it, the background near it, per channel), log-transformed where
skewed and standardised. No crops, no weights, fast."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from core.cells.cell_set import CellSet, Embedding, morphology_features
from models.registry import Family, ModelInfo, register_family, register_model


class MorphologyEmbedder:
    name = "morphology"

    def __init__(self, weights_path: Path | None = None, device: str = "cpu") -> None:
        self.device = "cpu"  # numpy on the CPU whatever the choice

    def embed(self, cells: CellSet, *, progress: Callable[[float, str], None] | None = None) -> Embedding:
        t0 = time.perf_counter()
        features, names = morphology_features(cells.table)
        if progress:
            progress(1.0, "measured")
        return Embedding(features, tuple(names), self.name, time.perf_counter() - t0, {})


register_family(Family("morphology", "Morphology", "Measured shape and intensity features.", ("embed",), order=10, uses_crops=False,
                       no_cam_reason="an embedder, not a detector: explain it with the cell classifier's CAMs"))
register_model(ModelInfo(
    "morphology", "morphology",
    "Shape and intensity measurements of each cell (the Preprocess page's table) and of its surroundings (a ring "
    "around it, the nearby background), standardised. Fast, readable, no training.",
    None, False, MorphologyEmbedder, task="embed",
))
