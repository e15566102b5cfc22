"""InstanSeg (instanseg-torch): the published fluorescence nuclei-and-cells model, nuclei or cells.

The release is a bioimage.io zip with a TorchScript file (``instanseg.pt``) inside. It comes only
through :func:`models.weights.resolve_weights` (size, licence, the offline message); the TorchScript
is unpacked once into a folder beside the zip and handed to instanseg's ``InstanSeg`` as a loaded
module, so the package never looks for or downloads a model itself (its ``download_model`` runs
only when it is given a model's name).

The model is channel-invariant: it reads any number of fluorescence channels. CellScope gives it
the nucleus channel (the first channel when none has that role) and the cytoplasm channel where
one is named, or every channel. Cells need a cytoplasm channel; nuclei do not. InstanSeg scores no
objects, so every object's score is 1. Large images are tiled by CellScope's own tiling
(:mod:`models.tiling`, the pages' tile setting), each tile run whole by ``eval_small_image``.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from core.data.images import CellImage
from core.data.instances import Instances, instances_from_labels
from models.device import cpu_threads
from models.registry import Family, ModelInfo, Setting, register_family, register_model
from models.weights import WeightsSpec, WeightsUnavailable

CHANNEL_CHOICES = ("nucleus + cytoplasm", "all channels")
INSTANSEG_SETTINGS = (
    Setting("pixel_size", "InstanSeg pixel size (µm)", 0.0,
            "Microns per pixel of your images: InstanSeg rescales them to the 0.5 µm its fluorescence model "
            "was trained at (labels come back at your image's size). 0: the image as it is, right when it is "
            "about 0.5 µm per pixel (a 20x objective on a 6.5 µm camera pixel gives 0.325).",
            low=0.01, high=2.0, step=0.01, special=(0.0,)),
    Setting("instanseg_seed_threshold", "InstanSeg seed threshold", 0.0,  # the U-Net's seed_threshold is another
            "How sure InstanSeg must be of an object's centre to start one: lower finds more, fainter "
            "objects (and splits more); higher fewer. 0: the value published with the model.",
            low=0.05, high=0.95, step=0.05, special=(0.0,)),
    Setting("input_channels", "InstanSeg channels", CHANNEL_CHOICES[0],
            "What the model reads: the nucleus channel and the cytoplasm channel where one is named (channel "
            "roles on the Data page), or every channel of the image (its model takes any number).",
            kind="choice", options=CHANNEL_CHOICES),
)

# The release index instanseg-torch 0.1.2 ships (instanseg/bioimageio_models/model-index.json) gives
# the address, version 0.1.1 and the licence, but no checksum, so none is checked (as for SAM). The
# size is about that of this architecture's TorchScript zipped (16.4 MB, 14.5 MB zipped, measured here
# with random weights): it only drives the progress bar. Its training data: CPDMI 2023 only (the
# release's README; the authors in instanseg issue 41), CC BY 4.0 in instanseg's own dataset table.
FLUORESCENCE_WEIGHTS = WeightsSpec(
    name="instanseg-fluorescence-nuclei-and-cells",
    filename="instanseg/fluorescence_nuclei_and_cells.zip",
    url="https://github.com/instanseg/instanseg/releases/download/instanseg_models_v0.1.1/"
        "fluorescence_nuclei_and_cells.zip",
    sha256=None,
    size_bytes=15_000_000,
    license="Apache-2.0 (model and code; its training data CPDMI 2023 is CC BY 4.0)",
    trained_on="CPDMI 2023: multiplexed fluorescence images of tissue, nuclei and whole cells (0.5 µm per pixel)",
    source="InstanSeg release instanseg_models_v0.1.1 (Goldsborough et al. 2024, bioRxiv 2024.09.04.611150); "
           "no published checksum",
)
TORCHSCRIPT = "instanseg.pt"  # the file's name inside a bioimage.io InstanSeg zip
MAX_TORCHSCRIPT_BYTES = 1 << 30  # a zip claiming more is not an InstanSeg model


def unpacked_torchscript(archive: Path) -> Path:
    """The TorchScript inside the release zip ``archive``, unpacked once into a folder beside it
    (``<zip name>/instanseg.pt``), again only when the zip changes. WeightsUnavailable naming the
    file and what to do when it cannot be read or written."""
    archive = Path(archive)
    folder = archive.with_suffix("")
    target = folder / TORCHSCRIPT
    stamp_file = folder / f"{TORCHSCRIPT}.from"
    stat = archive.stat()
    stamp = f"{archive.name} {stat.st_size} {stat.st_mtime_ns}"
    if target.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return target
    fix = f"delete {archive} to download it again, or place a good copy there"
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if Path(m.filename).name == TORCHSCRIPT and not m.is_dir()]
            if len(members) != 1:
                raise WeightsUnavailable(f"{archive} holds {len(members) or 'no'} {TORCHSCRIPT} files, not one: it is "
                                         f"not an InstanSeg model package; {fix}")
            if members[0].file_size > MAX_TORCHSCRIPT_BYTES:
                raise WeightsUnavailable(f"{archive}: its {TORCHSCRIPT} claims {members[0].file_size / 1e9:.1f} GB, "
                                         f"more than any InstanSeg model; {fix}")
            folder.mkdir(parents=True, exist_ok=True)
            fd, part = tempfile.mkstemp(prefix=f".{TORCHSCRIPT}.", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, zipped.open(members[0]) as data:
                    while block := data.read(1 << 20):  # the zip's CRC is checked as it is read
                        out.write(block)
                os.replace(part, target)  # whole or not at all, even with two sessions unpacking at once
            finally:
                Path(part).unlink(missing_ok=True)
        stamp_file.write_text(stamp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise WeightsUnavailable(f"{archive} is not a readable zip ({exc}); {fix}") from exc
    except OSError as exc:
        raise WeightsUnavailable(f"cannot unpack {TORCHSCRIPT} from {archive} into {folder} ({exc}); the weights "
                                 "folder must be writable by CellScope") from exc
    return target


def load_torchscript(path: Path, device: str) -> Any:
    """The scripted InstanSeg model in ``path`` (a release zip or its unpacked ``instanseg.pt``)."""
    import torch

    path = Path(path)
    script = unpacked_torchscript(path) if path.suffix == ".zip" else path
    try:
        model = torch.jit.load(str(script), map_location=device)
    except RuntimeError as exc:
        raise WeightsUnavailable(f"{script} (from {path.name}) is not a TorchScript model torch can read "
                                 f"({str(exc).splitlines()[0]}); delete {path} to download it again") from exc
    if not hasattr(model, "cells_and_nuclei") or not hasattr(model, "pixel_size"):
        raise WeightsUnavailable(f"{script} (from {path.name}) is TorchScript but not an InstanSeg model (it has no "
                                 f"pixel size or outputs); delete {path} to download it again")
    return model


def input_planes(image: CellImage, channels: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The (H, W, C) float32 planes InstanSeg reads and their names: every channel, or the nucleus
    channel (else the first) and the cytoplasm channel where one is named."""
    if channels not in CHANNEL_CHOICES:
        raise ValueError(f"input_channels must be one of {', '.join(CHANNEL_CHOICES)}; got {channels!r}")
    if channels == "all channels":
        picked = list(range(image.shape[2]))
    else:
        nucleus = image.channel_index("nucleus")
        cytoplasm = image.channel_index("cytoplasm")
        picked = [0 if nucleus is None else nucleus] + ([] if cytoplasm is None else [cytoplasm])
    names = tuple(f"{image.channels[i].name} ({image.channels[i].role})" for i in picked)
    return image.pixels[:, :, picked].astype(np.float32), names


class InstanSegModel:
    """instanseg's ``InstanSeg`` around the published TorchScript; ``target`` is nuclei or cells."""

    def __init__(self, name: str, weights: Path, device: str, *, target: str) -> None:
        from instanseg import InstanSeg

        if target not in ("nuclei", "cells"):
            raise ValueError(f"{name}: target must be nuclei or cells; got {target!r}")
        self.name, self.device, self.target = name, device, target
        script = load_torchscript(weights, device)
        if target == "cells" and not bool(script.cells_and_nuclei):
            raise WeightsUnavailable(f"{Path(weights).name} segments nuclei only, not cells; {name} needs the "
                                     "fluorescence nuclei-and-cells model")
        # A loaded module, not a name: InstanSeg then never calls its download_model.
        self.instanseg = InstanSeg(script, device=device, verbosity=0)
        self.model_pixel_size = float(script.pixel_size)
        # Its post-processing cuts a window of 2 x window_size px around each seed; an image narrower
        # than that (at the model's scale) aborts the whole process (measured: 63 px did, 64 px ran).
        self.min_side = 2 * int(getattr(script, "default_window_size", 32)) + 1

    def predict(self, image: CellImage, *, pixel_size: float, instanseg_seed_threshold: float,
                input_channels: str) -> Instances:
        from skimage.segmentation import relabel_sequential

        t0 = time.perf_counter()
        if self.target == "cells" and image.channel_index("cytoplasm") is None:
            raise ValueError(f"{self.name} needs a cytoplasm channel to find whole cells, and {image.name} has none: "
                             "give one channel the role 'cytoplasm' (channel roles on the Data page; the command line "
                             "reads roles from OME-TIFF channel names such as actin or tubulin), or use "
                             "instanseg-fluo-nuclei")
        h, w = image.shape[:2]
        planes, names = input_planes(image, input_channels)
        scale = pixel_size / self.model_pixel_size if pixel_size else 1.0
        need = int(np.ceil(self.min_side / scale)) + (scale != 1)  # px making min_side at the model's scale
        planes = np.pad(planes, ((0, max(need - h, 0)), (0, max(need - w, 0)), (0, 0)), mode="symmetric")
        if planes.shape[2] >= min(planes.shape[:2]):  # instanseg takes the shortest axis for the channels
            raise ValueError(f"{image.name}: InstanSeg reads fewer channels than pixels on the shorter side; "
                             f"it has {planes.shape[2]} (choose 'nucleus + cytoplasm')")
        options = {} if instanseg_seed_threshold == 0 else {"seed_threshold": float(instanseg_seed_threshold)}
        labels = self._labels(planes, pixel_size or None, options)[:h, :w]  # the mirrored margin cut off
        labels = relabel_sequential(labels)[0].astype(np.int32)  # 1..N: instanseg's ids have gaps
        notes = [f"channels read: {', '.join(names)}"]
        if pixel_size and not np.isclose(pixel_size, self.model_pixel_size):
            notes.append(f"rescaled from {pixel_size:g} to the model's {self.model_pixel_size:g} µm per pixel")
        return instances_from_labels(labels, self.name, device=self.device, runtime_s=time.perf_counter() - t0,
                                     notes=tuple(notes))

    def _labels(self, planes: np.ndarray, pixel_size: float | None, options: dict[str, float]) -> np.ndarray:
        """instanseg's label image (H, W) of ``planes`` (H, W, C)."""
        import torch

        # One thread on a CPU, as for every small network here (models.device.CPU_THREADS).
        with cpu_threads(self.device), torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*CUDA is not available.*")  # its autocast('cuda') on a CPU
            found = self.instanseg.eval_small_image(planes, pixel_size=pixel_size, return_image_tensor=False,
                                                    target=self.target, **options)
        return found.reshape(found.shape[-2:]).cpu().numpy().astype(np.int32)


register_family(Family(
    "instanseg", "InstanSeg",
    "InstanSeg's fluorescence model: nuclei, and whole cells where a cytoplasm channel is named.", order=35,
    settings=INSTANSEG_SETTINGS,
    no_cam_reason="InstanSeg groups pixels around seeds by their learnt embeddings: it makes no detections "
                  "with class scores, so there is no detector CAM to draw"))
for _target in ("nuclei", "cells"):
    register_model(ModelInfo(
        f"instanseg-fluo-{_target}", "instanseg",
        f"InstanSeg fluorescence model, {_target}" + (
            " (needs a channel with the role cytoplasm)" if _target == "cells" else
            " (reads the nucleus channel, and the cytoplasm channel where one is named)")
        + ". Any number of channels; trained at 0.5 µm per pixel.",
        FLUORESCENCE_WEIGHTS, False,
        (lambda t: lambda path, device: InstanSegModel(f"instanseg-fluo-{t}", path, device, target=t))(_target),
        # Measured with the full-size network (random weights) on the shared 2-core machine: 5-8 s for
        # 512 x 512, 19-38 s for 1024 x 1024 (one torch thread; two were twice as slow there).
        INSTANSEG_SETTINGS, slow_on_cpu=True,
    ))
