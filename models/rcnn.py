"""Mask R-CNN and Faster R-CNN (torchvision), class-agnostic for cells.

COCO v2 weights are described as data below (torchvision's own addresses and hash prefixes)
and fetched by :mod:`models.weights`, not by torch.hub, so progress, the cache folder and the
offline message are CellScope's. Checkpoints from the Train page (two classes: background,
cell) load through the same builder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core.data.images import CellImage, nucleus_plane
from core.data.instances import Instances, labels_from_boxes, labels_from_masks
from models.registry import ModelInfo, Setting, register_model
from models.weights import WeightsSpec

_TV = "torchvision 0.29 model zoo (BSD-3-Clause code; weights trained on COCO, see its terms)"
COCO_WEIGHTS = {
    "maskrcnn": WeightsSpec(
        "maskrcnn-v2-coco", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", "73cbd019",
        177_219_000, "BSD-3-Clause", "COCO 2017 (box mAP 47.4, mask mAP 41.8); not cells: used class-agnostic",
        _TV,
    ),
    "fasterrcnn": WeightsSpec(
        "fasterrcnn-v2-coco", "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
        "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", "dd69338a",
        167_104_000, "BSD-3-Clause", "COCO 2017 (box mAP 46.7); not cells: used class-agnostic", _TV,
    ),
}


RCNN_SETTINGS = (
    Setting("score_threshold", "R-CNN score threshold", 0.5, "Keep detections scoring at least this.",
            low=0.0, high=1.0, step=0.05),
    Setting("mask_threshold", "Mask R-CNN mask threshold", 0.5, "A pixel belongs to the object where the mask "
            "probability is above this.", low=0.1, high=0.9, step=0.05),
)


def build_rcnn(kind: str, num_classes: int, *, min_size: int = 800, max_size: int = 1333):
    """An untrained torchvision R-CNN of the v2 design (ResNet-50 FPN)."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2, maskrcnn_resnet50_fpn_v2

    builder = maskrcnn_resnet50_fpn_v2 if kind == "maskrcnn" else fasterrcnn_resnet50_fpn_v2
    return builder(weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size, max_size=max_size)


class RcnnModel:
    """Runs a torchvision R-CNN on the nucleus channel; every detected class counts as a cell."""

    family = "rcnn"

    def __init__(self, name: str, kind: str, checkpoint: Path, device: str, **build: Any) -> None:
        import torch

        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("model", state)  # Train-page checkpoints wrap the weights with metadata
        head = "roi_heads.box_predictor.cls_score.weight"
        num_classes = state[head].shape[0] if head in state else 91
        self.name, self.kind, self.device = name, kind, device
        self._model = build_rcnn(kind, num_classes, **build)
        self._model.load_state_dict(state)
        self._model.eval().to(device)

    @property
    def network(self) -> Any:
        """The torchvision module ``predict`` runs."""
        return self._model

    def predict(self, image: CellImage, *, score_threshold: float, mask_threshold: float) -> Instances:
        import torch

        plane = nucleus_plane(image)
        tensor = torch.from_numpy(np.ascontiguousarray(plane)).to(self.device)[None].expand(3, -1, -1)
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.device.startswith("cuda")):
            out = self._model([tensor])[0]
        keep = out["scores"] >= score_threshold
        scores = out["scores"][keep].float().cpu().numpy()
        boxes = out["boxes"][keep].float().cpu().numpy()
        h, w = plane.shape
        if self.kind == "maskrcnn":
            masks = (out["masks"][keep, 0] >= mask_threshold).cpu().numpy()
            labels, boxes, scores = labels_from_masks(masks, scores)  # boxes now fit the masks drawn
        else:
            labels = labels_from_boxes(boxes, (h, w), scores)
        return Instances(labels, boxes.astype(np.float32), scores.astype(np.float32), ("cell",), self.name,
                         self.device, time.perf_counter() - t0, box_only=self.kind != "maskrcnn")


def _random_rcnn(kind: str, path: Path) -> None:
    import torch

    torch.save(build_rcnn(kind, 91).state_dict(), path)


# The family "rcnn" itself (label, trainer, CAM) is registered by models/rcnn_training.py, which imports this.
for _kind, _title in (("maskrcnn", "Mask R-CNN"), ("fasterrcnn", "Faster R-CNN")):
    register_model(ModelInfo(
        f"{_kind}-coco", "rcnn",
        f"{_title} v2 (ResNet-50 FPN), COCO weights, class-agnostic: every detection is a cell. "
        f"{'Masks' if _kind == 'maskrcnn' else 'Boxes only'}; the course's recommended instance segmenter is Mask R-CNN.",
        COCO_WEIGHTS[_kind], _kind == "fasterrcnn",
        (lambda k: lambda path, device: RcnnModel(f"{k}-coco", k, path, device))(_kind),
        RCNN_SETTINGS, slow_on_cpu=True,
        random_weights=(lambda k: lambda path: _random_rcnn(k, path))(_kind),
    ))
