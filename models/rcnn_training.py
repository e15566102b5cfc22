"""Mask R-CNN (torchvision v2, ResNet-50 FPN) trained here on the user's nuclei, and the segmenter
adapter for its checkpoints.

Two classes: background and cell. The network starts from the COCO weights when that file is in
the weights folder (:data:`models.rcnn.COCO_WEIGHTS`; never downloaded here), otherwise from
scratch, and the checkpoint's metadata says which. Training reads random augmented tiles of the
:class:`core.training.data.TrainingPair` lists (the same sampler as the U-Net); after each epoch
the validation images are segmented exactly as the adapter does and scored with
:func:`core.evaluation.matching.match_instances` at IoU 0.5, and the best epoch is kept.

Two choices differ from torchvision's COCO recipe, both for nuclei on a CPU:

* anchors of 16-256 px instead of 32-512: nuclei here are 10-30 px across, so the network sees
  images at their own size (``scale`` 1) instead of enlarged (4x the pixels for 2x);
* 128 sampled RoIs per image for the box head instead of 512 and 500 RPN proposals in training
  instead of 2000: a tile holds tens of nuclei, not hundreds, and the v2 box head's four 3x3
  convolutions on every RoI were most of a step (4.5 s instead of 12 s for two 256 px tiles).

Checkpoints are plain data ``{"model": state_dict, "format", "version", "config", "metadata"}``
read back with ``torch.load(weights_only=True)``, so :class:`models.rcnn.RcnnModel` loads them too;
named ``<name>.maskrcnn.pt`` in the weights folder with a ``<name>.maskrcnn.json`` beside it, each
becomes the segmenter ``trained:rcnn:<name>`` at once (:func:`user_rcnn_models`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core.data.images import CellImage
from core.data.instances import Instances, labels_from_masks
from core.evaluation.matching import validation_scores
from core.schema import setting
from core.training.data import (
    Augmentation,
    Split,
    TileSampler,
    TrainingPair,
    input_planes,
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
from models.detector_cam import RCNN_CAM
from models.device import cpu_threads
from models.rcnn import COCO_WEIGHTS, RCNN_SETTINGS
from models.registry import Family, ModelInfo, Trainer, register_family, register_provider, trained_name
from models.training_loop import run_epochs
from models.weights import local_path, weights_dir

if TYPE_CHECKING:
    import torch

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)
FORMAT = "cellscope_maskrcnn"
FORMAT_VERSION = 1
SUFFIX = ".maskrcnn.pt"
NUM_CLASSES = 2  # background, cell
_PREDICT_DEFAULTS = {s.name: s.default for s in RCNN_SETTINGS}  # what validation scores with
# torchvision's heads whose shapes depend on the number of classes: not taken from COCO's 91.
_CLASS_HEADS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")

# Measured on the shared 2-core dev machine, one torch thread, from scratch, with the defaults below:
# a step of two 256 px tiles of the example took 3.0-4.5 s (5.5 s for tiles packed with 64 objects);
# segmenting a 256 px image took 4.3 s untrained (500 detections through the mask head), less once
# trained; its validation loss 0.8 s more. An epoch of 3 steps and 2 validation images: 24-27 s.
# Two threads were slower there (30-36 s against 12 s a step with torchvision's default RoI
# sampling): the other core is busy.
CPU_SECONDS_PER_TILE = 2.0  # a 256 px tile (scale 1), forward and backward
CPU_SECONDS_PER_MEGAPIXEL = 65.0  # segmenting validation images (untrained: the slow case)
CPU_BUILD_SECONDS = 3.0  # building the network (and reading COCO weights)


@dataclass(frozen=True)
class RcnnConfig:
    """What a checkpoint needs, besides its weights, to be rebuilt and fed as it was trained."""

    scale: float = 1.0  # images are resized by this before the network (nuclei vs anchor sizes)
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)  # one per FPN level, px at the network's scale
    detections_per_image: int = 500  # torchvision's 100 would cap a crowded field
    planes: str = "nucleus"  # core.training.data.input_planes: what the model reads

    def __post_init__(self) -> None:
        if not 0.25 <= self.scale <= 4 or len(self.anchor_sizes) != 5 or min(self.anchor_sizes) < 4:
            raise ValueError(f"Mask R-CNN needs a scale of 0.25-4 and five anchor sizes of at least 4 px; got {self}")
        if self.detections_per_image < 1 or self.planes != "nucleus":
            raise ValueError(f"Mask R-CNN reads the nucleus plane and keeps at least one detection; got {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"anchor_sizes": list(self.anchor_sizes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RcnnConfig:
        try:
            return cls(float(data["scale"]), tuple(int(a) for a in data["anchor_sizes"]),
                       int(data["detections_per_image"]), str(data["planes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"Mask R-CNN settings incomplete or malformed: {data!r}") from exc


@dataclass(frozen=True)
class RcnnTraining(TrainingSettings):
    """How to train: one validated value the Train page, the CLI and the checkpoint's metadata share."""

    family_label: ClassVar[str] = "Mask R-CNN"

    epochs: int = epochs_setting(20)
    steps_per_epoch: int = steps_setting(25)
    batch_size: int = batch_size_setting(2)
    tile: int = tile_setting(256, 32, 8)  # training windows' side, px
    lr: float = lr_setting(0.01)  # SGD with momentum 0.9, linear warm-up, then cosine decay
    patience: int = patience_setting(6)  # epochs without a better validation F1 before stopping early
    seed: int = seed_setting()
    rois_per_image: int = setting(128, label="RoIs per image", low=1, high=2048, step=1,
                                  help="RoIs sampled per image for the box head (torchvision: 512).")
    proposals: int = setting(500, label="Proposals", low=1, high=10_000, step=1,
                             help="RPN proposals kept per image in training (torchvision: 2000).")
    coco_init: bool = setting(True, label="Start from COCO",
                              help="Start from the COCO weights when the file is in the weights folder.")


@dataclass(frozen=True)
class TrainedRcnn:
    """The best model (highest validation F1), how training went and its checkpoint's metadata."""

    model: torch.nn.Module
    config: RcnnConfig
    history: list[EpochRecord]
    best_epoch: int
    metadata: dict[str, Any]
    path: Path | None  # where the best checkpoint was written, if anywhere
    stopped: str  # why training ended: "completed", "early stopping ...", "stopped ..."
    step_losses: list[float]  # every training step's loss, in order

    @property
    def best(self) -> EpochRecord:
        return next(r for r in self.history if r.epoch == self.best_epoch)


# ------------------------------------------------------------------------------------- network


def build_mask_rcnn(config: RcnnConfig, training: RcnnTraining | None = None) -> torch.nn.Module:
    """An untrained two-class torchvision Mask R-CNN v2 with ``config``'s anchors; the weights'
    shapes are those of :func:`models.rcnn.build_rcnn` ("maskrcnn", 2), so either loads them."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    t = training or RcnnTraining()
    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                     box_batch_size_per_image=t.rois_per_image, rpn_pre_nms_top_n_train=t.proposals,
                                     rpn_post_nms_top_n_train=t.proposals,
                                     box_detections_per_img=config.detections_per_image)
    # Same three aspect ratios per location as torchvision's default: the RPN head's shapes do not change.
    model.rpn.anchor_generator = AnchorGenerator(tuple((a,) for a in config.anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
    return model


def _set_input_size(model: torch.nn.Module, config: RcnnConfig, height: int, width: int) -> None:
    """Make torchvision's transform resize an ``height`` x ``width`` image by exactly ``config.scale``
    (its default would bring the short side to 800 px whatever the image)."""
    model.transform.min_size = (max(round(config.scale * min(height, width)), 1),)
    model.transform.max_size = max(round(config.scale * max(height, width)), 1)


def _coco_state() -> tuple[dict[str, torch.Tensor] | None, str]:
    """COCO weights without the class-specific heads, if the file is in the weights folder, and a note."""
    import torch

    spec = COCO_WEIGHTS["maskrcnn"]
    path = local_path(spec)
    if path is None:
        return None, (f"trained from scratch: the COCO weights ({spec.filename}) are not in {weights_dir()}, and "
                      "training never downloads them; a from-scratch Mask R-CNN needs many more epochs")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith(_CLASS_HEADS)}, f"initialised from COCO weights ({path.name})"


def rcnn_targets(labels: np.ndarray, min_area: int = 4) -> dict[str, np.ndarray]:
    """torchvision's training target of an (H, W) label image: a box (x0, y0, x1, y1, edges
    exclusive), class 1 and a mask per object; fragments under ``min_area`` px (a nucleus cut by a
    tile's edge) are left out."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[counts >= min_area]
    masks = (labels[None] == ids[:, None, None]).astype(np.uint8) if len(ids) else np.zeros((0, *labels.shape), np.uint8)
    boxes = np.zeros((len(ids), 4), np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        boxes[i] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
    return {"boxes": boxes, "labels": np.ones(len(ids), np.int64), "masks": masks}


def _tensors(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], device: Any
             ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    import torch

    x = [torch.from_numpy(np.ascontiguousarray(img[:, :, 0])).to(device)[None].expand(3, -1, -1) for img in images]
    y = [{k: torch.from_numpy(v).to(device) for k, v in rcnn_targets(lab).items()} for lab in labels]
    return x, y


def segment_plane(model: torch.nn.Module, config: RcnnConfig, plane: np.ndarray, *, score_threshold: float,
                  mask_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, boxes and scores of an (H, W) normalised plane: what ``predict`` and validation both run."""
    import torch

    h, w = plane.shape
    device = next(model.parameters()).device
    _set_input_size(model, config, h, w)
    # Detections under the threshold would be dropped below anyway; dropped here, they skip the mask
    # head, whose four convolutions on each of an untrained network's 500 detections took ~20 s a 256 px image.
    model.roi_heads.score_thresh = score_threshold
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(plane, np.float32)).to(device)[None].expand(3, -1, -1)
    with torch.inference_mode(), torch.autocast("cuda", enabled=device.type == "cuda"):
        out = model([tensor])[0]
    keep = out["scores"] >= score_threshold
    scores = out["scores"][keep].float().cpu().numpy()
    masks = (out["masks"][keep, 0] >= mask_threshold).cpu().numpy()
    return labels_from_masks(masks, scores)


def predicted_labels(model: torch.nn.Module, config: RcnnConfig) -> Callable[[np.ndarray], np.ndarray]:
    """What validation scores (:func:`core.evaluation.matching.validation_scores`): a pair's image to
    labels, segmented with the registry's default thresholds exactly as the adapter does."""
    return lambda image: segment_plane(model, config, image[:, :, 0], **_PREDICT_DEFAULTS)[0]


def _val_loss(model: torch.nn.Module, config: RcnnConfig, pairs: Sequence[TrainingPair]) -> float:
    """Mean training loss on the validation images, batch norm statistics left as they are."""
    import torch

    device = next(model.parameters()).device
    model.train()
    for module in model.modules():  # running statistics must not learn from validation images
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    losses = []
    with torch.no_grad():
        for pair in pairs:
            _set_input_size(model, config, *pair.labels.shape)
            x, y = _tensors([pair.image], [pair.labels], device)
            losses.append(float(sum(model(x, y).values())))
    model.eval()
    return float(np.mean(losses))


# -------------------------------------------------------------------------------------- training


def train_mask_rcnn(
    train: Sequence[TrainingPair],
    val: Sequence[TrainingPair],
    *,
    training: RcnnTraining = RcnnTraining(),
    out: str | Path | None = None,
    config: RcnnConfig = RcnnConfig(),
    augmentation: Augmentation | None = None,
    device: str = "cpu",
    split: Split | None = None,
    stop: Callable[[], bool] | None = None,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedRcnn:
    """Train a two-class Mask R-CNN on augmented random tiles of ``train``; after each epoch score
    ``val`` (F1 at IoU 0.5, the project's metric, with the default thresholds) and keep the best.

    SGD with momentum, a linear warm-up over the first tenth of the steps then cosine decay; the
    whole run is seeded (weights, RoI sampling, tiles). Stops after ``training.epochs``, after
    ``training.patience`` epochs without a better validation F1, or when ``stop()`` returns True
    (checked before every step; the epoch under way is validated first, so a stop always leaves a
    model). With ``out`` the best checkpoint is written there, atomically, each time it improves.
    ``progress`` hears about training with an estimate of the time left; ``on_epoch`` gets each
    epoch's record (a live curve). Planes must be the nucleus plane only (what the adapter reads).
    """
    if not train or not val:
        raise ValueError(f"training needs images to train on and to validate on; got {len(train)} and {len(val)}")
    if any(p.image.shape[2] != 1 for p in (*train, *val)):
        raise ValueError("Mask R-CNN reads the nucleus plane only: build the pairs with planes='nucleus'")
    with cpu_threads(device):
        return _train(train, val, training, out, config, augmentation or Augmentation(), device, split, stop,
                      progress, on_epoch)


def _train(train: Sequence[TrainingPair], val: Sequence[TrainingPair], training: RcnnTraining,
           out: str | Path | None, config: RcnnConfig, augmentation: Augmentation, device: str, split: Split | None,
           stop: Callable[[], bool] | None, progress: ProgressFn | None,
           on_epoch: Callable[[EpochRecord], None] | None) -> TrainedRcnn:
    import torch

    from models.autoencoder import ProgressReporter

    t = training
    t0 = time.perf_counter()
    coco, init_note = _coco_state() if t.coco_init else (None, "trained from scratch (COCO initialisation off)")
    with torch.random.fork_rng(devices=[]):  # seeded weights and RoI sampling; the caller's generator is left alone
        torch.manual_seed(t.seed)
        model = build_mask_rcnn(config, t)
        if coco is not None:
            model.load_state_dict(coco, strict=False)
            # As torchvision does for pretrained backbones: the stem and first stage stay as learnt.
            for name, p in model.backbone.body.named_parameters():
                if name.startswith(("conv1.", "bn1.", "layer1.")):
                    p.requires_grad_(False)
        model.to(device)
        _set_input_size(model, config, t.tile, t.tile)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=1e-4)
        total_steps = t.epochs * t.steps_per_epoch
        warmup = max(1, total_steps // 10)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                      0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (s - warmup) /
                                                                                        max(total_steps - warmup, 1))))
        sampler = TileSampler(train, t.tile, t.seed, augmentation)
        parameters = t.to_dict() | {"augmentation": augmentation.to_dict(), "device": str(device),
                                    "n_parameters": int(sum(p.numel() for p in model.parameters()))}
        base = {"family": "rcnn", "init": "coco" if coco is not None else "scratch", "note": init_note,
                "config": config.to_dict(), "data_hash": pairs_hash([*train, *val]),
                "images_seen": seen_record(train, val),
                "split": split.to_dict() if split else {"train": [p.name for p in train], "val": [p.name for p in val],
                                                         "method": "given"},
                "parameters": parameters, "images": {"train": len(train), "val": len(val),
                                                     "objects": int(sum(p.n_objects for p in (*train, *val)))}}
        step_losses: list[float] = []
        path = Path(out) if out is not None else None
        best = BestEpoch(base, t.patience, None if path is None else
                         lambda state, metadata: save_checkpoint(path, state, config, metadata), t0=t0)

        def step() -> float:
            model.train()
            _set_input_size(model, config, t.tile, t.tile)
            images, labels = sampler.batch(t.batch_size)
            x, y = _tensors(images, labels, device)
            loss = sum(model(x, y).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)  # an early bad batch must not blow a from-scratch net up
            optimizer.step()
            scheduler.step()
            step_losses.append(float(loss.detach()))
            return step_losses[-1]

        stopped = run_epochs(model, best, epochs=t.epochs, steps_per_epoch=t.steps_per_epoch, step=step,
                             validation_scores=lambda: validation_scores(predicted_labels(model, config), val),
                             validation_loss=lambda: _val_loss(model, config, val),
                             report=ProgressReporter(progress), stop=stop, on_epoch=on_epoch)
    metadata = best.finish(model, stopped)  # the first epoch is always validated
    return TrainedRcnn(model, config, best.history, best.epoch, metadata, path, stopped, step_losses)


# ----------------------------------------------------------------------------------- time estimate


def measure_step_seconds(device: str = "cpu", training: RcnnTraining = RcnnTraining(),
                         config: RcnnConfig = RcnnConfig()) -> float:
    """Seconds of one training step (``training.batch_size`` tiles) on ``device``, timed on the
    second of two steps on synthetic tiles (the first pays for allocation); about 15 s on a CPU."""
    import torch

    side = training.tile
    labels = np.zeros((side, side), np.int32)
    for i, (y, x) in enumerate(np.ndindex(side // 32, side // 32)):  # a grid of 12 px square "nuclei"
        labels[y * 32 + 10:y * 32 + 22, x * 32 + 10:x * 32 + 22] = i + 1
    image = (labels > 0).astype(np.float32)[:, :, None] * 0.8 + 0.1
    with cpu_threads(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_mask_rcnn(config, training).to(device).train()
        _set_input_size(model, config, side, side)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        x, y = _tensors([image] * training.batch_size, [labels] * training.batch_size, device)
        for _ in range(2):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = sum(model(x, y).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
    return seconds


def estimate_seconds(n_images: int, epochs: int | None = None, device: str = "cpu", *,
                     training: RcnnTraining = RcnnTraining(), config: RcnnConfig = RcnnConfig(),
                     image_side: int = 512, val_fraction: float = 0.2, step_seconds: float | None = None) -> float:
    """About how long :func:`train_mask_rcnn` runs on ``n_images`` images with ground truth (sides
    of ``image_side`` px, ``val_fraction`` of them validating) for ``epochs`` (default: all of
    ``training``'s, as if early stopping never struck).

    ``step_seconds`` is a step's time from :func:`measure_step_seconds`; without it a CPU uses the
    times recorded on the 2-core dev machine and any other device is measured (a few seconds).
    """
    if n_images < 1:
        raise ValueError(f"need at least one image to estimate training time; got {n_images}")
    epochs = training.epochs if epochs is None else epochs
    pixels = (config.scale * training.tile / 256) ** 2
    if step_seconds is None:
        step_seconds = (CPU_SECONDS_PER_TILE * training.batch_size * pixels if device == "cpu"
                        else measure_step_seconds(device, training, config))
    # Inference scales with the step's cost on other devices too (one forward, no backward: about a third).
    per_megapixel = CPU_SECONDS_PER_MEGAPIXEL * step_seconds / (CPU_SECONDS_PER_TILE * training.batch_size * pixels)
    n_val = min(max(1, round(val_fraction * n_images)), max(n_images - 1, 1))
    val_megapixels = n_val * (config.scale * image_side) ** 2 / 1e6
    # Validation segments each image and computes its loss (a fifth more).
    per_epoch = training.steps_per_epoch * step_seconds + 1.2 * val_megapixels * per_megapixel
    return CPU_BUILD_SECONDS + epochs * per_epoch


# ----------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: RcnnConfig,
                    metadata: dict[str, Any]) -> Path:
    """Write ``{"model": weights, "format", "version", "config", "metadata"}`` as plain data (read
    back with ``torch.load(weights_only=True)``), atomically, plus ``<name>.maskrcnn.json`` with the
    same metadata beside it."""
    data = {"model": cpu_state(state_dict), "format": FORMAT, "version": FORMAT_VERSION, "config": config.to_dict(),
            "metadata": metadata}
    return write_checkpoint(path, data, {"format": FORMAT, "config": config.to_dict(), **metadata})


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, RcnnConfig, dict[str, Any]]:
    """The model (eval mode, on ``device``), its config and metadata, read with
    ``torch.load(weights_only=True)``; ValueError naming the file for anything else."""
    data = read_checkpoint(path, fmt=FORMAT, version=FORMAT_VERSION, what="CellScope Mask R-CNN checkpoint",
                           hint="train one on the Train page or with `python -m core train --model rcnn`")
    config = RcnnConfig.from_dict(data.get("config") or {})
    model = load_weights(build_mask_rcnn(config), data.get("model"), path, device, "a two-class Mask R-CNN v2")
    return model, config, dict(data.get("metadata") or {})


# ---------------------------------------------------------------------------- segmenter adapter


class MaskRcnnSegmenter:
    """A trained Mask R-CNN checkpoint as a segmenter, on the nucleus plane at the trained scale."""

    def __init__(self, name: str, checkpoint: Path, device: str = "cpu") -> None:
        self.name, self.device = name, device
        self.network, self.config, self.metadata = load_checkpoint(checkpoint, device)

    def predict(self, image: CellImage, *, score_threshold: float, mask_threshold: float) -> Instances:
        t0 = time.perf_counter()
        plane = input_planes(image, self.config.planes)[:, :, 0]
        with cpu_threads(self.device):
            labels, boxes, scores = segment_plane(self.network, self.config, plane, score_threshold=score_threshold,
                                                  mask_threshold=mask_threshold)
        return Instances(labels, boxes.astype(np.float32), scores.astype(np.float32), ("cell",), self.name,
                         self.device, time.perf_counter() - t0)


def _describe(path: Path) -> str:
    """One line from the JSON beside the checkpoint (no torch import just to list models)."""
    try:
        meta = read_metadata(path)
        val, images = meta["validation"], meta["images"]
        return (f"Mask R-CNN trained here ({meta['init']} init) on {images['train']} images, validation F1 "
                f"{val['f1']:.3f} at IoU 0.5 on {images['val']} held-out images "
                f"({meta['split'].get('method', '?')} split), {meta['date'][:10]}: {path}")
    except (OSError, ValueError, KeyError, TypeError):
        return f"Mask R-CNN checkpoint (no readable metadata beside it): {path}"


def rcnn_model_info(path: str | Path, name: str | None = None) -> ModelInfo:
    """A registry entry for the checkpoint at ``path`` (in the weights folder or anywhere else)."""
    path = Path(path).expanduser().resolve()
    name = name or trained_name("rcnn", path.name.removesuffix(SUFFIX).removesuffix('.pt'))
    return ModelInfo(name, "rcnn", _describe(path), trained_here_spec(name, path), False,
                     lambda weights, device: MaskRcnnSegmenter(name, Path(weights), device), RCNN_SETTINGS,
                     slow_on_cpu=True, own_checkpoint=path)


def rcnn_checkpoint_path(stem: str) -> Path:
    """Where a Mask R-CNN named ``stem`` is saved so that it becomes the model ``trained:rcnn:<stem>``."""
    return named_checkpoint(stem, f"{stem}{SUFFIX}")


def user_rcnn_models() -> list[ModelInfo]:
    """Every ``*.maskrcnn.pt`` in the weights folder, as the segmenter ``trained:rcnn:<name>``."""
    return [rcnn_model_info(path) for path in saved_checkpoints(SUFFIX)]


def coco_start_note() -> str:
    """What a training starts from, said beside the CPU estimate."""
    if local_path(COCO_WEIGHTS["maskrcnn"]) is not None:
        return "It starts from the COCO weights in the weights folder."
    return ("The COCO weights are not in the weights folder, so it starts from scratch and needs many more epochs: "
            "download them first (select maskrcnn-coco on the Compare page).")


# The R-CNN family: torchvision's published Faster/Mask R-CNN (models/rcnn.py) and the Mask R-CNN trained here.
register_family(Family(
    "rcnn", "Mask R-CNN",
    "torchvision's Mask R-CNN (ResNet-50 FPN), the recommended instance segmenter once trained on your cells; from "
    "COCO weights when that file is in the weights folder, else from scratch. Slow on a CPU: use a GPU.",
    order=30, settings=RCNN_SETTINGS, cam=RCNN_CAM, old_prefixes=("maskrcnn",), cli_aliases=("maskrcnn",),
    trainer=Trainer(RcnnTraining, train_mask_rcnn, rcnn_checkpoint_path, rcnn_model_info,
                    file_prefix="maskrcnn", order=20,  # maskrcnn:PATH, a checkpoint anywhere
                    estimate_seconds=estimate_seconds, start_note=coco_start_note),
))
register_provider(user_rcnn_models)
