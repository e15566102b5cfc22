"""A compact U-Net trained here on the user's nuclei: its settings, its training entry point and the
segmenter adapter for its checkpoints.

The network (:mod:`models.unet_network`) predicts three classes per pixel: background, interior and
boundary (the object's outer ``boundary_width`` pixels). Where two nuclei touch, their boundaries
meet in a seam of boundary pixels, so the interiors are separate blobs: each becomes one watershed
seed, and the watershed grows it back over its boundary (:mod:`models.unet_instances`). This was
chosen over a distance map because it needs no guess of the nucleus size: distance-map peaks must be
told a minimum distance (too small over-splits elongated nuclei, too large merges small touching
ones), whereas the boundary class is learnt from the labels as drawn, at any size. Training is
:mod:`models.unet_training`; checkpoints (:mod:`models.unet_checkpoint`) are named
``<name>.unet.pt`` in the weights folder, and each becomes the segmenter ``trained:unet:<name>`` at once
(:func:`user_unet_models`).

torch is imported inside the functions, so importing :mod:`models` stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core.data.images import CellImage
from core.data.instances import Instances, boxes_from_labels
from core.segmentation.object_scale import ObjectScale, resize_factor
from core.training.data import Augmentation, Split, TrainingPair, input_planes
from models.best_epoch import (
    EpochRecord,
)
from models.checkpoint_file import named_checkpoint, read_metadata, saved_checkpoints, trained_here_spec
from models.device import CPU_THREADS, cpu_threads
from models.registry import Family, ModelInfo, Setting, Trainer, register_family, register_provider
from models.unet_checkpoint import SUFFIX, load_checkpoint
from models.unet_instances import segment_planes
from models.unet_network import UNetConfig
from models.unet_training import TrainedUNet, UNetTraining, train_network

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

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
# What validation scores with: the training images' own scale, so no resizing.
_PREDICT_DEFAULTS = {s.name: s.default for s in UNET_SETTINGS if s.name != "diameter"}


# -------------------------------------------------------------------------------------- training


def train_unet(
    train: Sequence[TrainingPair],
    val: Sequence[TrainingPair],
    *,
    training: UNetTraining = UNetTraining(),  # noqa: B008 (a frozen dataclass: one shared default is safe)
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

    On a CPU torch runs on ``threads`` threads (:func:`models.device.cpu_threads`). One is the
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
        return train_network(train, val, training, out, config, augmentation or Augmentation(), device, split,
                             stop, progress, on_epoch, _PREDICT_DEFAULTS)


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
    name = name or UNET.trained_name(path.name.removesuffix(SUFFIX).removesuffix('.pt'))
    return ModelInfo(name, "unet", _describe(path), trained_here_spec(name, path), False,
                     lambda weights, device: UNetSegmenter(name, Path(weights), device), UNET_SETTINGS,
                     own_checkpoint=path)


def unet_checkpoint_path(stem: str) -> Path:
    """Where a U-Net named ``stem`` is saved so that it becomes the model ``trained:unet:<stem>``."""
    return named_checkpoint(stem, f"{stem}{SUFFIX}")


def user_unet_models() -> list[ModelInfo]:
    """Every ``*.unet.pt`` in the weights folder, as the segmenter ``trained:unet:<name>``."""
    return [unet_model_info(path) for path in saved_checkpoints(SUFFIX)]


UNET = register_family(Family(
    "unet", "U-Net",
    "A compact U-Net (0.5 M parameters) predicting cell interiors and boundaries, split into cells by watershed. "
    "Trains from scratch in minutes on a CPU.",
    order=90, settings=UNET_SETTINGS, old_prefixes=("unet",),
    no_cam_reason="a U-Net labels pixels, it has no detections to explain",
    trainer=Trainer(UNetTraining, train_unet, unet_checkpoint_path, unet_model_info,
                    file_prefix="unet", order=10, threads=True),  # unet:PATH, a checkpoint anywhere
))
register_provider(user_unet_models)
