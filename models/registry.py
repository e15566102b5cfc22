"""One registry of models: what exists, for which task (segment, embed, classify), with which
settings, whether it can run here, and how to load it.

Like torchvision's model builders: ``register_model`` fills the registry, ``list_models()``
and ``load_model(name, ...)`` sit on top, and weights and settings are described as data
(:class:`models.weights.WeightsSpec`, :class:`Setting`). Adding a family touches its adapter
module and one registration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.images import CellImage
from core.instances import Instances
from core.schema import Field as Setting  # a model setting is a settings field like any other
from models.weights import WeightsSpec, local_path, offline_advice, resolve_weights, weights_dir

if TYPE_CHECKING:
    from core.training_data import SeenImages

TASKS = ("segment", "embed", "classify")


class SegmentationModel(Protocol):
    name: str
    device: str

    def predict(self, image: CellImage, **params: Any) -> Instances: ...


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # classical | yolo | sam | rcnn | autoencoder | cnn
    description: str
    weights: WeightsSpec | None
    box_only: bool
    builder: Callable[..., Any]  # builder(weights_path | None, device) -> model
    settings: tuple[Setting, ...] = ()  # the keyword settings of its predict(), each with its default
    task: str = "segment"  # segment | embed | classify
    inputs: tuple[str, ...] = ()  # other keywords its predict() takes: prompts, not settings (SAM's boxes)
    slow_on_cpu: bool = False  # tens of seconds per image on a CPU: pages wait to be asked before running it
    # The user's own checkpoint (trained here or placed in the weights folder): the metadata beside
    # it says which of the user's images it was trained and validated on. None: published weights.
    own_checkpoint: Path | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {', '.join(TASKS)}; got {self.task!r}")

    @property
    def params(self) -> tuple[str, ...]:
        """The names of its settings (results are cached on their values)."""
        return tuple(s.name for s in self.settings)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every setting's value, the default where ``given`` has none; a name that is not one of
        its settings (a misspelling) is an error, not silently ignored."""
        known = {s.name: s for s in self.settings}
        unknown = [k for k in given if k not in known and k not in self.inputs]
        if unknown:
            raise ValueError(f"{self.name} has no setting {', '.join(map(repr, unknown))}; its settings: "
                             f"{', '.join(known) or 'none'}")
        values = {name: s.check(given[name]) if name in given else s.default for name, s in known.items()}
        return values | {k: v for k, v in given.items() if k in self.inputs}


_REGISTRY: dict[str, ModelInfo] = {}
# Functions that list models found at call time (weights files a user placed in the weights folder).
_PROVIDERS: list[Callable[[], list[ModelInfo]]] = []


_SETTINGS: dict[str, Setting] = {}  # one definition per setting name across all models


def register_model(info: ModelInfo) -> ModelInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    for setting in info.settings:  # the page draws one widget per name: its meaning must be one
        if _SETTINGS.setdefault(setting.name, setting) != setting:
            raise ValueError(f"{info.name}: setting {setting.name!r} differs from another model's of that name")
    _REGISTRY[info.name] = info
    return info


def register_provider(provider: Callable[[], list[ModelInfo]]) -> None:
    """Add models discovered when asked, e.g. from files in the weights folder."""
    _PROVIDERS.append(provider)


def list_models(task: str | None = None) -> list[ModelInfo]:
    """Every model, or those of one ``task`` (segment, embed, classify)."""
    found = {info.name: info for provider in _PROVIDERS for info in provider()}
    every = list(_REGISTRY.values()) + [info for name, info in found.items() if name not in _REGISTRY]
    return [info for info in every if task is None or info.task == task]


# Families whose models can also be named by a file: ``unet:PATH`` is the checkpoint at PATH.
_FILE_FAMILIES: dict[str, Callable[[Path, str], ModelInfo]] = {}


def register_file_family(prefix: str, info_for: Callable[[Path, str], ModelInfo]) -> None:
    """Let ``<prefix>:PATH`` name the model in the file at PATH: ``info_for(path, name)`` describes it."""
    _FILE_FAMILIES[prefix] = info_for


def _model_in_file(name: str) -> ModelInfo | None:
    """The entry for ``<prefix>:PATH`` when PATH looks like a file (a folder in it, or a suffix);
    ValueError when no such file exists, None for a plain name."""
    prefix, sep, where = name.partition(":")
    if not sep or prefix not in _FILE_FAMILIES or not where:
        return None
    path = Path(where).expanduser()
    if not ("/" in where or "\\" in where or path.suffix or path.is_file()):
        return None
    if not path.is_file():
        raise ValueError(f"{name}: no checkpoint file at {path}")
    return _FILE_FAMILIES[prefix](path, name)


def get_model_info(name: str) -> ModelInfo:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for info in list_models():
        if info.name == name:
            return info
    in_file = _model_in_file(name)
    if in_file is not None:
        return in_file
    known = ", ".join(info.name for info in list_models())
    raise ValueError(f"unknown model {name!r}; available: {known}")


def images_seen(name: str) -> SeenImages | None:
    """Which images the model ``name`` was trained and validated on, from the metadata beside its
    checkpoint; None for models not trained on the user's images (published weights, classical)."""
    from core.training_data import SeenImages
    from models.checkpoint_file import metadata_path, read_metadata

    path = get_model_info(name).own_checkpoint
    if path is None:
        return None
    if not metadata_path(path).is_file():
        return SeenImages.from_metadata(name, None, missing=f"no CellScope training record beside {Path(path).name}")
    try:
        meta = read_metadata(path)
    except (OSError, ValueError) as exc:
        return SeenImages.from_metadata(name, None, missing=f"{metadata_path(path).name} cannot be read: {exc}")
    return SeenImages.from_metadata(name, meta)


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
    return False, f"{spec.filename} is not here. {offline_advice(where)}"


def load_model(name: str, device: str = "cpu", *, allow_download: bool = True,
               progress: Callable[[int, int | None], None] | None = None, shared: bool = False) -> LoadedModel:
    """A ready model on ``device``; raises :class:`WeightsUnavailable` with what to do when offline.

    Its ``predict`` takes the model's settings (defaults from the registry; an unknown one is an
    error). ``shared=True``: for use by several sessions at once, one prediction at a time.
    """
    info = get_model_info(name)
    path = resolve_weights(info.weights, allow_download=allow_download, progress=progress) if info.weights else None
    return LoadedModel(info.builder(path, device), info, shared=shared)


class LoadedModel:
    """A built model with its registry entry: every ``predict`` gets complete, checked settings.

    Shared (``st.cache_resource``), predictions run one at a time, because ultralytics
    predictors and torch modules keep state between calls and one GPU is better used by one
    model run at a time; :meth:`locked` runs any other method of the model under the same lock.
    """

    def __init__(self, model: Any, info: ModelInfo, *, shared: bool = False) -> None:
        self.model, self.info, self.name, self.device = model, info, model.name, model.device
        self._lock = threading.Lock() if shared else nullcontext()

    def predict(self, image: CellImage, **params: Any) -> Instances:
        settings = self.info.resolve(params)
        with self._lock:
            return self.model.predict(image, **settings)

    def embed(self, cells: Any, *, progress: Callable[[float, str], None] | None = None, **params: Any) -> Any:
        """An embedder's features of ``cells`` (a :class:`core.cells.CellSet`), with complete settings."""
        settings = self.info.resolve(params)
        with self._lock:
            return self.model.embed(cells, progress=progress, **settings)

    def classify(self, cells: Any, target: Any, *, progress: Callable[[float, str], None] | None = None,
                 **params: Any) -> Any:
        """A classifier trained on ``cells`` (a :class:`core.cells.CellSet`) to predict ``target``
        (one label per cell), with complete settings."""
        settings = self.info.resolve(params)
        with self._lock:
            return self.model.classify(cells, target, progress=progress, **settings)

    def locked(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return getattr(self.model, method)(*args, **kwargs)

    @contextmanager
    def exclusive(self) -> Iterator[Any]:
        """The adapter with this model's lock held, for work of several steps that must not overlap
        a prediction (CAM hooks on its network)."""
        with self._lock:
            yield self.model
