"""Checkpoints of the lesson "Is my segmentation good?" (lessons/segmentation-quality.yaml): each
recomputes the step's metric from the counts the step shows (a result whose numbers disagree with
their definition fails) and passes once the student has seen what the step is about.

The counts are those of :mod:`core.evaluation.matching` (IoU, matching, F1, the Data Science Bowl's
AP) and :mod:`core.evaluation.ranking` (the paired bootstrap interval over images).
"""

from __future__ import annotations

from collections.abc import Sequence

from core.evaluation.matching import AP_THRESHOLDS
from core.lesson.checkpoints import Check, Result, checkpoint, number

N_THRESHOLDS = len(AP_THRESHOLDS)  # IoU 0.5, 0.55, ..., 0.95
ROUNDING = 0.0005  # the ranking table's intervals are rounded to 3 decimals


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance


@checkpoint("quality_iou")
def iou_found_and_missed(result: Result, *, min_iou: float = 0.5, tolerance: float = 0.002) -> Check:
    """IoU = intersection / union of the shown counts, and the student has made one imperfect
    prediction that still counts as found (IoU >= ``min_iou``) and one that does not."""
    iou = number(result["iou"])
    inter, true, pred = (number(result[k]) for k in ("intersection", "area_true", "area_pred"))
    if iou is None or inter is None or true is None or pred is None:
        return Check(False, None, "The IoU or its pixel counts are missing: nothing to check.")
    union = true + pred - inter
    expected = inter / union if union > 0 else 0.0
    formula = f"IoU = {inter:.0f} / ({true:.0f} + {pred:.0f} − {inter:.0f}) = {expected:.2f}"
    if not _close(iou, expected, tolerance):
        return Check(False, iou, f"The IoU shown, {iou:.2f}, is not intersection / union: {formula}.")
    low, high = number(result.get("lowest_iou")), number(result.get("highest_iou"))
    if low is None or high is None:
        return Check(None, iou, f"{formula}. Move a slider: an unchanged outline is the truth itself (IoU 1).")
    if high < min_iou:
        return Check(None, iou, f"{formula}. Every outline you made so far misses (best IoU {high:.2f} < {min_iou:g}): "
                                f"find one a little off that still counts as found.")
    if low >= min_iou:
        return Check(None, iou, f"{formula}. Every outline you made so far counts as found (lowest IoU {low:.2f} ≥ "
                                f"{min_iou:g}): shrink or shift it until it no longer does.")
    return Check(True, iou, f"{formula}. Your outlines ranged from IoU {high:.2f}, off yet counted as found, to "
                            f"{low:.2f}, missed at IoU {min_iou:g}: a few pixels decide.")


@checkpoint("quality_f1")
def f1_at_a_strict_threshold(result: Result, *, min_threshold: float = 0.75, tolerance: float = 0.002) -> Check:
    """F1 = 2TP / (2TP + FP + FN) with TP + FN true and TP + FP predicted objects, read at an IoU
    threshold of at least ``min_threshold``, where it is no higher than at 0.5."""
    t, f1, f1_50 = number(result["threshold"]), number(result["f1"]), number(result["f1_at_50"])
    tp, fp, fn = (number(result[k]) for k in ("tp", "fp", "fn"))
    n_true, n_pred = number(result["n_true"]), number(result["n_pred"])
    if None in (t, f1, f1_50, tp, fp, fn, n_true, n_pred):
        return Check(False, None, "The matching's counts are missing: nothing to check.")
    if tp + fn != n_true or tp + fp != n_pred:
        return Check(False, f1, f"The counts do not add up: TP + FN = {tp + fn:.0f} should be the {n_true:.0f} true "
                                f"nuclei and TP + FP = {tp + fp:.0f} the {n_pred:.0f} predicted ones.")
    expected = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
    formula = f"F1 = 2·{tp:.0f} / (2·{tp:.0f} + {fp:.0f} + {fn:.0f}) = {expected:.2f}"
    if not _close(f1, expected, tolerance):
        return Check(False, f1, f"The F1 shown, {f1:.2f}, is not 2TP / (2TP + FP + FN): {formula}.")
    if f1 > f1_50 + tolerance:
        return Check(False, f1, f"F1 {f1:.2f} at IoU {t:.2f} is above its {f1_50:.2f} at IoU 0.5: a stricter "
                                "threshold can only unmatch pairs, never match more.")
    if t < min_threshold - 1e-9:
        return Check(None, f1, f"At IoU ≥ {t:.2f}, {formula}. Raise the threshold to {min_threshold:.2f} or more and "
                               "watch the same outlines judged stricter.")
    return Check(True, f1, f"At IoU ≥ {t:.2f}, {formula}, against {f1_50:.2f} at IoU 0.5: of the same "
                           f"{n_pred:.0f} outlines, {tp:.0f} still count.")


def _per_threshold(values: object) -> list[float] | None:
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != N_THRESHOLDS:
        return None
    out = [number(v) for v in values]
    return None if None in out else out


@checkpoint("quality_ap")
def ap_rewards_outlines(result: Result, *, min_gap: float = 0.2, tolerance: float = 0.002) -> Check:
    """AP is the mean of TP / (TP + FP + FN) at the ten thresholds (never rising with the threshold),
    and the student has seen a segmentation that finds every nucleus (F1 at 0.5) with an AP at
    least ``min_gap`` lower: the true outlines shrunk."""
    ap, per = number(result["ap"]), _per_threshold(result["ap_per_threshold"])
    shrink = number(result["shrink_px"])
    shrunk_f1, shrunk_ap = number(result["shrunk_f1_at_50"]), number(result["shrunk_ap"])
    if ap is None or per is None or shrink is None or shrunk_f1 is None or shrunk_ap is None:
        return Check(False, None, f"AP needs its {N_THRESHOLDS} values, one per IoU threshold 0.5 to 0.95: missing.")
    mean = sum(per) / N_THRESHOLDS
    if not _close(ap, mean, tolerance):
        return Check(False, ap, f"The AP shown, {ap:.3f}, is not the mean of its {N_THRESHOLDS} values "
                                f"({mean:.3f}).")
    if any(later > earlier + 1e-9 for earlier, later in zip(per, per[1:], strict=False)):
        return Check(False, ap, "The per-threshold values rise somewhere between IoU 0.5 and 0.95: a stricter "
                                "threshold can only lose matches.")
    recipe = f"The recipe's AP {ap:.2f} is the mean of {per[0]:.2f} at IoU 0.5 down to {per[-1]:.2f} at 0.95"
    if shrink < 1:
        return Check(None, ap, f"{recipe}. Now shrink the true outlines by a pixel or more.")
    gap = shrunk_f1 - shrunk_ap
    if gap < min_gap:
        return Check(None, ap, f"{recipe}. The truth shrunk by {shrink:.0f} px: F1 {shrunk_f1:.2f} at IoU 0.5, AP "
                               f"{shrunk_ap:.2f}, {gap:.2f} apart; shrink it further to see AP part from F1.")
    return Check(True, gap, f"{recipe}. The truth shrunk by {shrink:.0f} px keeps F1 {shrunk_f1:.2f} at IoU 0.5 but "
                            f"its AP is {shrunk_ap:.2f}, {gap:.2f} below that F1: AP rewards outlines, F1 at 0.5 finding.")


@checkpoint("quality_paired")
def paired_verdict(result: Result, *, min_images: int = 3, tolerance: float = 0.002) -> Check:
    """The verdict follows from the interval (decided only when the 95 % interval of the paired
    difference over at least ``min_images`` images excludes 0), and the student has seen one change
    the images decide and one they cannot."""
    if not number(result["changed"]):
        return Check(None, None, "Recipe B is recipe A: change one of its settings to compare two segmentations.")
    n, diff = number(result["images"]), number(result["diff"])
    f1_a, f1_b = number(result["f1_a"]), number(result["f1_b"])
    low, high, decided = number(result["low"]), number(result["high"]), number(result["determined"])
    if None in (n, diff, f1_a, f1_b, decided):
        return Check(False, None, "The comparison's numbers are missing: nothing to check.")
    if not _close(diff, f1_b - f1_a, tolerance):
        return Check(False, diff, f"The difference shown, {diff:+.3f}, is not B's mean F1 minus A's "
                                  f"({f1_b:.3f} − {f1_a:.3f} = {f1_b - f1_a:+.3f}): the pairs are the same images.")
    if n < min_images or low is None or high is None:
        if decided:
            return Check(False, diff, f"{n:.0f} image(s) cannot decide (at least {min_images} are needed), yet the "
                                      "verdict says decided.")
        return Check(None, diff, f"{n:.0f} image(s) with ground truth: too few to decide; at least {min_images} are "
                                 "needed.")
    if not low - tolerance <= diff <= high + tolerance:
        return Check(False, diff, f"The mean difference {diff:+.3f} lies outside its own interval {low:+.3f} to "
                                  f"{high:+.3f}.")
    excludes_zero = low > 0 or high < 0
    on_the_edge = min(abs(low), abs(high)) <= ROUNDING  # 0.000 in the ranking's table: either verdict holds
    reading = (f"B − A = {diff:+.3f} in F1 over {n:.0f} images, 95 % interval {low:+.3f} to {high:+.3f}"
               f"{', without 0' if excludes_zero else ', which holds 0 (no difference)'}")
    if bool(decided) != excludes_zero and not on_the_edge:
        return Check(False, diff, f"{reading}, yet the verdict says {'decided' if decided else 'undetermined'}.")
    now = "decided" if decided else "undetermined"
    seen_decided, seen_undecided = number(result.get("decided_seen")), number(result.get("undecided_seen"))
    if not (seen_decided and seen_undecided):
        other = "cannot decide" if seen_decided else "decide"
        return Check(None, diff, f"{reading}: {now}. Now find a change of recipe B the images {other}.")
    return Check(True, diff, f"{reading}: {now}. You have seen changes the {n:.0f} images decide and changes they "
                             "cannot: only the first kind is a reason to switch recipes.")
