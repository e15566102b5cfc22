"""The batch job's last step: the cell map of the whole screen (``python -m core run --map``), made
from the morphology features of every cell the first model found, as the Cell map page makes it
(:func:`models.cellmap.make_map`: correction, t-SNE/UMAP/PCA, clusters, batch-effect metrics), and
kept in the run as a ``cellmap`` analysis, so the Results page's Cell map view shows it.

The features are the measurements the workers wrote (no crop is read again). The map itself runs
in this process on every cell at once: a million cells take a few GB of memory and, with t-SNE,
tens of minutes (UMAP or PCA are faster; ``--map none`` skips it)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workflows.batch import ANALYSIS

MAP_ANALYSIS = "analyses/01-cellmap"
Progress = Callable[[float, str], None]


def map_of_run(folder: Path, model: str, settings: Any, prov: Mapping[str, Any], inputs: tuple,
               *, progress: Progress | None = None) -> int:
    """The map of ``model``'s cells in the run at ``folder`` (its ``cells`` table), written as the run's
    ``cellmap`` analysis. Returns the cells mapped (0: no cells, nothing written)."""
    from core.analysis import MANIFEST_FILE, PROVENANCE_FILE, Analysis, provenance_json
    from core.cells.cell_set import CellSet, Embedding, IntensityScaling, morphology_features
    from core.figures.cellmap import map_png
    from core.run_parts import write_atomic
    from core.saved_record import SavedFiles, SavedTables
    from models.cellmap import cells_frame, make_map, map_title, metrics_json, verdict_line

    table = pd.read_parquet(folder / ANALYSIS / "tables" / "cells.parquet")
    table = table[table["model"] == model].drop(columns="model").reset_index(drop=True)
    if not len(table):
        return 0
    t0 = time.perf_counter()
    features, names = morphology_features(table)
    channels = tuple(c.removeprefix("mean_") for c in table.columns if c.startswith("mean_"))
    scaling = IntensityScaling(channels, (0.0,) * len(channels), (1.0,) * len(channels))  # no crops: unused
    cells = CellSet((), table, scaling)
    embedding = Embedding(features, tuple(names), "morphology", time.perf_counter() - t0)
    cell_map = make_map(cells, embedding, settings, progress=progress)
    frame = cells_frame(cells, embedding, cell_map)
    where = folder / MAP_ANALYSIS
    (where / "tables").mkdir(parents=True, exist_ok=True)
    frame.to_parquet(where / "tables" / "cells.parquet", index=False)
    title, subtitle = map_title(cells, embedding, cell_map), verdict_line(cell_map)
    files = {"batch_effect.json": json.dumps(metrics_json(cell_map, embedding, cells), indent=2, default=float).encode(),
             "map.png": map_png(cell_map.coords, table["batch"].to_numpy(), title=title, subtitle=subtitle,
                                legend="batch"),
             PROVENANCE_FILE: provenance_json(prov).encode()}
    for name, data in files.items():
        write_atomic(where / "files" / name, data)
    record = Analysis("cellmap", inputs, {"segmenter": model, "features": "morphology",
                                          "map": json.loads(settings.to_json())}, dict(prov),
                      tables=SavedTables(where, {"cells": {"rows": len(frame), "columns": [str(c) for c in frame.columns]}}),
                      files=SavedFiles(where, {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}))
    write_atomic(where / MANIFEST_FILE, json.dumps(record.manifest(), indent=2, sort_keys=True).encode())
    return len(frame)
