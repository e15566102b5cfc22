"""Class activation maps (CAMs) of a cell classifier with pytorch-grad-cam, and the
deletion/insertion test of whether a CAM points at what the model really uses.

CAMs come from the ``grad-cam`` package, never a copy: :data:`CAM_METHODS` names its classes.
Each call opens one ``with Method(model=..., target_layers=...) as cam:`` block, so the
package's forward hooks leave the model when the block ends, also on an error.

**One session at a time per model.** A hooked model records the activations of *every* forward
pass through it, so a model shared across sessions (``st.cache_resource``) must not be hooked by
two sessions at once, nor run by one while another's hooks are on it. Every function here holds
:func:`model_lock` (one re-entrant lock per model object) for as long as it uses the model;
other code that runs a model it shares with these functions should hold it too.

torch is imported inside the functions, so importing :mod:`models` stays fast.
"""

from __future__ import annotations

import functools
import threading
import time
import types
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.autoencoder import ProgressFn, ProgressReporter, check_crops
from models.device import cpu_threads

if TYPE_CHECKING:
    import torch

CAM_METHOD_NAMES = ("gradcam", "gradcam++", "hirescam", "scorecam", "eigencam", "layercam")
CAM_TARGETS = ("predicted", "true")  # or a class index
# Crops per forward/backward pass. Score-CAM runs the model once per activation channel for each
# crop, on crops x channels masked copies: 16 crops of 64x64x3 at 64 channels are 50 MB.
CAM_BATCH = 128
SCORECAM_BATCH = 16
PERTURB_FILLS = ("mean", "zero", "blur")
PERTURB_STEPS = 10


@functools.cache
def cam_methods() -> dict[str, type]:
    """Method name -> pytorch-grad-cam class (imported on first use: it imports torch)."""
    import pytorch_grad_cam as pgc

    class EigenCAM(pgc.EigenCAM):
        """pytorch-grad-cam's Eigen-CAM with the same projection computed by one batched, economy-size
        SVD: its ``get_2d_projection`` takes a full SVD per crop, whose (HW x HW) U it never uses (64 crops
        with a 16x16 grid: 3.1 s against 0.03 s; a test compares the two). The component's sign is
        arbitrary (an SVD's is), and the package keeps whichever half is positive: here it is turned
        to agree with where the layer is active (its summed activations), so the map does not light
        the background on one image and the objects on the next."""

        def get_cam_image(self, input_tensor: Any, target_layer: Any, target_category: Any, activations: np.ndarray,
                          grads: Any, eigen_smooth: bool) -> np.ndarray:
            from threadpoolctl import threadpool_limits

            acts = np.nan_to_num(np.asarray(activations, np.float32))
            n, k = acts.shape[:2]
            flat = acts.reshape(n, k, -1).transpose(0, 2, 1)
            flat = flat - flat.mean(axis=1, keepdims=True)  # centred per channel, as the package does
            # Many small SVDs: OpenBLAS's threads only wait on each other (as in core.plate_effect.metrics).
            with threadpool_limits(limits=1, user_api="blas"):
                _, _, vt = np.linalg.svd(flat, full_matrices=False)
            projection = (flat @ vt[:, 0, :, None])[..., 0]
            strength = acts.reshape(n, k, -1).sum(axis=1)
            strength = strength - strength.mean(axis=1, keepdims=True)
            sign = np.where(np.einsum("np,np->n", projection, strength) < 0, -1.0, 1.0).astype(np.float32)
            return (projection * sign[:, None]).reshape(n, *acts.shape[2:]).astype(np.float32)

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "hirescam": pgc.HiResCAM,
            "scorecam": pgc.ScoreCAM, "eigencam": EigenCAM, "layercam": pgc.LayerCAM}


# ---------------------------------------------------------------------------------------------
# one lock per model

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """The lock of ``model`` (made on first request, dropped with the model). Re-entrant, so a
    function holding it can call another that takes it."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


# ---------------------------------------------------------------------------------------------
# target layers


def cam_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Layers a CAM can be taken at, shallow to deep (the last is the default): the classifier's
    conv blocks (``block1``..), a torchvision ResNet's stages (``layer1``..``layer4``), otherwise
    every Conv2d by its qualified name. Deeper: coarser and more about the class; shallower: finer
    detail, less class-specific."""
    from torch import nn

    blocks = {name: module for name, module in model.named_children()
              if name.startswith(("block", "layer")) and any(isinstance(m, nn.Conv2d) for m in module.modules())}
    if blocks:
        return blocks
    convs = {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    if not convs:
        raise ValueError("the model has no convolution layer to take a CAM at")
    return convs


def default_cam_layer(model: torch.nn.Module) -> str:
    """The last conv block: the usual Grad-CAM choice, where features are most class-specific
    while keeping a spatial grid (S/4 for the cell classifier's three blocks)."""
    return list(cam_layers(model))[-1]


# ---------------------------------------------------------------------------------------------
# CAMs


@dataclass(frozen=True, eq=False)
class CamResult:
    """CAMs of n crops and what they explain."""

    cams: np.ndarray  # (n, S, S) float32 in [0, 1], each scaled to its own maximum by pytorch-grad-cam
    target: np.ndarray  # (n,) the class each CAM explains (Eigen-CAM ignores it: it is class-agnostic)
    predicted: np.ndarray  # (n,) the model's predicted class
    probability: np.ndarray  # (n, k) the model's class probabilities
    method: str
    layer: str
    seconds: float


def _n_classes(model: torch.nn.Module, probability: np.ndarray) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "n_classes", probability.shape[1]))


def resolve_targets(target: str | int | Sequence[int] | np.ndarray, predicted: np.ndarray, n_classes: int,
                    true: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """(n,) class indices to explain: ``"predicted"``, ``"true"`` (needs ``true``), one class index
    for every cell, or one index per cell; ValueError for anything else or out of range."""
    n = len(predicted)
    if isinstance(target, str):
        if target == "predicted":
            return predicted.astype(np.int64)
        if target != "true":
            raise ValueError(f"target must be one of {', '.join(CAM_TARGETS)} or a class index; got {target!r}")
        if true is None:
            raise ValueError("target 'true' needs the cells' true classes (true=...)")
        classes = np.asarray(true)
    elif np.ndim(target) == 0:
        classes = np.full(n, target)
    else:
        classes = np.asarray(target)
    if classes.shape != (n,) or classes.dtype.kind not in "iu":
        raise ValueError(f"classes to explain must be {n} integer indices; got {classes.dtype} {classes.shape}")
    bad = (classes < 0) | (classes >= n_classes)
    if bad.any():
        raise ValueError(f"class index {int(classes[bad][0])} is out of range: the model has {n_classes} classes "
                         f"(0..{n_classes - 1})")
    return classes.astype(np.int64)


def _tensor(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2)


def _probabilities(model: torch.nn.Module, crops: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            logits = model(_tensor(crops[start:start + batch_size], device))
            out.append(torch.softmax(logits.float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


@functools.cache
def _quiet_scorecam() -> None:
    """Score-CAM draws a tqdm bar on stderr for every crop (1,000 bars for 1,000 cells); progress
    is ours to report, so its module's ``tqdm`` becomes one with the bar switched off."""
    import pytorch_grad_cam.score_cam as score_cam
    import tqdm

    score_cam.tqdm = types.SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))


def compute_cams(
    model: torch.nn.Module,
    crops: np.ndarray,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: str | int | Sequence[int] | np.ndarray = "predicted",
    true: Sequence[int] | np.ndarray | None = None,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
) -> CamResult:
    """CAMs of (n, S, S, C) crops in [0, 1] for the class ``target`` (see :func:`resolve_targets`)
    at ``layer`` (a name from :func:`cam_layers`; None: :func:`default_cam_layer`).

    The crops go through in batches of ``batch_size`` (default :data:`CAM_BATCH`, Score-CAM
    :data:`SCORECAM_BATCH`) inside one ``with`` block of the pytorch-grad-cam class, all under
    :func:`model_lock`. Each CAM is pytorch-grad-cam's: ReLU of the weighted activations,
    min-max scaled to [0, 1] per cell and resized to the crop (bilinear).
    """
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    t0 = time.perf_counter()
    methods = cam_methods()
    if method not in methods:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(methods)}")
    layers = cam_layers(model)
    layer = default_cam_layer(model) if layer is None else layer
    if layer not in layers:
        raise ValueError(f"the model has no layer {layer!r}; CAM layers: {', '.join(layers)}")
    config = getattr(model, "config", None)
    crops = check_crops(crops, getattr(config, "channels", None), getattr(config, "size", None))
    batch = (SCORECAM_BATCH if method == "scorecam" else CAM_BATCH) if batch_size is None else batch_size
    if batch < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch}")
    if method == "scorecam":
        _quiet_scorecam()
    device = next(model.parameters()).device
    report = ProgressReporter(progress)
    cams = np.zeros(crops.shape[:3], np.float32)
    with model_lock(model), cpu_threads(device):
        probability = _probabilities(model, crops, batch)
        predicted = probability.argmax(1) if len(crops) else np.zeros(0, np.int64)
        classes = resolve_targets(target, predicted, _n_classes(model, probability), true)
        finished = False
        with torch.enable_grad(), methods[method](model=model, target_layers=[layers[layer]]) as cam:
            if method == "scorecam":
                cam.batch_size = 64  # masked copies per forward pass (the package's default is 16)
            try:
                for start in range(0, len(crops), batch):
                    stop = min(start + batch, len(crops))
                    targets = [ClassifierOutputTarget(int(c)) for c in classes[start:stop]]
                    cams[start:stop] = cam(input_tensor=_tensor(crops[start:stop], device), targets=targets)
                    report(stop / len(crops), f"{method}: {stop:,} of {len(crops):,} cells", force=stop == len(crops))
            except IndexError as exc:
                # BaseCAM.__exit__ prints and swallows an IndexError: raised as another type, it reaches the caller.
                raise RuntimeError(f"{method} failed at layer {layer!r}: {exc}") from exc
            finished = True
        model.zero_grad(set_to_none=True)  # the backward passes' parameter gradients: memory, not state
    if not finished:  # only if the package swallowed an error after all
        raise RuntimeError(f"{method} stopped before every cell had a CAM")
    np.clip(cams, 0.0, 1.0, out=cams)  # bilinear resizing can overshoot by float rounding
    return CamResult(cams, classes, predicted.astype(np.int64), probability.astype(np.float32), method, layer,
                     time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# deletion / insertion


@dataclass(frozen=True, eq=False)
class DeletionInsertion:
    """Target-class probability as the top CAM pixels are removed (deletion) or put back into a
    filled crop (insertion), next to the same with pixels taken in random order.

    Areas are under the mean curve over cells, fraction of pixels 0..1 on the x axis. A CAM that
    points at what the model uses makes the probability fall faster than random under deletion
    (smaller area) and rise faster under insertion (larger area).

    Deletion is the verdict (:attr:`beats_random`), insertion a second opinion. On planted data
    where the classifier certainly used the cells, Grad-CAM won deletion clearly (area 0.62 vs
    0.86 at random) yet lost insertion (0.80 vs 0.86): a few scattered random pixels put back the
    cell-to-background contrast the network reads through its 8x8 grid, while the CAM's first
    pixels, all inside the cell, do not. And with two classes, filling moves every crop towards one
    of them, whose probability then never falls nor rises: both curves stay flat for its cells.
    """

    fractions: np.ndarray  # (s,) share of the crop's pixels removed / inserted, 0 .. 1
    deletion: np.ndarray  # (n, s) target probability, CAM order
    insertion: np.ndarray  # (n, s)
    random_deletion: np.ndarray  # (n, s) mean over the random orders
    random_insertion: np.ndarray  # (n, s)
    fill: str

    @staticmethod
    def _area(curves: np.ndarray, fractions: np.ndarray) -> float:
        return float(np.trapezoid(curves.mean(axis=0), fractions)) if len(curves) else float("nan")

    @property
    def areas(self) -> dict[str, float]:
        f = self.fractions
        return {"deletion": self._area(self.deletion, f), "insertion": self._area(self.insertion, f),
                "random_deletion": self._area(self.random_deletion, f),
                "random_insertion": self._area(self.random_insertion, f)}

    @property
    def deletion_gain(self) -> tuple[float, float, float]:
        """How much faster the CAM order lowers the probability than random order: the per-cell
        difference of deletion areas (random - CAM), its mean and a 95 % interval (normal
        approximation over the cells; 0 wide with one cell)."""
        f = self.fractions
        per_cell = np.trapezoid(self.random_deletion, f, axis=1) - np.trapezoid(self.deletion, f, axis=1)
        if not len(per_cell):
            return float("nan"), float("nan"), float("nan")
        mean = float(per_cell.mean())
        half = 1.96 * float(per_cell.std(ddof=1)) / np.sqrt(len(per_cell)) if len(per_cell) > 1 else 0.0
        return mean, mean - half, mean + half

    @property
    def beats_random(self) -> bool:
        """Removing the CAM's top pixels lowers the probability faster than removing random ones,
        beyond the cell-to-cell noise (the gain's 95 % interval lies above 0)."""
        return bool(self.deletion_gain[1] > 0)

    @property
    def insertion_beats_random(self) -> bool:
        a = self.areas
        return bool(a["insertion"] > a["random_insertion"])

    def reading(self) -> str:
        """One sentence a user can act on."""
        a = self.areas
        gain, low, high = self.deletion_gain
        numbers = (f"deletion area {a['deletion']:.2f} vs {a['random_deletion']:.2f} at random (lower is better; "
                   f"difference {gain:.2f}, 95 % interval {low:.2f} to {high:.2f}), insertion area "
                   f"{a['insertion']:.2f} vs {a['random_insertion']:.2f} (higher is better), {len(self.deletion)} cells")
        if not self.beats_random:
            return f"The CAM does not beat random pixel order, so do not trust it here: {numbers}."
        if gain < 0.05:
            return (f"The CAM beats random pixel order only slightly (its top pixels matter a little more than "
                    f"random ones): {numbers}.")
        if self.insertion_beats_random:
            return f"The CAM beats random pixel order when its top pixels are removed and when they are put back: {numbers}."
        return (f"The CAM beats random pixel order when its top pixels are removed, not when they are put back "
                f"(insertion), so the model also uses what lies around them: {numbers}.")

    def summary(self) -> dict[str, Any]:
        return {"fractions": self.fractions.tolist(), "fill": self.fill, "n_cells": int(len(self.deletion)),
                "deletion": self.deletion.mean(axis=0).tolist(), "insertion": self.insertion.mean(axis=0).tolist(),
                "random_deletion": self.random_deletion.mean(axis=0).tolist(),
                "random_insertion": self.random_insertion.mean(axis=0).tolist(),
                "areas": self.areas, "deletion_gain": dict(zip(("mean", "low", "high"), self.deletion_gain,
                                                                strict=True)),
                "beats_random": self.beats_random,
                "insertion_beats_random": self.insertion_beats_random, "reading": self.reading()}


def _fill(crops: np.ndarray, fill: str) -> np.ndarray:
    """What removed pixels become: each crop's per-channel mean, zero, or the crop blurred
    (Gaussian, sigma = size / 8: no cell-scale detail survives, the overall level does)."""
    if fill == "mean":
        return np.broadcast_to(crops.mean(axis=(1, 2), keepdims=True), crops.shape).astype(np.float32)
    if fill == "zero":
        return np.zeros_like(crops)
    from scipy.ndimage import gaussian_filter

    sigma = max(1.0, crops.shape[1] / 8)
    return gaussian_filter(crops, sigma=(0, sigma, sigma, 0), mode="nearest").astype(np.float32)


def _ranks(order_keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(m, P) rank of each pixel when sorted by ``order_keys`` descending, ties broken at random."""
    m, p = order_keys.shape
    order = np.lexsort((rng.random((m, p)), -order_keys), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(p)[None, :].repeat(m, 0), axis=1)
    return ranks


def deletion_insertion(
    model: torch.nn.Module,
    crops: np.ndarray,
    cams: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    *,
    steps: int = PERTURB_STEPS,
    fill: str = "mean",
    random_orders: int = 3,
    seed: int = 0,
    batch_size: int = 256,
) -> DeletionInsertion:
    """The deletion/insertion test (Petsiuk et al. 2018, RISE) of ``cams`` (n, S, S) on ``crops``
    (n, S, S, C): at fractions 0, 1/steps, .., 1 of the crop's pixels, taken in CAM order (highest
    first), the target class probability (softmax) after setting those pixels to ``fill``
    (deletion) and after putting only those pixels into the filled crop (insertion); the same in
    ``random_orders`` seeded random orders as the baseline. Ties in a CAM are broken at random.

    Written here rather than taken from pytorch-grad-cam's metrics: those score one percentile
    threshold per call, one crop at a time, and have no insertion curve or random baseline.
    """
    import torch

    if fill not in PERTURB_FILLS:
        raise ValueError(f"fill must be one of {', '.join(PERTURB_FILLS)}; got {fill!r}")
    if steps < 1 or random_orders < 1:
        raise ValueError(f"steps and random_orders must be at least 1; got {steps}, {random_orders}")
    crops = check_crops(crops)
    cams = np.asarray(cams, np.float32)
    targets = np.asarray(targets, np.int64)
    n, size = len(crops), crops.shape[1]
    if cams.shape != crops.shape[:3] or targets.shape != (n,):
        raise ValueError(f"need one (S, S) CAM and one target per crop: crops {crops.shape}, CAMs {cams.shape}, "
                         f"targets {targets.shape}")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * size * size).astype(np.int64)
    rng = np.random.default_rng(seed)
    curves = {key: np.zeros((n, steps + 1), np.float32) for key in ("del", "ins", "rdel", "rins")}
    device = next(model.parameters()).device
    chunk = max(1, batch_size // (2 * (steps + 1)))  # cells per pass: each makes 2 x (steps + 1) images
    with model_lock(model), cpu_threads(device), torch.inference_mode():
        model.eval()
        for start in range(0, n, chunk):
            x = crops[start:start + chunk]
            filled = _fill(x, fill)
            t = targets[start:start + chunk]
            m = len(x)
            orders = [("del", "ins", _ranks(cams[start:start + chunk].reshape(m, -1), rng))]
            orders += [("rdel", "rins", _ranks(np.zeros((m, size * size), np.float32), rng))
                       for _ in range(random_orders)]
            for key_del, key_ins, ranks in orders:
                top = (ranks[:, None, :] < counts[None, :, None]).reshape(m, steps + 1, size, size, 1)
                deleted = np.where(top, filled[:, None], x[:, None]).reshape(-1, *x.shape[1:])
                inserted = np.where(top, x[:, None], filled[:, None]).reshape(-1, *x.shape[1:])
                both = _tensor(np.concatenate([deleted, inserted]).astype(np.float32), device)
                prob = torch.softmax(model(both).float(), 1).cpu().numpy()
                picked = prob[np.arange(len(prob)), np.tile(np.repeat(t, steps + 1), 2)].reshape(2, m, steps + 1)
                weight = 1.0 if key_del == "del" else 1.0 / random_orders
                curves[key_del][start:start + m] += weight * picked[0]
                curves[key_ins][start:start + m] += weight * picked[1]
    return DeletionInsertion(fractions, curves["del"], curves["ins"], curves["rdel"], curves["rins"], fill)
