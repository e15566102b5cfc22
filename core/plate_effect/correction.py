"""Plate-effect (batch-effect) corrections of per-cell features: per-plate standardisation
(optionally on control cells) and Harmony (``harmonypy``), and what a correction did to plate and
condition, read from two reports (:func:`core.plate_effect.verdict.batch_effect_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.plate_effect.metrics import check_features, class_codes
from core.plate_effect.verdict import WEAK_SKILL

CORRECTION_METHODS = ("none", "standardize", "harmony")


def standardize_per_batch(
    X: np.ndarray, batch: Sequence | np.ndarray, *, reference: Sequence[bool] | np.ndarray | None = None
) -> np.ndarray:
    """Z-score each feature within each batch: (x - mean) / std of that batch's cells.

    With ``reference`` (a boolean mask, e.g. control cells) each batch is centred and scaled by its
    reference cells' mean and std, as image-based profiling normalises plates to their controls: a
    treatment shift then survives as a shift from the controls. A feature constant among those cells
    is only centred (scale 1, as scikit-learn's StandardScaler does).
    """
    X = check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    if reference is None:
        ref = np.ones(len(X), bool)
    else:
        ref = np.asarray(reference)
        if ref.dtype != bool or ref.shape != (len(X),):
            raise ValueError(f"reference must be a boolean mask of {len(X)} cells, got {ref.dtype} {ref.shape}")
    out = np.empty_like(X)
    for b, name in enumerate(levels):
        in_batch = codes == b
        basis = X[in_batch & ref]
        if len(basis) < 2:
            raise ValueError(
                f"batch {name!r} has {len(basis)} reference cells; standardising it needs at least 2"
            )
        mean = basis.mean(axis=0)
        std = basis.std(axis=0)
        std[std == 0] = 1.0
        out[in_batch] = (X[in_batch] - mean) / std
    return out


def harmony(X: np.ndarray, batch: Sequence | np.ndarray, *, seed: int = 0, max_iter: int = 10) -> np.ndarray:
    """Harmony (Korsunsky et al. 2019) via ``harmonypy.run_harmony``: corrected features (cells, features)."""
    import harmonypy

    X = check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    if len(levels) < 2:
        raise ValueError(f"Harmony needs at least 2 batches, all cells are in {levels[0]!r}")
    # run_harmony takes features x cells or cells x features and guesses which from the cell count,
    # taking the first axis as features when both match: pass features x cells so a square matrix
    # is read the right way too.
    result = harmonypy.run_harmony(
        X.T, {"batch": codes}, "batch", max_iter_harmony=max_iter, random_state=seed, verbose=False
    )
    Z = np.asarray(result.Z_corr, dtype=np.float64)
    # Z_corr came back (cells, features) in harmonypy 2.1.0 where older releases gave (features,
    # cells); decide by Z_orig, which is the input in one of the two orientations.
    Z_orig = np.asarray(result.Z_orig)
    if Z_orig.shape == X.shape and np.allclose(Z_orig, X):
        corrected = Z
    elif Z_orig.shape == X.T.shape and np.allclose(Z_orig, X.T):
        corrected = Z.T
    else:
        raise RuntimeError(f"harmonypy returned Z_orig {Z_orig.shape} that matches neither orientation of {X.shape}")
    if corrected.shape != X.shape:
        raise RuntimeError(f"harmonypy returned Z_corr {Z.shape} for input {X.shape}")
    return corrected


def correct(
    X: np.ndarray,
    batch: Sequence | np.ndarray,
    method: str,
    *,
    control_mask: Sequence[bool] | np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The one entry point to the corrections: "none" | "standardize" | "harmony".

    ``control_mask`` is for "standardize" only (scale each batch by its control cells).
    """
    if method not in CORRECTION_METHODS:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTION_METHODS)}")
    if control_mask is not None and method != "standardize":
        raise ValueError(f"control_mask applies to 'standardize' only, not {method!r}")
    if method == "none":
        return check_features(X).copy()
    if method == "standardize":
        return standardize_per_batch(X, batch, reference=control_mask)
    return harmony(X, batch, seed=seed)


def compare_correction(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a correction did to batch and condition, from two :func:`batch_effect_report` results.

    The condition difference counts as *erased* when before it was a signal (significant, skill >=
    WEAK_SKILL) and after it is not; as *weakened* when it survives but its classifier skill or its
    silhouette (when that was >= 0.05) fell by more than half.
    """
    cb, ca = before["condition"], after["condition"]
    out: dict[str, Any] = {
        "batch_accuracy_before": before["classifier_accuracy"],
        "batch_accuracy_after": after["classifier_accuracy"],
        "batch_chance": before["chance"],
        "verdict_before": before["verdict"],
        "verdict_after": after["verdict"],
        "condition_accuracy_before": cb["classifier_accuracy"],
        "condition_accuracy_after": ca["classifier_accuracy"],
        "condition_chance": cb["chance"],
        "condition_silhouette_before": cb["silhouette"],
        "condition_silhouette_after": ca["silhouette"],
        "condition_erased": False,
        "condition_weakened": False,
    }
    if before["classifier_accuracy"] is not None and after["classifier_accuracy"] is not None:
        batch_msg = (
            f"Batch effect {before['verdict']} before, {after['verdict']} after: batches told apart at "
            f"{before['classifier_accuracy']:.2f} then {after['classifier_accuracy']:.2f} balanced accuracy "
            f"(chance {before['chance']:.2f})."
        )
    else:
        batch_msg = f"Batch effect {before['verdict']} before, {after['verdict']} after."

    had_signal = cb["skill"] is not None and cb["significant"] and cb["skill"] >= WEAK_SKILL
    if not had_signal or ca["skill"] is None:
        out["message"] = f"{batch_msg} There was no condition difference to keep."
        return out
    numbers = (
        f"condition told apart at {cb['classifier_accuracy']:.2f} before and {ca['classifier_accuracy']:.2f} after "
        f"(chance {cb['chance']:.2f}); condition silhouette {cb['silhouette']:.2f} then {ca['silhouette']:.2f}"
    )
    erased = not ca["significant"] or ca["skill"] < WEAK_SKILL
    silhouette_halved = cb["silhouette"] >= 0.05 and ca["silhouette"] < cb["silhouette"] / 2
    weakened = not erased and (ca["skill"] < cb["skill"] / 2 or silhouette_halved)
    out["condition_erased"] = bool(erased)
    out["condition_weakened"] = bool(weakened)
    if erased:
        cond_msg = f"Correction also erased the condition difference: {numbers}."
    elif weakened:
        cond_msg = f"Correction weakened the condition difference: {numbers}."
    else:
        cond_msg = f"Correction kept the condition difference: {numbers}."
    out["message"] = f"{batch_msg} {cond_msg}"
    return out
