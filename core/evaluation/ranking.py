"""Which model for my data: every model scored on the images that have ground truth, ranked, and
a recommendation that says why, and says "undetermined" when the images cannot tell models apart.

The ranking reads the Compare run's per-image table (one row per image and model: ``f1`` and
``ap`` against ground truth, ``runtime s``, ``output`` and :data:`~core.evaluation.score_tables.SEEN`).
Each model is scored on the images it has not been trained or validated on. Two models are told
apart by the paired difference of their F1 over the images both were scored on: the mean
difference with a 95 % bootstrap interval over images (cells of one image are correlated, so the
image, not the cell, is the unit). The leader is the model with the highest mean F1; a model
whose interval against it includes zero is *tied* with it, and among tied models the fastest is
recommended. Box detectors are matched on box IoU: their F1 says where cells are, not how well
they are outlined, so the recommendation for measuring cells is the best model that draws
outlines, and a box detector ahead of it is named as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.evaluation.score_tables import SEEN
from core.training.data import SEEN_ROLES

MIN_IMAGES = 3  # fewer images with ground truth: no spread between images to test a difference against
RESAMPLES = 2000
COLUMNS = ("rank", "model", "output", "images", "f1", "ap", "s per image", "f1 behind leader", "interval low",
           "interval high", "verdict")


@dataclass(frozen=True)
class Ranking:
    table: pd.DataFrame  # one row per model, best first: :data:`COLUMNS`
    recommended: str | None  # the model to use; None when no image has ground truth
    why: str  # the recommendation in a sentence or three, numbers included
    determined: bool  # False: the images cannot tell the leader from another model (or are too few)


def _paired_interval(diff: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of ``diff`` (one value per image)."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (RESAMPLES, len(diff)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def scored_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: an image with ground truth (an F1), new to the model."""
    if "f1" not in scores:
        return scores.iloc[0:0]
    rows = scores[scores["f1"].notna()]
    if SEEN in rows:
        rows = rows[~rows[SEEN].isin(SEEN_ROLES)]
    return rows


def rank_models(scores: pd.DataFrame) -> Ranking:
    """The ranking of the models in ``scores`` (a Compare run's per-image table)."""
    rows = scored_rows(scores)
    if rows.empty:
        why = ("No image has ground truth that a model has not been trained on: nothing to rank by. Add ground truth "
               "(a label image per image) on the Data page to rank the models.")
        return Ranking(pd.DataFrame(columns=COLUMNS), None, why, False)
    f1 = rows.pivot_table(index="image", columns="model", values="f1", sort=False)
    per_model = rows.groupby("model", sort=False).agg(images=("f1", "size"), f1=("f1", "mean"), ap=("ap", "mean"),
                                                      s=("runtime s", "mean"), output=("output", "first"))
    per_model = per_model.sort_values(["f1", "ap", "s"], ascending=[False, False, True])
    outlines = [m for m in per_model.index if per_model.loc[m, "output"] != "boxes"]
    reference = str(outlines[0] if outlines else per_model.index[0])  # the best model that outlines cells
    out = []
    for rank, (model, m) in enumerate(per_model.iterrows(), start=1):
        both = f1[[reference, model]].dropna()
        diff = (both[reference] - both[model]).to_numpy()
        low = high = np.nan
        if model == reference:
            verdict = "leader"
        elif m["output"] == "boxes" and outlines:
            verdict = "boxes: not ranked against outlines"
        elif len(diff) < MIN_IMAGES:
            verdict = f"undetermined: {len(diff)} image{'s' if len(diff) != 1 else ''} scored with the leader"
        else:
            low, high = _paired_interval(diff)
            verdict = "behind the leader" if low > 0 else "tied with the leader"
        out.append({"rank": rank, "model": model, "output": m["output"], "images": int(m["images"]),
                    "f1": round(float(m["f1"]), 3), "ap": round(float(m["ap"]), 3), "s per image": round(float(m["s"]), 3),
                    "f1 behind leader": round(float(diff.mean()), 3) if len(diff) and model != reference else np.nan,
                    "interval low": round(low, 3), "interval high": round(high, 3), "verdict": verdict})
    every_seen = [m for m in scores.loc[scores["f1"].notna(), "model"].unique() if m not in per_model.index]
    out += [{"rank": np.nan, "model": m, "output": "", "images": 0, "f1": np.nan, "ap": np.nan, "s per image": np.nan,
             "f1 behind leader": np.nan, "interval low": np.nan, "interval high": np.nan,
             "verdict": "trained or validated on every image: not ranked"} for m in every_seen]
    table = pd.DataFrame(out, columns=COLUMNS).astype({"rank": "Int64", "images": int})
    return _recommend(table, n_images=f1.shape[0])


def _recommend(table: pd.DataFrame, n_images: int) -> Ranking:
    """The model to use among the leader and those tied with it (the fastest), and why."""
    lead = table[table["verdict"] == "leader"].iloc[0]
    box_note = ""
    ahead = table[table["rank"] < lead["rank"]]
    if len(ahead):
        b = ahead.iloc[0]
        box_note = (f" {b['model']} has a higher F1 ({b['f1']:.3f}) but gives boxes, scored on box overlap: it finds "
                    "cells without outlining them, so it cannot measure them.")
    undecided = table[table["verdict"].str.startswith("undetermined")]
    tied = table[table["verdict"] == "tied with the leader"]
    scored = f"on {n_images} image{'s' if n_images != 1 else ''} with ground truth"
    if n_images < MIN_IMAGES:
        why = (f"{lead['model']} has the highest F1 ({lead['f1']:.3f}, AP {lead['ap']:.3f}) {scored}, but "
               f"{n_images} image{'s are' if n_images != 1 else ' is'} too few to tell whether it is better or just "
               f"luckier: undetermined. Add ground truth to at least {MIN_IMAGES} images to decide.{box_note}")
        return Ranking(table, str(lead["model"]), why, False)
    if len(tied) or len(undecided):
        group = pd.concat([table[table["model"] == lead["model"]], tied])
        fastest = group.sort_values("s per image", kind="stable").iloc[0]
        others = ", ".join(pd.concat([tied, undecided])["model"])
        spread = ""
        if len(undecided):
            u = undecided.iloc[0]
            spread = (f" ({u['model']} was scored on {u['images']} image{'s' if u['images'] != 1 else ''} new to it, "
                      f"fewer than the {MIN_IMAGES} a comparison needs)")
        elif len(tied):
            t = tied.iloc[0]
            spread = (f" ({t['model']}: F1 {t['f1 behind leader']:.3f} lower, 95 % interval over images "
                      f"{t['interval low']:+.3f} to {t['interval high']:+.3f}, which includes no difference)")
        why = (f"{lead['model']} (F1 {lead['f1']:.3f}) and {others} cannot be told apart {scored}{spread}: which is "
               "more accurate is undetermined.")
        if fastest["model"] != lead["model"]:
            times = lead["s per image"] / max(fastest["s per image"], 1e-9)
            why += (f" {fastest['model']} is {times:.1f}× faster ({fastest['s per image']:.2f} s per image against "
                    f"{lead['s per image']:.2f} s): use {fastest['model']}, or score more images to decide.")
        else:
            why += f" {lead['model']} is also the fastest of them: use it, or score more images to decide."
        return Ranking(table, str(fastest["model"]), why + box_note, False)
    behind = table[table["verdict"] == "behind the leader"]
    why = f"Use {lead['model']}: the highest F1 ({lead['f1']:.3f}, AP over IoU 0.5–0.95 {lead['ap']:.3f}) {scored}"
    if len(behind):
        r = behind.iloc[0]
        why += (f", {r['f1 behind leader']:.3f} above {r['model']} (95 % interval over images "
                f"{r['interval low']:.3f} to {r['interval high']:.3f})")
    why += f"; {lead['s per image']:.2f} s per image."
    return Ranking(table, str(lead["model"]), why + box_note, True)
