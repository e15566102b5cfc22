"""The lesson's image steps read: what each measures (plain functions its action calls, so the
tests compute the very numbers the page shows) and the checkpoint that reads its result.

- ``images``: how many bits the raw pixels need, and how the merge paints each channel (the Human
  Protein Atlas yellow: half to red, half to green), measured on the merge itself.
- ``opencv``: a fixed global level, Otsu, and Otsu after a Gaussian blur on the nucleus channel,
  each scored by its foreground's overlap (IoU) with the true nuclei.
- ``find-cells``: the classical recipe's nuclei matched one-to-one with the truth (F1 at IoU 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.data.images import CellImage, normalize_channel
from core.evaluation.matching import match_instances
from core.figures.display import composite
from core.lesson.checkpoints import Check, checkpoint, not_determined, number
from core.segmentation.preprocess import threshold
from core.segmentation.recipe import ThresholdStep

EIGHT_BIT_MAX = 255
HPA_SPLIT = 0.5  # the HPA convention: yellow goes half to red, half to green
SPLIT_TOLERANCE = 0.02  # the merge is 8-bit: 0.5 of full brightness is 127 of 255 (0.498)

# ---------------------------------------------------------------------------------------
# images: bits and the merge


def bit_depth_reading(pixels: np.ndarray) -> dict[str, float]:
    """The brightest raw value, the bits it needs, the bits each value is stored in, and the share
    of values above 255 (what 8 bits could not hold)."""
    top = int(pixels.max()) if pixels.size else 0
    return {"max_value": float(top), "bits": float(max(top.bit_length(), 1)),
            "stored_bits": float(pixels.dtype.itemsize * 8),
            "share_above_255": float((pixels > EIGHT_BIT_MAX).mean()) if pixels.size else 0.0}


def merge_weights(image: CellImage) -> np.ndarray:
    """(C, 3) red, green, blue shares of full brightness that the display merge
    (:func:`core.figures.display.composite`) gives each channel: the merge drawn with that channel
    alone, read where the channel is at full brightness (NaN where it never is: a flat channel)."""
    weights = np.full((len(image.channels), 3), np.nan)
    for i, ch in enumerate(image.channels):
        full = normalize_channel(image.pixels[:, :, i], ch.clip_low, ch.clip_high) >= 1.0
        if full.any():
            alone = composite(image.pixels, image.channels, [j == i for j in range(len(image.channels))])
            weights[i] = alone[full].mean(axis=0) / 255.0
    return weights


def yellow_split(image: CellImage) -> dict[str, float]:
    """How much of its yellow channel the merge of ``image`` sends to red and to green (NaN: no
    yellow channel)."""
    which = next((i for i, ch in enumerate(image.channels) if ch.color == "yellow"), None)
    if which is None:
        return {"yellow_to_red": float("nan"), "yellow_to_green": float("nan")}
    red, green, _ = merge_weights(image)[which]
    return {"yellow_to_red": float(red), "yellow_to_green": float(green)}


def channels_reading(image: CellImage, hpa: CellImage) -> dict[str, float]:
    """The ``images`` step's result: ``image``'s bits and ``hpa``'s yellow split."""
    return {**bit_depth_reading(image.pixels), **yellow_split(hpa)}


# ---------------------------------------------------------------------------------------
# opencv: three thresholds against the truth


def foreground_iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of a foreground mask and the true objects (``truth`` > 0); 1 when
    both are empty."""
    if mask.shape != truth.shape:
        raise ValueError(f"the mask {mask.shape} and the truth {truth.shape} differ in shape")
    true = truth > 0
    union = int(np.count_nonzero(mask | true))
    return float(np.count_nonzero(mask & true)) / union if union else 1.0


@dataclass(frozen=True)
class ThresholdView:
    key: str  # global | otsu | otsu_gaussian
    name: str
    mask: np.ndarray
    level: float
    iou: float


def threshold_views(plane: np.ndarray, truth: np.ndarray, *, level: float, sigma: float) -> list[ThresholdView]:
    """A [0, 1] ``plane`` thresholded at the fixed ``level``, by Otsu, and by Otsu after a Gaussian
    blur of ``sigma`` px (the Preprocess pipeline's own thresholds), each scored against ``truth``."""
    steps = (("global", f"Global (fixed level {level:.2f})", ThresholdStep(method="manual", value=level)),
             ("otsu", "Otsu", ThresholdStep(method="otsu")),
             ("otsu_gaussian", f"Gaussian blur (σ {sigma:g} px) + Otsu",
              ThresholdStep(method="otsu_gaussian", blur_sigma=sigma)))
    views = []
    for key, name, step in steps:
        mask, value = threshold(plane, step)
        views.append(ThresholdView(key, name, mask, float(value), foreground_iou(mask, truth)))
    return views


def thresholds_reading(views: list[ThresholdView], *, sigma: float) -> dict[str, float]:
    """The ``opencv`` step's result: each threshold's IoU and level."""
    out: dict[str, float] = {"blur_sigma": float(sigma)}
    for view in views:
        out[f"iou_{view.key}"], out[f"level_{view.key}"] = view.iou, view.level
    return out


# ---------------------------------------------------------------------------------------
# find-cells: the recipe's nuclei against the truth


def cells_reading(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The ``find-cells`` step's result: objects found, true objects, F1 at IoU 0.5."""
    scores = match_instances(truth, labels, 0.5)
    return {"n_found": float(scores.n_pred), "n_truth": float(scores.n_true), "f1": float(scores.f1)}


# ---------------------------------------------------------------------------------------
# Checkpoints


def _split_ok(value: float | None) -> bool:
    return value is not None and abs(value - HPA_SPLIT) <= SPLIT_TOLERANCE


@checkpoint("sixteen_bit")
def sixteen_bit(result: Mapping[str, Any]) -> Check:
    """Passes when the raw values need more than 8 bits and the merge splits yellow half and half."""
    top, bits = number(result["max_value"]), number(result["bits"])
    red, green = number(result["yellow_to_red"]), number(result["yellow_to_green"])
    share = number(result.get("share_above_255")) or 0.0
    if top is None or bits is None:
        return not_determined("the brightest pixel")
    if top <= EIGHT_BIT_MAX:
        return Check(False, top, f"The brightest value is {top:,.0f}: it fits in 8 bits (0 to 255), so this image "
                                 "was saved as a photo would be. Pick one of the lesson's 16-bit fields.")
    if not (_split_ok(red) and _split_ok(green)):
        said = "no yellow channel was merged" if red is None or green is None else \
            f"yellow went {red:.2f} to red and {green:.2f} to green"
        return Check(False, top, f"The values need {bits:.0f} bits, but {said}: the HPA merge gives each half "
                                 "(0.50 and 0.50). Check the yellow colour's weights (core.data.images.COLORS).")
    return Check(True, top, f"The brightest value is {top:,.0f}, which needs {bits:.0f} bits ({share:.0%} of the "
                            f"values are above 255, more than 8 bits hold); the HPA merge sent yellow {red:.2f} to red and "
                            f"{green:.2f} to green.")


@checkpoint("threshold_vs_truth")
def threshold_vs_truth(result: Mapping[str, Any], *, min_iou: float = 0.6) -> Check:
    """Passes when the better of Otsu and Gaussian + Otsu overlaps the true nuclei by ``min_iou``
    or more and does no worse than the fixed global level."""
    otsu, blurred, fixed = (number(result[k]) for k in ("iou_otsu", "iou_otsu_gaussian", "iou_global"))
    if otsu is None or blurred is None or fixed is None:
        return not_determined("the overlap with the true nuclei")
    name, best = ("Gaussian blur + Otsu", blurred) if blurred >= otsu else ("Otsu", otsu)
    level = number(result.get("level_otsu_gaussian" if blurred >= otsu else "level_otsu"))
    at = f" (level {level:.2f})" if level is not None else ""
    if best < min_iou:
        return Check(False, best, f"The best data-driven threshold, {name}{at}, overlaps the true nuclei with IoU "
                                  f"{best:.2f}, below {min_iou:.2f}: change the blur (σ 2 to 4 px smooths the noise "
                                  "without merging the nuclei) or pick another image.")
    global_level = number(result.get("level_global"))
    if fixed > best:
        hand = f" {global_level:.2f}" if global_level is not None else ""
        return Check(False, best, f"Your fixed level{hand} overlaps the nuclei better (IoU {fixed:.2f}) than "
                                  f"{name} ({best:.2f}): you tuned it by eye, against a truth a new experiment "
                                  "does not have. Set the fixed level back to mid-grey (0.50) to see what a level "
                                  "chosen without looking does.")
    return Check(True, best, f"{name}{at} overlaps the true nuclei with IoU {best:.2f} (at least {min_iou:.2f}), "
                             f"against {fixed:.2f} for the fixed level: a level found from the image's own "
                             "histogram.")


@checkpoint("cells_found")
def cells_found(result: Mapping[str, Any], *, min_f1: float = 0.7) -> Check:
    """Passes when the nuclei found match the true ones with F1 >= ``min_f1`` at IoU 0.5."""
    found, truth, f1 = (number(result[k]) for k in ("n_found", "n_truth", "f1"))
    if found is None or truth is None or f1 is None or truth == 0:
        return not_determined("F1 against the ground truth")
    said = f"Found {found:.0f} nuclei where the truth has {truth:.0f}: F1 {f1:.2f} at IoU 0.5"
    if f1 >= min_f1:
        return Check(True, f1, f"{said} (at least {min_f1:.2f}).")
    if found > 1.2 * truth:
        advice = "too many objects: nuclei cut in pieces or debris counted; raise the minimum size"
    elif found < 0.8 * truth:
        advice = ("too few: nuclei merged or dropped; lower the minimum size, and keep the watershed on to split "
                  "touching nuclei")
    else:
        advice = "about the right number, but their outlines miss the true ones; check the threshold"
    return Check(False, f1, f"{said}, below {min_f1:.2f}: {advice}.")
