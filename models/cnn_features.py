"""A pretrained ImageNet CNN (torchvision ResNet) as a feature extractor for cell crops.

Each crop's channels are merged to RGB in their display colours (the same additive merge as
:func:`core.figures.display.composite`), resized, normalised with ImageNet's mean and standard
deviation, and the global-average-pooled output of the last residual stage is the feature
vector (512 numbers for ResNet-18, 2048 for ResNet-50).

The ImageNet weights are described as data below (torchvision's own addresses and hash
prefixes) and fetched by :mod:`models.weights`, so progress, the weights folder and the offline
message are CellScope's. torch is imported inside the functions, so importing :mod:`models`
stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.data.images import ChannelInfo, color_matrix  # noqa: F401  (color_matrix: the CNN's input colours)
from models.autoencoder import CropChunks, ProgressFn, ProgressReporter, check_crops, crop_batches
from models.registry import Family, ModelInfo, Setting, register_family, register_model
from models.weights import WeightsSpec

if TYPE_CHECKING:
    import torch

    from core.cells.cell_set import CellSet, Embedding

_TV = "torchvision 0.29 model zoo (BSD-3-Clause code; weights trained on ImageNet-1k, see its terms)"
IMAGENET_WEIGHTS = {
    "resnet18": WeightsSpec(
        "resnet18-imagenet", "resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "f37072fd", 46_830_571, "BSD-3-Clause", "ImageNet-1k (IMAGENET1K_V1, top-1 69.76%); not cells", _TV,
    ),
    "resnet50": WeightsSpec(
        "resnet50-imagenet", "resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "0676ba61", 102_530_333, "BSD-3-Clause", "ImageNet-1k (IMAGENET1K_V1, top-1 76.13%); not cells", _TV,
    ),
}
FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# 112 px: ResNet-18 ran 48 cells/s at 112 against 15 at 224 and 165 at 64 (one thread, channels-last,
# on the busy 2-core dev machine); a 64 px crop has no detail that 224 adds, but at 64 px the last stage
# sees a 2x2 grid. 224 is the size the weights were trained at: the choice for a GPU.
CNN_SETTINGS = (
    Setting("input_size", "CNN input size (px)", 112, "Crops are resized to this before the CNN. 224 is what "
            "ImageNet models were trained at (about 3x slower than 112); 64 is fastest.", kind="choice",
            options=(64, 112, 160, 224)),
)


def colorize(crops: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) channels in [0, 1] merged to (n, 3, H, W) RGB with (C, 3) colour weights, summed and
    clipped to [0, 1] like :func:`core.figures.display.composite`."""
    import torch

    return torch.einsum("nchw,ck->nkhw", crops, colors.to(crops.dtype)).clamp_(0.0, 1.0)


class CnnEmbedder:
    """An ImageNet ResNet without its classifier: crops in, (N, 512 or 2048) features out."""

    def __init__(self, weights_path: Path | None, device: str = "cpu", *, arch: str = "resnet18") -> None:
        """``weights_path`` None: random weights (tests); otherwise a torchvision state dict, loaded
        with ``weights_only=True``."""
        import torch
        import torchvision

        if arch not in FEATURE_DIMS:
            raise ValueError(f"arch must be one of {', '.join(FEATURE_DIMS)}; got {arch!r}")
        model = getattr(torchvision.models, arch)(weights=None)
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ValueError(f"{Path(weights_path).name} is not a torchvision {arch} state dict") from exc
        model.fc = torch.nn.Identity()  # the pooled features, not ImageNet's 1000 classes
        model.eval().to(device)
        if torch.device(device).type == "cpu":  # the crops' own layout; 165 vs 118 cells/s at 64 px (one thread)
            model.to(memory_format=torch.channels_last)
        self._model = model
        self.arch, self.device, self.dim = arch, device, FEATURE_DIMS[arch]
        self.name = f"{arch}-{'imagenet' if weights_path is not None else 'random'}"

    def embed(self, cells: CellSet, *, input_size: int, progress: ProgressFn | None = None) -> Embedding:
        """Every cell's features, its channels merged by their display colours."""
        from core.cells.cell_set import Embedding

        t0 = time.perf_counter()
        features = self.features(cells.chunks, channel_colors=color_matrix(cells.channels), input_size=input_size,
                                 total=len(cells), progress=progress)
        return Embedding(features, tuple(f"{self.arch}_{i}" for i in range(features.shape[1])), self.name,
                         time.perf_counter() - t0, {})

    def features(self, chunks: CropChunks, *, channel_colors: np.ndarray | Sequence[Sequence[float]],
                 input_size: int = CNN_SETTINGS[0].default, batch_size: int = 256, total: int | None = None,
                 progress: ProgressFn | None = None) -> np.ndarray:
        """(N, dim) float32 features of every (n, S, S, C) crop in ``chunks``, in order.

        ``channel_colors`` is the (C, 3) matrix of :func:`color_matrix`. ``total``, the number of
        crops when known, lets ``progress(fraction, message)`` report fractions and the time left.
        """
        import torch
        import torch.nn.functional as F

        colors_np = np.asarray(channel_colors, np.float32)
        if colors_np.ndim != 2 or colors_np.shape[1] != 3:
            raise ValueError(f"channel_colors must be a (C, 3) matrix; got shape {colors_np.shape}")
        if input_size < 32:
            raise ValueError(f"input_size must be at least 32 px; got {input_size}")
        colors = torch.from_numpy(colors_np).to(self.device)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        report = ProgressReporter(progress)
        out: list[np.ndarray] = []
        done, t0 = 0, time.perf_counter()
        with torch.inference_mode():
            for batch in crop_batches(chunks, batch_size):
                batch = check_crops(batch, channels=len(colors_np))
                x = colorize(torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2), colors)
                if x.shape[-1] != input_size:
                    x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False,
                                      antialias=x.shape[-1] > input_size)
                out.append(self._model((x - mean) / std).float().cpu().numpy())
                done += len(batch)
                if total:
                    rate = done / max(time.perf_counter() - t0, 1e-9)
                    report(min(done / total, 1.0), f"{done:,} of {total:,} cells · {rate:.0f} cells/s",
                           force=done >= total)
        return np.concatenate(out) if out else np.empty((0, self.dim), np.float32)


register_family(Family("cnn", "ImageNet CNN", "An ImageNet-trained CNN's pooled features.", ("embed",),
                       settings=CNN_SETTINGS,
                       no_cam_reason="an embedder, not a detector: explain it with the cell classifier's CAMs"))
for _arch, _title in (("resnet18", "ResNet-18"), ("resnet50", "ResNet-50")):
    register_model(ModelInfo(
        f"{_arch}-imagenet", "cnn",
        f"{_title} trained on ImageNet photographs: the pooled features of its last layer ({FEATURE_DIMS[_arch]} per "
        "cell), channels merged by their display colours. Generic, not trained on cells.",
        IMAGENET_WEIGHTS[_arch], False,
        (lambda a: lambda path, device: CnnEmbedder(path, device, arch=a))(_arch),
        CNN_SETTINGS, task="embed", slow_on_cpu=True,
    ))
