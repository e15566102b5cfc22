"""The lesson's model steps, Streamlit-free: detectors scored against the ground truth (boxes against
masks), and a U-Net trained on a few curated labels and scored on the images it never saw.

Both run through the code the pages use: :func:`workflows.compare.run_compare` (the Compare page's
*All images*) runs and scores the models, :func:`core.evaluation.matching.scores_over_thresholds`
matches objects (the project's one metric), :func:`workflows.training.plan_training` and
:func:`workflows.training.run_training` train the registry's U-Net as the Train page does. Their
preparations (``detectors``, ``unet``) run once in the lesson's background thread.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.cells.measure import bounding_boxes
from core.data.images import CellImage
from core.data.instances import Instances, labels_from_boxes
from core.evaluation.matching import AP_THRESHOLDS, scores_over_thresholds
from core.evaluation.score_tables import SEEN
from core.training.data import Split
from workflows.compare import run_compare
from workflows.lesson import Progress, preparation

CLASSICAL = "classical"
PERFECT_BOXES = "perfect boxes"  # the ground truth's own boxes, filled: the best any box detector can do
NOT_HERE = "not downloaded here — available with internet on the Compare page"
SLOW_HERE = "slow on a CPU (tens of seconds an image) — run it on the Compare page"


def _quiet(fraction: float, what: str) -> None:
    """A progress callback for callers that do not show one."""


# ---------------------------------------------------------------------------------------- detectors


def lesson_detectors() -> tuple[list[str], dict[str, str]]:
    """The published segmenters that can run here without a download and are quick on a CPU (the
    classical recipe first), and every other one with why it is left out. Weights are looked for,
    never fetched; models trained on the user's own cells are not published detectors."""
    import models  # noqa: F401  (registers every family)
    from models.registry import availability, list_models

    present, absent = [CLASSICAL], {}
    for info in list_models("segment"):
        if info.own_checkpoint is not None or info.name == CLASSICAL:
            continue
        usable, _ = availability(info.name)
        if not usable:
            absent[info.name] = NOT_HERE
        elif info.slow_on_cpu:
            absent[info.name] = SLOW_HERE
        else:
            present.append(info.name)
    return present, absent


def perfect_boxes(image: CellImage) -> Instances:
    """The ground truth's bounding boxes filled into a label image, as a box detector's boxes are
    filled: a detector that finds every nucleus and boxes it exactly."""
    if image.gt is None:
        raise ValueError(f"{image.name} has no ground truth: perfect boxes are the ground truth's own")
    boxes = bounding_boxes(image.gt)[1]
    labels = labels_from_boxes(boxes, image.gt.shape)
    return Instances(labels, boxes, np.ones(len(boxes), np.float32), ("cell",), PERFECT_BOXES, "cpu", 0.0,
                     box_only=True)


@dataclass(frozen=True)
class DetectorScores:
    """Every detector's F1 at each IoU threshold (0.5:0.05:0.95) and its AP over them, the mean over
    the images, matched on masks (a box filled as an outline) and, for box detectors, also on boxes
    (as the Compare page scores them)."""

    curves: pd.DataFrame  # model, kind (boxes | masks), matched on, iou, f1: one row per threshold
    ap: pd.DataFrame  # model, kind, matched on, f1 (at IoU 0.5), ap (0.5:0.95)
    labels: dict[str, dict[str, np.ndarray]]  # image name -> model -> label image (boxes filled)
    absent: dict[str, str]  # models left out -> why
    images: int
    seconds: float

    def at(self, iou: float) -> pd.DataFrame:
        """One row per model and matching: F1 at IoU 0.5, AP 0.5:0.95 and F1 at ``iou`` (when not 0.5)."""
        near = self.curves.loc[np.isclose(self.curves["iou"], iou)]
        if near.empty:
            raise ValueError(f"IoU {iou} is not one of the thresholds {', '.join(map(str, AP_THRESHOLDS))}")
        keys = ["model", "kind", "matched on"]
        table = self.ap.rename(columns={"f1": "F1 at IoU 0.50", "ap": "AP 0.50:0.95"})
        if np.isclose(iou, 0.5):
            return table
        return table.merge(near[[*keys, "f1"]].rename(columns={"f1": f"F1 at IoU {iou:.2f}"}), on=keys)

    def score(self, model: str, what: str, *, matched_on: str = "mask IoU") -> float:
        """``what`` ("f1" at 0.5 or "ap") of ``model`` matched on ``matched_on``."""
        row = self.ap.loc[(self.ap["model"] == model) & (self.ap["matched on"] == matched_on)]
        if row.empty:
            raise KeyError(model)
        return float(row[what].iloc[0])

    def f1_at(self, model: str, iou: float, *, matched_on: str = "mask IoU") -> float:
        c = self.curves
        row = c.loc[(c["model"] == model) & (c["matched on"] == matched_on) & np.isclose(c["iou"], iou)]
        if row.empty:
            raise KeyError(model)
        return float(row["f1"].iloc[0])


def _score_rows(image: CellImage, result: Instances) -> list[dict[str, Any]]:
    kind = "boxes" if result.box_only else "masks"
    ways = [("mask IoU", None)] + ([("box IoU", result.boxes)] if result.box_only else [])
    return [{"image": image.name, "model": result.model, "kind": kind, "matched on": how, "iou": m.threshold,
             "f1": m.f1, "ap": m.ap}
            for how, boxes in ways for m in scores_over_thresholds(image.gt, result.labels, pred_boxes=boxes)]


def score_detectors(images: Sequence[CellImage], *, progress: Progress = _quiet) -> DetectorScores:
    """The classical recipe and every quick detector present here (:func:`lesson_detectors`) run on
    ``images`` through the Compare page's run, and the ground truth's perfect boxes, each scored
    against the ground truth at every IoU threshold of the AP."""
    t0 = time.perf_counter()
    images = [img for img in images if img.gt is not None]
    if not images:
        raise ValueError("no image has ground truth: detectors cannot be scored")
    present, absent = lesson_detectors()
    run = run_compare(images, {name: {} for name in present}, device="cpu",
                      progress=lambda f, what: progress(0.95 * f, what))
    for problem in run.problems:
        absent[problem.split(" ", 1)[0]] = f"failed here: {problem}"
    rows, labels = [], {}
    for image in images:
        found = [run.results[(image.name, name)] for name in present if (image.name, name) in run.results]
        boxes = perfect_boxes(image)
        labels[image.name] = {r.model: r.labels.astype(np.uint16) for r in (*found, boxes)}
        rows += [row for r in (*found, boxes) for row in _score_rows(image, r)]
    keys = ["model", "kind", "matched on"]
    per_image = pd.DataFrame(rows)
    curves = per_image.groupby([*keys, "iou"], sort=False, as_index=False)["f1"].mean()
    per_model = per_image.groupby([*keys, "image"], sort=False, as_index=False).agg(ap=("ap", "mean"))
    at50 = per_image.loc[np.isclose(per_image["iou"], 0.5)].groupby(keys, sort=False, as_index=False)["f1"].mean()
    ap = at50.merge(per_model.groupby(keys, sort=False, as_index=False)["ap"].mean(), on=keys)
    progress(1.0, "scored")
    return DetectorScores(curves, ap, labels, absent, len(images), time.perf_counter() - t0)


@preparation("detectors")
def prepare_detectors(images: Sequence[CellImage], params: Any, progress: Progress) -> DetectorScores:
    return score_detectors(images, progress=progress)


# -------------------------------------------------------------------------------------------- U-Net

# The U-Net's training in the lesson: the Train page's settings, shortened to half a minute on one
# CPU core. Measured on the lesson plates (2 images to train, 1 to validate): 4 epochs of 10 steps of
# 8 tiles of 128 px at learning rate 0.006 trained in 26 s on one quiet core (49 s on a core shared
# with three other jobs) and scored F1 0.91 on the 5 held-out images (classical 0.97). On the shared
# core, 6 epochs at the Train page's 0.003 took 95 s for 0.93; 5 epochs of 8 steps of 96 px at 0.01,
# 56 s for 0.84.
LESSON_TRAINING = {"steps_per_epoch": 10, "batch_size": 8, "tile": 128, "lr": 0.006}
LESSON_EPOCHS, LESSON_TRAIN_IMAGES = 4, 2
SECONDS_PER_EPOCH = 10.0  # the live run's estimate until the prepared run has measured this machine


def curated_split(images: Sequence[CellImage], n_train: int) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test) image names: ``n_train`` curated images taken from the plates in
    turn (control before treated), the next one to validate (it picks the best epoch, so it is not
    a test image either), every other image held out for the test."""
    annotated = [img for img in images if img.gt is not None]
    by_plate: dict[str, list[CellImage]] = {}
    for img in sorted(annotated, key=lambda i: (i.condition != "control", i.name)):
        by_plate.setdefault(img.batch, []).append(img)
    order = [img.name for group in zip(*by_plate.values(), strict=False) for img in group]
    order += [img.name for img in annotated if img.name not in order]  # plates of unequal size
    if not 1 <= n_train <= len(order) - 2:
        raise ValueError(f"train on 1 to {max(len(order) - 2, 1)} images: one more validates and at least one "
                         f"must be left to test on; got {n_train} of {len(order)} images with ground truth")
    return order[:n_train], order[n_train:n_train + 1], order[n_train + 1:]


@dataclass(frozen=True)
class UNetLesson:
    """A U-Net trained on a few images, and it and the classical recipe scored on the others."""

    unet_f1: float  # mean F1 at IoU 0.5 over the test images
    classical_f1: float
    train: list[str]
    val: list[str]
    test: list[str]
    epochs: int
    table: pd.DataFrame  # image, model, f1, seen in training: every image, as the Compare page marks them
    labels: dict[str, dict[str, np.ndarray]]  # test image -> "U-Net" | "classical" -> label image
    validation_f1: float  # the kept weights' F1 on the validation image
    train_seconds: float
    seconds: float
    stopped: str = ""
    history: list[dict[str, float]] = field(default_factory=list)  # epoch, f1 (validation), seconds

    def result(self) -> dict[str, Any]:
        return {"unet_f1": self.unet_f1, "classical_f1": self.classical_f1, "train_images": len(self.train),
                "test_images": len(self.test)}


def train_and_score(images: Sequence[CellImage], *, n_train: int = LESSON_TRAIN_IMAGES, epochs: int = LESSON_EPOCHS,
                    training: dict[str, Any] | None = None, device: str = "cpu", progress: Progress = _quiet,
                    stop: Callable[[], bool] | None = None) -> UNetLesson:
    """Train the registry's U-Net (:func:`workflows.training.plan_training` / ``run_training``, as the
    Train page does) on ``n_train`` curated images (:func:`curated_split`) into a temporary folder
    (the user's models folder is left alone), then score it and the classical recipe on every image
    through the Compare page's run; their F1 is the mean over the test images alone."""
    from workflows.training import plan_training, run_training

    t0 = time.perf_counter()
    train, val, test = curated_split(images, n_train)
    settings = {**LESSON_TRAINING, **(training or {}), "epochs": int(epochs), "patience": int(epochs)}
    annotated = [img for img in images if img.gt is not None]
    by_name = {img.name: img for img in annotated}
    with tempfile.TemporaryDirectory(prefix="cellscope-lesson-unet-") as folder:
        out = Path(folder) / "lesson.unet.pt"
        plan = plan_training("unet", [by_name[n] for n in (*train, *val)], settings=settings, out=out,
                             val_fraction=0.5)
        split = Split(tuple(train), tuple(val), "given")  # the curated choice, not a random draw
        plan = dataclasses.replace(plan, split=split, train=(parts := split.apply(plan.pairs))[0], val=parts[1])
        run = run_training(plan, device=device, stop=stop, progress=lambda f, what: progress(0.9 * f, what))
        t_train = time.perf_counter() - t0
        unet = f"unet:{out}"
        scored = run_compare(annotated, {unet: {}, CLASSICAL: {}}, device=device,
                             progress=lambda f, what: progress(0.9 + 0.1 * f, f"scoring: {what}"))
    if scored.problems:
        raise RuntimeError("; ".join(scored.problems))
    table = scored.analysis.tables["scores"].replace({"model": {unet: "U-Net"}})[["image", "model", "f1", SEEN]]
    means = table.loc[table["image"].isin(test)].groupby("model")["f1"].mean()  # the same images for both
    labels = {name: {"U-Net" if m == unet else m: scored.results[(name, m)].labels for m in (unet, CLASSICAL)}
              for name in test}
    history = [{"epoch": r.epoch, "f1": r.f1, "seconds": r.seconds} for r in run.trained.history]
    progress(1.0, "done")
    return UNetLesson(float(means["U-Net"]), float(means[CLASSICAL]), train, val, test, int(epochs), table, labels,
                      float(run.summary["metrics"]["f1"]), t_train, time.perf_counter() - t0, run.trained.stopped,
                      history)


@preparation("unet")
def prepare_unet(images: Sequence[CellImage], params: Any, progress: Progress) -> UNetLesson:
    return train_and_score(images, n_train=LESSON_TRAIN_IMAGES, epochs=LESSON_EPOCHS, training=LESSON_TRAINING,
                           progress=progress)
