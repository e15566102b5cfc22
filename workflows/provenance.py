"""What produced an export: the recipe, each model's settings and weights, the device, and the
CellScope and package versions. One dict, written as ``provenance.json`` into every zip and
summarised in columns of every CSV (:func:`core.analysis.with_provenance`). It asks the model
registry (models/), so it lives on the workflows floor; the dict's text forms are core's.

Importing this module imports neither torch nor Streamlit: package versions come from installed
metadata, and the model registry is asked only when models are named.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import __version__
from core.analysis import jsonable

if TYPE_CHECKING:
    from core.segmentation.recipe import Recipe

# Distributions whose versions decide the numbers CellScope writes (as named on PyPI).
PACKAGES = (
    "numpy", "opencv-python-headless", "scikit-image", "scipy", "torch", "torchvision",
    "ultralytics-opencv-headless", "segment-anything", "tifffile",
)

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


def _model_entry(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    from models.registry import get_model_info  # registers the model families; none imports torch

    info = get_model_info(name)
    spec = info.weights
    weights = None if spec is None else {"file": spec.filename, "sha256": spec.sha256, "source url": spec.url,
                                         "source": spec.source}
    return {"family": info.family, "settings": jsonable(settings), "weights": weights}


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
        "extra": None if extra is None else jsonable(extra),
    }
