"""Segment Anything (segment-anything): automatic masks, box prompts and point prompts.

The image embedding (the expensive ViT encoder) is computed once per image and model and
kept in a small bounded cache; every prompt on that image reuses it, and box prompts are
decoded in one batch. Predictors are created per call, so sessions sharing one cached model
do not step on each other's state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import models.classical  # noqa: F401  (registers the detectors whose boxes SAM outlines)
import models.yolo  # noqa: F401
from core.cache import BoundedCache
from core.data.images import CellImage
from core.data.instances import Instances, labels_from_masks
from models.registry import Family, ModelInfo, Setting, get_model_info, register_family, register_model
from models.weights import WeightsSpec

SAM_SETTINGS = (
    Setting("points_per_side", "SAM points per side", 32, "Automatic mode prompts a grid of this many points per "
            "side; more finds smaller cells, slower.", kind="choice", options=(8, 16, 24, 32, 48, 64)),
    Setting("pred_iou_thresh", "SAM predicted-IoU threshold", 0.88, "Drop masks SAM itself rates below this quality.",
            low=0.0, high=1.0, step=0.01),
    Setting("stability_score_thresh", "SAM stability threshold", 0.95, "Drop masks that change much when the mask "
            "cut-off moves.", low=0.0, high=1.0, step=0.01),
    Setting("min_mask_region_area", "SAM minimum area (px)", 0, "Remove small disconnected bits and holes below "
            "this area.", kind="int", low=0, high=10_000, step=10),
)
SAM_PROMPTS = ("boxes", "points")
_META = "Meta AI Segment Anything (Apache-2.0); SA-1B, 11 M natural images; no published checksum"
SAM_WEIGHTS = {
    variant: WeightsSpec(
        f"sam-{variant}", filename, f"https://dl.fbaipublicfiles.com/segment_anything/{filename}", None,
        size, "Apache-2.0", "SA-1B (natural images, not microscopy)", _META,
    )
    for variant, filename, size in (
        ("vit_b", "sam_vit_b_01ec64.pth", 375_000_000),
        ("vit_l", "sam_vit_l_0b3195.pth", 1_250_000_000),
        ("vit_h", "sam_vit_h_4b8939.pth", 2_560_000_000),
    )
}


def build_sam_variant(variant: str, checkpoint: Path | None):
    from segment_anything import sam_model_registry

    return sam_model_registry[variant](checkpoint=None if checkpoint is None else str(checkpoint))


def _random_sam(variant: str, path: Path) -> None:
    import torch

    torch.save(build_sam_variant(variant, None).state_dict(), path)


class PromptableSam:
    """What every Segment Anything adapter shares: ``predict`` gives automatic masks or outlines of
    prompts, from its ``_automatic(image, points_per_side, pred_iou_thresh, stability_score_thresh,
    min_mask_region_area)`` and ``_prompted(image, boxes, points)`` (masks and scores)."""

    name: str
    device: str

    def predict(self, image: CellImage, *, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                points_per_side: int | None = None, pred_iou_thresh: float | None = None,
                stability_score_thresh: float | None = None, min_mask_region_area: int | None = None) -> Instances:
        """Automatic masks (the settings, from :data:`SAM_SETTINGS` via the registry, are then
        needed), or one mask per box (x0, y0, x1, y1) or per point (x, y) prompt."""
        t0 = time.perf_counter()
        if boxes is None and points is None:
            automatic = (points_per_side, pred_iou_thresh, stability_score_thresh, min_mask_region_area)
            if None in automatic:
                raise ValueError(f"{self.name}: automatic masks need every setting of "
                                 f"{', '.join(s.name for s in SAM_SETTINGS)}; load the model with load_model()")
            masks, scores = self._automatic(image, *automatic)
        else:
            masks, scores = self._prompted(image, boxes, points)
        labels, boxes, kept = labels_from_masks(masks, scores)
        return Instances(labels, boxes, kept, ("cell",), self.name, self.device, time.perf_counter() - t0)


class SamModel(PromptableSam):
    def __init__(self, name: str, build: Callable[[], Any], device: str, cache_images: int = 8) -> None:
        self.name, self.device = name, device
        self.sam = build().to(device).eval()
        self._embeddings = BoundedCache(max_entries=cache_images)
        self._lock = threading.Lock()
        self.encoder_runs = 0  # how often the image encoder ran: tests check the cache with it

    @staticmethod
    def _rgb(image: CellImage) -> np.ndarray:
        from core.figures.display import image_rgb

        return image_rgb(image)  # SAM expects 8-bit RGB: the display merge is what a person sees

    def _predictor(self, image: CellImage):
        """A SamPredictor with the image's embedding set, computing it only the first time."""
        from segment_anything import SamPredictor

        predictor = SamPredictor(self.sam)

        def encode() -> tuple:
            predictor.set_image(self._rgb(image))
            with self._lock:
                self.encoder_runs += 1
            return predictor.features, predictor.original_size, predictor.input_size

        cached = self._embeddings.get_or_compute(f"{image.hash}{image.channels}", encode)
        predictor.features, predictor.original_size, predictor.input_size = cached
        predictor.is_image_set = True
        return predictor

    def embed(self, image: CellImage) -> None:
        """Compute (or find) the image embedding, e.g. before the user starts clicking."""
        self._predictor(image)

    def _automatic(self, image, points_per_side, pred_iou_thresh, stability_score_thresh, min_area):
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(
            self.sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, min_mask_region_area=min_area,
        )
        found = generator.generate(self._rgb(image))
        with self._lock:
            self.encoder_runs += 1
        if not found:
            return np.zeros((0, *image.shape[:2]), bool), np.zeros(0)
        # SAM also segments the background as one huge region: drop masks over a quarter of the field
        found = [m for m in found if m["area"] < 0.25 * image.shape[0] * image.shape[1]]
        masks = np.array([m["segmentation"] for m in found], bool).reshape(-1, *image.shape[:2])
        return masks, np.array([m["predicted_iou"] for m in found], np.float64)

    def _prompted(self, image, boxes, points):
        """One mask per box and one per point; boxes are decoded in one batch, points in another."""
        import torch

        predictor = self._predictor(image)
        h, w = image.shape[:2]
        masks, scores = [np.zeros((0, h, w), bool)], [np.zeros(0, np.float32)]
        with torch.inference_mode():
            if boxes is not None and len(boxes):
                prompt = predictor.transform.apply_boxes_torch(
                    torch.as_tensor(np.asarray(boxes, np.float32), device=self.device), (h, w))
                m, sc, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=prompt,
                                                   multimask_output=False)
                masks.append(m[:, 0].cpu().numpy())
                scores.append(sc[:, 0].float().cpu().numpy())
            if points is not None and len(points):
                coords = predictor.transform.apply_coords_torch(
                    torch.as_tensor(np.asarray(points, np.float32)[:, None, :], device=self.device), (h, w))
                labels = torch.ones(coords.shape[:2], dtype=torch.int, device=self.device)
                m, sc, _ = predictor.predict_torch(point_coords=coords, point_labels=labels, multimask_output=False)
                masks.append(m[:, 0].cpu().numpy())
                scores.append(sc[:, 0].float().cpu().numpy())
        return np.concatenate(masks), np.concatenate(scores)


register_family(Family(
    "sam", "Segment Anything", "Meta's Segment Anything: automatic masks, or outlines of prompts.", order=40,
    settings=SAM_SETTINGS,
    no_cam_reason="Segment Anything scores masks from prompts, not detections: it has no detector CAM"))
for _variant, _title in (("vit_b", "ViT-B"), ("vit_l", "ViT-L"), ("vit_h", "ViT-H")):
    register_model(ModelInfo(
        f"sam-{_variant.replace('_', '')}", "sam",
        f"Segment Anything {_title}: automatic masks, or prompted with boxes from another model or with points.",
        SAM_WEIGHTS[_variant], False,
        (lambda v: lambda path, device: SamModel(f"sam-{v.replace('_', '')}", lambda: build_sam_variant(v, path),
                                                 device))(_variant),
        SAM_SETTINGS, inputs=SAM_PROMPTS, slow_on_cpu=True,
        random_weights=(lambda v: lambda path: _random_sam(v, path))(_variant),
    ))


class BoxPromptedSam:
    """Another model's boxes as SAM prompts ("YOLO + SAM", "classical + SAM"): the detector finds
    cells, SAM draws their outlines."""

    def __init__(self, name: str, detector: str, sam: SamModel, device: str) -> None:
        from models.registry import load_model

        self.name, self.device, self.sam = name, device, sam
        self.detector = load_model(detector, device)

    def predict(self, image: CellImage, **params: Any) -> Instances:
        t0 = time.perf_counter()
        found = self.detector.predict(image, **params)
        result = self.sam.predict(image, boxes=found.boxes)
        return Instances(result.labels, result.boxes, result.scores, result.class_names, self.name, self.device,
                         time.perf_counter() - t0, notes=(f"{found.count} boxes from {found.model}",))


def register_box_prompted(sam: str, what: str, weights: WeightsSpec, make_sam: Callable[[Path | None, str], Any],
                          random_weights: Callable[[Path], None]) -> None:
    """``classical+<sam>`` and ``yolo11s-nuclei+<sam>``: the detector's boxes outlined by the SAM
    adapter ``make_sam(weights_path, device)`` (``what`` describes how it decodes them)."""
    for detector in ("classical", "yolo11s-nuclei"):
        register_model(ModelInfo(
            f"{detector}+{sam}", "sam", f"Boxes from {detector}, outlined by {what}.", weights, False,
            (lambda d: lambda path, device: BoxPromptedSam(f"{d}+{sam}", d, make_sam(path, device), device))(detector),
            get_model_info(detector).settings,  # the detector's: SAM only outlines its boxes
            slow_on_cpu=True, random_weights=random_weights,
        ))


register_box_prompted(
    "sam-vitb", "Segment Anything ViT-B (box prompts, one batch per image)", SAM_WEIGHTS["vit_b"],
    lambda path, device: SamModel("sam-vitb", lambda: build_sam_variant("vit_b", path), device),
    lambda path: _random_sam("vit_b", path))
