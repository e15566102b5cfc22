"""Models trained here, as files: which there are (``trained:<family>:<name>`` in the weights folder),
who trained them, and deleting one. For the Train page's *Trained models* and ``models delete``.

A model trained here is its checkpoint in the weights folder and the JSON beside it
(:mod:`models.checkpoint_file`); the registry lists it as long as the checkpoint is there. Its
owner, when the server has sign-in on, is written into that JSON once its training ends
(:func:`record_owner`). Deleting removes the checkpoint first (the registry stops listing it at
once), then the JSON. Published weights and files a user placed by hand (``user:<name>``) are not
trained models and are never deleted here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from models.checkpoint_file import metadata_path, read_metadata, write_json
from models.registry import TRAINED_PREFIX, list_models, trainer_of
from models.weights import weights_dir


@dataclass(frozen=True)
class TrainedModel:
    """One model trained here, as its files and the JSON beside them say."""

    name: str  # trained:<family>:<stem>
    family: str
    checkpoint: Path
    created: str  # the training's date (ISO), "" when the JSON does not say
    owner: str | None  # who trained it, recorded only with sign-in on
    f1: float | None  # the kept weights' validation F1
    size_bytes: int


def _inside_weights_folder(path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(weights_dir().resolve())
    except OSError:
        return False


def trained_models() -> list[TrainedModel]:
    """Every model trained here that lies in the weights folder, newest first."""
    found = []
    for info in list_models():
        path = info.own_checkpoint
        if not info.name.startswith(f"{TRAINED_PREFIX}:") or path is None or not path.is_file() \
                or not _inside_weights_folder(path):
            continue
        try:
            meta = read_metadata(path)
        except (OSError, ValueError):
            meta = {}
        f1 = (meta.get("validation") or {}).get("f1")
        found.append(TrainedModel(info.name, info.family, Path(path), str(meta.get("date", "")),
                                  meta.get("owner") or None, None if f1 is None else float(f1), path.stat().st_size))
    return sorted(found, key=lambda m: (m.created, m.name), reverse=True)


def trained_model(name: str) -> TrainedModel:
    """The model trained here called ``name``; ValueError listing those there are."""
    every = trained_models()
    for model in every:
        if model.name == name:
            return model
    known = ", ".join(m.name for m in every) or "none"
    raise ValueError(f"no model trained here is named {name!r} in {weights_dir()} (trained models: {known})")


def record_owner(family: str, stem: str, owner: str) -> bool:
    """Write ``owner`` into the JSON beside the model ``stem`` of ``family`` just trained; False when
    there is no such model (a training that failed before its first checkpoint)."""
    try:
        path = trainer_of(family)[1].checkpoint_path(stem)
        if not path.is_file() or not metadata_path(path).is_file():
            return False
        write_json(metadata_path(path), {**read_metadata(path), "owner": owner})
    except (OSError, ValueError):  # a name no file can have, an unreadable JSON: the training's own error stands
        return False
    return True


def delete_trained_model(name: str, *, busy: Collection[str] = ()) -> TrainedModel:
    """Delete the model trained here called ``name`` (its checkpoint, then the JSON beside it).
    ValueError when there is none, or when ``busy`` (the models trainings are writing) holds it."""
    model = trained_model(name)
    if name in busy:
        raise ValueError(f"{name} is being trained now: a training writes its checkpoint until it ends. Stop the "
                         "training or wait for it, then delete the model.")
    model.checkpoint.unlink()  # first: the registry stops listing the model at once
    metadata_path(model.checkpoint).unlink(missing_ok=True)
    return model
