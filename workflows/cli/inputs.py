"""What the commands read and check before any work: one image or many (files, folders, zips,
with batches from ``--batch-from``), a recipe file, a model's settings, and the output paths, so
a misspelt argument fails in a second with one line instead of after the images are segmented."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.data.images import CellImage
    from core.segmentation.recipe import Recipe

ROLE_FOLDERS = {"image", "images", "img", "imgs", "mask", "masks", "label", "labels", "gt"}


def one_image(path: str, plane: int | None) -> CellImage:
    """The one image in the file at ``path`` (a file that holds several, or none, is refused)."""
    from core.io.load import load_paths

    report = load_paths([path], plane=plane)
    if report.problems:
        raise ValueError(str(report.problems[0]))
    if len(report.images) != 1:
        raise ValueError(f"{path}: expected one image, found {len(report.images)}")
    return report.images[0]


def load_recipe(path: str | None) -> Recipe:
    """The recipe in the JSON file at ``path``, checked (the built-in one without a path)."""
    from pathlib import Path

    from core.segmentation.recipe import DEFAULT_RECIPE, Recipe

    if path is None:
        return DEFAULT_RECIPE
    try:
        return Recipe.from_json(Path(path).read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def model_settings(name: str, recipe: Recipe, tile: int) -> dict[str, Any]:
    """Every setting ``predict`` gets (the recipe where the model takes one, else the registry's
    defaults, written out so the record is what ran), plus the tiling."""
    from models.registry import get_model_info
    from models.tiling import DEFAULT_OVERLAP, TILING_SETTINGS

    info = get_model_info(name)
    tiling = {s.name: s for s in TILING_SETTINGS}
    return {**info.resolve({"recipe": recipe} if "recipe" in info.params else {}), "tile": tiling["tile"].check(tile),
            "overlap": DEFAULT_OVERLAP}


def load_images(inputs: Sequence[str], batch_from: str | None, plane: int | None, *, masks: str | None = None,
                problems: list | None = None) -> list:
    """Images of every input (files or folders), names unique, batches as ``batch_from`` says:
    ``folder`` (each image's parent folder), ``regex:PATTERN`` or ``csv:FILE``; by default the
    loader's rules (folders inside a folder or zip, a batches.csv among the files). With ``masks``
    (a folder), ground truth from there, matched to the images by name as the Data page matches
    them. Files that cannot be read are added to ``problems``, or said on stderr without it."""
    from pathlib import Path, PurePosixPath

    from core.data.plates import apply_batch_table, batches_from_pattern, parse_batch_table
    from core.io.load import load_images_and_masks, load_paths

    check_batch_from(batch_from)
    images, found = [], []
    for given in inputs:
        path = Path(given)
        report = load_paths([path], plane=plane) if masks is None else load_images_and_masks(path, masks, plane=plane)
        found += report.problems
        for img in report.images:
            folders = PurePosixPath(img.source).parent.parts if path.is_dir() else path.resolve().parent.parts
            kept = [f for f in folders if f.lower() not in ROLE_FOLDERS]  # images/, masks/ say what, not which batch
            parent = kept[-1] if kept else path.name
            if batch_from == "folder":
                img = img.with_(batch=parent)
            images.append((img, parent))
    if problems is None:
        for problem in found:
            print(f"error: {problem}", file=sys.stderr)
    else:
        problems += found
    seen: dict[str, int] = {}
    for img, _ in images:
        seen[img.name] = seen.get(img.name, 0) + 1
    # The same file name under two folders: the folder keeps them apart.
    images = [img.with_(name=f"{parent}/{img.name}") if seen[img.name] > 1 else img for img, parent in images]
    if batch_from and batch_from.startswith("regex:"):
        found = batches_from_pattern([img.name for img in images], batch_from[6:])
        images = [img.with_(batch=found.get(img.name, img.batch)) for img in images]
    elif batch_from and batch_from.startswith("csv:"):
        table = Path(batch_from[4:])
        sep = "\t" if table.suffix.lower() == ".tsv" else ","
        images, unmatched = apply_batch_table(images, parse_batch_table(table.read_bytes(), sep=sep))
        if unmatched:
            print(f"note: batch table rows matching no image: {', '.join(unmatched[:10])}", file=sys.stderr)
    if not images:
        raise ValueError("no images could be read from " + " ".join(inputs))
    return images


def check_batch_from(batch_from: str | None) -> None:
    """``--batch-from``: folder, regex:PATTERN (a valid pattern with a group 'batch') or csv:FILE (a
    readable table); checked by the functions that later apply it, before any image is read."""
    from pathlib import Path

    from core.data.plates import batches_from_pattern, parse_batch_table

    if batch_from in (None, "folder"):
        return
    if batch_from.startswith("regex:"):
        try:
            batches_from_pattern([], batch_from[6:])
        except ValueError as exc:
            raise ValueError(f"--batch-from {batch_from}: {exc}") from exc
    elif batch_from.startswith("csv:"):
        table = Path(batch_from[4:])
        if not table.is_file():
            raise ValueError(f"--batch-from {batch_from}: no such file {table}")
        try:
            parse_batch_table(table.read_bytes(), sep="\t" if table.suffix.lower() == ".tsv" else ",")
        except ValueError as exc:
            raise ValueError(f"--batch-from {batch_from}: {exc}") from exc
    else:
        raise ValueError(f"--batch-from must be folder, regex:PATTERN or csv:FILE; got {batch_from!r}")


def check_output_file(path: str, flag: str) -> None:
    """An output file that can be written once the work is done: not a folder, in a folder that exists."""
    from pathlib import Path

    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give the file's name")
    if not target.parent.is_dir():
        raise ValueError(f"{flag} {path}: there is no folder {target.parent}")


def check_output_folder(path: str) -> None:
    """``--out``: a folder that exists or can be made (it is made once the work is done)."""
    from pathlib import Path

    target = Path(path).expanduser()
    existing = next(folder for folder in (target, *target.parents) if folder.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"--out {path}: {existing} cannot be written to")


def check_inputs(inputs: Sequence[str]) -> None:
    """Every input file or folder exists (the first missing one is named)."""
    from pathlib import Path

    missing = [given for given in inputs if not Path(given).exists()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file or folder")



def fetch_weights(names: Sequence[str]) -> None:
    """Every weights file ``names`` need and lack, fetched before any work through the weights
    manager: what the file is (size, licence, training data, checksum) is said before the download,
    then a progress bar. Offline, :class:`models.weights.WeightsUnavailable` names the file and the
    folder to put it in (the command's one line)."""
    from models.registry import get_model_info
    from models.weights import describe, local_path, resolve_weights
    from workflows.cli.progress import ProgressPrinter

    specs = {spec.filename: spec for name in names if (spec := get_model_info(name).weights) is not None}
    for spec in specs.values():
        if local_path(spec) is not None:
            continue
        print(f"downloading {describe(spec)} from {spec.url}", file=sys.stderr)
        printer = ProgressPrinter(f"downloading {spec.filename}")

        def progress(done: int, total: int | None, printer=printer) -> None:
            printer(done / total if total else 0.0, f"of {total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB")

        resolve_weights(spec, progress=progress)
        printer.finish()
