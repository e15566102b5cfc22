"""One registry of segmentation models: what exists, whether it can run here, and how to load it.

Like torchvision's model builders: ``@register_model`` fills the registry, ``list_models()``
and ``load_model(name, ...)`` sit on top, and weights are described as data
(:class:`models.weights.WeightsSpec`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from core.images import CellImage
from models.result import Instances
from models.weights import WeightsSpec, local_path, resolve_weights, weights_dir


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
    params: tuple[str, ...] = ()  # keyword parameters its predict() uses (results are cached on them)


_REGISTRY: dict[str, ModelInfo] = {}
# Functions that list models found at call time (weights files a user placed in the weights folder).
_PROVIDERS: list[Callable[[], list[ModelInfo]]] = []


def register_model(info: ModelInfo) -> ModelInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def register_provider(provider: Callable[[], list[ModelInfo]]) -> None:
    """Add models discovered when asked, e.g. from files in the weights folder."""
    _PROVIDERS.append(provider)


def list_models() -> list[ModelInfo]:
    found = {info.name: info for provider in _PROVIDERS for info in provider()}
    return list(_REGISTRY.values()) + [info for name, info in found.items() if name not in _REGISTRY]


def get_model_info(name: str) -> ModelInfo:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for info in list_models():
        if info.name == name:
            return info
    known = ", ".join(info.name for info in list_models())
    raise ValueError(f"unknown model {name!r}; available: {known}")


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
               progress: Callable[[int, int | None], None] | None = None, shared: bool = False) -> SegmentationModel:
    """A ready model on ``device``; raises :class:`WeightsUnavailable` with what to do when offline.

    ``shared=True`` wraps it for use by several sessions at once (see :class:`SharedModel`).
    """
    info = get_model_info(name)
    path = resolve_weights(info.weights, allow_download=allow_download, progress=progress) if info.weights else None
    model = info.builder(path, device)
    return SharedModel(model) if shared else model


class SharedModel:
    """One loaded model used by many sessions (Streamlit's ``st.cache_resource``): predictions run
    one at a time, because ultralytics predictors and torch modules keep state between calls and
    one GPU is better used by one model run at a time."""

    def __init__(self, model: SegmentationModel) -> None:
        self.model, self.name, self.device = model, model.name, model.device
        self._lock = threading.Lock()

    def predict(self, image: CellImage, **params: Any) -> Instances:
        with self._lock:
            return self.model.predict(image, **params)
