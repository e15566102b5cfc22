"""YOLO-seg trained here with ultralytics on the user's nuclei, offline.

The pairs are exported by :mod:`core.training.yolo_dataset` (tiles of ``imgsz`` px with polygon labels),
ultralytics trains from a model YAML shipped inside its package (``yolo11n-seg.yaml``: random
initial weights, nothing to fetch) or from a local ``.pt``, and after every epoch the epoch's
checkpoint is loaded by :class:`models.yolo.YoloModel` and scored on the validation images with
:func:`core.evaluation.matching.match_instances` at IoU 0.5, exactly as the Compare page would. The best epoch
is saved as plain data (:func:`models.yolo.checkpoint_data`: the model's YAML dict, names, a state
dict of tensors and the metadata; no optimizer state, no pickled code) to
``<weights folder>/yolo/<name>.pt`` (with ``<name>.json`` of metadata beside it), where
:func:`models.yolo.user_yolo_models` lists it as the segmenter ``trained:yolo:<name>`` and
:func:`models.yolo.load_yolo` reads it back with ``torch.load(weights_only=True)``. Ultralytics'
own per-epoch checkpoints (pickles of its modules) stay inside the run folder.

No network: ``YOLO_OFFLINE`` is set before ultralytics is imported (no online check, no usage
events), AMP is off (its check downloads a model), plots are off (they fetch a font), the
dataset check's font fetch is skipped, and the trainer keeps none of ultralytics' integration
callbacks (Ultralytics Platform, MLflow, W&B, ...).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from core.data.images import CellImage, ChannelInfo
from core.evaluation.matching import validation_scores
from core.schema import setting
from core.training.data import Split, TrainingPair, pairs_hash, seen_record
from core.training.yolo_dataset import export_yolo_dataset
from models.best_epoch import (
    EpochRecord,
    TrainingSettings,
    batch_size_setting,
    epochs_setting,
    lr_setting,
    patience_setting,
    seed_setting,
    tile_setting,
)
from models.checkpoint_file import metadata_path, named_checkpoint, write_checkpoint, write_json
from models.detector_cam import YOLO_CAM
from models.device import cpu_threads
from models.registry import Family, Trainer, register_family, trained_name
from models.yolo import CHECKPOINT_FORMAT, YOLO_SETTINGS, YoloModel, checkpoint_data

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)
FORMAT = CHECKPOINT_FORMAT
_PREDICT_DEFAULTS = {s.name: s.default for s in YOLO_SETTINGS}  # what validation scores with
_NUCLEUS = (ChannelInfo("nucleus", "nucleus"),)


@dataclass(frozen=True)
class YoloTraining(TrainingSettings):
    """How to train: one validated value the Train page, the CLI and the checkpoint's metadata share."""

    family_label: ClassVar[str] = "YOLO"

    epochs: int = epochs_setting(50)
    batch_size: int = batch_size_setting(8)
    imgsz: int = tile_setting(256, 32, 32)  # tile side: training images are cut to it, so nuclei keep their size
    lr: float = lr_setting(0.002)  # AdamW (ultralytics' own choice for small data sets)
    patience: int = patience_setting(10)  # epochs without a better validation F1 before stopping early
    seed: int = seed_setting()
    warmup_epochs: float = setting(3.0, label="Warm-up epochs", low=0.0, high=100.0, step=0.5,
                                   help="Ultralytics' linear learning-rate warm-up (at least 100 batches when on).")
    model: str = setting("yolo11n-seg.yaml", label="Model file", kind="text",
                         help="A YAML inside ultralytics (random init) or a local .pt file.")

    def validate(self) -> None:
        if self.imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of 32; got {self.imgsz}")
        if not self.model.endswith((".yaml", ".pt")):
            raise ValueError(f"model must be an ultralytics model YAML or a local .pt file; got {self.model!r}")


@dataclass(frozen=True)
class TrainedYolo:
    """The best epoch's checkpoint (highest validation F1), how training went and its metadata."""

    path: Path  # the best checkpoint (plain data: models.yolo.checkpoint_data)
    history: list[EpochRecord]
    best_epoch: int
    metadata: dict[str, Any]
    stopped: str  # why training ended: "completed", "early stopping ...", "stopped ..."

    @property
    def best(self) -> EpochRecord:
        return next(r for r in self.history if r.epoch == self.best_epoch)

    @property
    def model_name(self) -> str:
        """The registry name it has when it lies in ``<weights folder>/yolo/``."""
        return trained_name("yolo", self.path.stem)


def yolo_checkpoint_path(stem: str) -> Path:
    """Where a YOLO-seg model named ``stem`` is saved so that it becomes the model ``trained:yolo:<stem>``."""
    return named_checkpoint(stem, f"yolo/{stem}.pt")


def model_source(model: str) -> str:
    """``model`` as ultralytics should open it, checked to need no download: a YAML shipped inside
    ultralytics (``yolo11n-seg.yaml`` is the scale-n variant of ``cfg/models/11/yolo11-seg.yaml``) or
    an existing ``.pt`` file; ValueError otherwise (ultralytics would try to download a missing
    ``.pt`` by name)."""
    if model.endswith(".pt"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ValueError(f"no YOLO weights at {path}: training never downloads weights; place the file there or "
                             "train from a model YAML such as yolo11n-seg.yaml")
        return str(path.resolve())
    if Path(model).expanduser().is_file():
        return str(Path(model).expanduser().resolve())
    import re
    from importlib.util import find_spec

    generic = re.sub(r"(\d+)([nslmx])(?=-|\.)", r"\1", Path(model).name)  # yolo11n-seg.yaml -> yolo11-seg.yaml
    spec = find_spec("ultralytics")  # its folder, without importing it (that would check the network)
    folders = spec.submodule_search_locations if spec is not None else None
    cfg = Path(next(iter(folders))) / "cfg" / "models" if folders else None
    if cfg is None or not any(p.name in {Path(model).name, generic} for p in cfg.rglob("*.yaml")):
        raise ValueError(f"{model!r} is neither a file nor a model YAML shipped with ultralytics (e.g. yolo11n-seg.yaml)")
    return model


@contextmanager
def offline_ultralytics() -> Iterator[None]:
    """Ultralytics with every network path shut for the block, and the global random state and
    deterministic-algorithm switch it sets put back afterwards."""
    import torch

    os.environ.setdefault("YOLO_OFFLINE", "true")  # read once, when ultralytics is first imported
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    import ultralytics.data.utils as data_utils

    check_font = data_utils.check_font
    py_state, np_state = random.getstate(), np.random.get_state()
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                     torch.backends.cudnn.deterministic, torch.utils.deterministic.fill_uninitialized_memory)
    # check_det_dataset asks for Arial.ttf (for plots we never draw) and, missing, probes its URL.
    data_utils.check_font = lambda *args, **kwargs: None
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        data_utils.check_font = check_font
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.deterministic = deterministic[2]
        torch.utils.deterministic.fill_uninitialized_memory = deterministic[3]


def _trainer_class() -> type:
    """ultralytics' segmentation trainer without integration callbacks (events, Ultralytics
    Platform, MLflow, W&B, ...): those send data when an API key or a setting says so."""
    from ultralytics.models.yolo.segment import SegmentationTrainer

    class OfflineSegmentationTrainer(SegmentationTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for event, functions in self.callbacks.items():
                self.callbacks[event] = [f for f in functions if not _is_integration(f)]

    return OfflineSegmentationTrainer


def _is_integration(function: Callable) -> bool:
    module = getattr(function, "__module__", "") or ""
    return module.startswith(("ultralytics.utils.callbacks.", "ultralytics.utils.events", "ultralytics.hub")) and \
        not module.endswith(".base")


def predicted_labels(model: YoloModel) -> Callable[[np.ndarray], np.ndarray]:
    """What validation scores (:func:`core.evaluation.matching.validation_scores`): a pair's image to
    the labels ``model.predict`` gives with the registry's default settings. A pair's plane is already
    normalised; normalising it again (as ``predict`` does) maps its percentiles onto themselves, so
    the input is unchanged."""
    return lambda image: model.predict(CellImage("validation", image[:, :, :1], _NUCLEUS), **_PREDICT_DEFAULTS).labels


class _Run:
    """The callbacks' shared state: progress, the stop flag, per-epoch scoring and the best copy."""

    def __init__(self, val: Sequence[TrainingPair], training: YoloTraining, out: Path, device: str,
                 base: dict[str, Any], stop: Callable[[], bool] | None, progress: ProgressFn | None,
                 on_epoch: Callable[[EpochRecord], None] | None) -> None:
        from models.autoencoder import ProgressReporter

        self.val, self.training, self.out, self.device, self.base = val, training, out, device, base
        self.stop, self.on_epoch = stop, on_epoch
        self.report = ProgressReporter(progress)
        self.t0 = time.perf_counter()
        self.history: list[EpochRecord] = []
        self.best_epoch, self.best_key = 0, (-1.0, float("-inf"))
        self.batch, self.stopped = 0, "completed"
        self.best_net: Any = None  # the best epoch's network (EMA weights, half precision) and its settings
        self.best_args: dict[str, Any] = {}

    def epoch_start(self, trainer: Any) -> None:
        self.batch = 0

    def batch_end(self, trainer: Any) -> None:
        self.batch += 1
        n = max(len(trainer.train_loader), 1)
        loss = sum(trainer.label_loss_items(trainer.tloss, prefix="train").values())
        self.report((trainer.epoch + self.batch / n) / trainer.epochs,
                    f"epoch {trainer.epoch + 1}/{trainer.epochs}, batch {self.batch}/{n}: loss {loss:.4f}")
        if self.stop is not None and self.stop():
            trainer.stop = True  # ultralytics ends the epoch here, validates and saves it, then stops
            self.stopped = f"stopped during epoch {trainer.epoch + 1}"

    def epoch_end(self, trainer: Any) -> None:
        """After ultralytics wrote ``last.pt``: score it as the adapter would, keep it if best."""
        epoch = trainer.epoch + 1
        scores = validation_scores(predicted_labels(YoloModel("validation", str(trainer.last), self.device)),
                                    self.val)
        val_loss = [v for k, v in trainer.metrics.items() if k.startswith("val/")]
        record = EpochRecord(epoch, float(sum(trainer.label_loss_items(trainer.tloss, prefix="train").values())),
                             float(sum(val_loss)) if val_loss else float("nan"), scores["f1"], scores["precision"],
                             scores["recall"], time.perf_counter() - self.t0)
        self.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)
        key = (record.f1, -record.val_loss if val_loss else 0.0)  # ties (early epochs at F1 0): lower loss
        if key > self.best_key:
            self.best_key, self.best_epoch = key, epoch
            self._save(trainer.last, scores, "in progress")
        self.report(epoch / trainer.epochs, f"epoch {epoch}/{trainer.epochs}: loss {record.loss:.4f}, validation F1 "
                    f"{record.f1:.3f} (best {self.best_key[0]:.3f} at epoch {self.best_epoch})", force=True)
        if epoch - self.best_epoch >= self.training.patience and not trainer.stop:
            trainer.stop = True
            self.stopped = f"early stopping: no better validation F1 for {self.training.patience} epochs"

    def _save(self, last: Path, scores: dict[str, Any], stopped: str) -> None:
        """Keep the network of ``last.pt`` (written by this run: the EMA weights in half precision,
        exactly what validation scored) and write it as plain data with its metadata."""
        from ultralytics.nn.tasks import torch_safe_load

        ckpt, _ = torch_safe_load(last)
        self.best_net = ckpt.get("ema") or ckpt["model"]
        self.best_args = dict(ckpt.get("train_args") or {})
        self.write_checkpoint(self.write_metadata(scores, stopped))

    def write_checkpoint(self, metadata: dict[str, Any]) -> None:
        """The best network at ``out`` as plain data (:func:`models.yolo.checkpoint_data`): 6 MB for n."""
        write_checkpoint(self.out, checkpoint_data(self.best_net, metadata, self.best_args))

    def metadata(self, scores: dict[str, Any], stopped: str) -> dict[str, Any]:
        return self.base | {
            "validation": {"best_epoch": self.best_epoch, "iou_threshold": 0.5,
                           **{k: float(scores[k]) for k in ("f1", "precision", "recall")},
                           "history": [r.to_dict() for r in self.history]},
            "seconds": round(time.perf_counter() - self.t0, 2), "stopped": stopped,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def write_metadata(self, scores: dict[str, Any], stopped: str) -> dict[str, Any]:
        meta = self.metadata(scores, stopped)
        write_json(metadata_path(self.out), {"format": FORMAT, **meta})
        return meta


def train_yolo_seg(
    train: Sequence[TrainingPair],
    val: Sequence[TrainingPair],
    *,
    out: str | Path,
    training: YoloTraining = YoloTraining(),
    device: str = "cpu",
    split: Split | None = None,
    stop: Callable[[], bool] | None = None,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    workdir: str | Path | None = None,
) -> TrainedYolo:
    """Train YOLO-seg with ultralytics on ``train``; after each epoch score ``val`` (F1 at IoU 0.5,
    the project's metric, through :class:`models.yolo.YoloModel`) and keep the best epoch at
    ``out`` (e.g. :func:`yolo_checkpoint_path`), with its metadata beside it.

    Ultralytics' own augmentation (mosaic, flips up-down and left-right, scale, brightness) runs on
    the exported tiles. Stops after ``training.epochs``, after ``training.patience`` epochs
    without a better validation F1, or when ``stop()`` returns True (checked after every batch;
    the epoch under way is then validated and saved, so a stop always leaves a model).
    ``progress`` hears about training with an estimate of the time left; ``on_epoch`` gets each
    epoch's record. The dataset and ultralytics' run folder go to ``workdir`` (default: a
    temporary folder, removed afterwards).
    """
    if not train or not val:
        raise ValueError(f"training needs images to train on and to validate on; got {len(train)} and {len(val)}")
    if any(p.image.shape[2] != 1 for p in (*train, *val)):
        raise ValueError("YOLO-seg reads the nucleus plane only: build the pairs with planes='nucleus'")
    source = model_source(training.model)
    out = Path(out).expanduser().resolve()
    if out.suffix != ".pt":
        raise ValueError(f"the YOLO checkpoint must be a .pt file; got {out.name}")
    with tempfile.TemporaryDirectory(prefix="cellscope-yolo-") as tmp, cpu_threads(device), offline_ultralytics():
        work = Path(workdir).expanduser().resolve() if workdir is not None else Path(tmp)
        return _train(train, val, training, source, out, device, split, stop, progress, on_epoch, work)


def _train(train: Sequence[TrainingPair], val: Sequence[TrainingPair], t: YoloTraining, source: str, out: Path,
           device: str, split: Split | None, stop: Callable[[], bool] | None, progress: ProgressFn | None,
           on_epoch: Callable[[EpochRecord], None] | None, work: Path) -> TrainedYolo:
    from ultralytics import YOLO

    dataset = export_yolo_dataset(train, val, work / "data", tile=t.imgsz)
    yolo = YOLO(source, task="segment")
    if yolo.task != "segment":
        raise ValueError(f"{t.model} is a {yolo.task} model; YOLO-seg training needs a segmentation model (*-seg)")
    base = {"family": "yolo", "init": "weights" if source.endswith(".pt") else "scratch",
            "note": (f"initialised from {Path(source).name}" if source.endswith(".pt") else
                     f"trained from scratch (random weights from {t.model})"),
            "data_hash": pairs_hash([*train, *val]),
            "images_seen": seen_record(train, val),
            "split": split.to_dict() if split else {"train": [p.name for p in train], "val": [p.name for p in val],
                                                     "method": "given"},
            "parameters": t.to_dict() | {"device": str(device), "tiles": dataset.images,
                                         "n_parameters": int(sum(p.numel() for p in yolo.model.parameters()))},
            "images": {"train": len(train), "val": len(val),
                       "objects": int(sum(p.n_objects for p in (*train, *val)))}}
    run = _Run(val, t, out, device, base, stop, progress, on_epoch)
    yolo.add_callback("on_train_epoch_start", run.epoch_start)
    yolo.add_callback("on_train_batch_end", run.batch_end)
    yolo.add_callback("on_model_save", run.epoch_end)
    yolo.train(
        trainer=_trainer_class(), data=str(dataset.data_yaml), epochs=t.epochs, batch=t.batch_size, imgsz=t.imgsz,
        lr0=t.lr, optimizer="AdamW", warmup_epochs=t.warmup_epochs, seed=t.seed, deterministic=True,
        device=device, workers=0,  # no worker processes inside a server
        nbs=t.batch_size,  # an optimizer step every batch: the default 64 accumulates 8 batches of 8 tiles
        patience=0,  # ultralytics' own early stopping off (0 means never): ours uses the validation F1
        single_cls=True, flipud=0.5,  # microscopy has no up and down
        amp=False, plots=False, val=True, save=True, cache=False, pretrained=source.endswith(".pt"),
        project=str(work / "runs"), name="train", exist_ok=True, verbose=False,
    )
    if not run.history:
        raise RuntimeError("ultralytics finished without completing an epoch; no checkpoint was written")
    best = next(r for r in run.history if r.epoch == run.best_epoch)
    scores = {"f1": best.f1, "precision": best.precision, "recall": best.recall}
    metadata = run.write_metadata(scores, run.stopped)  # the final record: why it ended, the whole curve
    run.write_checkpoint(metadata)
    return TrainedYolo(out, run.history, run.best_epoch, metadata, run.stopped)


# The YOLO family: the published detectors (models/yolo.py), weights a user placed (``user:<name>``) and the
# YOLO-seg trained here (``trained:yolo:<name>``). Importing this module imports no ultralytics.
register_family(Family(
    "yolo", "YOLO-seg",
    "Ultralytics YOLO11n-seg from its model file (random start, offline). Fast per epoch; needs many epochs from "
    "scratch.",
    order=20, settings=YOLO_SETTINGS, cam=YOLO_CAM, old_prefixes=("user",), cli_aliases=("yolo-seg",),
    trainer=Trainer(YoloTraining, train_yolo_seg, yolo_checkpoint_path, aliases=(("tile", "imgsz"),), order=30),
))
