"""Checkpoints of the lesson's model steps: masks against boxes at strict IoU, and a U-Net trained
on a few labels against the classical recipe on images it never saw."""

from __future__ import annotations

from core.lesson.checkpoints import Check, Result, checkpoint, not_determined, number
from core.text import plural


@checkpoint("masks_beat_boxes")
def masks_beat_boxes(result: Result, *, min_margin: float = 0.0) -> Check:
    """Passes when the classical recipe's masks beat perfect boxes (the ground truth's own, filled
    and scored as outlines) in AP over IoU 0.5:0.95 by more than ``min_margin``."""
    masks, boxes = number(result["classical_ap"]), number(result["boxes_ap"])
    if masks is None or boxes is None:
        return not_determined("the AP of the masks or of the boxes")
    f1_masks, f1_boxes = number(result.get("classical_f1")), number(result.get("boxes_f1"))
    at50 = (f" (at IoU 0.5 alone the boxes score F1 {f1_boxes:.2f}, the masks {f1_masks:.2f})"
            if f1_masks is not None and f1_boxes is not None else "")
    margin = masks - boxes
    if margin > min_margin:
        return Check(True, round(margin, 3),
                     f"The classical recipe's masks reach AP {masks:.2f} over IoU 0.5–0.95, perfect boxes scored as "
                     f"outlines only {boxes:.2f}{at50}: at strict IoU a box is not a cell's shape.")
    return Check(False, round(margin, 3),
                 f"The classical recipe's masks reach AP {masks:.2f} over IoU 0.5–0.95 and perfect boxes {boxes:.2f}"
                 f"{at50}: the masks do not beat the boxes by more than {min_margin:.2f} here.")


@checkpoint("unet_vs_classical")
def unet_vs_classical(result: Result, *, min_f1: float = 0.6) -> Check:
    """Passes when the U-Net reaches ``min_f1`` (objects matched at IoU 0.5) on the images it was
    neither trained nor validated on; the text sets the classical recipe's F1 on them beside it."""
    unet, classical = number(result["unet_f1"]), number(result["classical_f1"])
    n_train, n_test = int(result["train_images"]), int(result["test_images"])
    if unet is None or n_test < 1:
        return not_determined("the U-Net's F1 on held-out images")
    trained, held = f"Trained on {plural(n_train, 'image')}", plural(n_test, "held-out image")
    beside = "" if classical is None else (
        f"; the classical recipe scores {classical:.2f} on the same images"
        + (", less than the U-Net" if unet > classical + 0.005 else ", more than the U-Net"
           if unet < classical - 0.005 else ", as much as the U-Net"))
    if unet >= min_f1:
        return Check(True, round(unet, 3), f"{trained}, the U-Net reaches F1 {unet:.2f} at IoU 0.5 on {held}, at least "
                                            f"the {min_f1:.2f} asked for{beside}.")
    return Check(False, round(unet, 3), f"{trained}, the U-Net reaches only F1 {unet:.2f} at IoU 0.5 on {held}, below "
                                         f"the {min_f1:.2f} asked for{beside}: train on more images or for more "
                                         "epochs.")
