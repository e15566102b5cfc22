"""One registry of model families and their models: what exists, for which task (segment, embed,
classify), with which settings, whether it can run here, how to load it, how to train it and
how to explain it.

Like torchvision's model builders: ``register_family`` / ``register_model`` fill the registry,
``list_models()`` and ``load_model(name, ...)`` sit on top, and weights and settings are
described as data (:class:`models.weights.WeightsSpec`, :class:`Setting`). A family's
:class:`Family` entry carries everything the app and the CLI ask about it (label, display order,
its trainer as real function references, its detector CAM, whether it is slow on a CPU), so
adding a family is one module that registers it and one import line in ``models/__init__.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.data.images import CellImage
from core.data.instances import Instances
from core.schema import Field as Setting  # a model setting is a settings field like any other
from models.weights import WeightsSpec, local_path, offline_advice, resolve_weights, weights_dir

if TYPE_CHECKING:
    from core.training.data import SeenImages

TASKS = ("segment", "embed", "classify")
TRAINED_PREFIX = "trained"  # a model trained here is "trained:<family>:<name>"; weights placed by hand are not


class SegmentationModel(Protocol):
    name: str
    device: str

    def predict(self, image: CellImage, **params: Any) -> Instances: ...


@dataclass(frozen=True)
class Trainer:
    """How a family trains on the user's cells, as real function references (imported with the
    family's module, which imports torch or ultralytics only inside these functions).

    ``train(train, val, *, training, out, device, split, stop, progress, on_epoch[, threads])``
    returns a result with ``path``, ``best``, ``history``, ``metadata`` and ``stopped``;
    ``checkpoint_path(stem)`` is where the model named ``stem`` is saved in the weights folder;
    ``model_info(path, name)`` describes a checkpoint anywhere as a registry entry.
    """

    settings_class: type  # the training settings (a TrainingSettings dataclass: from_dict / to_dict)
    train: Callable[..., Any]
    checkpoint_path: Callable[[str], Path]
    model_info: Callable[..., ModelInfo] | None = None  # (path, name) -> its entry, for "<file_prefix>:PATH"
    file_prefix: str = ""  # "<file_prefix>:PATH" names a checkpoint anywhere ("": none)
    aliases: tuple[tuple[str, str], ...] = ()  # common setting names -> this family's (YOLO's tile is imgsz)
    order: int = 50  # where the Train page and the CLI list it (the quickest to train on a CPU first)
    threads: bool = False  # train() takes threads= (the CLI gives it every core; the app one)
    # Seconds a training takes at most: (n_images, *, device, training, image_side, val_fraction) -> float.
    estimate_seconds: Callable[..., float] | None = None
    start_note: Callable[[], str] | None = None  # what it starts from (said beside the CPU estimate)

    def settings(self, given: Mapping[str, Any]) -> Any:
        """The family's training settings from ``given`` (common names translated); an unknown one
        is a ValueError that lists the known ones."""
        aliases = dict(self.aliases)
        return self.settings_class.from_dict({aliases.get(k, k): v for k, v in given.items()})

    def default_settings(self) -> dict[str, Any]:
        """Its training settings with their defaults (the settings class's: one definition)."""
        return self.settings_class().to_dict()


@dataclass(frozen=True)
class DetectorCamSupport:
    """A family's class activation maps over a whole image (see :mod:`models.detector_cam`).

    ``layers(adapter, method)``: layer choices, name -> what it is, the default first;
    ``compute(adapter, image, settings, method, detection, layer)``: a ``DetectorCam``.
    """

    methods: tuple[str, ...]
    layers: Callable[[Any, str], dict[str, str]]
    compute: Callable[..., Any]


@dataclass(frozen=True)
class Family:
    """Everything the app and the CLI need to know about one family of models."""

    name: str  # the one name used everywhere: model entries, the CLI, job records, checkpoint metadata
    label: str  # for people: "Mask R-CNN"
    description: str
    tasks: tuple[str, ...] = ("segment",)
    order: int = 50  # lists show families by this, then by model name (segmenters and embedders alike)
    settings: tuple[Setting, ...] = ()  # its models' predict settings (each model entry lists the ones it takes)
    uses_crops: bool = True  # an embedder that reads cell crops; False: measured on the whole cell (morphology)
    trainer: Trainer | None = None  # None: not trained here
    cam: DetectorCamSupport | None = None  # None: no detector CAM; ``no_cam_reason`` says why
    no_cam_reason: str = ""
    old_prefixes: tuple[str, ...] = ()  # names its trained models had before: "unet:<stem>" finds "trained:unet:<stem>"
    cli_aliases: tuple[str, ...] = ()  # other names `train --model` accepts (the names of earlier versions)

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"{self.name}: tasks must be among {', '.join(TASKS)}; got {self.tasks!r}")
        if ":" in self.name or not self.name:
            raise ValueError(f"a family name is a plain word; got {self.name!r}")

    @property
    def cam_methods(self) -> tuple[str, ...]:
        return self.cam.methods if self.cam else ()

    def trained_name(self, stem: str) -> str:
        """What a model of this family trained here and saved as ``stem`` is called."""
        return trained_name(self.name, stem)


def trained_name(family: str, stem: str) -> str:
    """``trained:<family>:<stem>``: a model trained here (weights a user placed have other names)."""
    return f"{TRAINED_PREFIX}:{family}:{stem}"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # the name of a registered Family
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
    # Writes a file of this model's real architecture with random weights, in the form its builder
    # reads (offline benchmarks and tests measure and run the real compute without a download).
    random_weights: Callable[[Path], None] | None = None

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


_FAMILIES: dict[str, Family] = {}
_REGISTRY: dict[str, ModelInfo] = {}
# Functions that list models found at call time (weights files a user placed in the weights folder).
_PROVIDERS: list[Callable[[], list[ModelInfo]]] = []


def register_family(family: Family) -> Family:
    """Add a family. Its module calls this once, at import (its models may be registered before it:
    the YOLO and R-CNN adapters' modules register the published models, their training modules
    the family)."""
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def families(*, trainable: bool = False) -> list[Family]:
    """Every family in display order, or those trained here in the Train page's order."""
    if trainable:
        return sorted((f for f in _FAMILIES.values() if f.trainer is not None), key=lambda f: (f.trainer.order, f.name))
    return sorted(_FAMILIES.values(), key=lambda f: (f.order, f.name))


def get_family(name: str) -> Family:
    """The family called ``name`` (or one of its CLI aliases); ValueError listing the others."""
    if name in _FAMILIES:
        return _FAMILIES[name]
    for family in _FAMILIES.values():
        if name in family.cli_aliases:
            return family
    raise ValueError(f"unknown family {name!r}; choose one of {', '.join(f.name for f in families())}")


def trainer_of(name: str) -> tuple[Family, Trainer]:
    """The family ``name`` and its trainer; ValueError naming the families that train here."""
    try:
        family = get_family(name)
    except ValueError:
        family = None
    if family is None or family.trainer is None:
        raise ValueError(f"unknown family {name!r} to train; choose one of "
                         f"{', '.join(f.name for f in families(trainable=True))}")
    return family, family.trainer


def family_of(info: ModelInfo) -> Family | None:
    """The family entry of a model (None for a test's ad-hoc family)."""
    return _FAMILIES.get(info.family)


def display_order(info: ModelInfo) -> tuple[int, str]:
    """Sort key for lists of models: the family's order, then the model's name."""
    family = _FAMILIES.get(info.family)
    return (family.order if family else 99, info.name)


def register_model(info: ModelInfo) -> ModelInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    for other in _REGISTRY.values():  # within a family a setting name has one meaning (one widget)
        if other.family == info.family:
            clash = [s.name for s in info.settings for o in other.settings if s.name == o.name and s != o]
            if clash:
                raise ValueError(f"{info.name}: setting {clash[0]!r} differs from {other.name}'s of that name "
                                 f"in family {info.family}")
    _REGISTRY[info.name] = info
    return info


def setting_key(info: ModelInfo, setting: Setting) -> str:
    """The key a page's widget for ``setting`` of model ``info`` has: its name when every family
    that has a setting of that name means the same by it (one widget serves them all), else scoped
    to the family, ``<family>.<name>``: two families may use one name for different things."""
    others = [s for f in _FAMILIES.values() if f.name != info.family for s in f.settings]
    others += [s for m in _REGISTRY.values() if m.family != info.family for s in m.settings]
    if any(s.name == setting.name and s != setting for s in others):
        return f"{info.family}.{setting.name}"
    return setting.name


def register_provider(provider: Callable[[], list[ModelInfo]]) -> None:
    """Add models discovered when asked, e.g. from files in the weights folder."""
    _PROVIDERS.append(provider)


def list_models(task: str | None = None) -> list[ModelInfo]:
    """Every model, or those of one ``task`` (segment, embed, classify)."""
    found = {info.name: info for provider in _PROVIDERS for info in provider()}
    every = list(_REGISTRY.values()) + [info for name, info in found.items() if name not in _REGISTRY]
    return [info for info in every if task is None or info.task == task]


def _model_in_file(name: str) -> ModelInfo | None:
    """The entry for ``<file_prefix>:PATH`` (a family's trainer's, e.g. ``unet:PATH``) when PATH
    looks like a file (a folder in it, or a suffix); ValueError when no such file exists, None for
    a plain name."""
    prefix, sep, where = name.partition(":")
    trainers = {f.trainer.file_prefix: f.trainer for f in _FAMILIES.values()
                if f.trainer and f.trainer.file_prefix and f.trainer.model_info}
    if not sep or prefix not in trainers or not where:
        return None
    path = Path(where).expanduser()
    if not ("/" in where or "\\" in where or path.suffix or path.is_file()):
        return None
    if not path.is_file():
        raise ValueError(f"{name}: no checkpoint file at {path}")
    return trainers[prefix].model_info(path, name)


def trained_model_name(family: str, checkpoint: Path) -> str | None:
    """What the registry calls a checkpoint of ``family``: ``trained:<family>:<stem>`` in the
    weights folder, ``<file_prefix>:PATH`` elsewhere, None where it is not found (a family
    without file names, outside its folder)."""
    fam, trainer = trainer_of(family)
    checkpoint = Path(checkpoint).resolve()
    for stem in {checkpoint.name.split(".")[0], checkpoint.stem}:
        try:
            if trainer.checkpoint_path(stem).resolve() == checkpoint:
                return fam.trained_name(stem)
        except ValueError:
            continue
    return f"{trainer.file_prefix}:{checkpoint}" if trainer.file_prefix else None


def _renamed(name: str) -> str | None:
    """The present name of a trained model called by an earlier version's name (``unet:cells``,
    ``maskrcnn:cells``, ``user:cells`` for a YOLO trained here)."""
    prefix, sep, stem = name.partition(":")
    if not sep or not stem:
        return None
    for family in _FAMILIES.values():
        if prefix in family.old_prefixes:
            return family.trained_name(stem)
    return None


def get_model_info(name: str) -> ModelInfo:
    if name in _REGISTRY:
        return _REGISTRY[name]
    every = list_models()
    for info in every:
        if info.name == name:
            return info
    in_file = _model_in_file(name)
    if in_file is not None:
        return in_file
    renamed = _renamed(name)
    for info in every if renamed else ():
        if info.name == renamed:
            return info
    known = ", ".join(info.name for info in list_models())
    raise ValueError(f"unknown model {name!r}; available: {known}")


def images_seen(name: str) -> SeenImages | None:
    """Which images the model ``name`` was trained and validated on, from the metadata beside its
    checkpoint; None for models not trained on the user's images (published weights, classical)."""
    from core.training.data import SeenImages
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
        """An embedder's features of ``cells`` (a :class:`core.cells.cell_set.CellSet`), with complete settings."""
        settings = self.info.resolve(params)
        with self._lock:
            return self.model.embed(cells, progress=progress, **settings)

    def classify(self, cells: Any, target: Any, *, progress: Callable[[float, str], None] | None = None,
                 **params: Any) -> Any:
        """A classifier trained on ``cells`` (a :class:`core.cells.cell_set.CellSet`) to predict ``target``
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
