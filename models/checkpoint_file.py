"""Checkpoints of models trained here, on disk: plain data, written atomically, read back safely.

Every family trained in CellScope (U-Net, Mask R-CNN, YOLO-seg, the cell autoencoder) saves a
dict of tensors, numbers and strings with ``torch.save`` and reads it with
``torch.load(weights_only=True)``, so opening a checkpoint never runs code from it. A JSON of the
same metadata lies beside each (``cells.unet.pt`` -> ``cells.unet.json``) for people, and for
listing models without importing torch. Writes go to a hidden ``.part`` file first and are moved
into place, so a training killed mid-write leaves the previous checkpoint whole.

torch is imported inside the functions, so importing :mod:`models` stays fast.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.weights import WeightsSpec, weights_dir

if TYPE_CHECKING:
    import torch


def metadata_path(checkpoint: str | Path) -> Path:
    """The JSON beside a checkpoint: ``cells.unet.pt`` -> ``cells.unet.json``, ``cells.pt`` -> ``cells.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".pt") + ".json")


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """``data`` as indented JSON at ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def write_checkpoint(path: str | Path, data: dict[str, Any], sidecar: dict[str, Any] | None = None) -> Path:
    """``torch.save(data)`` at ``path`` atomically, then ``sidecar`` (when given) as the JSON beside it."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    torch.save(data, tmp)
    os.replace(tmp, path)
    if sidecar is not None:
        write_json(metadata_path(path), sidecar)
    return path


def cpu_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict's tensors detached, on the CPU and contiguous: what a checkpoint stores."""
    return {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}


def read_plain(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ValueError naming the file and ``what`` it
    should have been when it is missing, truncated, or a pickle of code."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ValueError(f"{path.name} is not a {what}: it cannot be read as plain weights "
                         f"({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from exc


def check_format(data: Any, path: str | Path, *, fmt: str, version: int, what: str, hint: str) -> dict[str, Any]:
    """``data`` when it is a dict of format ``fmt`` and ``version``; else ValueError naming the file,
    with ``hint`` (how to make a good one) for a file of another kind."""
    name = Path(path).name
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{name} is not a {what} (expected format {fmt!r}; {hint})")
    if data.get("version") != version:
        raise ValueError(f"{name} is a {what} of version {data.get('version')}; this CellScope reads version {version}")
    return data


def read_checkpoint(path: str | Path, *, fmt: str, version: int, what: str, hint: str) -> dict[str, Any]:
    """A checkpoint written by :func:`write_checkpoint`, checked to be ``fmt`` at ``version``."""
    return check_format(read_plain(path, what), path, fmt=fmt, version=version, what=what, hint=hint)


def load_weights(model: torch.nn.Module, state: Any, path: str | Path, device: str, what_fits: str) -> torch.nn.Module:
    """``model`` with ``state`` loaded strictly, moved to ``device``, in eval mode; ValueError naming
    the file when the weights do not fit (``what_fits``: "the recorded architecture", ...)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{Path(path).name}: weights do not fit {what_fits} ({str(exc)[:300]})") from exc
    return model.to(device).eval()


def trained_here_spec(name: str, path: str | Path) -> WeightsSpec:
    """The weights description of a checkpoint trained here, wherever it lies (the weights folder
    joined with an absolute filename is that file, so one spec serves any location)."""
    path = Path(path)
    return WeightsSpec(name=name, filename=str(path), url=None, sha256=None,
                       size_bytes=path.stat().st_size if path.is_file() else None, license="yours (trained here)",
                       trained_on="your images (see the metadata beside the file)", source=str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON beside checkpoint ``path``; OSError or ValueError when it is missing or unreadable."""
    meta = json.loads(metadata_path(path).read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{metadata_path(path).name} is not a metadata object")
    return meta


def named_checkpoint(stem: str, filename: str) -> Path:
    """Where the model named ``stem`` is saved: ``filename`` (e.g. ``f"{stem}.unet.pt"``) in the
    weights folder; ValueError for a name that is not a plain file name."""
    if not stem or any(c in stem for c in "/\\:") or stem.startswith("."):
        raise ValueError(f"a model name must be a plain file name without / \\ or : ; got {stem!r}")
    return weights_dir() / filename


def saved_checkpoints(suffix: str) -> list[Path]:
    """Every ``*<suffix>`` file in the weights folder (hidden ``.part`` files left out), sorted."""
    folder = weights_dir()
    return sorted(p for p in folder.glob(f"*{suffix}") if not p.name.startswith(".")) if folder.is_dir() else []
