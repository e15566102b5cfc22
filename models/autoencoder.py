"""The course's convolutional autoencoder, trained in the app on the user's cell crops.

Crops arrive as float32 (n, S, S, C) arrays in [0, 1], chunk by chunk (:data:`CropChunks`): at
100,000 cells they never exist all at once. Training holds a uniform random sample of at most
``max_train_cells`` of them, as uint8 (a quarter of float32's memory: 20,000 crops of 64x64x4 are
328 MB), drawn in one pass over the chunks; encoding streams the chunks through in fixed batches.

torch is imported inside the functions, so importing :mod:`models` (and the app's start) stays
as fast as before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.text import duration
from models.checkpoint_file import cpu_state, load_weights, read_plain, write_checkpoint
from models.registry import Family, ModelInfo, Setting, register_family, register_model

if TYPE_CHECKING:
    import torch

    from core.cells.cell_set import CellSet, Embedding

# Crops to read: an iterable of (n, S, S, C) float32 arrays in [0, 1], or a zero-argument
# callable returning a fresh such iterable (for a caller that makes several passes). A single
# (n, S, S, C) array also works.
CropChunks = Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]] | np.ndarray
ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

AUTOENCODER_SETTINGS = (
    Setting("bottleneck", "Bottleneck size", 32, "Numbers per cell the encoder squeezes each crop into: the "
            "embedding's length.", kind="choice", options=(8, 16, 32, 64, 128)),
    Setting("epochs", "Epochs", 10, "Passes over the training sample.", kind="int", low=1, high=200, step=1),
    Setting("batch_size", "Batch size", 128, "Crops per optimisation step.", kind="choice",
            options=(32, 64, 128, 256, 512)),
    Setting("lr", "Learning rate", 1e-3, "Adam's step size.", kind="choice", options=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
    Setting("seed", "Seed", 0, "The same seed and crops give the same model.", kind="int", low=0, high=2**31 - 1,
            step=1),
    Setting("max_train_cells", "Training cells", 20_000, "At most this many crops, drawn at random from all of "
            "them, are held in memory for training (the autoencoder then encodes every cell; the classifier is "
            "scored and explained on these).", kind="int", low=100,
            high=500_000, step=1000),
)
_DEFAULT = {s.name: s.default for s in AUTOENCODER_SETTINGS}
WIDTHS = (32, 64, 128)  # channels after each stride-2 block; a crop of S becomes (128, S/8, S/8)
_FORMAT = "cellscope_autoencoder"


@dataclass(frozen=True)
class AutoencoderConfig:
    """The architecture: what a checkpoint needs to be rebuilt."""

    channels: int
    size: int
    bottleneck: int = _DEFAULT["bottleneck"]
    widths: tuple[int, ...] = WIDTHS

    def __post_init__(self) -> None:
        if not 1 <= self.channels <= 16:
            raise ValueError(f"an autoencoder takes 1 to 16 channels; got {self.channels}")
        factor = 2 ** len(self.widths)
        if self.size < 2 * factor or self.size % factor:
            raise ValueError(f"crop size must be a multiple of {factor} and at least {2 * factor} "
                             f"({len(self.widths)} stride-2 blocks); got {self.size}")
        if self.bottleneck < 1 or not self.widths or min(self.widths) < 1:
            raise ValueError(f"bottleneck and widths must be positive; got {self.bottleneck}, {self.widths}")

    @property
    def grid(self) -> int:
        """Side of the encoder's last feature map."""
        return self.size // 2 ** len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        try:
            return cls(int(data["channels"]), int(data["size"]), int(data["bottleneck"]),
                       tuple(int(w) for w in data["widths"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"autoencoder settings incomplete or malformed: {data!r}") from exc


def build_autoencoder(config: AutoencoderConfig) -> torch.nn.Sequential:
    """An untrained autoencoder: ``model(x)`` reconstructs (n, C, S, S) in [0, 1], ``model[0](x)``
    is the (n, bottleneck) encoding and ``model[1](z)`` decodes it.

    Each encoder block is a 3x3 stride-2 convolution, BatchNorm and ReLU; the decoder mirrors it
    with 4x4 stride-2 transposed convolutions and ends in a sigmoid.
    """
    from torch import nn

    encoder: list[nn.Module] = []
    previous = config.channels
    for width in config.widths:
        encoder += [nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True)]
        previous = width
    flat = config.widths[-1] * config.grid**2
    encoder += [nn.Flatten(), nn.Linear(flat, config.bottleneck)]

    decoder: list[nn.Module] = [nn.Linear(config.bottleneck, flat), nn.ReLU(inplace=True),
                                nn.Unflatten(1, (config.widths[-1], config.grid, config.grid))]
    outs = [*reversed(config.widths[:-1]), config.channels]
    for width, out in zip(reversed(config.widths), outs, strict=True):
        decoder.append(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1, bias=out == config.channels))
        decoder += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)] if out != config.channels else [nn.Sigmoid()]
    model = nn.Sequential(nn.Sequential(*encoder), nn.Sequential(*decoder))
    model.config = config  # type: ignore[assignment]  # the architecture travels with the module
    return model


@dataclass(frozen=True)
class TrainedAutoencoder:
    """A trained model, what it was trained with and how it went."""

    model: torch.nn.Sequential
    config: AutoencoderConfig
    loss_curve: list[float]  # mean MSE per epoch, over the training sample
    train_cells: int  # crops in the training sample
    seconds: float  # sampling plus training
    epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str

    def training(self) -> dict[str, Any]:
        """How it was trained, as plain values (a checkpoint's and an export's record)."""
        return {"loss_curve": list(self.loss_curve), "train_cells": self.train_cells, "seconds": self.seconds,
                "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "device": self.device}


def iter_chunks(chunks: CropChunks) -> Iterator[np.ndarray]:
    """The chunks of ``chunks``, calling it first when it is a callable."""
    if isinstance(chunks, np.ndarray):
        yield chunks
        return
    yield from (chunks() if callable(chunks) else chunks)


def check_crops(chunk: np.ndarray, channels: int | None = None, size: int | None = None) -> np.ndarray:
    """``chunk`` as float32 (n, S, S, C), or ValueError saying how it differs from what is expected."""
    chunk = np.asarray(chunk)
    if chunk.ndim != 4 or chunk.shape[1] != chunk.shape[2]:
        raise ValueError(f"crops must be (n, S, S, C) arrays; got shape {chunk.shape}")
    if size is not None and chunk.shape[1] != size:
        raise ValueError(f"crops must be {size}x{size} pixels; got {chunk.shape[1]}x{chunk.shape[2]}")
    if channels is not None and chunk.shape[3] != channels:
        raise ValueError(f"crops must have {channels} channels; got {chunk.shape[3]}")
    return chunk.astype(np.float32, copy=False)


def crop_batches(chunks: CropChunks, batch_size: int) -> Iterator[np.ndarray]:
    """The crops of ``chunks`` regrouped into batches of exactly ``batch_size`` (the last may be
    smaller): results then do not depend on how the caller chunked them, and a caller's small
    chunks do not make slow small batches."""
    pending: list[np.ndarray] = []
    count = 0
    for chunk in iter_chunks(chunks):
        start = 0
        while start < len(chunk):
            take = min(batch_size - count, len(chunk) - start)
            pending.append(chunk[start:start + take])
            count += take
            start += take
            if count == batch_size:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, count = [], 0
    if count:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


def to_uint8(crops: np.ndarray) -> np.ndarray:
    """(n, S, S, C) floats in [0, 1] as uint8, the training sample's form."""
    return (np.clip(crops, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sample_crops(chunks: CropChunks, max_cells: int, *, channels: int, size: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random sample of at most ``max_cells`` crops from all of ``chunks``, in one pass:
    (k, S, S, C) uint8 crops and the order to read them in.

    Every crop gets a seeded random key and the ``max_cells`` smallest keys are kept (a reservoir
    by priority), so the sample is spread over every image, not the first ones, and read in key
    order it is the same sample in the same order however the crops were chunked. (The order is
    returned rather than applied: sorting would copy the whole sample.)
    """
    if max_cells < 1:
        raise ValueError(f"max_train_cells must be at least 1; got {max_cells}")
    rng = np.random.default_rng(seed)
    store = np.empty((0, size, size, channels), np.uint8)
    keys = np.empty(0)
    filled = 0
    for raw in iter_chunks(chunks):
        chunk = check_crops(raw, channels, size)
        chunk_keys = rng.random(len(chunk))  # one draw per crop: the same stream for any chunking
        free = min(max_cells - filled, len(chunk))
        if filled + free > len(store):  # grow by doubling up to max_cells: a small set stays small (a copy: briefly < 2x)
            capacity = min(max_cells, max(2 * len(store), filled + free))
            store = np.concatenate([store[:filled], np.empty((capacity - filled, *store.shape[1:]), np.uint8)])
            keys = np.concatenate([keys[:filled], np.full(capacity - filled, np.inf)])
        if free:
            store[filled:filled + free] = to_uint8(chunk[:free])
            keys[filled:filled + free] = chunk_keys[:free]
            filled += free
        rest_keys = chunk_keys[free:]
        candidates = np.flatnonzero(rest_keys < keys.max()) if len(rest_keys) else np.empty(0, int)
        if candidates.size:  # only once full: replace the largest keys by smaller new ones
            merged = np.concatenate([keys, rest_keys[candidates]])
            kept = np.zeros(len(merged), bool)
            kept[np.argpartition(merged, max_cells - 1)[:max_cells]] = True
            evicted = np.flatnonzero(~kept[:max_cells])
            incoming = candidates[kept[max_cells:]]
            store[evicted] = to_uint8(chunk[free:][incoming])
            keys[evicted] = rest_keys[incoming]
    if filled == 0:
        raise ValueError("no crops to train on")
    return store[:filled], np.argsort(keys[:filled], kind="stable")


def _eta(seconds: float) -> str:
    return duration(seconds)


class ProgressReporter:
    """Calls ``progress`` at most every ``interval`` seconds (a page redraws on each call), always
    when forced (epoch ends, the last batch), with an estimate of the time left."""

    def __init__(self, progress: ProgressFn | None, interval: float = 0.25) -> None:
        self.progress, self.interval = progress, interval
        self.start = self.last = time.perf_counter()

    def __call__(self, fraction: float, message: str, *, force: bool = False) -> None:
        now = time.perf_counter()
        if self.progress is None or (not force and now - self.last < self.interval):
            return
        self.last = now
        left = (now - self.start) * (1 - fraction) / fraction if fraction > 0 else None
        self.progress(fraction, message if left is None or fraction >= 1 else f"{message} · about {_eta(left)} left")


def train_autoencoder(
    chunks: CropChunks,
    *,
    channels: int,
    size: int,
    bottleneck: int = _DEFAULT["bottleneck"],
    epochs: int = _DEFAULT["epochs"],
    batch_size: int = _DEFAULT["batch_size"],
    lr: float = _DEFAULT["lr"],
    seed: int = _DEFAULT["seed"],
    device: str = "cpu",
    max_train_cells: int = _DEFAULT["max_train_cells"],
    progress: ProgressFn | None = None,
) -> TrainedAutoencoder:
    """Train on a uniform random sample of at most ``max_train_cells`` crops (:func:`sample_crops`)
    with Adam and the mean squared error; the same seed and crops give the same loss curve.

    ``progress(fraction, message)`` hears about training (with an estimate of the time left)
    about four times a second and at every epoch's end, last with 1.0; reading the chunks is the
    caller's to report.
    """
    import torch
    import torch.nn.functional as F

    config = AutoencoderConfig(channels, size, bottleneck)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and batch_size must be at least 1 and lr positive; got {epochs}, {batch_size}, {lr}")
    t0 = time.perf_counter()
    crops, key_order = sample_crops(chunks, max_train_cells, channels=channels, size=size, seed=seed)
    with torch.random.fork_rng(devices=[]):  # seeded weights without resetting the caller's generator
        torch.manual_seed(seed)
        model = build_autoencoder(config)
    model.to(device).train()
    channels_last(model, device)
    data = torch.from_numpy(crops).to(device)  # uint8: 4x less than float32, also on a GPU
    key_order = torch.from_numpy(key_order).to(device)
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(data)
    steps = math.ceil(n / batch_size)
    report = ProgressReporter(progress)
    curve: list[float] = []
    for epoch in range(epochs):
        order = key_order[torch.randperm(n, generator=shuffle).to(device)]
        total = torch.zeros((), dtype=torch.float64, device=device)
        for step in range(steps):
            x = data[order[step * batch_size:(step + 1) * batch_size]].permute(0, 3, 1, 2).float().div_(255.0)
            loss = F.mse_loss(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * len(x)
            done = epoch * steps + step + 1
            if step + 1 < steps:
                report(done / (epochs * steps), f"epoch {epoch + 1}/{epochs}, batch {step + 1}/{steps}")
        curve.append(float(total) / n)  # one device sync per epoch, not per batch
        report((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}: loss {curve[-1]:.5f}", force=True)
    model.eval()
    return TrainedAutoencoder(model, config, curve, n, time.perf_counter() - t0, epochs, batch_size, lr, seed,
                              str(device))


class AutoencoderTrainer:
    """What a registry builder returns for the autoencoder, which has no pretrained weights: each
    :meth:`train` makes a new model on ``device``. The settings come complete from the registry
    (:data:`AUTOENCODER_SETTINGS`), so none has a second default here."""

    name = "autoencoder"

    def __init__(self, weights_path: Path | None, device: str = "cpu") -> None:
        if weights_path is not None:
            raise ValueError("the autoencoder has no pretrained weights; a saved one loads with load_autoencoder")
        self.device = device

    def train(self, chunks: CropChunks, *, channels: int, size: int, bottleneck: int, epochs: int, batch_size: int,
              lr: float, seed: int, max_train_cells: int, progress: ProgressFn | None = None) -> TrainedAutoencoder:
        return train_autoencoder(chunks, channels=channels, size=size, bottleneck=bottleneck, epochs=epochs,
                                 batch_size=batch_size, lr=lr, seed=seed, device=self.device,
                                 max_train_cells=max_train_cells, progress=progress)


    def embed(self, cells: CellSet, *, bottleneck: int, epochs: int, batch_size: int, lr: float, seed: int,
              max_train_cells: int, progress: ProgressFn | None = None) -> Embedding:
        """Train on ``cells``' crops, then encode every cell: the bottleneck is the embedding.
        Its extras: the loss curve and a few crops next to their reconstructions."""
        from core.cells.cell_set import Embedding

        report = progress or (lambda f, m: None)
        t0 = time.perf_counter()
        trained = self.train(cells.chunks, channels=cells.n_channels, size=cells.size, bottleneck=bottleneck,
                             epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_train_cells=max_train_cells,
                             progress=lambda f, m: report(0.85 * f, f"training: {m}"))
        features = encode(trained.model, cells.chunks, device=self.device, total=len(cells),
                          progress=lambda f, m: report(0.85 + 0.15 * f, f"encoding: {m}"))
        rows = np.linspace(0, len(cells) - 1, min(8, len(cells))).astype(int)
        examples = cells.crops(rows)
        recon = reconstruct(trained.model, examples)
        report(1.0, "done")
        return Embedding(features, tuple(f"ae_{i}" for i in range(features.shape[1])), self.name,
                         time.perf_counter() - t0, {"loss_curve": list(trained.loss_curve), "train_cells": trained.train_cells,
                                                    "examples": examples, "reconstructions": recon,
                                                    "note": reconstruction_note(examples, recon, epochs)})


def channels_last(model: torch.nn.Module, device: str | torch.device) -> None:
    """On a CPU, keep convolution weights channels-last, the layout the crops arrive in: a training
    step of 128 crops of 64x64x3 took 0.86 s instead of 1.60 s on the 2-core dev machine (oneDNN)."""
    import torch

    if torch.device(device).type == "cpu":
        model.to(memory_format=torch.channels_last)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode(model: torch.nn.Sequential, chunks: CropChunks, *, device: str | None = None, batch_size: int = 512,
           total: int | None = None, progress: ProgressFn | None = None) -> np.ndarray:
    """(N, bottleneck) float32 encodings of every crop, in order, chunk by chunk.

    ``device`` None: where the model is (otherwise the model is moved there). ``total``, the
    number of crops when known, lets ``progress`` report fractions.
    """
    import torch

    config: AutoencoderConfig = model.config
    if device is not None:
        model.to(device)
        channels_last(model, device)
    target = _model_device(model)
    model.eval()
    report = ProgressReporter(progress)
    out: list[np.ndarray] = []
    done = 0
    with torch.inference_mode():
        for batch in crop_batches(chunks, batch_size):
            batch = check_crops(batch, config.channels, config.size)
            x = torch.from_numpy(batch).to(target).permute(0, 3, 1, 2)
            out.append(model[0](x).float().cpu().numpy())
            done += len(batch)
            if total:
                report(min(done / total, 1.0), f"encoded {done:,} of {total:,} cells", force=done >= total)
    return np.concatenate(out) if out else np.empty((0, config.bottleneck), np.float32)


def reconstruct(model: torch.nn.Sequential, crops: np.ndarray) -> np.ndarray:
    """The model's reconstructions of (n, S, S, C) crops, same shape, float32 in [0, 1]."""
    import torch

    config: AutoencoderConfig = model.config
    crops = check_crops(crops, config.channels, config.size)
    model.eval()
    with torch.inference_mode():
        x = torch.from_numpy(crops).to(_model_device(model)).permute(0, 3, 1, 2)
        return model(x).float().permute(0, 2, 3, 1).cpu().numpy()


def reconstruction_note(examples: np.ndarray, reconstructions: np.ndarray, epochs: int) -> str:
    """A warning when the reconstructions are no closer to the crops than each crop's own mean
    brightness is (their squared error at least 80 % of that constant guess's): the network has
    learnt little about the cells' shapes, and neither do its features. Flat grey and noise both
    count. Empty when they look like cells."""
    if not len(examples):
        return ""
    error = float(np.mean((reconstructions - examples) ** 2))
    flat = float(np.mean((examples - examples.mean(axis=(1, 2, 3), keepdims=True)) ** 2))
    if flat == 0 or error < 0.8 * flat:
        return ""
    return (f"The reconstructions are no better than each crop's mean brightness after {epochs} epoch"
            f"{'s' if epochs != 1 else ''}: the autoencoder has learnt little about the cells' shapes, and its "
            "features carry little else. Raise Epochs (Cell settings) and compute again; 20-50 epochs are typical.")


def save_autoencoder(trained: TrainedAutoencoder, path: str | Path) -> Path:
    """Write a checkpoint: the weights, the architecture and the training record, all plain data
    that :func:`load_autoencoder` reads with ``torch.load(weights_only=True)`` (no pickled code).

    safetensors is not installed (nor in requirements.txt), so this is the one format.
    """
    return write_checkpoint(path, {_FORMAT: 1, "config": trained.config.to_dict(), "training": trained.training(),
                                   "state_dict": cpu_state(trained.model.state_dict())})


def load_autoencoder(path: str | Path, device: str = "cpu") -> TrainedAutoencoder:
    """A checkpoint written by :func:`save_autoencoder`, on ``device``; ValueError for any other file."""
    path = Path(path)
    data = read_plain(path, "CellScope autoencoder checkpoint")
    if not isinstance(data, dict) or data.get(_FORMAT) != 1:
        raise ValueError(f"{path.name} is not a CellScope autoencoder checkpoint")
    config = AutoencoderConfig.from_dict(data["config"])
    model = load_weights(build_autoencoder(config), data.get("state_dict"), path, device, "the recorded architecture")
    channels_last(model, device)
    t = data.get("training", {})
    return TrainedAutoencoder(model, config, [float(v) for v in t.get("loss_curve", [])], int(t.get("train_cells", 0)),
                              float(t.get("seconds", 0.0)), int(t.get("epochs", 0)), int(t.get("batch_size", 0)),
                              float(t.get("lr", 0.0)), int(t.get("seed", 0)), str(device))


register_family(Family("autoencoder", "Autoencoder", "A convolutional autoencoder trained here on the crops.",
                       ("embed",), order=20, settings=AUTOENCODER_SETTINGS,
                       no_cam_reason="an embedder, not a detector: explain it with the cell classifier's CAMs"))
register_model(ModelInfo(
    "autoencoder", "autoencoder",
    "A convolutional autoencoder trained here on your own crops (the course's method): each cell becomes the "
    "numbers at its bottleneck. Seeded; on the GPU when there is one.",
    None, False, AutoencoderTrainer, AUTOENCODER_SETTINGS, task="embed",
))
