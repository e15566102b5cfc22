"""A small CNN trained in the app to tell cells apart by any per-cell label (batch, condition,
cluster...), scored on images it never saw, and kept for the Explain page's CAMs.

How well the label can be read from the crops is measured by cross-validation **by image**
(StratifiedGroupKFold on the image column, as :func:`core.plate_effect.classifier.classifier_accuracy`
does for features): cells of one field share illumination, focus and density, so a network
tested on cells of images it trained on would score "which image" as "which label". Every cell
gets an out-of-fold prediction from the one fold model that never saw its image: those say
which cells are told correctly and which are not. A final model trained on all cells is the
one the CAMs explain.

Crops are held as uint8 (a quarter of float32's memory, like the autoencoder's training
sample). torch is imported inside the functions, so importing :mod:`models` stays fast.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.plate_effect.metrics import class_codes
from models.autoencoder import (
    AUTOENCODER_SETTINGS,
    ProgressFn,
    ProgressReporter,
    channels_last,
    check_crops,
    to_uint8,
)
from models.checkpoint_file import cpu_state, load_weights, read_plain, write_checkpoint
from models.device import cpu_threads
from models.registry import Family, ModelInfo, Setting, register_family, register_model

if TYPE_CHECKING:
    import torch

    from core.cells.cell_set import CellSet

# One definition per setting name across models (the registry insists): epochs, batch size,
# learning rate, seed and the training-sample cap mean here what they mean for the autoencoder.
_SHARED = {s.name: s for s in AUTOENCODER_SETTINGS}
CLASSIFIER_SETTINGS = (
    _SHARED["epochs"], _SHARED["batch_size"], _SHARED["lr"],
    Setting("folds", "Cross-validation folds", 5, "Images are split into this many groups; each group is "
            "held out once while the network trains on the others (fewer when a class has fewer images).",
            kind="int", low=2, high=10, step=1),
    _SHARED["seed"], _SHARED["max_train_cells"],
)
_DEFAULT = {s.name: s.default for s in CLASSIFIER_SETTINGS}
# Channels of the three conv blocks. (16, 32, 64) trained an epoch of 1,000 crops of 32x32x3 in
# 0.30 s against 0.80 s for (32, 64, 128) (one thread, channels-last, busy 2-core dev machine).
WIDTHS = (16, 32, 64)
MIN_IMAGES_PER_CLASS = 2  # one image held out while at least one other trains
MAX_CLASSES = 50  # more distinct values than this is a measurement column, not a label
_FORMAT = "cellscope_classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    """The architecture: what a checkpoint needs to be rebuilt."""

    channels: int
    size: int
    n_classes: int
    widths: tuple[int, ...] = WIDTHS

    def __post_init__(self) -> None:
        if not 1 <= self.channels <= 16:
            raise ValueError(f"the classifier takes 1 to 16 channels; got {self.channels}")
        factor = 2 ** (len(self.widths) - 1)
        if self.size < 2 * factor or self.size % factor:
            raise ValueError(f"crop size must be a multiple of {factor} and at least {2 * factor}; got {self.size}")
        if not 2 <= self.n_classes <= MAX_CLASSES:
            raise ValueError(f"the classifier needs 2 to {MAX_CLASSES} classes; got {self.n_classes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        try:
            return cls(int(data["channels"]), int(data["size"]), int(data["n_classes"]),
                       tuple(int(w) for w in data["widths"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"classifier settings incomplete or malformed: {data!r}") from exc


def build_classifier(config: ClassifierConfig) -> torch.nn.Sequential:
    """An untrained network: ``block1`` .. ``blockN`` (3x3 conv, BatchNorm, ReLU; every block after
    the first starts with a 2x2 max-pool), global average pooling and one linear layer to the
    classes' logits. Each block's output is a CAM target layer at its own resolution (S, S/2, S/4
    for three blocks); the last is the default."""
    from torch import nn

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    previous = config.channels
    for i, width in enumerate(config.widths):
        block = [nn.MaxPool2d(2)] if i else []
        block += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers[f"block{i + 1}"] = nn.Sequential(*block)
        previous = width
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(previous, config.n_classes)
    model = nn.Sequential(layers)
    model.config = config  # type: ignore[assignment]  # the architecture travels with the module
    return model


@dataclass(frozen=True)
class CvTarget:
    """A checked target: class codes, class names, image codes and images per class."""

    y: np.ndarray  # (n,) int64 codes 0..k-1
    classes: tuple[str, ...]
    groups: np.ndarray  # (n,) int64 image codes
    images_per_class: dict[str, int]


def check_target(target: Sequence | np.ndarray, groups: Sequence | np.ndarray, n: int | None = None) -> CvTarget:
    """Codes for ``target`` and ``groups`` (image of each cell), or a ValueError saying why
    cross-validation by image cannot score it: a missing label, a single class, too many classes,
    or a class whose cells lie in fewer than :data:`MIN_IMAGES_PER_CLASS` images."""
    n = len(target) if n is None else n
    y, classes = class_codes(target, n, "target")
    g, _ = class_codes(groups, n, "image")
    if len(classes) < 2:
        only = f" ({classes[0]!r})" if classes else ""
        raise ValueError(f"the target has a single class{only}: there is nothing to tell apart; choose a label "
                         "with at least 2 values")
    if len(classes) > MAX_CLASSES:
        raise ValueError(f"the target has {len(classes)} distinct values; a classifier takes at most {MAX_CLASSES} "
                         "classes: choose a categorical label (batch, condition, cluster)")
    per_class = {classes[c]: int(len(np.unique(g[y == c]))) for c in range(len(classes))}
    short = {name: count for name, count in per_class.items() if count < MIN_IMAGES_PER_CLASS}
    if short:
        named = ", ".join(f"{name!r} has cells in {count} image" for name, count in short.items())
        raise ValueError(f"too few images per class for cross-validation by image: {named}; every class needs cells "
                         f"in at least {MIN_IMAGES_PER_CLASS} images (3 or more for a steadier score), so one can be "
                         "held out while the others train")
    return CvTarget(y, tuple(classes), g, per_class)


def cv_splits(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) cell indices of each fold, by image: StratifiedGroupKFold with
    min(``folds``, fewest images of any class) splits, so each class can appear in each test fold.
    No image has cells on both sides of a split."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    n_splits = int(min(folds, per_class))
    if n_splits < 2:
        raise ValueError(f"cross-validation needs at least 2 folds; got {n_splits} (folds={folds}, fewest images "
                         f"of a class {per_class})")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": counts cells, not images
        warnings.simplefilter("ignore", UserWarning)
        return [(train, test) for train, test in cv.split(np.zeros(len(y)), y, groups)]


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """scikit-learn's balanced accuracy (mean recall over the classes present in ``y_true``)."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # a class predicted but absent from a small test fold
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


@dataclass(frozen=True, eq=False)
class TrainedClassifier:
    """The final model (trained on every cell) and how well the target is read on unseen images.

    Per-cell arrays are aligned with ``rows``, the positions in the cell table (every cell unless
    more than ``max_train_cells`` were given).
    """

    model: torch.nn.Sequential
    config: ClassifierConfig
    classes: tuple[str, ...]
    rows: np.ndarray  # (n,) table positions of the cells used
    y: np.ndarray  # (n,) true class codes
    oof_pred: np.ndarray  # (n,) predicted code from the fold model that never saw the cell's image
    oof_proba: np.ndarray  # (n, k) that model's class probabilities
    fold: np.ndarray  # (n,) the fold in which each cell was held out
    balanced_accuracy: float  # of the out-of-fold predictions, all folds pooled
    chance: float  # 1 / n_classes
    confusion: np.ndarray  # (k, k) out-of-fold counts, rows = true class, columns = predicted
    train_loss: np.ndarray  # (folds, epochs) mean class-weighted cross-entropy per epoch
    val_accuracy: np.ndarray  # (folds, epochs) balanced accuracy on the held-out images after each epoch
    final_loss: list[float]  # the final model's loss per epoch
    images_per_class: dict[str, int]
    n_images: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    folds: int  # the folds actually used
    device: str
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def correct(self) -> np.ndarray:
        """(n,) bool: the out-of-fold prediction is the true class."""
        return self.oof_pred == self.y

    @property
    def oof_confidence(self) -> np.ndarray:
        """(n,) out-of-fold probability of the predicted class."""
        return self.oof_proba[np.arange(len(self.oof_pred)), self.oof_pred]

    @property
    def skill(self) -> float:
        """(balanced accuracy - chance) / (1 - chance): 0 at chance, 1 perfect."""
        return (self.balanced_accuracy - self.chance) / (1.0 - self.chance)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: scores, chance and how it is computed, the confusion matrix and the curves."""
        return {
            "balanced_accuracy": self.balanced_accuracy, "chance": self.chance, "skill": self.skill,
            "chance_note": (f"balanced accuracy is the mean recall over the {len(self.classes)} classes; a guess that "
                            f"ignores the crops (constant, or random in any proportion) recalls 1/{len(self.classes)} of "
                            "each class on average, whatever the class sizes"),
            "classes": list(self.classes), "confusion": self.confusion.tolist(),
            "n_cells": int(len(self.y)), "n_images": self.n_images,
            "images_per_class": dict(self.images_per_class), "folds": self.folds,
            "train_loss": self.train_loss.tolist(), "val_accuracy": self.val_accuracy.tolist(),
            "final_loss": list(self.final_loss), "epochs": self.epochs, "batch_size": self.batch_size,
            "lr": self.lr, "seed": self.seed, "device": self.device, "seconds": self.seconds,
        }


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each crop flipped and transposed at random (the 8 symmetries of a square): a cell's class
    does not depend on its orientation, and with a few images per class the network would
    otherwise learn their layouts."""
    import torch

    bits = torch.rand(3, len(x), generator=generator).lt(0.5).to(x.device)[:, :, None, None, None]
    x = torch.where(bits[0], x.flip(3), x)
    x = torch.where(bits[1], x.flip(2), x)
    return torch.where(bits[2], x.transpose(2, 3), x)


def _batch(data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(b, C, S, S) float in [0, 1] from the uint8 (n, S, S, C) store: a channels-last view."""
    return data[index].permute(0, 3, 1, 2).float().div_(255.0)


def _predict(model: torch.nn.Module, data: torch.Tensor, index: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(index), batch_size):
            out.append(torch.softmax(model(_batch(data, index[start:start + batch_size])).float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, model.config.n_classes), np.float32)


def _recalibrate_batchnorm(model: torch.nn.Module, data: torch.Tensor, index: torch.Tensor,
                           batch_size: int = 512) -> None:
    """BatchNorm's running statistics recomputed as the plain average over the training crops
    (one forward pass, no gradients). Their default moving average (momentum 0.1) still carries its
    start values after a few dozen steps: on 108 planted crops, 6 epochs of 4 steps trained to a
    loss of 0.2 yet predicted one class for every held-out cell; with this, each class right."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            model(_batch(data, index[start:start + batch_size]))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def _fit(model: torch.nn.Module, data: torch.Tensor, y: torch.Tensor, train: np.ndarray, *, epochs: int,
         batch_size: int, lr: float, seed: int, n_classes: int, on_step: Callable[[int], None],
         on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam on class-weighted cross-entropy (each class weighs the same, as balanced accuracy
    counts it); returns the mean loss per epoch. BatchNorm is recalibrated before each ``on_epoch``
    (which evaluates) and at the end."""
    import torch
    import torch.nn.functional as F

    device = data.device
    counts = np.bincount(y[torch.from_numpy(train).to(device)].cpu().numpy(), minlength=n_classes)
    # A class absent from this fold's training images gets no weight (it cannot be learnt here).
    weight = np.where(counts > 0, len(train) / (n_classes * np.maximum(counts, 1)), 0.0)
    weight_t = torch.tensor(weight, dtype=torch.float32, device=device)
    train_t = torch.from_numpy(train).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = math.ceil(len(train) / batch_size)
    curve = []
    for epoch in range(epochs):
        model.train()
        order = train_t[torch.randperm(len(train), generator=generator).to(device)]
        total = torch.zeros((), dtype=torch.float64, device=device)
        for step in range(steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            x = _augment(_batch(data, index), generator)
            loss = F.cross_entropy(model(x), y[index], weight=weight_t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * len(index)
            on_step(len(index))
        curve.append(float(total) / len(train))  # one device sync per epoch, not per batch
        if on_epoch is not None or epoch == epochs - 1:
            _recalibrate_batchnorm(model, data, train_t)
        if on_epoch is not None:
            on_epoch(epoch, curve[-1])
    model.eval()
    return curve


def _new_model(config: ClassifierConfig, seed: int, device: str) -> torch.nn.Sequential:
    import torch

    with torch.random.fork_rng(devices=[]):  # seeded weights without resetting the caller's generator
        torch.manual_seed(seed)
        model = build_classifier(config)
    model.to(device)
    channels_last(model, device)
    return model


def train_classifier(
    crops: np.ndarray,
    target: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    *,
    epochs: int = _DEFAULT["epochs"],
    batch_size: int = _DEFAULT["batch_size"],
    lr: float = _DEFAULT["lr"],
    folds: int = _DEFAULT["folds"],
    seed: int = _DEFAULT["seed"],
    device: str = "cpu",
    rows: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> TrainedClassifier:
    """Cross-validate by image, then train the final model on all ``crops``.

    ``crops``: (n, S, S, C) float in [0, 1] or uint8; ``target``: any per-cell label; ``groups``:
    the image of each cell. One fold model per split of :func:`cv_splits` is trained from the
    same seeded start and predicts its held-out images; then one model on every cell. The same
    seed and crops give the same scores. ``progress(fraction, message)`` hears about training
    (with the time left) about four times a second and at every epoch's end, last with 1.0.
    """
    import torch

    t0 = time.perf_counter()
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and batch_size must be at least 1 and lr positive; got {epochs}, {batch_size}, {lr}")
    store = crops if isinstance(crops, np.ndarray) and crops.dtype == np.uint8 else to_uint8(check_crops(crops))
    if store.ndim != 4 or store.shape[1] != store.shape[2]:
        raise ValueError(f"crops must be (n, S, S, C) arrays; got shape {store.shape}")
    cv = check_target(target, groups, len(store))
    config = ClassifierConfig(store.shape[3], store.shape[1], len(cv.classes))
    splits = cv_splits(cv.y, cv.groups, folds, seed)
    n, k = len(store), len(cv.classes)
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    if len(rows) != n:
        raise ValueError(f"rows has {len(rows)} entries for {n} crops")

    report = ProgressReporter(progress)
    total_cells = epochs * (sum(len(train) for train, _ in splits) + n)
    done = 0

    def on_step(count: int, run: int) -> None:
        nonlocal done
        done += count
        report(done / total_cells, f"{_run_name(run, len(splits))}: {done / total_cells:.0%}")

    oof_pred = np.zeros(n, np.int64)
    oof_proba = np.zeros((n, k), np.float32)
    fold_of = np.zeros(n, np.int64)
    losses = np.zeros((len(splits), epochs))
    val_acc = np.zeros((len(splits), epochs))
    with cpu_threads(device):
        data = torch.from_numpy(np.ascontiguousarray(store)).to(device)  # uint8: 4x less than float32, also on a GPU
        y_t = torch.from_numpy(cv.y).to(device)
        for f, (train, test) in enumerate(splits):
            model = _new_model(config, seed, device)
            test_t = torch.from_numpy(test).to(device)

            def on_epoch(epoch: int, loss: float, f: int = f, model: torch.nn.Module = model,
                         test: np.ndarray = test, test_t: torch.Tensor = test_t) -> None:
                val_acc[f, epoch] = balanced_accuracy(cv.y[test], _predict(model, data, test_t).argmax(1))
                report(done / total_cells, f"{_run_name(f, len(splits))}, epoch {epoch + 1}/{epochs}: loss {loss:.3f}, "
                       f"held-out balanced accuracy {val_acc[f, epoch]:.2f}", force=True)

            losses[f] = _fit(model, data, y_t, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed + f,
                             n_classes=k, on_step=lambda c, f=f: on_step(c, f), on_epoch=on_epoch)
            proba = _predict(model, data, test_t)
            oof_proba[test], oof_pred[test], fold_of[test] = proba, proba.argmax(1), f
            del model
        final = _new_model(config, seed, device)
        final_loss = _fit(final, data, y_t, np.arange(n), epochs=epochs, batch_size=batch_size, lr=lr,
                          seed=seed + len(splits), n_classes=k, on_step=lambda c: on_step(c, len(splits)))
        report(done / total_cells, f"final model: loss {final_loss[-1]:.3f}", force=True)
    from sklearn.metrics import confusion_matrix

    acc = balanced_accuracy(cv.y, oof_pred)
    report(1.0, f"done: balanced accuracy {acc:.2f} on unseen images (chance {1 / k:.2f})", force=True)
    return TrainedClassifier(
        final, config, cv.classes, rows, cv.y, oof_pred, oof_proba, fold_of, acc, 1.0 / k,
        confusion_matrix(cv.y, oof_pred, labels=np.arange(k)), losses, val_acc, final_loss, cv.images_per_class,
        int(len(np.unique(cv.groups))), epochs, batch_size, lr, seed, len(splits), str(device), time.perf_counter() - t0,
    )


def _run_name(run: int, n_splits: int) -> str:
    return "final model" if run >= n_splits else f"fold {run + 1}/{n_splits}"


def predict_proba(model: torch.nn.Module, crops: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """(n, k) class probabilities of (n, S, S, C) crops (float in [0, 1] or uint8) from a trained model."""
    import torch

    config: ClassifierConfig = model.config
    store = crops if crops.dtype == np.uint8 else to_uint8(check_crops(crops, config.channels, config.size))
    device = next(model.parameters()).device
    with cpu_threads(device):
        data = torch.from_numpy(np.ascontiguousarray(store)).to(device)
        return _predict(model, data, torch.arange(len(store), device=device), batch_size)


def training_rows(n_cells: int, max_train_cells: int, seed: int) -> np.ndarray:
    """The table rows trained on: all, or a seeded uniform sample of ``max_train_cells``, in table order."""
    if max_train_cells < 1:
        raise ValueError(f"max_train_cells must be at least 1; got {max_train_cells}")
    if n_cells <= max_train_cells:
        return np.arange(n_cells)
    return np.sort(np.random.default_rng(seed).choice(n_cells, max_train_cells, replace=False))


def load_crops(cells: CellSet, rows: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(n, S, S, C) uint8 crops of ``rows``, read ``chunk`` at a time (all rows: the set's own chunks)."""
    out = np.empty((len(rows), cells.size, cells.size, cells.n_channels), np.uint8)
    if len(rows) == len(cells):
        pos = 0
        for part in cells.chunks(chunk):
            out[pos:pos + len(part)] = to_uint8(part)
            pos += len(part)
        return out
    for start in range(0, len(rows), chunk):
        out[start:start + chunk] = to_uint8(cells.crops(rows[start:start + chunk]))
    return out


class ClassifierTrainer:
    """What the registry builds for the cell classifier, which has no pretrained weights: each
    :meth:`classify` trains new models on ``device``. Settings come complete from the registry
    (:data:`CLASSIFIER_SETTINGS`)."""

    name = "cell-classifier"

    def __init__(self, weights_path: Path | None, device: str = "cpu") -> None:
        if weights_path is not None:
            raise ValueError("the cell classifier has no pretrained weights; a saved one loads with load_classifier")
        self.device = device

    def classify(self, cells: CellSet, target: Sequence | np.ndarray, *, epochs: int, batch_size: int, lr: float,
                 folds: int, seed: int, max_train_cells: int, progress: ProgressFn | None = None) -> TrainedClassifier:
        """Train on ``cells``' crops to predict ``target`` (one label per table row), by image."""
        target = np.asarray(target, dtype=object)
        if len(target) != len(cells):
            raise ValueError(f"target has {len(target)} labels for {len(cells)} cells")
        report = progress or (lambda f, m: None)
        rows = training_rows(len(cells), max_train_cells, seed)
        report(0.0, f"reading {len(rows):,} crops")
        crops = load_crops(cells, rows)
        groups = cells.table["image"].to_numpy()[rows]
        return train_classifier(crops, target[rows], groups, epochs=epochs, batch_size=batch_size, lr=lr,
                                folds=folds, seed=seed, device=self.device, rows=rows, progress=progress)


def save_classifier(trained: TrainedClassifier, path: str | Path) -> Path:
    """Write the final model, its architecture, classes and scores as plain data, read back by
    :func:`load_classifier` with ``torch.load(weights_only=True)`` (no pickled code)."""
    return write_checkpoint(path, {_FORMAT: 1, "config": trained.config.to_dict(), "classes": list(trained.classes),
                                   "summary": trained.summary(), "state_dict": cpu_state(trained.model.state_dict())})


def load_classifier(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Sequential, tuple[str, ...], dict]:
    """The model, class names and summary of a :func:`save_classifier` file; ValueError for any other file."""
    path = Path(path)
    data = read_plain(path, "CellScope classifier checkpoint")
    if not isinstance(data, dict) or data.get(_FORMAT) != 1:
        raise ValueError(f"{path.name} is not a CellScope classifier checkpoint")
    model = build_classifier(ClassifierConfig.from_dict(data["config"]))
    load_weights(model, data.get("state_dict"), path, device, "the recorded architecture")
    channels_last(model, device)
    return model, tuple(data["classes"]), dict(data.get("summary", {}))


register_family(Family("classifier", "Cell classifier", "A small CNN trained here to predict a label per cell.",
                       ("classify",), order=10, settings=CLASSIFIER_SETTINGS,
                       no_cam_reason="a cell classifier: its CAMs are the Explain page's cell CAMs"))
register_model(ModelInfo(
    "cell-classifier", "classifier",
    "A small CNN trained here on your crops to predict a label (batch, condition, cluster), scored on images it "
    "never saw; the Explain page shows what it looks at. Seeded; on the GPU when there is one.",
    None, False, ClassifierTrainer, CLASSIFIER_SETTINGS, task="classify",
))
