"""The segmenter families that train on the user's cells, as data: which settings class, which
training function, where a trained model is saved and what it is then called. The Train page
runs them through :func:`train_segmenter`; the modules are imported only when one is used
(each imports torch, and ultralytics for YOLO)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.images import CellImage
from core.training_data import split_by_batch, split_by_image, training_pairs


@dataclass(frozen=True)
class TrainerInfo:
    family: str
    label: str
    module: str
    settings_class: str
    train: str
    checkpoint_path: str  # stem -> where a model of that name is saved
    prefix: str  # how the registry names a trained model: "<prefix>:<stem>"
    description: str
    file_prefix: str = ""  # "<file_prefix>:PATH" names a checkpoint anywhere ("": only in the weights folder)
    aliases: tuple[tuple[str, str], ...] = ()  # common setting names -> this family's (YOLO's tile is imgsz)

    def load(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.module), getattr(self, attribute))

    def metadata_path(self, checkpoint: Path) -> Path:
        """The metadata JSON each family writes beside its checkpoint."""
        from models.checkpoint_file import metadata_path

        return metadata_path(checkpoint)

    def settings(self, given: dict[str, Any]) -> Any:
        """The family's training settings from ``given`` (common names translated); an unknown one
        is a ValueError that lists the known ones."""
        aliases = dict(self.aliases)
        return self.load("settings_class").from_dict({aliases.get(k, k): v for k, v in given.items()})

    def model_name(self, checkpoint: Path) -> str | None:
        """What the registry calls a checkpoint: ``<prefix>:<stem>`` in the weights folder,
        ``<file_prefix>:PATH`` elsewhere, None where it is not found (YOLO outside its folder)."""
        checkpoint = Path(checkpoint).resolve()
        for stem in {checkpoint.name.split(".")[0], checkpoint.stem}:
            try:
                if self.load("checkpoint_path")(stem).resolve() == checkpoint:
                    return f"{self.prefix}:{stem}"
            except ValueError:
                continue
        return f"{self.file_prefix}:{checkpoint}" if self.file_prefix else None


TRAINERS: dict[str, TrainerInfo] = {t.family: t for t in (
    TrainerInfo("unet", "U-Net", "models.unet", "UNetTraining", "train_unet", "unet_checkpoint_path", "unet",
                "A compact U-Net (0.5 M parameters) predicting cell interiors and boundaries, split into cells by "
                "watershed. Trains from scratch in minutes on a CPU.", file_prefix="unet"),
    TrainerInfo("maskrcnn", "Mask R-CNN", "models.rcnn_training", "RcnnTraining", "train_mask_rcnn",
                "rcnn_checkpoint_path", "maskrcnn",
                "torchvision's Mask R-CNN (ResNet-50 FPN), the recommended instance segmenter once trained on your cells; from COCO "
                "weights when that file is in the weights folder, else from scratch. Slow on a CPU: use a GPU.",
                file_prefix="maskrcnn"),
    TrainerInfo("yolo-seg", "YOLO-seg", "models.yolo_training", "YoloTraining", "train_yolo_seg",
                "yolo_checkpoint_path", "user",
                "Ultralytics YOLO11n-seg from its model file (random start, offline). Fast per epoch; needs many "
                "epochs from scratch.", aliases=(("tile", "imgsz"),)),
)}
# The settings a page offers per family (the others keep their defaults), in order.
MAIN_SETTINGS = ("epochs", "batch_size", "lr", "patience", "seed")


def trainer(family: str) -> TrainerInfo:
    if family not in TRAINERS:
        raise ValueError(f"unknown family {family!r} to train; choose one of {', '.join(TRAINERS)}")
    return TRAINERS[family]


def default_settings(family: str) -> dict[str, Any]:
    """The family's training settings with their defaults (its settings class's, one definition)."""
    return trainer(family).load("settings_class")().to_dict()


def train_segmenter(family: str, images: Sequence[CellImage], *, name: str, settings: dict[str, Any],
                    val_batches: Sequence[str] = (), val_fraction: float = 0.2, device: str = "cpu",
                    stop: Callable[[], bool] | None = None, progress: Callable[[float, str], None] | None = None,
                    on_epoch: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train ``family`` on the ``images`` that have ground truth and save the best epoch as the
    model ``<prefix>:<name>`` in the weights folder; returns a plain summary (what a job keeps):
    model name, checkpoint, best epoch, validation F1 / precision / recall, why it stopped."""
    info = trainer(family)
    path: Path = info.load("checkpoint_path")(name)  # refuses names with / \\ :
    pairs = training_pairs([img for img in images if img.gt is not None])
    split = (split_by_batch(pairs, list(val_batches)) if val_batches
             else split_by_image(pairs, val_fraction=val_fraction, seed=int(settings.get("seed", 0))))
    train, val = split.apply(pairs)
    training = info.settings(dict(settings))
    result = info.load("train")(train, val, training=training, out=path, device=device, split=split, stop=stop,
                                progress=progress, on_epoch=on_epoch)
    kept = result.metadata["validation"]  # the saved weights' scores: the best epoch's, or an average's
    return {"model": f"{info.prefix}:{name}", "checkpoint": str(result.path or path), "best_epoch": result.best.epoch,
            "averaged_epochs": list(kept.get("averaged_epochs") or []),
            "metrics": {k: float(kept[k]) for k in ("f1", "precision", "recall")},
            "stopped": result.stopped, "train_images": len(train), "val_images": len(val),
            "split": split.to_dict()}
