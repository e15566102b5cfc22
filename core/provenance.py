"""What produced an export: the recipe, each model's settings and weights, the device, and the
CellScope and package versions. One dict, written as ``provenance.json`` into every zip and
summarised in columns of every CSV (:func:`with_provenance`).

Importing this module imports neither torch nor Streamlit: package versions come from installed
metadata, and the model registry is asked only when models are named.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import __version__

if TYPE_CHECKING:
    import pandas as pd

    from core.recipe import Recipe

# Distributions whose versions decide the numbers CellScope writes (as named on PyPI).
PACKAGES = (
    "numpy", "opencv-python-headless", "scikit-image", "scipy", "torch", "torchvision",
    "ultralytics-opencv-headless", "segment-anything", "tifffile",
)
PROVENANCE_FILE = "provenance.json"
PROVENANCE_COLUMNS = ("cellscope", "device", "provenance_id")  # always added; "weights", "settings" when known

_ROOT = Path(__file__).resolve().parents[1]


@cache
def git_commit() -> str | None:
    """The checkout's short commit, with ``-dirty`` when tracked files changed; None when this code
    is not run from its own git clone or git is missing. Asked once per process."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        # an installed copy inside some other repository must not report that repository's commit
        if Path(git("rev-parse", "--show-toplevel")).resolve() != _ROOT:
            return None
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):  # no git, not a clone, no commit yet, refused
        return None
    return f"{commit}-dirty" if dirty else commit


def cellscope_version(prov: Mapping[str, Any]) -> str:
    """``0.4.0``, or ``0.4.0 (git 1a2b3c4-dirty)`` when ``prov`` was made in a clone."""
    version, commit = prov["cellscope"]["version"], prov["cellscope"]["commit"]
    return version if commit is None else f"{version} (git {commit})"


@cache
def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES`, None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _jsonable(value: Any) -> Any:
    """Settings as JSON values: a Recipe as its dict, numpy scalars as numbers, tuples as lists."""
    from core.recipe import Recipe

    if isinstance(value, Recipe):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"setting {value!r} ({type(value).__name__}) has no JSON form")


def _model_entry(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    from models.registry import get_model_info  # registers the model families; none imports torch

    info = get_model_info(name)
    spec = info.weights
    weights = None if spec is None else {"file": spec.filename, "sha256": spec.sha256, "source url": spec.url,
                                         "source": spec.source}
    return {"family": info.family, "settings": _jsonable(settings), "weights": weights}


def _device_description(device: str | None) -> str | None:
    """The GPU's model and memory; None on the CPU (whose results need no torch to be asked)."""
    if device is None or device == "cpu":
        return None
    from models.device import available_devices  # a model ran on this GPU, so torch is loaded already

    found = {d.name: d.description for d in available_devices()}
    return found.get(device) or found.get(f"{device}:0")


def provenance(*, recipe: Recipe | None = None, models: Mapping[str, Mapping[str, Any]] | None = None,
               device: str | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What produced a result, as a JSON-ready dict.

    ``models`` maps each model name to the settings its ``predict`` ran with (plus tiling), as
    :func:`components.model_panel.params_for` builds them; a Recipe among them is stored as its
    dict. Family and weights file come from the model registry; an unknown name raises ValueError.
    ``extra`` is stored as given (image names, ground truth, ...).
    """
    return {
        "cellscope": {"version": __version__, "commit": git_commit()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device,
        "device description": _device_description(device),
        "recipe": None if recipe is None else recipe.to_dict(),
        "models": {name: _model_entry(name, settings) for name, settings in (models or {}).items()},
        "extra": None if extra is None else _jsonable(extra),
    }


def provenance_json(prov: Mapping[str, Any]) -> str:
    """The text of ``provenance.json``: indented, keys sorted."""
    return json.dumps(prov, indent=2, sort_keys=True)


def provenance_id(prov: Mapping[str, Any]) -> str:
    """"p" and 11 hex characters naming everything in ``prov`` but its creation time: the same
    settings, versions and device give the same id, so a CSV row can point at its ``provenance.json``.
    The letter first keeps it text in spreadsheets and CSV readers: a bare digest such as
    ``5306392e3405`` is read as a number (infinity), ``012345678901`` loses its zero."""
    timeless = {k: v for k, v in prov.items() if k != "created"}
    return "p" + hashlib.sha256(provenance_json(timeless).encode()).hexdigest()[:11]


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def with_provenance(df: pd.DataFrame, prov: Mapping[str, Any]) -> pd.DataFrame:
    """``df`` with provenance columns appended: ``cellscope`` (version and commit), ``device`` (kept
    as it is where the table has one: it is what each row actually ran on, e.g. the classical model
    always on the CPU) and ``provenance_id``. A table with a ``model`` column also gets ``weights``
    (the weights file, or "none") and ``settings`` (that model's settings as compact JSON); a table
    without one gets ``settings`` = ``{"recipe": ...}`` when ``prov`` has a recipe.

    Columns rather than ``#`` header lines: spreadsheets and ``pandas.read_csv`` read them without
    options, and rows keep their provenance when tables are filtered or concatenated. The cost is
    the same text on every row (zips compress it away).
    """
    extra: dict[str, Any] = {"cellscope": cellscope_version(prov)}
    if "device" not in df.columns:
        extra["device"] = prov["device"]
    extra["provenance_id"] = provenance_id(prov)
    if "model" in df.columns:
        entries = prov["models"]
        missing = sorted(set(df["model"]) - set(entries))
        if missing:
            raise ValueError(f"provenance has no settings for model(s) {', '.join(missing)}")
        extra["weights"] = df["model"].map(lambda m: entries[m]["weights"]["file"] if entries[m]["weights"] else "none")
        extra["settings"] = df["model"].map(lambda m: _compact(entries[m]["settings"]))
    elif prov["recipe"] is not None:
        extra["settings"] = _compact({"recipe": prov["recipe"]})
    return df.assign(**extra)
