"""Class activation maps of the detectors over a whole image, with pytorch-grad-cam.

Eigen-CAM on the YOLO models; Grad-CAM with box-score targets (pytorch-grad-cam's
``FasterRCNNBoxScoreTarget``) and Eigen-CAM (``fasterrcnn_reshape_transform`` over the FPN) on
Faster/Mask R-CNN; for one chosen detection or all of them. :func:`draw_detector_cam` draws the
map with the detections' boxes.

Detections come from the adapter's own ``predict`` (its preprocessing and settings); the CAM is
computed on the very tensor that ``predict`` fed the network, captured with a forward pre-hook,
so nothing of the adapters' preprocessing is repeated here.

Safety. Every hook is removed on the way out, also when an error is raised. A model cached for
all sessions (``st.cache_resource``) is hooked by one caller at a time: each CAM holds a lock per
adapter object (two CAMs never overlap, whatever wraps the adapter) and, for a
:class:`~models.registry.LoadedModel`, its prediction lock too, so no prediction runs through a
hooked network. The network's train/eval flags and ``requires_grad`` are restored afterwards;
weights never collect gradients.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from core.data.images import CellImage, nucleus_plane
from core.data.instances import Instances
from models.registry import DetectorCamSupport, LoadedModel, ModelInfo, families, family_of, get_model_info

if TYPE_CHECKING:
    from models.rcnn import RcnnModel
    from models.yolo import YoloModel

# Which family supports which method is its registry entry's ``cam`` (YOLO_CAM, RCNN_CAM below,
# given to the families by their modules); the page offers those, everything else is refused.
METHOD_TITLES = {"eigencam": "Eigen-CAM", "gradcam": "Grad-CAM"}
RCNN_EIGEN_LAYER = "backbone"  # every FPN level, merged by fasterrcnn_reshape_transform (the library's recipe)
_FPN_LEVEL = "backbone.fpn.layer_blocks.{}"  # P2..P5 outputs: one tensor each, so Grad-CAM gets their gradients


@dataclass(frozen=True)
class DetectorCam:
    """One detector CAM: ``cam`` (H, W) float32 in [0, 1] at the image's size, the detections it
    goes with (``instances``, row ``detection`` chosen, or None for all), how it was made, and
    ``seconds`` of CAM work (the prediction's own time is ``instances.runtime_s``)."""

    cam: np.ndarray
    instances: Instances
    detection: int | None
    method: str
    layer: str
    seconds: float
    targeted: bool  # True: the map depends on the chosen detection (Grad-CAM); Eigen-CAM's does not
    notes: tuple[str, ...] = ()

    @property
    def boxes(self) -> np.ndarray:
        return self.instances.boxes


def cam_methods(model: LoadedModel | Any) -> tuple[str, ...]:
    """The CAM methods ``model`` (a LoadedModel or an adapter) supports; () when none."""
    support = _support(_family(model))
    return support.methods if support else ()


def cam_methods_of(info: ModelInfo) -> tuple[str, ...]:
    """The CAM methods of the model ``info`` describes (its family's); () when none."""
    family = family_of(info)
    return family.cam_methods if family else ()


def cam_layers(model: LoadedModel | Any, method: str = "eigencam") -> dict[str, str]:
    """Layers worth choosing for ``method``, name -> what it is; the default first.

    Any other module path of the network (``named_modules``) is accepted too."""
    support = _check_method(model, method)
    return support.layers(_adapter(model), method)


def yolo_cam_layers(adapter: YoloModel, method: str = "eigencam") -> dict[str, str]:
    """YOLO's layers for Eigen-CAM: the head's inputs, the last one before the head first."""
    net = adapter.ultralytics.model
    head = net.model[-1]
    strides = [int(s) for s in net.stride]
    found = {f"model.{i}": f"P{int(np.log2(s))} (stride {s}), an input of the {type(head).__name__} head"
             for i, s in zip(head.f, strides, strict=False)}
    default = _yolo_default_layer(net)
    last = found.pop(default, "the last layer before the head")
    return {default: last + " (default: the last layer before the head; finer levels cost seconds in the SVD)"} \
        | found


def rcnn_cam_layers(adapter: RcnnModel, method: str = "eigencam") -> dict[str, str]:
    """Faster/Mask R-CNN's layers: the FPN levels (merged, for Eigen-CAM), and ResNet C5 for Grad-CAM."""
    levels = {_FPN_LEVEL.format(k): f"FPN P{k + 2} (stride {2 ** (k + 2)})" for k in range(4)}
    if method == "gradcam":
        return {"auto": "the FPN level torchvision's RoI pooler reads the target box(es) from (default)"} | levels | {
            "backbone.body.layer4": "ResNet C5 (stride 32), below the FPN"}
    return {RCNN_EIGEN_LAYER: "every FPN level merged at the coarsest one's size (default)"} | levels


def detector_cam(model: LoadedModel | Any, image: CellImage, *, method: str = "eigencam", detection: int | None = None,
                 layer: str | None = None, **settings: Any) -> DetectorCam:
    """The ``method`` CAM of a detector over ``image`` for its ``detection``-th detection (a row of
    the returned instances), or all of them when None; ``settings`` are the model's predict
    settings (registry defaults; a misspelt one is an error), ``layer`` a module path (see
    :func:`cam_layers`).

    No detections: Eigen-CAM is still computed (it needs no target); Grad-CAM returns an all-zero
    map with a note saying why. A ``detection`` out of range is a ValueError.
    """
    support = _check_method(model, method)
    adapter = _adapter(model)
    resolved = _resolve(model, settings)
    # Per-adapter lock first, then the LoadedModel's prediction lock (held across predict and the hooked passes).
    prediction_lock = model.exclusive() if isinstance(model, LoadedModel) else nullcontext()
    with _adapter_lock(adapter), prediction_lock:
        return support.compute(adapter, image, resolved, method, detection, layer)


def draw_detector_cam(image: CellImage, result: DetectorCam, *, opacity: float = 0.5) -> np.ndarray:
    """uint8 RGB: the nucleus plane the detector saw, the CAM over it at ``opacity`` (0 = image only,
    1 = map only; JET colours, pytorch-grad-cam's ``show_cam_on_image``), every detection's box in
    white and the chosen one thicker, in magenta."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1; got {opacity}")
    plane = nucleus_plane(image)
    if result.cam.shape != plane.shape:
        raise ValueError(f"the CAM is {result.cam.shape}, the image {plane.shape}: not this image's CAM")
    out = show_cam_on_image(np.dstack([plane] * 3), result.cam, use_rgb=True, image_weight=1.0 - opacity)
    width = max(1, round(max(plane.shape) / 512))  # one pixel at 512 px, thicker on big images
    for i, box in enumerate(np.round(result.boxes).astype(int)):
        if i != result.detection:
            cv2.rectangle(out, tuple(box[:2]), tuple(box[2:] - 1), (255, 255, 255), width)
    if result.detection is not None:  # drawn last: on top of its neighbours
        box = np.round(result.boxes[result.detection]).astype(int)
        cv2.rectangle(out, tuple(box[:2]), tuple(box[2:] - 1), (255, 0, 255), 2 * width)
    return out


# --- families, settings, locks ---------------------------------------------------------------------


def _adapter(model: LoadedModel | Any) -> Any:
    return model.model if isinstance(model, LoadedModel) else model


def _family(model: LoadedModel | Any) -> str:
    if isinstance(model, LoadedModel):
        return model.info.family
    if isinstance(getattr(type(model), "family", None), str):  # an adapter says its family (YoloModel, RcnnModel)
        return type(model).family
    try:
        return get_model_info(model.name).family
    except (AttributeError, ValueError):
        return type(model).__name__


def _support(family: str) -> DetectorCamSupport | None:
    found = [f for f in families() if f.name == family]
    return found[0].cam if found else None


def _check_method(model: LoadedModel | Any, method: str) -> DetectorCamSupport:
    """The model's family's CAM support, or a ValueError saying which families and methods have CAMs."""
    family = _family(model)
    name = getattr(model, "name", type(model).__name__)
    support = _support(family)
    if support is None:
        supported = "; ".join(f"{f.name} ({', '.join(f.cam_methods)})" for f in families() if f.cam)
        entry = [f for f in families() if f.name == family]
        reason = (entry[0].no_cam_reason if entry else "") or f"{family} models have no detector CAM"
        raise ValueError(f"{name}: {reason}. Detector CAMs exist for {supported}.")
    if method not in support.methods:
        raise ValueError(f"{name} ({family}) supports {', '.join(support.methods)}; got {method!r}")
    return support


def _resolve(model: LoadedModel | Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Complete, checked predict settings, from the registry entry (or the family's settings for an
    adapter built outside the registry)."""
    if isinstance(model, LoadedModel):
        return model.info.resolve(settings)
    try:
        info = get_model_info(model.name)
    except ValueError:
        family = _family(model)
        family_settings = next((f.settings for f in families() if f.name == family), ())
        info = ModelInfo(model.name, family, "", None, False, lambda path, device: model, family_settings)
    return info.resolve(settings)


_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _adapter_lock(adapter: Any) -> threading.Lock:
    """One lock per adapter object (what ``st.cache_resource`` shares), gone with it."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(adapter, threading.Lock())


@contextmanager
def _state_kept(net: Any) -> Iterator[None]:
    """Put back every module's train/eval flag and every weight's ``requires_grad`` (BaseCAM calls
    ``eval()``); meanwhile no weight requires grad, so backward fills no ``.grad`` on a shared model
    (~170 MB for an R-CNN) and computes only what the CAM needs."""
    training = [(m, m.training) for m in net.modules()]
    grads = [(p, p.requires_grad) for p in net.parameters()]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        yield
    finally:
        for m, flag in training:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)


@contextmanager
def _hooked(cam_class: type, net: Any, layer: Any, reshape: Any = None) -> Iterator[Any]:
    """A pytorch-grad-cam CAM on ``layer``, its hooks released on the way out.

    Not ``with cam_class(...)`` directly: BaseCAM.__exit__ swallows an IndexError (prints it and
    carries on), which would turn a bug into a missing result."""
    cam = cam_class(net, [layer], reshape_transform=reshape)
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()
        cam.outputs = None  # Grad-CAM's retained autograd graph


@contextmanager
def _captured(module: Any, *, inputs: bool = True) -> Iterator[list]:
    """The last input (or output) of ``module`` while the block runs: what ``predict`` fed it."""
    seen: list = []

    def keep(_module: Any, args: Any, output: Any = None) -> None:
        seen[:] = [args[0] if inputs else output]

    handle = module.register_forward_pre_hook(keep) if inputs else module.register_forward_hook(keep)
    try:
        yield seen
    finally:
        handle.remove()


def _layer(net: Any, name: str, choices: dict[str, str]) -> Any:
    try:
        return net.get_submodule(name)
    except AttributeError:
        raise ValueError(f"no layer {name!r} in this network; for example: {', '.join(choices)}") from None


def _check_detection(detection: int | None, count: int) -> None:
    if detection is None:
        return
    if isinstance(detection, bool) or not isinstance(detection, int | np.integer) or not 0 <= detection < count:
        have = f"{count} detections (0 to {count - 1})" if count else "no detections at these settings"
        raise ValueError(f"detection {detection!r} does not exist: this image has {have}")


# pytorch-grad-cam's Eigen-CAM takes a full SVD: a positions x positions matrix, 64 MB at this size (YOLO's
# P3 on a 512 px image), 1 GB at 4x that and 6 GB for an R-CNN's P2; finer maps are refused, not swapped.
EIGEN_MAX_POSITIONS = 64 * 64


def _eigen_activations(reshape: Any = None) -> Any:
    """The reshape_transform for Eigen-CAM: the library's (if any), float32 (numpy's SVD has no fp16,
    which YOLO runs on GPUs), and a clear error before an SVD too big for memory."""

    def activations(a: Any) -> Any:
        a = (reshape(a) if reshape else a).float()
        if a.shape[-2] * a.shape[-1] > EIGEN_MAX_POSITIONS:
            raise ValueError(f"Eigen-CAM on this layer needs an SVD over {a.shape[-2]} x {a.shape[-1]} positions (more "
                             f"than {EIGEN_MAX_POSITIONS}): choose a coarser layer or a smaller image")
        return a

    return activations


def _normalised(cam: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] as pytorch-grad-cam does (its scale_cam_image), after the padding is cut off."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return np.clip(scale_cam_image(cam[None])[0], 0.0, 1.0).astype(np.float32)


_EIGEN_NOTE = ("Eigen-CAM needs no target: the map is the main component of the layer's activations, the same "
               "for every detection; the chosen one is only highlighted. Grad-CAM (R-CNN) explains one box.")


# --- YOLO ------------------------------------------------------------------------------------------


def _yolo_default_layer(net: Any) -> str:
    return f"model.{len(net.model) - 2}"  # the last layer before Detect/Segment: P5, the widest context


def _yolo_cam(adapter: YoloModel, image: CellImage, settings: dict[str, Any], method: str, detection: int | None,
              layer: str | None) -> DetectorCam:
    import torch
    from ultralytics.utils import ops

    from models.explain import cam_methods

    EigenCAM = cam_methods()["eigencam"]  # noqa: N806  (oriented: see models.explain)

    if adapter.ultralytics.predictor is None:  # ultralytics builds its predictor (and fused network) on first use
        adapter.predict(image, **settings)
    backend = adapter.ultralytics.predictor.model
    net = getattr(backend, "backend", backend).model  # the fused network predict runs, not the unfused copy
    with _captured(net) as seen:
        instances = adapter.predict(image, **settings)
    _check_detection(detection, instances.count)
    name = layer or _yolo_default_layer(net)
    target = _layer(net, name, yolo_cam_layers(adapter))
    t0 = time.perf_counter()
    x = seen[-1].clone()  # clone outside inference mode: a normal tensor
    # Eigen-CAM needs no gradients
    with _state_kept(net), torch.inference_mode(False), torch.no_grad(), \
            _hooked(EigenCAM, net, target, _eigen_activations()) as cam:
        grey = cam(x, targets=[])  # targets=[] not None: BaseCAM would argmax the tuple YOLO returns
    # the tensor was letterboxed: cut the padding off and scale back, as ultralytics does for masks
    full = ops.scale_masks(torch.from_numpy(grey)[None], instances.labels.shape)[0, 0].numpy()
    notes = (_EIGEN_NOTE,) if detection is not None else ()
    return DetectorCam(_normalised(full), instances, detection, "eigencam", name, time.perf_counter() - t0, False,
                       notes)


# --- Faster / Mask R-CNN ---------------------------------------------------------------------------


def _rcnn_cam(adapter: RcnnModel, image: CellImage, settings: dict[str, Any], method: str, detection: int | None,
              layer: str | None) -> DetectorCam:
    import torch
    from pytorch_grad_cam import GradCAM

    from models.explain import cam_methods

    EigenCAM = cam_methods()["eigencam"]  # noqa: N806  (the class, as the package names it)
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    net = adapter.network
    with _captured(net) as fed, _captured(net.transform, inputs=False) as transformed:
        instances = adapter.predict(image, **settings)
    _check_detection(detection, instances.count)
    h, w = instances.labels.shape
    image_list = transformed[-1][0]
    resized = tuple(image_list.image_sizes[0])  # (h, w) after the R-CNN's own resize
    padded = tuple(image_list.tensors.shape[-2:])  # ... padded to a multiple of 32 at the bottom/right
    chosen = instances.boxes if detection is None else instances.boxes[detection : detection + 1]
    t0 = time.perf_counter()
    if method == "gradcam" and not len(chosen):
        name = layer or _FPN_LEVEL.format(0)
        return DetectorCam(np.zeros((h, w), np.float32), instances, None, method, name, time.perf_counter() - t0,
                           True, ("no detections at these settings: Grad-CAM has no box to explain (lower the score "
                                  "threshold, or use Eigen-CAM, which needs none)",))
    if method == "eigencam":
        name = layer or RCNN_EIGEN_LAYER
        # the backbone and its FPN return a dict of levels: the library's transform merges them
        reshape = _eigen_activations(fasterrcnn_reshape_transform if name in ("backbone", "backbone.fpn") else None)
        if name == "backbone.body":
            raise ValueError("'backbone.body' returns a dict of ResNet stages without the FPN's pool level; "
                             "choose 'backbone' (every FPN level) or one stage, e.g. 'backbone.body.layer4'")
    else:
        name = _rcnn_grad_layer(net, chosen, (h, w), resized) if layer in (None, "auto") else layer
        reshape = None
        if name in ("backbone", "backbone.fpn", "backbone.body"):
            raise ValueError(f"Grad-CAM needs a layer with one tensor out; {name!r} returns a dict of levels. "
                             f"Choose one of {', '.join(rcnn_cam_layers(adapter, method))}")
    target_layer = _layer(net, name, rcnn_cam_layers(adapter, method))
    x = fed[-1][0].clone()[None]  # the (3, H, W) tensor predict fed the network, batched
    target = _CellBoxScoreTarget(chosen)
    # Eigen-CAM needs no output: on a backbone layer, skip the RPN and box head (half the CAM's time)
    run = _features_class()(net) if method == "eigencam" and name.startswith("backbone") else net
    with _state_kept(net), torch.inference_mode(False), torch.set_grad_enabled(method == "gradcam"):
        if method == "gradcam":
            x.requires_grad_(True)  # weights are frozen meanwhile: the graph starts at the input
        with _hooked(GradCAM if method == "gradcam" else EigenCAM, run, target_layer, reshape) as cam:
            grey = cam(x, targets=[target] if method == "gradcam" else [])[0]
    # the features covered the padded image: keep the part over the picture, back to its size
    keep_h, keep_w = round(h * resized[0] / padded[0]), round(w * resized[1] / padded[1])
    if (keep_h, keep_w) != (h, w):
        grey = cv2.resize(grey[:keep_h, :keep_w], (w, h), interpolation=cv2.INTER_LINEAR)
    notes = []
    if method == "eigencam" and detection is not None:
        notes.append(_EIGEN_NOTE)
    if method == "eigencam" and not instances.count:
        notes.append("no detections at these settings: the map shows what the features respond to anyway")
    if method == "gradcam" and target.unmatched:
        notes.append(f"{target.unmatched} of {len(chosen)} boxes overlap no output box by IoU > 0.5 "
                     "and add nothing to the map")
    return DetectorCam(_normalised(grey), instances, detection, method, name, time.perf_counter() - t0,
                       method == "gradcam", tuple(notes))


@cache
def _features_class() -> type:
    """An R-CNN up to its FPN features (its own resize and normalisation, then the backbone), sharing
    the R-CNN's modules: a class made on first use, as torch is imported only then."""
    import torch

    class RcnnFeatures(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.transform, self.backbone = net.transform, net.backbone

        def forward(self, x: Any) -> Any:
            return self.backbone(self.transform(list(x))[0].tensors)

    return RcnnFeatures


def _rcnn_grad_layer(net: Any, boxes: np.ndarray, shape: tuple[int, int], resized: tuple[int, int]) -> str:
    """The FPN level torchvision's RoI pooler reads most of ``boxes`` from (P2 for boxes under ~112
    px after resizing, i.e. most cells): box scores have gradients only through that level."""
    import torch

    mapper = net.roi_heads.box_roi_pool.map_levels  # set up by the first forward (predict ran one)
    if mapper is None:
        return _FPN_LEVEL.format(0)
    scale = np.array([resized[1] / shape[1], resized[0] / shape[0]] * 2, np.float32)
    levels = mapper([torch.as_tensor(boxes * scale)]).numpy()
    return _FPN_LEVEL.format(int(np.bincount(levels).argmax()))


class _CellBoxScoreTarget:
    """pytorch-grad-cam's box-score target (IoU + score of the output matching each box),
    class-agnostic: every class counts as a cell and the adapters keep no labels, so each box takes
    the label of the output it overlaps most before the library scores it."""

    def __init__(self, boxes: np.ndarray, iou_threshold: float = 0.5) -> None:
        from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

        self.target = FasterRCNNBoxScoreTarget([], np.asarray(boxes, np.float32), iou_threshold)
        self.unmatched = 0

    def __call__(self, model_outputs: dict) -> Any:
        import torch
        from torchvision.ops import box_iou

        target, out = self.target, model_outputs["boxes"]
        if len(out) and len(target.bounding_boxes):
            ious = box_iou(torch.as_tensor(target.bounding_boxes, dtype=out.dtype, device=out.device), out)
            target.labels = model_outputs["labels"][ious.argmax(1)]
            self.unmatched = int((ious.amax(1) <= target.iou_threshold).sum())
        else:
            target.labels, self.unmatched = [], len(target.bounding_boxes)
        # + 0 * scores: connected to the graph even when nothing matches (a zero map, not a backward error)
        return target(model_outputs) + 0.0 * model_outputs["scores"].sum()


def highlighted(result: DetectorCam, detection: int) -> DetectorCam:
    """An untargeted CAM (Eigen-CAM) with ``detection`` chosen: the same map, that box
    highlighted; no second pass. A targeted CAM depends on its detection: compute it anew."""
    if result.targeted:
        raise ValueError(f"a {result.method} map depends on its detection: compute it for detection {detection}")
    _check_detection(detection, result.instances.count)
    return replace(result, detection=detection, notes=(_EIGEN_NOTE,))


# What the YOLO and R-CNN families declare (models/yolo_training.py, models/rcnn_training.py).
# YOLO has no Grad-CAM here: its fused, NMS-decoded head gives no per-box score to differentiate
# without re-implementing its decoding.
YOLO_CAM = DetectorCamSupport(("eigencam",), yolo_cam_layers, _yolo_cam)
RCNN_CAM = DetectorCamSupport(("eigencam", "gradcam"), rcnn_cam_layers, _rcnn_cam)
