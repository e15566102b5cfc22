"""Which model for my data: the ranking on planted scores (core.evaluation.ranking)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.evaluation.ranking import rank_models
from core.evaluation.score_tables import SEEN


def scores(models: dict[str, tuple[list[float], float]], *, output: dict[str, str] | None = None,
           seen: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """A Compare run's per-image table: model -> (F1 per image, seconds per image)."""
    rows = []
    for model, (f1s, secs) in models.items():
        for i, f1 in enumerate(f1s):
            image = f"img{i}"
            rows.append({"image": image, "model": model, "f1": f1, "ap": f1 * 0.6, "runtime s": secs,
                         "output": (output or {}).get(model, "masks"), SEEN: (seen or {}).get((image, model), "")})
    return pd.DataFrame(rows)


def test_a_clear_winner_is_recommended_with_its_margin_and_interval():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, 8)
    ranking = rank_models(scores({"slow-good": (list(base + 0.15), 4.0), "fast-worse": (list(base), 0.2)}))
    assert ranking.recommended == "slow-good" and ranking.determined
    row = ranking.table.set_index("model").loc["fast-worse"]
    assert row["verdict"] == "behind the leader" and row["interval low"] > 0
    assert ranking.table["model"].tolist() == ["slow-good", "fast-worse"]
    assert "Use slow-good" in ranking.why and "0.150 above fast-worse" in ranking.why


def test_models_the_images_cannot_tell_apart_are_undetermined_and_the_faster_one_is_recommended():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 0.9, 8)
    b = a + rng.normal(0, 0.05, 8)  # same accuracy, noise between images
    ranking = rank_models(scores({"big": (list(a + 0.005), 5.0), "small": (list(b), 0.5)}))
    assert not ranking.determined
    assert ranking.recommended == "small"
    assert "undetermined" in ranking.why and "10.0× faster" in ranking.why
    assert set(ranking.table["verdict"]) == {"leader", "tied with the leader"}


def test_two_images_are_too_few_to_decide():
    ranking = rank_models(scores({"a": ([0.9, 0.95], 1.0), "b": ([0.5, 0.6], 0.1)}))
    assert not ranking.determined and ranking.recommended == "a"
    assert "too few" in ranking.why and "undetermined" in ranking.why


def test_a_box_detector_ahead_is_named_but_the_best_outlining_model_is_recommended():
    f1 = [0.7, 0.72, 0.68, 0.71]
    ranking = rank_models(scores({"yolo": ([x + 0.2 for x in f1], 0.1), "cells": (f1, 1.0),
                                  "worse": ([x - 0.3 for x in f1], 0.1)}, output={"yolo": "boxes"}))
    assert ranking.recommended == "cells"
    assert ranking.table["model"].iloc[0] == "yolo"
    assert "yolo has a higher F1" in ranking.why and "boxes" in ranking.why


def test_images_a_model_was_trained_on_do_not_count_for_it():
    f1 = [0.6, 0.62, 0.58, 0.61, 0.6]
    trained = {(f"img{i}", "mine"): "training" for i in range(3)}
    ranking = rank_models(scores({"mine": ([0.99, 0.99, 0.99, 0.5, 0.5], 0.3), "classical": (f1, 0.1)}, seen=trained))
    mine = ranking.table.set_index("model").loc["mine"]
    assert mine["images"] == 2 and mine["f1"] == 0.5  # only the two images it has not seen
    assert ranking.recommended == "classical"


def test_no_ground_truth_ranks_nothing_and_says_how_to_get_it():
    table = scores({"a": ([0.5], 1.0)}).assign(f1=np.nan)
    ranking = rank_models(table)
    assert ranking.recommended is None and ranking.table.empty and "ground truth" in ranking.why


def test_a_model_trained_on_every_scored_image_is_listed_but_not_ranked():
    f1 = [0.6, 0.62, 0.58]
    trained = {(f"img{i}", "mine"): "training" for i in range(3)}
    ranking = rank_models(scores({"mine": ([0.99] * 3, 0.3), "classical": (f1, 0.1)}, seen=trained))
    mine = ranking.table.set_index("model").loc["mine"]
    assert mine["images"] == 0 and np.isnan(mine["f1"]) and "not ranked" in mine["verdict"]
    assert ranking.recommended == "classical"
