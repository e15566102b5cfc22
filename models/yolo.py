"""YOLO via ultralytics: the offline nuclei detectors, official YOLO11 weights and user files.

Detection weights give boxes (filled into the label image, ``box_only``); segmentation weights
(``*-seg``) give masks at the image's own resolution. Every class counts as a cell.

Models trained here (:mod:`models.yolo_training`) are saved as plain data (:func:`checkpoint_data`:
the model's YAML dict, class names, a state dict of tensors and metadata) and read back with
``torch.load(weights_only=True)`` by :func:`load_yolo`; ultralytics' own ``.pt`` files (pickles of
its modules) load the way ultralytics loads them, trusted like any code the user installs.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.data.images import CellImage, nucleus_plane
from core.data.instances import Instances, labels_from_boxes, labels_from_masks
from models.checkpoint_file import check_format, metadata_path
from models.registry import ModelInfo, Setting, register_model, register_provider, trained_name
from models.weights import WeightsSpec, weights_dir

YOLO_SETTINGS = (
    Setting("conf", "YOLO confidence", 0.25, "Keep detections scoring at least this. Lower finds more, with more "
            "false ones.", low=0.0, high=1.0, step=0.05),
    Setting("iou", "YOLO NMS IoU", 0.5, "Boxes overlapping more than this are merged (non-maximum suppression).",
            low=0.1, high=0.9, step=0.05),
)


CHECKPOINT_FORMAT = "cellscope_yolo_seg"  # our YOLO-seg checkpoints (and their JSON metadata)
CHECKPOINT_VERSION = 1


def _plain(value: Any) -> Any:
    """``value`` as JSON data (dicts, lists, str, numbers, bool, None); TypeError for anything else."""
    return json.loads(json.dumps(value))


def checkpoint_data(net: Any, metadata: dict[str, Any], args: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ultralytics network as plain data for ``torch.save``: readable with ``weights_only=True``.

    ``net.yaml`` (the architecture dict the network was built from) rebuilds it, ``state_dict``
    holds its tensors as they are (the EMA weights in half precision in a training checkpoint) and
    ``args`` keeps the plain training settings ultralytics would carry over into prediction."""
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "task": "segment",
        "yaml": _plain(net.yaml),
        "names": {int(k): str(v) for k, v in dict(net.names).items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "args": {k: v for k, v in (args or {}).items() if v is None or isinstance(v, str | int | float | bool)},
        "metadata": _plain(metadata),
    }


def load_yolo(weights: str | Path) -> Any:
    """An ultralytics ``YOLO`` for ``weights``: our plain-data checkpoint (read with
    ``torch.load(weights_only=True)``, never unpickling code) rebuilt from its YAML dict with its
    state dict loaded strictly, or else an ultralytics checkpoint loaded as ultralytics does.
    ValueError for a file that is neither."""
    import torch
    from ultralytics import YOLO

    path = Path(weights)
    if not path.is_file():
        return YOLO(weights)  # as ultralytics handles a name or a missing file
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not plain data: an ultralytics pickle, or not a checkpoint at all
        try:
            return YOLO(str(path))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path} is neither a CellScope YOLO-seg checkpoint nor ultralytics YOLO weights "
                             f"({type(e).__name__}: {e})") from e
    check_format(ckpt, path, fmt=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="CellScope YOLO-seg checkpoint",
                 hint="nor is it ultralytics YOLO weights; train one on the Train page or "
                      "with `python -m core train --model yolo`")
    return _rebuild(ckpt, path)


def _rebuild(ckpt: dict[str, Any], path: Path) -> Any:
    import torch
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT

    yaml = ckpt["yaml"]
    # ultralytics builds from a YAML file and reads the scale (n, s, ...) from its name: keep the name.
    name = Path(str(yaml.get("yaml_file") or "model.yaml")).name
    name = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    with tempfile.TemporaryDirectory(prefix="cellscope-yolo-") as tmp, torch.random.fork_rng(devices=[]):
        cfg = Path(tmp) / name
        cfg.write_text(json.dumps(yaml))  # JSON is YAML
        yolo = YOLO(str(cfg), task=ckpt.get("task", "segment"))
    net = yolo.model
    net.load_state_dict(ckpt["state_dict"], strict=True)
    net.names = {int(k): v for k, v in ckpt["names"].items()}
    net.args = YOLO._reset_ckpt_args({**DEFAULT_CFG_DICT, **ckpt.get("args", {}), "task": yolo.task})  # as _load
    net.pt_path, net.task = str(path), yolo.task
    net.float().eval()
    yolo.overrides = {**net.args, "model": str(path), "task": yolo.task}
    yolo.ckpt_path, yolo.model_name = str(path), str(path)
    return yolo


class YoloModel:
    """An ultralytics YOLO detect or segment model on the nucleus channel (grey, replicated to RGB)."""

    family = "yolo"

    def __init__(self, name: str, weights: str, device: str) -> None:
        # A server must not pip-install packages at run time; ultralytics would (e.g. pi-heif when
        # Pillow meets a file it cannot read, through its global patch of PIL.Image.open).
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
        os.environ.setdefault("YOLO_OFFLINE", "true")
        self.name, self.device = name, device
        self._model = load_yolo(weights)
        self.segments = self._model.task == "segment"

    @property
    def ultralytics(self) -> Any:
        """The ultralytics ``YOLO`` object ``predict`` runs (its predictor holds the fused network)."""
        return self._model

    def predict(self, image: CellImage, *, conf: float, iou: float, imgsz: int | None = None) -> Instances:
        gray = (nucleus_plane(image) * 255).astype(np.uint8)
        h, w = gray.shape
        size = imgsz or int(np.ceil(max(h, w) / 32) * 32)  # native resolution: nuclei stay their size
        t0 = time.perf_counter()
        extra = {"half": True} if self.device.startswith("cuda") else {}  # fp16 on GPUs only
        res = self._model.predict(np.dstack([gray] * 3), imgsz=size, conf=conf, iou=iou, device=self.device,
                                  verbose=False, retina_masks=True, **extra)[0]
        boxes = res.boxes.xyxy.cpu().numpy().astype(np.float32)
        scores = res.boxes.conf.cpu().numpy().astype(np.float32)
        names = tuple(res.names.values()) if isinstance(res.names, dict) else tuple(res.names)
        if self.segments and res.masks is not None and len(boxes):
            masks = res.masks.data.cpu().numpy()[:, :h, :w] > 0.5  # retina_masks: already at image size
            labels, boxes, scores = labels_from_masks(masks, scores)
            return Instances(labels, boxes, scores, names, self.name, self.device, time.perf_counter() - t0)
        order = np.argsort(-scores)
        boxes, scores = boxes[order], scores[order]
        labels = labels_from_boxes(boxes, (h, w), scores)
        return Instances(labels, boxes, scores, names, self.name, self.device, time.perf_counter() - t0,
                         box_only=not self.segments)


def _builder(name: str):
    return lambda path, device: YoloModel(name, str(path), device)


# The family "yolo" itself (label, trainer, CAM) is registered by models/yolo_training.py, which imports this.
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
        True, _builder(f"yolo11{_size}-nuclei"), YOLO_SETTINGS,
    ))

# Official COCO weights from Ultralytics' release page. Ultralytics publishes no checksums, so
# none is checked (as for SAM); sizes are approximate and only drive the progress bar.
_ULTRALYTICS = "Ultralytics YOLO11 release v8.3.0 (AGPL-3.0: see ultralytics.com/license)"
for _file, _task, _bytes in (("yolo11n.pt", "detect", 5_600_000), ("yolo11n-seg.pt", "segment", 6_000_000)):
    _name = _file.removesuffix(".pt") + "-coco"
    register_model(ModelInfo(
        _name, "yolo",
        f"Official YOLO11n {'segmentation (masks)' if _task == 'segment' else 'detection (boxes)'}, COCO weights "
        "(80 everyday classes, not cells), class-agnostic: a baseline that shows why cell-trained weights matter.",
        WeightsSpec(
            name=_name, filename=_file, url=f"https://github.com/ultralytics/assets/releases/download/v8.3.0/{_file}",
            sha256=None, size_bytes=_bytes, license="AGPL-3.0", trained_on="COCO 2017", source=_ULTRALYTICS,
        ),
        _task == "detect", _builder(_name), YOLO_SETTINGS,
    ))


def user_yolo_models() -> list[ModelInfo]:
    """``*.pt`` files a user placed in ``<weights folder>/yolo/``: each one becomes a model.

    Models trained here (a CellScope record beside them) are plain data, named ``trained:yolo:<name>``
    (:func:`load_yolo` reads them with ``weights_only=True``); any other file is ``user:<name>``,
    trusted like any code the user installs (ultralytics checkpoints are pickles).
    Whether it detects or segments is read from the checkpoint when it loads.
    """
    folder = weights_dir() / "yolo"
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.pt")):
        trained = metadata_path(path).is_file()
        name = trained_name("yolo", path.stem) if trained else f"user:{path.stem}"
        spec = WeightsSpec(name=name, filename=f"yolo/{path.name}", url=None, sha256=None,
                           size_bytes=path.stat().st_size, license="as provided by the user",
                           trained_on="unknown (user file)", source=str(path))
        what = "YOLO-seg trained here" if trained else "YOLO weights placed by the user"
        found.append(ModelInfo(name, "yolo", f"{what}: {path}", spec, False,
                               _builder(name), YOLO_SETTINGS, own_checkpoint=path))
    return found


register_provider(user_yolo_models)


def user_weights_folder() -> Path:
    """Where a user puts their own YOLO ``.pt`` files (detect or segment)."""
    return weights_dir() / "yolo"
