"""One registry of segmentation models: what exists, whether it can run here, and how to load it.

Like torchvision's model builders: ``@register_model`` fills the registry, ``list_models()``
and ``load_model(name, ...)`` sit on top, and weights are described as data
(:class:`models.weights.WeightsSpec`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.images import CellImage
from models.result import Instances
from models.weights import WeightsSpec, WeightsUnavailable, local_path, resolve_weights, weights_dir


class SegmentationModel(Protocol):
    name: str
    device: str

    def predict(self, image: CellImage, **params: Any) -> Instances: ...


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # classical | yolo | sam | rcnn
    description: str
    weights: WeightsSpec | None
    box_only: bool
    builder: Callable[..., SegmentationModel]  # builder(weights_path | None, device) -> model


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def list_models() -> list[ModelInfo]:
    return list(_REGISTRY.values())


def get_model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}") from None


def availability(name: str) -> tuple[bool, str]:
    """Can the model run without a download? And a line saying why (not)."""
    info = get_model_info(name)
    if info.weights is None:
        return True, "no weights needed"
    path = local_path(info.weights)
    if path is not None:
        return True, f"weights at {path}"
    spec = info.weights
    where = weights_dir() / spec.filename
    if spec.url:
        return False, f"needs {spec.filename} ({spec.size_mb:.0f} MB): downloaded on first use, or place it at {where}"
    return False, f"place {spec.filename} at {where}"


def load_model(name: str, device: str = "cpu", *, allow_download: bool = True,
               progress: Callable[[int, int | None], None] | None = None) -> SegmentationModel:
    """A ready model on ``device``; raises :class:`WeightsUnavailable` with what to do when offline."""
    info = get_model_info(name)
    path = resolve_weights(info.weights, allow_download=allow_download, progress=progress) if info.weights else None
    return info.builder(path, device)


# ---------------------------------------------------------------------------------------
# Classical: the Preprocess page's recipe


class ClassicalModel:
    def __init__(self, device: str = "cpu") -> None:
        self.name, self.device = "classical", "cpu"  # OpenCV on the CPU whatever the choice

    def predict(self, image: CellImage, *, recipe=None, **_: Any) -> Instances:
        from core.preprocess import DEFAULT_RECIPE, run_pipeline
        from models.result import boxes_from_labels

        t0 = time.perf_counter()
        result = run_pipeline(image.pixels, image.channels, recipe or DEFAULT_RECIPE)
        boxes = boxes_from_labels(result.labels)
        return Instances(result.labels, boxes, np.ones(len(boxes), np.float32), ("cell",), self.name, self.device,
                         time.perf_counter() - t0, notes=tuple(result.notes))


register_model(ModelInfo(
    "classical", "classical",
    "The Preprocess page's recipe: OpenCV thresholding, morphology and watershed. No weights, CPU.",
    None, False, lambda path, device: ClassicalModel(device),
))


# ---------------------------------------------------------------------------------------
# YOLO (ultralytics)


class YoloDetector:
    """An ultralytics YOLO detector: boxes, filled into the label image (box-only)."""

    def __init__(self, name: str, weights: str, device: str) -> None:
        from ultralytics import YOLO

        self.name, self.device = name, device
        self._model = YOLO(weights)

    def predict(self, image: CellImage, *, conf: float = 0.25, iou: float = 0.5, imgsz: int | None = None,
                **_: Any) -> Instances:
        from core.display import normalize_channel
        from models.result import labels_from_boxes

        idx = image.channel_index("nucleus")
        plane = normalize_channel(image.pixels[:, :, 0 if idx is None else idx])
        gray = (plane * 255).astype(np.uint8)
        h, w = gray.shape
        size = imgsz or int(np.ceil(max(h, w) / 32) * 32)  # native resolution: nuclei stay their size
        t0 = time.perf_counter()
        extra = {"half": True} if self.device.startswith("cuda") else {}  # fp16 on GPUs only
        res = self._model.predict(np.dstack([gray] * 3), imgsz=size, conf=conf, iou=iou, device=self.device,
                                  verbose=False, **extra)[0]
        boxes = res.boxes.xyxy.cpu().numpy().astype(np.float32)
        scores = res.boxes.conf.cpu().numpy().astype(np.float32)
        order = np.argsort(-scores)
        boxes, scores = boxes[order], scores[order]
        labels = labels_from_boxes(boxes, (h, w), scores)
        names = tuple(res.names.values()) if isinstance(res.names, dict) else tuple(res.names)
        return Instances(labels, boxes, scores, names, self.name, self.device, time.perf_counter() - t0, box_only=True)


_NUCLEPHASER = "napari-nuclephaser 0.5.0 on PyPI (MIT licence), file napari_nuclephaser/models/"
for _size, _bytes, _sha in (
    ("n", 5_468_755, "c78d0d08af8433a225dbd48ff8a8665ceddc5a8a9c2efc628709a26f05143199"),
    ("s", 19_173_331, "18720b28f7d4e4307b6f3031e1036e5e7b8036cc8cceb6e18ecc14b575fe3786"),
):
    register_model(ModelInfo(
        f"yolo11{_size}-nuclei", "yolo",
        f"YOLO11{_size} nuclei detector (boxes) trained on phase-contrast images; ships offline with napari-nuclephaser.",
        WeightsSpec(
            name=f"yolo11{_size}-nuclei", filename=f"ND_v11{_size}.pt", url=None, sha256=_sha, size_bytes=_bytes,
            license="MIT", trained_on="phase-contrast nuclei (NuclePhaser data set)", source=_NUCLEPHASER,
            package_file=("napari-nuclephaser", f"napari_nuclephaser/models/ND_v11{_size}.pt"),
        ),
        True,
        (lambda s: lambda path, device: YoloDetector(f"yolo11{s}-nuclei", str(path), device))(_size),
    ))


__all__ = [
    "Instances", "ModelInfo", "SegmentationModel", "WeightsUnavailable",
    "availability", "get_model_info", "list_models", "load_model", "register_model",
]
