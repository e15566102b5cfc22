"""Training the U-Net from scratch on the user's nuclei: augmented random tiles, Adam on
class-weighted cross-entropy with cosine decay, the shared epoch loop (:mod:`models.training_loop`)
and, at the end, the last epochs' weights averaged (:mod:`models.weight_averaging`). The settings
record and the entry point are :class:`models.unet.UNetTraining` and :func:`models.unet.train_unet`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core.evaluation.matching import validation_scores
from core.schema import setting
from core.segmentation.object_scale import training_scale
from core.training.data import Augmentation, Split, TileSampler, TrainingPair, pad_to, pairs_hash, seen_record
from models.best_epoch import (
    BestEpoch,
    EpochRecord,
    TrainingSettings,
    batch_size_setting,
    epochs_setting,
    lr_setting,
    patience_setting,
    seed_setting,
    steps_setting,
    tile_setting,
)
from models.training_loop import run_epochs
from models.unet_checkpoint import save_checkpoint
from models.unet_instances import segment_planes, unet_targets
from models.unet_network import UNetConfig, build_unet, n_parameters
from models.weight_averaging import average_weights

if TYPE_CHECKING:
    import torch

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)


@dataclass(frozen=True)
class UNetTraining(TrainingSettings):
    """How to train: one validated value the Train page, the CLI and the checkpoint's metadata share.

    Measured with these defaults: see docs/models.md ("Models trained here"). 30
    epochs keep the command-line run on the example under 10 minutes on 2 cores; 40 scored the
    same on the real DSB image (0.823 against 0.818 before seed cutting, two seeds).
    """

    family_label: ClassVar[str] = "U-Net"

    epochs: int = epochs_setting(30)
    steps_per_epoch: int = steps_setting(25)
    batch_size: int = batch_size_setting(8)
    tile: int = tile_setting(128, 16, 8)  # training windows' side; a multiple of the U-Net's 2**depth
    lr: float = lr_setting(3e-3)
    patience: int = patience_setting(8)  # epochs without a better validation F1 before stopping early
    seed: int = seed_setting()
    # The last this-many epochs' weights are averaged (stochastic weight averaging, Izmailov et al.
    # 2018) and kept instead of the best epoch's when validation scores the average as well within
    # 0.01 (BestEpoch.adopt_average); 1 keeps the best epoch. Measured: the same run scored 0.674 on
    # the real DSB image with its best epoch and 0.763 with the last 4 (or 8) averaged, the example
    # plates alike (0.997).
    average_epochs: int = setting(4, label="Epochs averaged", low=1, high=100, step=1,
                                  help="The last this-many epochs' weights are averaged and kept when validation "
                                       "scores them as well as the best epoch; 1 keeps the best epoch.")


@dataclass(frozen=True)
class TrainedUNet:
    """The best model (highest validation F1), how training went and its checkpoint's metadata."""

    model: torch.nn.Module
    config: UNetConfig
    history: list[EpochRecord]
    best_epoch: int
    metadata: dict[str, Any]
    path: Path | None  # where the best checkpoint was written, if anywhere
    stopped: str  # why training ended: "completed", "early stopping ...", "stopped ..."

    @property
    def best(self) -> EpochRecord:
        return next(r for r in self.history if r.epoch == self.best_epoch)


def predicted_labels(model: torch.nn.Module, settings: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """What validation scores (:func:`core.evaluation.matching.validation_scores`): a pair's image to
    the labels the adapter would give with ``settings``."""
    return lambda image: segment_planes(model, image, **settings)[0]


# Class weights of the cross-entropy: boundary pixels are ~15 % of the example's pixels yet carry
# every split between touching nuclei.
CLASS_WEIGHTS = (1.0, 1.0, 2.0)


@dataclass
class UNetBatches:
    """Training tiles as tensors: images (n, C, S, S) and class targets (n, S, S)."""

    sampler: TileSampler
    boundary_width: int
    device: Any

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        images, labels = self.sampler.batch(n)
        targets = np.stack([unet_targets(lab, self.boundary_width) for lab in labels])
        return (torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(self.device),
                torch.from_numpy(targets.astype(np.int64)).to(self.device))


def _val_loss(model: torch.nn.Module, pairs: Sequence[TrainingPair], weight: torch.Tensor) -> float:
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    total, count = 0.0, 0
    m = model.config.multiple
    model.eval()
    with torch.inference_mode():
        for pair in pairs:
            h, w = pair.labels.shape
            image, labels = pad_to(pair.image, math.ceil(h / m) * m, math.ceil(w / m) * m, pair.labels)
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
            y = torch.from_numpy(unet_targets(labels, model.config.boundary_width).astype(np.int64))[None].to(device)
            total += float(F.cross_entropy(model(x)[..., :h, :w], y[..., :h, :w], weight=weight)) * h * w
            count += h * w
    return total / max(count, 1)


def train_network(train: Sequence[TrainingPair], val: Sequence[TrainingPair], training: UNetTraining,
                  out: str | Path | None, config: UNetConfig, augmentation: Augmentation, device: str,
                  split: Split | None, stop: Callable[[], bool] | None, progress: ProgressFn | None,
                  on_epoch: Callable[[EpochRecord], None] | None, predict_settings: dict[str, Any]) -> TrainedUNet:
    """The training :func:`models.unet.train_unet` describes, its inputs checked; validation segments
    with ``predict_settings`` (the adapter's defaults at the training images' own scale)."""
    import torch
    import torch.nn.functional as F

    from models.autoencoder import ProgressReporter

    t = training
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seeded weights without resetting the caller's generator
        torch.manual_seed(t.seed)
        model = build_unet(config)
    model.to(device)
    batches = UNetBatches(TileSampler(train, t.tile, t.seed, augmentation), config.boundary_width, device)
    weight = torch.tensor(CLASS_WEIGHTS, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    # Cosine decay over the planned steps: the last epochs fine-tune instead of jumping around.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, t.epochs * t.steps_per_epoch, eta_min=t.lr / 20)
    parameters = t.to_dict() | {"augmentation": augmentation.to_dict(), "class_weights": list(CLASS_WEIGHTS),
                                "device": str(device), "n_parameters": n_parameters(model)}
    base = {"family": "unet", "data_hash": pairs_hash([*train, *val]), "split": split.to_dict() if split else
            {"train": [p.name for p in train], "val": [p.name for p in val], "method": "given"},
            "images_seen": seen_record(train, val),
            "parameters": parameters, "images": {"train": len(train), "val": len(val),
                                                 "objects": int(sum(p.n_objects for p in (*train, *val)))},
            "object_scale": training_scale([p.image for p in train], [p.labels for p in train]).to_dict()}
    path = Path(out) if out is not None else None
    best = BestEpoch(base, t.patience, None if path is None else
                     lambda state, metadata: save_checkpoint(path, state, config, metadata), t0=t0)
    report = ProgressReporter(progress)

    recent: deque[dict[str, torch.Tensor]] = deque(maxlen=t.average_epochs)

    def step() -> float:
        x, y = batches.next(t.batch_size)
        loss = F.cross_entropy(model(x), y, weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    def keep_for_averaging(interrupted: bool) -> None:
        if not interrupted:
            recent.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})

    predict = predicted_labels(model, predict_settings)
    stopped = run_epochs(model, best, epochs=t.epochs, steps_per_epoch=t.steps_per_epoch, step=step,
                         validation_scores=lambda: validation_scores(predict, val),
                         validation_loss=lambda: _val_loss(model, val, weight), report=report, stop=stop,
                         on_epoch=on_epoch, after_validation=keep_for_averaging)
    if len(recent) >= 2 and not stopped.startswith("stopped"):
        last = best.history[-1].epoch
        report(1.0 - 1e-6, f"averaging the weights of epochs {last - len(recent) + 1}-{last}…", force=True)
        average_weights(model, list(recent), lambda: batches.next(t.batch_size)[0])
        best.adopt_average(model, validation_scores(predict, val), range(last - len(recent) + 1, last + 1))
    metadata = best.finish(model, stopped)  # the first epoch is always validated
    return TrainedUNet(model, config, best.history, best.epoch, metadata, path, stopped)
