"""The plate-effect (batch-effect) report: the PI's question "are my plates comparable, and does
my treatment separate cells more than my plates do?" answered with numbers and in words.

Each cell carries a batch (plate), a condition (control / treated) and an image (the field it came
from). The report gathers the neighbourhood metrics (:mod:`core.plate_effect.metrics`) and the by-image
classifier (:mod:`core.plate_effect.classifier`) for batch, the same silhouette and classifier for
condition (how much biology is kept), and a plain-language verdict. The neighbourhood metrics
cannot tell cells that cluster by image from cells that cluster by plate, so the verdict rests on
the classifier and they are reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.plate_effect.classifier import SIGNIFICANCE, classifier_accuracy, min_images_per_label
from core.plate_effect.metrics import (
    LISI_PERPLEXITY,
    ONE_BLAS_THREAD,
    SILHOUETTE_MAX_CELLS,
    check_features,
    class_codes,
    default_kbet_k,
    kbet_from_neighbours,
    lisi_from_neighbours,
    lisi_neighbour_count,
    nearest_neighbours,
    normalise_lisi,
    silhouettes,
)
from core.text import plural

# Verdict thresholds on the classifier's *skill*: (balanced accuracy - chance) / (1 - chance),
# 0 at chance and 1 when every cell of every unseen image is told apart. For two Gaussian batches
# a Mahalanobis distance d apart a linear classifier reaches Phi(d / 2): skill 0.1 is d ~ 0.25 (a
# quarter of the cell-to-cell spread), skill 0.5 is d ~ 1.35. Skill alone cannot tell an effect
# from image-to-image noise: with no batch effect it reached 0.48 with 4 images per batch, 0.20
# with 8, 0.18 with 20; hence "weak" and "strong" also need the permutation test (p <= 0.05).
# Measured with 150 cells per image, 32 features, 2 batches, per-image offsets of SD 0.5 (or 0.2),
# shifts on 8 features, 40 datasets each (skill range; verdicts):
#   no effect, plates = groupings of 8 + 8 images  -0.23 .. 0.20   no 39, weak 1
#   no effect, 4 + 4 / 20 + 20 images              -0.36 .. 0.48   no 39, weak 1 / no 38, weak 2
#   no effect, 8 images each split over plates     -0.07 .. 0.08   no 40
#   shift 0.3 SD (d 0.85), image SD 0.2             0.12 .. 0.36   weak 37, no 3
#   shift 0.3 SD, image SD 0.5 (fields vary more)  -0.17 .. 0.38   weak 8, no 32 (hidden by fields)
#   shift 0.3 SD, 8 images split over plates        0.18 .. 0.33   weak 40
#   shift 1.0 SD (d 2.8), 8 + 8 images, SD 0.5      0.50 .. 0.84   strong 39, weak 1
#   shift 1.0 SD, 4 + 4 / 5 + 5 images, SD 0.2      0.72 .. 0.88   strong 40 / strong 40
#   shift 1.0 SD, 3 + 3 images                                     undetermined 40 (untestable)
# So with no batch effect the verdict reads "weak" about 1 time in 20 (the test's level) and never
# "strong".
WEAK_SKILL = 0.1
STRONG_SKILL = 0.5
# After per-batch standardisation the by-image accuracy lands below chance (0.17 .. 0.41, skill
# -0.66 .. -0.18, measured on 3 planted datasets): centring makes each batch's mean equal over all
# its images, so held-out images sit on the far side of the training images. The reason says so
# below this skill, lest "0.2 accuracy" read as a new effect.
BELOW_CHANCE_SKILL = -0.2
FEW_CELLS = 100
# Wider features (CNN: 512) are measured on their leading principal components, as scIB measures
# integrations and Harmony corrects on PCs. At 10,000 cells x 512 features the classifier alone took
# 17 s (each fit is N x D^2); on 50 components the whole report takes the same ~3 s as 32 features.
REPORT_MAX_DIMS = 50

VERDICTS = ("no", "weak", "strong", "undetermined")


def _leading_components(X: np.ndarray, max_dims: int, seed: int) -> np.ndarray:
    if X.shape[1] <= max_dims or len(X) <= max_dims:
        return X
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    with threadpool_limits(**ONE_BLAS_THREAD):  # 0.5 s single-threaded, 2.5-3.7 s with threads here
        return PCA(n_components=max_dims, svd_solver="randomized", random_state=seed).fit_transform(X)


def _verdict(clf: dict[str, Any]) -> str:
    """Verdict from the by-image classifier and its permutation test alone.

    undetermined: no test possible (a batch in fewer than 2 images, or too few images to group);
    no: p > 0.05 (within what image-to-image noise gives) or skill < WEAK_SKILL;
    weak: p <= 0.05 and WEAK_SKILL <= skill < STRONG_SKILL;  strong: p <= 0.05 and skill >= STRONG_SKILL.
    The neighbourhood metrics stay out of it: they read clumps of same-image cells as batch clumps.
    """
    if clf["significant"] is None:
        return "undetermined"
    if not clf["significant"] or clf["skill"] < WEAK_SKILL:
        return "no"
    return "strong" if clf["skill"] >= STRONG_SKILL else "weak"


def _mixed_locally(kbet_value: float, ilisi_norm: float) -> bool:
    # Half the neighbourhoods accepted and half the possible iLISI: below either, cells sit mostly
    # among cells of their own batch.
    return kbet_value >= 0.5 and ilisi_norm >= 0.5


def _reason(verdict: str, clf: dict[str, Any], ilisi_value: float, n_batches: int, kbet_value: float,
            evidence: str) -> str:
    """The verdict in one paragraph: the classifier's numbers, the neighbourhoods' in the same
    breath (so no separate note contradicts the headline), and what features it rests on."""
    acc, chance = clf["balanced_accuracy"], clf["chance"]
    neighbours = f"kBET accepts {kbet_value:.0%} of neighbourhoods and iLISI is {ilisi_value:.2f} of a possible {n_batches}"
    mixed = _mixed_locally(kbet_value, normalise_lisi(ilisi_value, n_batches))
    tail = f" {evidence}" if evidence else ""
    if verdict == "undetermined":
        seen = "" if acc is None else f"; on held-out images a classifier scores {acc:.2f} balanced accuracy (chance {chance:.2f})"
        local = (
            f" Locally {neighbours}; these cannot tell cells that cluster by image from cells that cluster by batch, "
            "so they do not decide it either." if not mixed else f" Locally {neighbours}."
        )
        return f"Cannot tell whether the batches differ: {clf['reason']}{seen}.{local}{tail}"
    told = f"a classifier tells the batches apart at {acc:.2f} balanced accuracy on images it never saw"
    if verdict == "no":
        if clf["skill"] < BELOW_CHANCE_SKILL:
            noise = (
                f"below chance ({chance:.2f}): held-out images sit on the far side of the training images, "
                "as per-batch centring makes them"
            )
        elif not clf["significant"]:
            noise = f"no more than shuffled batch labels reach (up to {clf['chance_upper']:.2f}, chance {chance:.2f})"
        else:
            noise = f"barely above chance ({chance:.2f})"
        if mixed:
            return f"No batch effect: {told}, {noise}; {neighbours}.{tail}"
        return (
            f"No batch effect: {told}, {noise}. Locally the batches are not well mixed ({neighbours}), but that does not "
            "carry over from a batch's images to its others: cells cluster by image (field-to-field variation), not "
            f"by batch -- or the batches differ in a way no linear boundary draws.{tail}"
        )
    lead = "Strong" if verdict == "strong" else "Weak"
    return (
        f"{lead} batch effect: {told} (chance {chance:.2f}, shuffled labels up to {clf['chance_upper']:.2f}); "
        f"{neighbours}.{tail}"
    )


def _evidence(verdict: str, features: str, parts: dict[str, dict[str, Any]]) -> str:
    """What the verdict rests on: the features, and how well each part of them alone tells the
    batches apart on unseen images (e.g. the cells themselves vs their surroundings)."""
    if not features and not parts:
        return ""
    text = f"It rests on {features or 'the features'}."
    scored = {name: r for name, r in parts.items() if r["balanced_accuracy"] is not None}
    if not scored:
        return text
    standing = {True: "beyond what shuffled labels reach", False: "within what shuffled labels reach",
                None: "untestable with these images"}
    readings = [f"{name} alone {'tell the batches apart ' if k == 0 else ''}at {r['balanced_accuracy']:.2f} "
                f"({standing[r['significant']]})" for k, (name, r) in enumerate(scored.items())]
    text += " On unseen images " + ", ".join(readings)
    hits = [name for name, r in scored.items() if r["significant"] and r["skill"] >= WEAK_SKILL]
    rest = [name for name in parts if name not in hits]
    if verdict in ("weak", "strong") and hits and rest:
        text += f": the difference lies in {' and '.join(hits)}, not in {' and '.join(rest)}"
    elif verdict in ("weak", "strong") and len(hits) > 1:
        text += ": the difference shows in both"
    elif verdict == "no" and hits:
        text += (f"; {' and '.join(hits)} alone go beyond shuffled labels where all features "
                 f"together do not (one of {len(parts) + 1} looks at the same cells, so it may be chance: add "
                 "images to decide)")
    return text + "."


def _comparison(batch_clf: dict[str, Any], cond_clf: dict[str, Any]) -> str | None:
    """Answer to "does my treatment separate cells more than my plates do?" in skill terms."""
    if batch_clf["skill"] is None or cond_clf["skill"] is None:
        return None
    b, c = batch_clf, cond_clf
    numbers = (
        f"on unseen images condition is told apart at {c['balanced_accuracy']:.2f} balanced accuracy "
        f"(chance {c['chance']:.2f}), batch at {b['balanced_accuracy']:.2f} (chance {b['chance']:.2f})"
    )
    untested = [name for name, clf in (("condition", c), ("batch", b)) if clf["significant"] is None]
    if untested:  # an accuracy its permutation test could not judge must not win or lose a comparison
        return (f"Undetermined whether condition or batch separates cells more: {' and '.join(untested)} cannot be "
                f"tested on so few images ({numbers}, which image-to-image variation alone could give).")
    if b["significant"] is False and c["significant"] is False:
        return f"Neither condition nor batch separates cells beyond image-to-image variation: {numbers}."
    condition_wins = c["significant"] is not False and (b["significant"] is False or c["skill"] > b["skill"])
    if condition_wins:
        return f"Condition separates cells more than batch does: {numbers}."
    return f"Batch separates cells as much as condition or more: {numbers}."


def _confounded(b_codes: np.ndarray, c_codes: np.ndarray, n_cond: int) -> bool:
    if n_cond < 2:
        return False
    per_batch = pd.crosstab(b_codes, c_codes).gt(0).sum(axis=1)
    return bool((per_batch == 1).all())


def batch_effect_report(
    X: np.ndarray,
    batch: Sequence | np.ndarray,
    condition: Sequence | np.ndarray,
    image: Sequence | np.ndarray,
    *,
    seed: int = 0,
    perplexity: float = LISI_PERPLEXITY,
    features: str = "",
    parts: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """All batch metrics, the same for condition, and a plain-language verdict; JSON-ready.

    ``features`` says in words what ``X`` is ("10 morphology features per cell"), and ``parts``
    names groups of its columns (e.g. the cell itself vs its surroundings): the by-image
    classifier is also run on each part alone, and the reason says which part a difference lies
    in. The verdict itself rests on all columns together (one test, at one level).

    Top-level keys: ``verdict`` ("no" | "weak" | "strong" | "undetermined", see :func:`_verdict`),
    ``reason`` (the verdict with its numbers, the neighbourhood metrics', and what it rests on),
    ``comparison`` (condition vs batch, or None),
    ``silhouette`` (scIB batch ASW, 1 mixed .. 0 separated), ``silhouette_raw`` (mean batch
    silhouette), ``ilisi`` (median), ``ilisi_norm`` (scIB scaling, 0..1), ``kbet`` (acceptance rate),
    ``kbet_k``, ``classifier_accuracy`` (balanced, CV by image; None when impossible), ``chance``,
    ``skill``, ``classifier`` (the full :func:`classifier_accuracy` dict), ``condition`` (its
    ``silhouette``, ``classifier_accuracy``, ``chance``, ``skill``, ``significant``, ``classifier``;
    None values when there is one condition), ``n_cells``, ``n_features``, ``dims_measured``
    (features wider than REPORT_MAX_DIMS are measured on that many principal components),
    ``n_images``, ``n_batches``, ``batch_sizes``, ``mixed_locally`` (kBET >= 0.5 and normalised
    iLISI >= 0.5), ``evidence`` (``features`` and, per part, its ``n_features``,
    ``balanced_accuracy``, ``chance_upper``, ``p_value``, ``significant``, ``skill``), ``warnings``.
    """
    X = check_features(X)
    n, n_features = X.shape
    b_codes, b_levels = class_codes(batch, n, "batch")
    c_codes, c_levels = class_codes(condition, n, "condition")
    i_codes, i_levels = class_codes(image, n, "image")
    if len(b_levels) < 2:
        raise ValueError(f"a batch effect needs at least 2 batches, all cells are in {b_levels[0]!r}")
    columns = {name: [int(j) for j in cols] for name, cols in (parts or {}).items()}
    if any(not cols or min(cols) < 0 or max(cols) >= n_features for cols in columns.values()):
        raise ValueError(f"feature parts must name columns 0..{n_features - 1}, got {columns}")
    raw = X
    X = _leading_components(X, REPORT_MAX_DIMS, seed)
    sizes = np.bincount(b_codes)
    warnings: list[str] = []

    lisi_k = lisi_neighbour_count(n, perplexity)
    kbet_k = min(default_kbet_k(sizes), n)
    dist, idx = nearest_neighbours(X, max(lisi_k, kbet_k - 1))
    lisi_values = lisi_from_neighbours(dist[:, :lisi_k], idx[:, :lisi_k], b_codes, len(b_levels), perplexity)
    ilisi_value = float(np.median(lisi_values))
    kbet_value = kbet_from_neighbours(idx, b_codes, len(b_levels), kbet_k, 0.05, None, seed)

    has_condition = len(c_levels) >= 2
    sils = silhouettes(X, [b_codes, c_codes] if has_condition else [b_codes], SILHOUETTE_MAX_CELLS, seed)
    batch_names = np.asarray(b_levels, dtype=object)[b_codes]
    batch_clf = classifier_accuracy(X, batch_names, i_codes, seed=seed, noun="batch")
    verdict = _verdict(batch_clf)
    part_results = {}
    for name, cols in columns.items() if len(columns) > 1 else ():
        r = classifier_accuracy(_leading_components(raw[:, cols], REPORT_MAX_DIMS, seed), batch_names, i_codes,
                                seed=seed, noun="batch")
        part_results[name] = {"n_features": len(cols), **{k: r[k] for k in (
            "balanced_accuracy", "chance_upper", "p_value", "significant", "skill")}}
    condition_part: dict[str, Any] = {
        "silhouette": None,
        "classifier_accuracy": None,
        "chance": None,
        "skill": None,
        "significant": None,
        "classifier": None,
        "levels": c_levels,
    }
    comparison = None
    if has_condition:
        cond_clf = classifier_accuracy(X, np.asarray(c_levels, dtype=object)[c_codes], i_codes, seed=seed,
                                       noun="condition")
        condition_part.update(
            silhouette=float(np.mean(sils[1])),
            classifier_accuracy=cond_clf["balanced_accuracy"],
            chance=cond_clf["chance"],
            skill=cond_clf["skill"],
            significant=cond_clf["significant"],
            classifier=cond_clf,
        )
        comparison = _comparison(batch_clf, cond_clf)
        if cond_clf["reason"]:
            warnings.append(f"Condition cannot be scored on unseen images: {cond_clf['reason']}.")
    elif c_levels == [""]:
        warnings.append("No cell has a condition: there is no treatment difference to keep.")
    else:
        warnings.append(f"Only one condition ({c_levels[0]!r}): there is no treatment difference to keep.")

    if n < FEW_CELLS:
        warnings.append(f"The verdict rests on only {n} cells; below {FEW_CELLS} every metric is noisy.")
    need = min_images_per_label(len(b_levels))
    few = {name: c for name, c in batch_clf["images_per_class"].items() if c < need}
    if few and verdict != "undetermined":  # undetermined: the reason says why already
        listed = ", ".join(f"{name!r}: {c}" for name, c in few.items())
        split = ("" if batch_clf["partitions"] is None
                 else f"; these images split into only {batch_clf['partitions']} groupings")
        warnings.append(
            f"Few images per batch ({listed}): {plural(len(b_levels), 'batch')} need {need} images each for a "
            f"permutation test to be sure of reaching p <= {SIGNIFICANCE}{split}, so a batch effect that varies "
            "from field to field can hide."
        )
    if _confounded(b_codes, c_codes, len(c_levels)):
        warnings.append(
            "Every batch holds a single condition: batch and condition are confounded, so a batch difference "
            "cannot be told from a treatment effect, and correcting batch would erase the treatment."
        )
    ilisi_norm = normalise_lisi(ilisi_value, len(b_levels))
    evidence = _evidence(verdict, features, part_results)
    return {
        "verdict": verdict,
        "reason": _reason(verdict, batch_clf, ilisi_value, len(b_levels), kbet_value, evidence),
        "comparison": comparison,
        "silhouette": float(np.mean(1.0 - np.abs(sils[0]))),
        "silhouette_raw": float(np.mean(sils[0])),
        "ilisi": ilisi_value,
        "ilisi_norm": ilisi_norm,
        "kbet": kbet_value,
        "kbet_k": int(kbet_k),
        "classifier_accuracy": batch_clf["balanced_accuracy"],
        "chance": batch_clf["chance"],
        "skill": batch_clf["skill"],
        "classifier": batch_clf,
        "condition": condition_part,
        "n_cells": int(n),
        "n_features": int(n_features),
        "dims_measured": int(X.shape[1]),
        "n_images": int(len(i_levels)),
        "n_batches": int(len(b_levels)),
        "batch_sizes": {b_levels[i]: int(s) for i, s in enumerate(sizes)},
        "mixed_locally": _mixed_locally(kbet_value, ilisi_norm),
        "evidence": {"features": features, "parts": part_results},
        "warnings": warnings,
    }
