"""SAM 2.1 and MobileSAM through ultralytics: automatic masks, box prompts and point prompts.

They join Meta's SAM ViT-B/L/H (:mod:`models.sam`) in the one ``sam`` family with the same four
settings, because each means the same here: ultralytics' automatic generator prompts a grid of
``points_per_side`` points per side, drops masks whose predicted IoU is at most
``pred_iou_thresh`` and whose stability score (offset 1.0, segment-anything's) is at most
``stability_score_thresh``, and removes holes and islands under ``min_mask_region_area`` pixels of
the image, as segment-anything's ``SamAutomaticMaskGenerator`` does; the background mask is dropped
alike. The adapter has the same surface as :class:`models.sam.SamModel` (``predict`` with
``boxes``/``points``, ``embed``, ``encoder_runs``), so the prompt view and box prompting from
another model (:class:`models.sam.BoxPromptedSam`) take either.

Weights come only through :func:`models.weights.resolve_weights`; ultralytics is given that
local file (its ``attempt_download_asset`` returns an existing path untouched, and
``YOLO_OFFLINE`` keeps its usage analytics off). Ultralytics' ``.pt`` files are pickles that it
loads with ``weights_only=False``, trusted like any code the user installs (as :mod:`models.yolo`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

import models.classical  # noqa: F401  (registers the detectors whose boxes SAM outlines)
import models.yolo  # noqa: F401
from core.cache import BoundedCache
from core.data.images import CellImage
from models.registry import ModelInfo, register_model
from models.sam import SAM_PROMPTS, SAM_SETTINGS, PromptableSam, register_box_prompted
from models.weights import WeightsSpec

# Prompts decoded at once. The decoder repeats the image embedding for each prompt and its MLP runs
# on 4096 tokens per prompt, and each automatic prompt gives 3 masks upsampled to 1024 x 1024
# floats: 64 automatic prompts at once peaked 2.0 GB above the loaded model, 16 at a time 0.5 GB,
# no slower (MobileSAM, 512 px image: 21 s and 16 s; the decoder costs per prompt); 88 boxes at once
# peaked 2.5 GB.
PROMPTS_PER_BATCH = 16
BOX_NMS_IOU = 0.7  # segment-anything's box_nms_thresh between automatic masks

ASSETS = "https://github.com/ultralytics/assets/releases/download/v8.4.0"  # where ultralytics itself fetches them
_NO_SUM = "Ultralytics publishes no checksum for it, so none is checked"
# name -> (file, approximate bytes (Ultralytics gives MB), title, what it is, trained on, source)
_VARIANTS = {
    "sam2.1-tiny": ("sam2.1_t.pt", 78_100_000, "SAM 2.1 Hiera-Tiny", "39 M parameters",
                    "SA-1B and SA-V (natural images and videos, not microscopy)",
                    "Meta AI SAM 2.1 (Apache-2.0), converted by Ultralytics"),
    "sam2.1-small": ("sam2.1_s.pt", 92_000_000, "SAM 2.1 Hiera-Small", "46 M parameters",
                     "SA-1B and SA-V (natural images and videos, not microscopy)",
                     "Meta AI SAM 2.1 (Apache-2.0), converted by Ultralytics"),
    "mobilesam": ("mobile_sam.pt", 40_700_000, "MobileSAM", "10 M parameters, a TinyViT encoder distilled from SAM "
                  "ViT-H", "1% of SA-1B (100k natural images, not microscopy), distilled from SAM ViT-H",
                  "MobileSAM, Zhang et al. 2023 (Apache-2.0), as Ultralytics distributes it"),
}
ULTRALYTICS_SAM_WEIGHTS = {
    name: WeightsSpec(name, filename, f"{ASSETS}/{filename}", None, size, "Apache-2.0", trained_on,
                      f"{source}; {_NO_SUM}")
    for name, (filename, size, _title, _what, trained_on, source) in _VARIANTS.items()
}


def load_ultralytics_sam(weights: Path) -> Any:
    """The SAM network in ``weights`` (a local file), built by ultralytics from the file's name
    (``sam2.1_t.pt``, ``mobile_sam.pt``, ...); ValueError naming the file when it is not one."""
    # A server must not pip-install or phone home at run time (see models/yolo.py).
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_OFFLINE", "true")
    from ultralytics import SAM

    path = Path(weights)
    if not path.is_file():  # ultralytics would download a bare name: only our resolved file is given to it
        raise ValueError(f"no weights file at {path}")
    try:
        return SAM(str(path))
    except (FileNotFoundError, NotImplementedError) as exc:
        raise ValueError(f"{path.name} is not a SAM file ultralytics can build ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: torch/pickle raise many kinds
        raise ValueError(f"{path} could not be loaded as {path.name} ({type(exc).__name__}: {exc}); delete it "
                         "to download it again, or place an intact copy there") from exc


class UltralyticsSamModel(PromptableSam):
    """SAM 2.1 or MobileSAM through ultralytics' predictors; the image embedding is computed once
    per image and kept in a small bounded cache. Predictors are made per call on the one network,
    so sessions sharing a cached model do not share a predictor's state."""

    image_side = 1024  # SAM encodes a letterboxed square of this side whatever the image's size (its training size)

    def __init__(self, name: str, weights: Path, device: str, cache_images: int = 8) -> None:
        self.name, self.device = name, device
        sam = load_ultralytics_sam(weights)
        self.is_sam2 = sam.is_sam2
        self.network = sam.model.to(device).eval()
        self._embeddings = BoundedCache(max_entries=cache_images)
        self._lock = threading.Lock()
        self.encoder_runs = 0  # how often the image encoder ran: tests check the cache with it

    @staticmethod
    def _bgr(image: CellImage) -> np.ndarray:
        from core.figures.display import image_rgb

        # SAM expects 8-bit RGB (the display merge is what a person sees); ultralytics reads arrays as BGR
        return np.ascontiguousarray(image_rgb(image)[..., ::-1])

    def _predictor(self, conf: float = 0.0) -> Any:
        from ultralytics.models.sam.predict import Predictor, SAM2Predictor

        kind = SAM2Predictor if self.is_sam2 else Predictor
        predictor = kind(overrides={"conf": conf, "iou": BOX_NMS_IOU, "imgsz": self.image_side, "device": self.device,
                                    "verbose": False, "save": False})
        predictor.setup_model(model=self.network, verbose=False)
        return predictor

    def _features(self, image: CellImage) -> Any:
        """The image's embedding, computed the first time it is asked for."""
        def encode() -> Any:
            predictor = self._predictor()
            predictor.set_image(self._bgr(image))
            with self._lock:
                self.encoder_runs += 1
            return predictor.features

        return self._embeddings.get_or_compute(f"{image.hash}{image.channels}", encode)

    def embed(self, image: CellImage) -> None:
        """Compute (or find) the image embedding, e.g. before the user starts clicking."""
        self._features(image)

    def _automatic(self, image: CellImage, points_per_side: int, pred_iou_thresh: float,
                   stability_score_thresh: float, min_area: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        # conf = pred_iou_thresh: ultralytics filters on it again after its NMS, the same cut
        result = self._predictor(conf=pred_iou_thresh)(
            self._bgr(image), points_stride=points_per_side, points_batch_size=PROMPTS_PER_BATCH,
            conf_thres=pred_iou_thresh, stability_score_thresh=stability_score_thresh, stability_score_offset=1.0,
            min_mask_region_area=min_area)[0]
        with self._lock:
            self.encoder_runs += 1
        if result.masks is None:
            return np.zeros((0, h, w), bool), np.zeros(0)
        masks = result.masks.data.cpu().numpy().astype(bool).reshape(-1, h, w)
        scores = result.boxes.conf.float().cpu().numpy().astype(np.float64)
        # SAM also segments the background as one huge region: drop masks over a quarter of the field
        small = masks.sum(axis=(1, 2)) < 0.25 * h * w
        return masks[small], scores[small]

    def _prompted(self, image: CellImage, boxes: np.ndarray | None,
                  points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One mask per box and one per point: boxes and points decoded apart (SAM 2 would otherwise
        read a box and a point of the same row as one object's two prompts), in batches of
        :data:`PROMPTS_PER_BATCH`."""
        features = self._features(image)
        predictor = self._predictor()
        h, w = image.shape[:2]
        masks, scores = [np.zeros((0, h, w), bool)], [np.zeros(0, np.float32)]
        for kind, prompt in (("bboxes", boxes), ("points", points)):
            prompt = np.zeros((0, 2), np.float32) if prompt is None else np.asarray(prompt, np.float32)
            for start in range(0, len(prompt), PROMPTS_PER_BATCH):
                found, rows = predictor.inference_features(features, (h, w), (self.image_side,) * 2,
                                                           **{kind: prompt[start:start + PROMPTS_PER_BATCH]})
                if found is not None:
                    masks.append(found.cpu().numpy().astype(bool))
                    scores.append(rows[:, 4].float().cpu().numpy())
        return np.concatenate(masks), np.concatenate(scores)


def _random_weights(filename: str):
    """Writes the architecture Ultralytics builds for ``filename`` with random weights (its state dict)."""

    def write(path: Path) -> None:
        import torch
        import ultralytics.models.sam.build as build

        load, build._load_checkpoint = build._load_checkpoint, lambda model, checkpoint: model
        try:
            net = build.build_sam(filename)
        finally:
            build._load_checkpoint = load
        torch.save(net.state_dict(), path)

    return write


def _build(name: str):
    return lambda path, device: UltralyticsSamModel(name, path, device)


for _name, (_file, _size, _title, _what, _data, _source) in _VARIANTS.items():
    register_model(ModelInfo(
        _name, "sam",
        f"{_title} ({_what}; {_size / 1e6:.0f} MB) through Ultralytics: automatic masks, or prompted with boxes "
        "from another model or with points.",
        ULTRALYTICS_SAM_WEIGHTS[_name], False, _build(_name), SAM_SETTINGS, inputs=SAM_PROMPTS, slow_on_cpu=True,
        random_weights=_random_weights(_file),
    ))

register_box_prompted(
    "mobilesam", "MobileSAM (box prompts on one image embedding)", ULTRALYTICS_SAM_WEIGHTS["mobilesam"],
    lambda path, device: UltralyticsSamModel("mobilesam", path, device),
    _random_weights(ULTRALYTICS_SAM_WEIGHTS["mobilesam"].filename))
