"""A compact U-Net trained here on the user's nuclei, and the segmenter adapter for its checkpoints.

The network predicts three classes per pixel: background, interior and boundary (the object's
outer ``boundary_width`` pixels). Where two nuclei touch, their boundaries meet in a seam of
boundary pixels, so the interiors are separate blobs: each becomes one watershed seed, and the
watershed grows it back over its boundary. This was chosen over a distance map because it needs
no guess of the nucleus size: distance-map peaks must be told a minimum distance (too small
over-splits elongated nuclei, too large merges small touching ones), whereas the boundary class is
learnt from the labels as drawn, at any size.

Checkpoints are plain data (``torch.save`` of tensors, numbers and strings, read back with
``torch.load(weights_only=True)``), named ``<name>.unet.pt`` in the weights folder, with a
``<name>.unet.json`` of the same metadata beside it for people and for listing models without
importing torch. Each becomes the segmenter ``unet:<name>`` at once (:func:`user_unet_models`).

torch is imported inside the functions, so importing :mod:`models` stays fast.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core.images import CellImage
from core.instances import Instances, boxes_from_labels, split_concave
from core.object_scale import ObjectScale, resize_factor, resize_maps, resize_planes, training_scale
from core.schema import setting
from core.training_data import (
    Augmentation,
    Split,
    TileSampler,
    TrainingPair,
    input_planes,
    pad_to,
    pairs_hash,
    seen_record,
)
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
from models.checkpoint_file import (
    cpu_state,
    load_weights,
    named_checkpoint,
    read_checkpoint,
    read_metadata,
    saved_checkpoints,
    trained_here_spec,
    write_checkpoint,
)
from models.classifier import CPU_THREADS, cpu_threads
from models.registry import ModelInfo, Setting, register_file_family, register_provider

if TYPE_CHECKING:
    import torch

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)
FORMAT = "cellscope_unet"
FORMAT_VERSION = 1
SUFFIX = ".unet.pt"
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2

UNET_SETTINGS = (
    Setting("foreground_threshold", "U-Net foreground threshold", 0.5, "A pixel belongs to a nucleus where the "
            "probability of interior or boundary is above this. Lower grows objects.", low=0.05, high=0.95, step=0.05),
    Setting("seed_threshold", "U-Net seed threshold", 0.5, "Interior probability above which a pixel seeds an "
            "object; lower merges touching nuclei, higher splits them or loses faint ones.",
            low=0.05, high=0.95, step=0.05),
    Setting("min_solidity", "U-Net split below solidity", 0.9, "A nucleus interior or object less convex than this "
            "(its area over its convex hull's) is cut along its waist when that leaves more convex parts: touching "
            "nuclei the network drew as one. Higher splits more; 0 turns it off.", low=0.0, high=1.0, step=0.01),
    Setting("min_area", "U-Net minimum area (px)", 15, "Objects smaller than this are dropped.", kind="int",
            low=0, high=10_000, step=5),
    Setting("diameter", "U-Net nucleus diameter (px)", 0, "The nuclei's typical diameter in this image. The image "
            "is resized so they come out the size of the training nuclei, segmented, and the result resized back. "
            "0 estimates it per image and resizes only images whose nuclei look over 1.6x larger or smaller.",
            kind="int", low=0, high=1000, step=1),
)
SEED_MIN_PART = 10  # px: a seed cut off a neck must be at least this big (the interior of a small nucleus)
# What validation scores with: the training images' own scale, so no resizing.
_PREDICT_DEFAULTS = {s.name: s.default for s in UNET_SETTINGS if s.name != "diameter"}
INFERENCE_TILE = 1024  # larger images are run in overlapping windows of this size (memory, not accuracy)
INFERENCE_MARGIN = 32  # context each window adds on every side and discards (receptive-field border effects)


@dataclass(frozen=True)
class UNetConfig:
    """The architecture and its input: what a checkpoint needs to be rebuilt and fed."""

    in_channels: int = 1
    base: int = 16  # channels of the first level, doubled at each level below
    depth: int = 3  # pooling steps: depth + 1 levels
    planes: str = "nucleus"  # core.training_data.input_planes: what the model reads
    boundary_width: int = 2  # pixels of each object's rim labelled boundary

    def __post_init__(self) -> None:
        if not 1 <= self.in_channels <= 16 or not 4 <= self.base <= 128 or not 1 <= self.depth <= 5:
            raise ValueError(f"U-Net needs 1-16 input channels, base 4-128 and depth 1-5; got {self}")
        if self.boundary_width < 1:
            raise ValueError(f"boundary_width must be at least 1; got {self.boundary_width}")

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (each pooling halves them)."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        try:
            return cls(int(data["in_channels"]), int(data["base"]), int(data["depth"]), str(data["planes"]),
                       int(data["boundary_width"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"U-Net settings incomplete or malformed: {data!r}") from exc


@cache
def _unet_class() -> type:
    """The module class, made on first use so that importing this file does not import torch."""
    import torch
    from torch import nn

    def double_conv(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        """Encoder of ``depth + 1`` double-conv levels (max-pool between), decoder of transposed
        convolutions and skip connections, a 1x1 convolution to the three classes' logits."""

        def __init__(self, config: UNetConfig) -> None:
            super().__init__()
            self.config = config
            widths = [config.base * 2**i for i in range(config.depth + 1)]
            self.down = nn.ModuleList([double_conv(config.in_channels, widths[0])]
                                      + [double_conv(a, b) for a, b in zip(widths, widths[1:], strict=False)])
            self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:], strict=False)])
            self.merge = nn.ModuleList([double_conv(2 * a, a) for a in widths[:-1]])
            self.head = nn.Conv2d(widths[0], 3, 1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, block in enumerate(self.down):
                x = block(x if i == 0 else self.pool(x))
                skips.append(x)
            x = skips.pop()
            for up, merge in zip(reversed(self.up), reversed(self.merge), strict=True):
                x = merge(torch.cat([skips.pop(), up(x)], dim=1))
            return self.head(x)

    return UNet


def build_unet(config: UNetConfig) -> torch.nn.Module:
    """An untrained U-Net; ``model(x)`` maps (n, C, H, W) with H, W multiples of ``config.multiple``
    to (n, 3, H, W) logits (background, interior, boundary)."""
    return _unet_class()(config)


def n_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------- targets and instances


def unet_targets(labels: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """(H, W) uint8 classes from instance labels: 0 background, 1 interior, 2 the outer
    ``boundary_width`` pixels of each object (so touching objects are parted by a seam twice that)."""
    from skimage.segmentation import find_boundaries

    target = (labels > 0).astype(np.uint8)
    inner = labels.copy()
    for _ in range(boundary_width):  # peel one rim per pass: a rim of that many pixels
        rim = find_boundaries(inner, mode="inner") & (inner > 0)
        target[rim] = BOUNDARY
        inner[rim] = 0
    return target


def instances_from_probabilities(probs: np.ndarray, *, foreground_threshold: float, seed_threshold: float,
                                 min_area: int, min_solidity: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Label image (1..N) and per-object score from (3, H, W) class probabilities.

    Seeds are the connected blobs of interior probability above ``seed_threshold``; a blob less
    convex than ``min_solidity`` is first cut at its waist (:func:`core.instances.split_concave`):
    where two touching nuclei meet without a seam the network is sure of, their interiors join in a
    neck, and one seed would make one object. A watershed on the interior probability grows the
    seeds over the foreground (interior + boundary above ``foreground_threshold``). A foreground
    piece with no seed of its own (a small or faint nucleus) becomes an object as it is. Objects
    under ``min_area`` pixels are dropped; those less convex than ``min_solidity`` are cut at their
    waist too (touching nuclei whose interiors did not even neck). The score is an object's mean
    foreground probability.

    Measured with two U-Nets trained on the example only, on the real DSB image in ``tests/data``:
    cutting the seeds raised F1 at IoU 0.5 from 0.823 and 0.818 to 0.859 and 0.867 (at 0.9; the
    example's unseen fields stayed at 0.998); nearly all the remaining gain came from pairs of
    touching nuclei merged into one.
    """
    import cv2
    from skimage.segmentation import relabel_sequential, watershed

    foreground = probs[INTERIOR] + probs[BOUNDARY]
    mask = foreground > foreground_threshold
    seeds = (probs[INTERIOR] > seed_threshold) & mask
    _, markers = cv2.connectedComponents(seeds.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    markers = split_concave(markers, min_solidity, min_part=SEED_MIN_PART)
    labels = watershed(-probs[INTERIOR], markers, mask=mask) if markers.max() else np.zeros(mask.shape, np.int32)
    n_pieces, pieces = cv2.connectedComponents((mask & (labels == 0)).astype(np.uint8), connectivity=8,
                                               ltype=cv2.CV_32S)
    if n_pieces > 1:
        labels = np.where(pieces > 0, pieces + labels.max(), labels)
    areas = np.bincount(labels.ravel())
    labels[areas[labels] < max(min_area, 1)] = 0
    labels = split_concave(labels, min_solidity, min_part=max(min_area, 20))
    labels = relabel_sequential(labels)[0].astype(np.int32)
    n = int(labels.max())
    sums = np.bincount(labels.ravel(), weights=foreground.ravel(), minlength=n + 1)[1:]
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, (sums / np.maximum(counts, 1)).astype(np.float32)


def predict_probabilities(model: torch.nn.Module, planes: np.ndarray, *, tile: int = INFERENCE_TILE,
                          margin: int = INFERENCE_MARGIN) -> np.ndarray:
    """(3, H, W) float32 class probabilities of (H, W, C) planes. An image larger than ``tile`` runs
    in windows that overlap by ``2 * margin``, each keeping only its core: memory stays bounded
    and no seam sees a window's border."""
    import torch

    from models.tiling import core_bounds, tile_starts

    config: UNetConfig = model.config
    device = next(model.parameters()).device
    h, w = planes.shape[:2]
    m = config.multiple
    model.eval()

    def run(window: np.ndarray) -> np.ndarray:
        wh, ww = window.shape[:2]
        padded, _ = pad_to(window, math.ceil(wh / m) * m, math.ceil(ww / m) * m)
        x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None].to(device)
        with torch.inference_mode():
            return torch.softmax(model(x).float(), 1)[0, :, :wh, :ww].cpu().numpy()

    if max(h, w) <= tile:
        return run(planes)
    out = np.zeros((3, h, w), np.float32)
    ys, xs = tile_starts(h, tile, 2 * margin), tile_starts(w, tile, 2 * margin)
    yb, xb = core_bounds(ys, tile, h), core_bounds(xs, tile, w)
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            probs = run(planes[y0:y0 + tile, x0:x0 + tile])
            out[:, yb[iy]:yb[iy + 1], xb[ix]:xb[ix + 1]] = probs[:, yb[iy] - y0:yb[iy + 1] - y0,
                                                                 xb[ix] - x0:xb[ix + 1] - x0]
    return out


def segment_planes(model: torch.nn.Module, planes: np.ndarray, *, foreground_threshold: float,
                   seed_threshold: float, min_area: int, min_solidity: float = 0.0,
                   factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of (H, W, C) normalised planes: what ``predict`` and validation both run.
    With ``factor`` other than 1 the network sees the planes resized by it (nuclei brought to the
    training size, :mod:`core.object_scale`) and its probabilities are resized back, so objects
    and every pixel setting stay in the image's own pixels."""
    if factor == 1.0:
        probs = predict_probabilities(model, planes)
    else:
        probs = resize_maps(predict_probabilities(model, resize_planes(planes, factor)), *planes.shape[:2])
    return instances_from_probabilities(probs, foreground_threshold=foreground_threshold,
                                        seed_threshold=seed_threshold, min_area=min_area, min_solidity=min_solidity)


# -------------------------------------------------------------------------------------- training


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


def validation_scores(model: torch.nn.Module, pairs: Sequence[TrainingPair]) -> dict[str, float]:
    """F1, precision and recall at IoU 0.5 over ``pairs`` pooled (TP, FP, FN summed over images),
    with the default settings, matched by :func:`core.metrics.match_instances`."""
    from core.metrics import match_instances

    tp = fp = fn = 0
    for pair in pairs:
        labels, _ = segment_planes(model, pair.image, **_PREDICT_DEFAULTS)
        m = match_instances(pair.labels, labels, 0.5)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn}


# Class weights of the cross-entropy: boundary pixels are ~15 % of the example's pixels yet carry
# every split between touching nuclei.
CLASS_WEIGHTS = (1.0, 1.0, 2.0)


@dataclass
class _Batches:
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


def train_unet(
    train: Sequence[TrainingPair],
    val: Sequence[TrainingPair],
    *,
    training: UNetTraining = UNetTraining(),
    out: str | Path | None = None,
    config: UNetConfig | None = None,
    augmentation: Augmentation | None = None,
    device: str = "cpu",
    split: Split | None = None,
    stop: Callable[[], bool] | None = None,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    threads: int = CPU_THREADS,
) -> TrainedUNet:
    """Train a U-Net from scratch on augmented random tiles of ``train``; after each epoch score
    ``val`` (F1 at IoU 0.5, the project's metric, with the default settings) and keep the best.

    Adam on class-weighted cross-entropy with a cosine learning-rate decay; the same seed and data
    give the same model on a CPU. Stops after ``training.epochs``, after ``training.patience``
    epochs without a better validation F1, or when ``stop()`` returns True (checked before every
    step, e.g. a ``threading.Event``'s ``is_set``; the epoch under way is validated first, so a
    stop always leaves a model). With ``out`` the best checkpoint is written there, atomically,
    each time it improves: a training killed midway still leaves the best so far. ``progress``
    hears about training (with an estimate of the time left) about four times a second and at
    every epoch's end; ``on_epoch`` gets each epoch's record (a live curve).

    On a CPU torch runs on ``threads`` threads (:func:`models.classifier.cpu_threads`). One is the
    default, for training in the background of a server that must stay responsive: with the other
    core busy, a step of 8 tiles of 128 px took 0.52 s on one thread and 2.1 s on two on the 2-core
    dev machine. On an otherwise idle 2-core machine two threads took 0.51 s a step against 0.85 s
    on one, so the command line uses every core.
    """
    if not train or not val:
        raise ValueError(f"training needs images to train on and to validate on; got {len(train)} and {len(val)}")
    channels = train[0].image.shape[2]
    config = config or UNetConfig(in_channels=channels)
    if any(p.image.shape[2] != config.in_channels for p in (*train, *val)):
        raise ValueError(f"every image must have {config.in_channels} plane(s), as the U-Net's input")
    if training.tile % config.multiple:
        raise ValueError(f"tile must be a multiple of {config.multiple} (the U-Net pools {config.depth} times); "
                         f"got {training.tile}")
    with cpu_threads(device, max(1, int(threads))):
        return _train(train, val, training, out, config, augmentation or Augmentation(), device, split, stop,
                      progress, on_epoch)


def _train(train: Sequence[TrainingPair], val: Sequence[TrainingPair], training: UNetTraining,
           out: str | Path | None, config: UNetConfig, augmentation: Augmentation, device: str, split: Split | None,
           stop: Callable[[], bool] | None, progress: ProgressFn | None,
           on_epoch: Callable[[EpochRecord], None] | None) -> TrainedUNet:
    import torch
    import torch.nn.functional as F

    from models.autoencoder import ProgressReporter

    t = training
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seeded weights without resetting the caller's generator
        torch.manual_seed(t.seed)
        model = build_unet(config)
    model.to(device)
    batches = _Batches(TileSampler(train, t.tile, t.seed, augmentation), config.boundary_width, device)
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
    stopped = "completed"
    path = Path(out) if out is not None else None
    best = BestEpoch(base, t.patience, None if path is None else
                     lambda state, metadata: save_checkpoint(path, state, config, metadata), t0=t0)
    total_steps = t.epochs * t.steps_per_epoch
    report = ProgressReporter(progress)  # its time left assumes every epoch runs: early stopping only shortens it

    recent: deque[dict[str, torch.Tensor]] = deque(maxlen=t.average_epochs)
    for epoch in range(1, t.epochs + 1):
        model.train()
        losses = []
        interrupted = False
        for step in range(t.steps_per_epoch):
            if stop is not None and stop():
                interrupted = True
                break
            x, y = batches.next(t.batch_size)
            loss = F.cross_entropy(model(x), y, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            report(((epoch - 1) * t.steps_per_epoch + step + 1) / total_steps,
                   f"epoch {epoch}/{t.epochs}, step {step + 1}/{t.steps_per_epoch}: loss {losses[-1]:.4f}")
        if not losses and best.state is not None:  # stopped between epochs: the best is already kept
            stopped = f"stopped after epoch {epoch - 1}"
            break
        scores = validation_scores(model, val)
        record = EpochRecord(epoch, float(np.mean(losses)) if losses else float("nan"),
                             _val_loss(model, val, weight), scores["f1"], scores["precision"], scores["recall"],
                             time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(record)
        best.update(model, record, scores)
        if not interrupted:
            recent.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        report(epoch * t.steps_per_epoch / total_steps, f"epoch {epoch}/{t.epochs}: loss {record.loss:.4f}, "
               f"validation F1 {record.f1:.3f} (best {best.f1:.3f} at epoch {best.epoch})", force=True)
        if interrupted:
            stopped = f"stopped during epoch {epoch}"
            break
        if (why := best.early_stop(epoch)) is not None:
            stopped = why
            break
    if len(recent) >= 2 and not stopped.startswith("stopped"):
        last = best.history[-1].epoch
        report(1.0 - 1e-6, f"averaging the weights of epochs {last - len(recent) + 1}-{last}…", force=True)
        average_weights(model, list(recent), batches, t.batch_size)
        best.adopt_average(model, validation_scores(model, val), range(last - len(recent) + 1, last + 1))
    metadata = best.finish(model, stopped)  # the first epoch is always validated
    return TrainedUNet(model, config, best.history, best.epoch, metadata, path, stopped)


def average_weights(model: torch.nn.Module, states: Sequence[dict[str, torch.Tensor]], batches: _Batches,
                    batch_size: int, calibration_steps: int = 30) -> torch.nn.Module:
    """``model`` with the mean of ``states`` loaded, then its batch-norm statistics measured anew
    on ``calibration_steps`` batches of training tiles (averaged weights need their own: the
    running statistics of the epochs averaged do not describe them); in eval mode."""
    import torch

    model.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                           for k, v in states[-1].items()})
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(calibration_steps):
            model(batches.next(batch_size)[0])
    for m in norms:
        m.momentum = 0.1
    return model.eval()


# ----------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: UNetConfig,
                    metadata: dict[str, Any]) -> Path:
    """Write weights, architecture and metadata as plain data (``torch.load(weights_only=True)``
    reads it), atomically (a kill mid-write leaves the previous file), plus ``<name>.json`` with
    the same metadata beside it."""
    data = {"format": FORMAT, "version": FORMAT_VERSION, "state_dict": cpu_state(state_dict),
            "config": config.to_dict(), "metadata": metadata}
    return write_checkpoint(path, data, {"format": FORMAT, "config": config.to_dict(), **metadata})


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (eval mode, on ``device``) and metadata of a :func:`save_checkpoint` file, read with
    ``torch.load(weights_only=True)``; ValueError naming the file for anything else."""
    data = read_checkpoint(path, fmt=FORMAT, version=FORMAT_VERSION, what="CellScope U-Net checkpoint",
                           hint="train one on the Train page or with `python -m core train --model unet`")
    model = build_unet(UNetConfig.from_dict(data.get("config") or {}))
    return load_weights(model, data.get("state_dict"), path, device, "the recorded architecture"), \
        dict(data.get("metadata") or {})


# ---------------------------------------------------------------------------- segmenter adapter


class UNetSegmenter:
    """A trained U-Net checkpoint as a segmenter: probabilities, then seeded watershed."""

    def __init__(self, name: str, checkpoint: Path, device: str = "cpu") -> None:
        self.name, self.device = name, device
        self.network, self.metadata = load_checkpoint(checkpoint, device)
        self.config: UNetConfig = self.network.config
        self.scale = ObjectScale.from_dict(self.metadata.get("object_scale"))  # None: trained before sizes were kept

    def predict(self, image: CellImage, *, foreground_threshold: float, seed_threshold: float,
                min_area: int, min_solidity: float = 0.0, diameter: int = 0) -> Instances:
        t0 = time.perf_counter()
        planes = input_planes(image, self.config.planes)
        if planes.shape[2] != self.config.in_channels:
            raise ValueError(f"{self.name} reads {self.config.in_channels} channel(s); {image.name} has {planes.shape[2]}")
        if diameter > 0 and self.scale is None:
            raise ValueError(f"{self.name} was trained before CellScope recorded its nuclei's size, so a nucleus "
                             "diameter cannot be matched to it: set the diameter to 0, or train it again")
        factor = resize_factor(self.scale, planes[:, :, 0], diameter)
        with cpu_threads(self.device):  # one thread: 0.23 s instead of 0.72 s for 512 px on the 2-core machine
            labels, scores = segment_planes(self.network, planes, foreground_threshold=foreground_threshold,
                                            seed_threshold=seed_threshold, min_area=min_area,
                                            min_solidity=min_solidity, factor=factor)
        note = () if factor == 1.0 else (
            f"image resized {factor:.2f}x for the network, so that its nuclei match the training nuclei "
            f"(about {self.scale.diameter:.0f} px across)",)
        return Instances(labels, boxes_from_labels(labels), scores, ("cell",), self.name, self.device,
                         time.perf_counter() - t0, notes=note)


def _describe(path: Path) -> str:
    """One line from the JSON beside the checkpoint (no torch import just to list models)."""
    try:
        meta = read_metadata(path)
        val, images = meta["validation"], meta["images"]
        return (f"U-Net trained here on {images['train']} images ({images['objects']} labelled nuclei with the "
                f"validation images), validation F1 {val['f1']:.3f} at IoU 0.5 on {images['val']} held-out images "
                f"({meta['split'].get('method', '?')} split), {meta['date'][:10]}: {path}")
    except (OSError, ValueError, KeyError, TypeError):
        return f"U-Net checkpoint (no readable metadata beside it): {path}"


def unet_model_info(path: str | Path, name: str | None = None) -> ModelInfo:
    """A registry entry for the checkpoint at ``path`` (in the weights folder or anywhere else)."""
    path = Path(path).expanduser().resolve()
    name = name or f"unet:{path.name.removesuffix(SUFFIX).removesuffix('.pt')}"
    return ModelInfo(name, "unet", _describe(path), trained_here_spec(name, path), False,
                     lambda weights, device: UNetSegmenter(name, Path(weights), device), UNET_SETTINGS,
                     own_checkpoint=path)


def unet_checkpoint_path(stem: str) -> Path:
    """Where a U-Net named ``stem`` is saved so that it becomes the model ``unet:<stem>``."""
    return named_checkpoint(stem, f"{stem}{SUFFIX}")


def user_unet_models() -> list[ModelInfo]:
    """Every ``*.unet.pt`` in the weights folder, as the segmenter ``unet:<name>``."""
    return [unet_model_info(path) for path in saved_checkpoints(SUFFIX)]


register_provider(user_unet_models)
register_file_family("unet", unet_model_info)  # unet:PATH, a checkpoint anywhere
