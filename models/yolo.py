"""YOLO detectors (ultralytics)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from core.images import CellImage
from models.registry import ModelInfo, register_model
from models.result import Instances, labels_from_boxes
from models.weights import WeightsSpec


class YoloDetector:
    """An ultralytics YOLO detector: boxes, filled into the label image (box-only)."""

    def __init__(self, name: str, weights: str, device: str) -> None:
        from ultralytics import YOLO

        self.name, self.device = name, device
        self._model = YOLO(weights)

    def predict(self, image: CellImage, *, conf: float = 0.25, iou: float = 0.5, imgsz: int | None = None,
                **_: Any) -> Instances:
        from core.display import normalize_channel

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
