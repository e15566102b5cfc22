"""A toy segmenter family, whole in one module: what a new family needs to appear on Compare, Train,
Cell map and Explain and in the CLI's ``models``, ``segment`` and ``train`` (tests/test_toy_family.py).

It thresholds the nucleus plane after a blur and labels the connected blobs. "Training" learns the
threshold from the images with ground truth (midway between the cells' and the background's mean)
and saves it as a checkpoint in the weights folder, where it becomes ``trained:toy:<name>``. Its
``diameter`` setting means something else than the U-Net's setting of that name (the registry
scopes the two). Its CAM is the blurred plane it thresholds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from core.data.images import CellImage, nucleus_plane
from core.data.instances import Instances, instances_from_labels
from core.evaluation.matching import match_instances
from core.training.data import Split, TrainingPair, seen_record
from models.best_epoch import (
    EpochRecord,
    TrainingSettings,
    batch_size_setting,
    epochs_setting,
    lr_setting,
    patience_setting,
    seed_setting,
)
from models.checkpoint_file import metadata_path, named_checkpoint, saved_checkpoints, trained_here_spec, write_json
from models.registry import (
    DetectorCamSupport,
    Family,
    ModelInfo,
    Setting,
    Trainer,
    register_family,
    register_model,
    register_provider,
    trained_name,
)

SUFFIX = ".toy.pt"
TOY_SETTINGS = (Setting("diameter", "Toy blur (px)", 2, "Gaussian blur before the threshold (not a cell size).",
                        kind="int", low=0, high=15, step=1),)


@dataclass(frozen=True)
class ToyTraining(TrainingSettings):
    family_label = "toy"
    epochs: int = epochs_setting(2)  # the shared declarations (label, help, limits), the toy's defaults
    batch_size: int = batch_size_setting(1)
    lr: float = lr_setting(0.1)
    patience: int = patience_setting(2)
    seed: int = seed_setting(0)


class ToySegmenter:
    def __init__(self, name: str, threshold: float | None = None, device: str = "cpu") -> None:
        self.name, self.threshold, self.device = name, threshold, "cpu"

    def blurred(self, plane: np.ndarray, diameter: int) -> np.ndarray:
        return ndimage.gaussian_filter(plane, diameter / 2) if diameter else plane

    def labels(self, plane: np.ndarray, diameter: int) -> np.ndarray:
        smooth = self.blurred(plane, diameter)
        level = self.threshold if self.threshold is not None else float(smooth.mean() + smooth.std())
        return ndimage.label(smooth > level)[0].astype(np.int32)

    def predict(self, image: CellImage, *, diameter: int) -> Instances:
        t0 = time.perf_counter()
        labels = self.labels(nucleus_plane(image), diameter)
        return instances_from_labels(labels, self.name, runtime_s=time.perf_counter() - t0)


def _scores(threshold: float, pairs: Sequence[TrainingPair]) -> dict[str, float]:
    model = ToySegmenter("validation", threshold)
    found = [match_instances(p.labels, model.labels(p.image[:, :, 0], TOY_SETTINGS[0].default)) for p in pairs]
    return {k: float(np.mean([getattr(m, k) for m in found])) for k in ("f1", "precision", "recall")}


@dataclass(frozen=True)
class TrainedToy:
    path: Path
    history: list[EpochRecord]
    best: EpochRecord
    metadata: dict[str, Any]
    stopped: str


def train_toy(train: Sequence[TrainingPair], val: Sequence[TrainingPair], *, training: ToyTraining, out: Path,
              device: str = "cpu", split: Split | None = None, stop: Callable[[], bool] | None = None,
              progress: Callable[[float, str], None] | None = None,
              on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainedToy:
    t0 = time.perf_counter()
    inside = [float(p.image[:, :, 0][p.labels > 0].mean()) for p in train]
    outside = [float(p.image[:, :, 0][p.labels == 0].mean()) for p in train]
    threshold = (np.mean(inside) + np.mean(outside)) / 2
    history, stopped = [], "completed"
    for epoch in range(1, training.epochs + 1):
        scores = _scores(threshold, val)
        history.append(EpochRecord(epoch, 0.0, 0.0, seconds=time.perf_counter() - t0, **scores))
        if on_epoch:
            on_epoch(history[-1])
        if progress:
            progress(epoch / training.epochs, f"epoch {epoch} of {training.epochs}")
        if stop and stop():
            stopped = f"stopped after epoch {epoch}"
            break
    best = max(history, key=lambda r: r.f1)
    metadata = {"family": "toy", "images_seen": seen_record(train, val), "split": split.to_dict() if split else {},
                "validation": {"best_epoch": best.epoch, "f1": best.f1, "precision": best.precision,
                               "recall": best.recall, "history": [r.to_dict() for r in history]},
                "seconds": round(time.perf_counter() - t0, 3), "stopped": stopped}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"format": "toy", "threshold": threshold}))
    write_json(metadata_path(out), metadata)
    return TrainedToy(Path(out), history, best, metadata, stopped)


def toy_model_info(path: str | Path, name: str | None = None) -> ModelInfo:
    path = Path(path).resolve()
    name = name or trained_name("toy", path.name.removesuffix(SUFFIX))
    return ModelInfo(name, "toy", f"A toy threshold trained here: {path}", trained_here_spec(name, path), False,
                     lambda weights, device: ToySegmenter(name, json.loads(Path(weights).read_text())["threshold"]),
                     TOY_SETTINGS, own_checkpoint=path)


def toy_checkpoint_path(stem: str) -> Path:
    return named_checkpoint(stem, f"{stem}{SUFFIX}")


def toy_cam_layers(adapter: ToySegmenter, method: str) -> dict[str, str]:
    return {"plane": "the blurred nucleus plane it thresholds (default)"}


def toy_cam(adapter: ToySegmenter, image: CellImage, settings: dict[str, Any], method: str, detection: int | None,
            layer: str | None) -> Any:
    from models.detector_cam import DetectorCam

    t0 = time.perf_counter()
    instances = adapter.predict(image, **settings)
    if detection is not None and not 0 <= detection < instances.count:
        raise ValueError(f"detection {detection!r} does not exist: this image has {instances.count} detections")
    smooth = adapter.blurred(nucleus_plane(image), settings["diameter"])
    cam = ((smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-6)).astype(np.float32)
    return DetectorCam(cam, instances, detection, method, layer or "plane", time.perf_counter() - t0, targeted=False)


register_family(Family(
    "toy", "Toy threshold", "A blur and a learnt threshold: the tests' family.", settings=TOY_SETTINGS,
    cam=DetectorCamSupport(("eigencam",), toy_cam_layers, toy_cam),
    trainer=Trainer(ToyTraining, train_toy, toy_checkpoint_path, toy_model_info, file_prefix="toy"),
))
register_model(ModelInfo("toy-blobs", "toy", "Blobs brighter than the mean plus one deviation.", None, False,
                         lambda weights, device: ToySegmenter("toy-blobs"), TOY_SETTINGS))
register_provider(lambda: [toy_model_info(p) for p in saved_checkpoints(SUFFIX)])
