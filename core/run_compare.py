"""Two to four saved runs side by side: the tables the Results page's *Compare runs* draws.

Cells and images per run and condition (and batch), a measurement's quantiles per run and
condition, F1 per run and model, each run's plate-effect verdict, the settings that differ
(each analysis's settings and key provenance flattened to dotted keys), and which images the
runs share. An image is the same image in two runs when its pixels' content hash (the input
manifest's ``pixels_hash``) is the same, whatever it is called there; one of the same name but
other pixels is named as such. Each table has a ``run`` column (the run's name) and keeps the
runs' order."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from core.run_tables import QUANTILES, cells_per_image, cells_table, f1_by_model, json_file, measurement_columns, spread
from core.runs import Run

MIN_RUNS, MAX_RUNS = 2, 4
# What of a record's provenance is compared: versions, device, and each model's weights (the rest
# of a model's provenance repeats its settings; the date and the input paths always differ).
PROVENANCE_KEYS = ("cellscope", "python", "packages", "device", "device description")
VERDICT_NUMBERS = ("silhouette", "ilisi", "kbet", "classifier_accuracy", "chance")
SAME, RENAMED, OTHER_PIXELS = "same image", "same image, renamed", "same name, other pixels"


def run_images(run: Run) -> pd.DataFrame:
    """image, pixels_hash, batch, condition: each image the run's analyses read, once per name."""
    seen: dict[str, dict[str, str]] = {}
    for analysis in run.analyses:
        for f in analysis.inputs:
            seen.setdefault(f.name, {"image": f.name, "pixels_hash": f.pixels_hash, "batch": f.batch,
                                     "condition": f.condition})
    return pd.DataFrame(list(seen.values()), columns=["image", "pixels_hash", "batch", "condition"])


def per_image_counts(runs: Sequence[Run]) -> pd.DataFrame:
    """run, model ("" unless the counts are each model's), image, pixels_hash, batch, condition, cells."""
    parts = []
    for run in runs:
        counts = cells_per_image(run)
        if counts is None:
            continue
        hashes = run_images(run).set_index("image")["pixels_hash"]
        counts = counts.assign(run=run.info.name, model=counts["model"] if "model" in counts else "",
                               pixels_hash=counts["image"].map(hashes))
        parts.append(counts[["run", "model", "image", "pixels_hash", "batch", "condition", "cells"]])
    columns = ["run", "model", "image", "pixels_hash", "batch", "condition", "cells"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def counts_by(runs: Sequence[Run], by: Sequence[str] = ("condition",)) -> pd.DataFrame:
    """Per run, model and group of ``by``: images, cells, and cells per image (the mean)."""
    counts = per_image_counts(runs)
    keys = ["run", "model", *by]
    table = counts.groupby(keys, sort=False).agg(images=("image", "size"), cells=("cells", "sum"),
                                                  cells_per_image=("cells", "mean"))
    return table.reset_index().astype({"images": int, "cells": int}).rename(
        columns={"cells_per_image": "cells per image"})


def measure_options(runs: Sequence[Run]) -> list[str]:
    """The measurements any of the runs' cell tables holds, in the order first met."""
    found: dict[str, None] = {}
    for run in runs:
        found.update(dict.fromkeys(measurement_columns(run)))
    return list(found)


def measure_spread(runs: Sequence[Run], column: str, by: Sequence[str] = ("condition",)) -> pd.DataFrame:
    """Per run and group of ``by``: n and the quantiles of :data:`~core.run_tables.QUANTILES` of
    ``column``; a run whose cells lack it is left out."""
    parts = [spread(cells_table(run, [*by, column]), column, by).assign(run=run.info.name) for run in runs
             if column in measurement_columns(run)]
    columns = ["run", *by, "n", *QUANTILES]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def image_medians(runs: Sequence[Run], column: str, images: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """run, image, batch, condition, cells, median of ``column``: for the images named per run."""
    parts = []
    for run in runs:
        names = set(images.get(run.info.name, ()))
        if not names or column not in measurement_columns(run):
            continue
        cells = cells_table(run, ["image", "batch", "condition", column])
        chosen = cells[cells["image"].isin(names)]
        part = chosen.groupby(["image", "batch", "condition"], sort=True)[column].agg(cells="size", median="median")
        parts.append(part.reset_index().assign(run=run.info.name))
    columns = ["run", "image", "batch", "condition", "cells", "median"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def f1_table(runs: Sequence[Run]) -> pd.DataFrame:
    """run, model, images, precision, recall, f1: each run's models over its images with ground truth."""
    parts = [table.assign(run=run.info.name) for run in runs if (table := f1_by_model(run)) is not None]
    columns = ["run", "model", "images", "precision", "recall", "f1"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def verdicts(runs: Sequence[Run]) -> pd.DataFrame:
    """run, verdict, reason and the plate-effect numbers of each run's cell map (None where it has none)."""
    rows = []
    for run in runs:
        effect = json_file(run, "cellmap", "batch_effect.json") or {}
        rows.append({"run": run.info.name, "verdict": effect.get("verdict"), "reason": effect.get("reason"),
                     **{key: effect.get(key) for key in VERDICT_NUMBERS}})
    return pd.DataFrame(rows, columns=["run", "verdict", "reason", *VERDICT_NUMBERS])


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys (``map.method``); lists and other values are leaves; an empty
    dict is a leaf too, so that its key is compared."""
    if not isinstance(value, Mapping) or not value:
        return {prefix.rstrip("."): value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(flatten(inner, f"{prefix}{key}."))
    return flat


def settings_of(run: Run) -> dict[str, Any]:
    """The run's settings and key provenance as dotted keys: ``KIND.setting...`` for each analysis's
    settings, ``KIND.provenance.…`` for its versions, device and models' weights (a second analysis of
    the same kind is ``KIND#2``)."""
    flat: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for analysis in run.analyses:
        seen[analysis.kind] = seen.get(analysis.kind, 0) + 1
        label = analysis.kind if seen[analysis.kind] == 1 else f"{analysis.kind}#{seen[analysis.kind]}"
        prov = analysis.provenance
        kept = {key: prov[key] for key in PROVENANCE_KEYS if key in prov}
        kept["weights"] = {name: entry.get("weights") for name, entry in (prov.get("models") or {}).items()}
        flat.update(flatten(analysis.settings, f"{label}."))
        flat.update(flatten(kept, f"{label}.provenance."))
    return flat


def _same(values: Sequence[Any]) -> bool:
    texts = {json.dumps(v, sort_keys=True, default=str) for v in values}
    return len(texts) == 1


def value_text(value: Any) -> str:
    """A setting as the table shows it: JSON for lists and dicts, as is for the rest."""
    if isinstance(value, list | tuple | Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def settings_diff(runs: Sequence[Run]) -> pd.DataFrame:
    """setting, then one column per run: the dotted keys whose values differ between the runs or
    that some runs lack (missing there: NA), as text, in the order first met."""
    flats = [settings_of(run) for run in runs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    missing = object()
    rows = []
    for key in keys:
        values = [flat.get(key, missing) for flat in flats]
        if any(v is missing for v in values) or not _same(values):
            rows.append({"setting": key, **{run.info.name: None if v is missing else value_text(v)
                                            for run, v in zip(runs, values, strict=True)}})
    return pd.DataFrame(rows, columns=["setting", *(run.info.name for run in runs)])


def shared_images(runs: Sequence[Run]) -> pd.DataFrame:
    """pixels_hash, then per run the image's name there (None where that run lacks it), and
    ``runs``: how many of the runs hold it. One row per distinct image, by content."""
    table: dict[str, dict[str, Any]] = {}
    for run in runs:
        for name, digest in run_images(run)[["image", "pixels_hash"]].itertuples(index=False):
            table.setdefault(digest, {"pixels_hash": digest}).setdefault(run.info.name, name)
    names = [run.info.name for run in runs]
    frame = pd.DataFrame(list(table.values()), columns=["pixels_hash", *names])
    return frame.assign(runs=frame[names].notna().sum(axis=1))


def image_matches(runs: Sequence[Run], picked: Sequence[str]) -> pd.DataFrame:
    """Where each picked image is in each run: picked, run, image (its name there), match.

    A picked name stands for the pixels of the first run (in the runs' order) holding that name;
    in each run, the images with those pixels are the same image (:data:`SAME`, or :data:`RENAMED`
    under another name), and an image of that name with other pixels is :data:`OTHER_PIXELS`. A
    run holding none of them has a row with image None and match "not in this run"."""
    indexes = [(run.info.name, run_images(run)) for run in runs]
    rows = []
    for pick in picked:
        reference = next((images.loc[images["image"] == pick, "pixels_hash"].iloc[0] for _, images in indexes
                          if (images["image"] == pick).any()), None)
        for name, images in indexes:
            same = images[(images["pixels_hash"] == reference) | (images["image"] == pick)]
            for image, digest in same[["image", "pixels_hash"]].itertuples(index=False):
                match = OTHER_PIXELS if digest != reference else SAME if image == pick else RENAMED
                rows.append({"picked": pick, "run": name, "image": image, "match": match})
            if same.empty:
                rows.append({"picked": pick, "run": name, "image": None, "match": "not in this run"})
    return pd.DataFrame(rows, columns=["picked", "run", "image", "match"])


def matched_images(runs: Sequence[Run], picked: Sequence[str]) -> dict[str, list[str]]:
    """Per run, the names of its images that match any picked image (to highlight there)."""
    matches = image_matches(runs, picked).dropna(subset=["image"])
    return {run.info.name: list(dict.fromkeys(matches.loc[matches["run"] == run.info.name, "image"]))
            for run in runs}
