"""Command line: ``python -m core info|example ...`` (also ``workflows.cli:main`` for a ``cellscope`` console
script); every page computation is reachable here, through the same workflows the pages call."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from core.segmentation.recipe import Recipe


def _cmd_info(args: argparse.Namespace) -> int:
    from core.io.load import load_paths

    report = load_paths(args.paths, plane=args.plane)
    for img in report.images:
        h, w, c = img.shape
        channels = ",".join(f"{ch.name}:{ch.role}" for ch in img.channels)
        gt = f"\tgt={img.n_cells_gt} cells" if img.gt is not None else ""
        print(f"{img.name}\t{w}x{h}\t{img.pixels.dtype}\t{c} channels ({channels})\tbatch={img.batch}{gt}")
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)
    if not report.images and not report.problems:
        print("error: no image files found in " + " ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    return 1 if report.problems else 0


def _cmd_example(args: argparse.Namespace) -> int:
    from core.io.example import make_example_dataset
    from core.io.export import write_dataset

    _check_output_folder(args.out)
    t0 = time.perf_counter()
    images = make_example_dataset(seed=args.seed, size=args.size, fields_per_plate=args.fields)
    written = write_dataset(images, args.out)
    n_cells = sum(img.n_cells_gt for img in images)
    print(
        f"wrote {len(images)} images ({n_cells} ground-truth nuclei) and {len(written) - len(images)} more files "
        f"to {args.out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _one_image(path: str, plane: int | None):
    from core.io.load import load_paths

    report = load_paths([path], plane=plane)
    if report.problems:
        raise ValueError(str(report.problems[0]))
    if len(report.images) != 1:
        raise ValueError(f"{path}: expected one image, found {len(report.images)}")
    return report.images[0]


def _recipe(path: str | None):
    from pathlib import Path

    from core.segmentation.recipe import DEFAULT_RECIPE, Recipe

    if path is None:
        return DEFAULT_RECIPE
    try:
        return Recipe.from_json(Path(path).read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _write_tiff(path: str, array) -> None:
    import tifffile

    tifffile.imwrite(path, array, photometric="minisblack")


def _cmd_recipe(args: argparse.Namespace) -> int:
    print(_recipe(args.recipe).to_json())
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from core.segmentation.preprocess import run_pipeline

    recipe = _recipe(args.recipe)
    _check_output_file(args.output, "-o")
    image = _one_image(args.image, args.plane)
    result = run_pipeline(image.pixels, image.channels, recipe)
    _write_tiff(args.output, result.processed.astype("float32"))
    print(f"{image.name}: wrote {args.output} ({result.processed.shape[1]}x{result.processed.shape[0]} float32, "
          f"the image after background correction); " + "; ".join(result.notes))
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:

    from pathlib import Path

    from core.io.export import label_tiff_bytes
    from models.device import resolve_device
    from models.registry import get_model_info, load_model
    from models.runner import run_model

    # Every argument is checked before any work: an unknown model or a missing checkpoint before torch is imported.
    recipe = _recipe(args.recipe)
    get_model_info(args.model)
    settings = _model_settings(args.model, recipe, args.tile)
    _check_output_file(args.output, "-o")
    image = _one_image(args.image, args.plane)
    device = resolve_device(args.device)
    printer = ProgressPrinter(f"downloading {args.model} weights")

    def progress(done: int, total: int | None) -> None:
        printer(done / total if total else 0.0, f"of {total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB")

    model = load_model(args.model, device, progress=progress)
    printer.finish()
    result = run_model(model, image, **settings)
    Path(args.output).write_bytes(label_tiff_bytes(result.labels))
    kind = "boxes" if result.box_only else "cells"
    tiles = f" ({result.tiles} tiles)" if result.tiles > 1 else ""
    print(f"{image.name}: {result.count} {kind} by {result.model} on {result.device} in {result.runtime_s:.2f} s"
          f"{tiles} -> {args.output}")
    return 0


def _model_settings(name: str, recipe: Recipe, tile: int) -> dict[str, Any]:
    """Every setting ``predict`` gets (the recipe where the model takes one, else the registry's
    defaults, written out so the record is what ran), plus the tiling."""
    from models.registry import get_model_info
    from models.tiling import DEFAULT_OVERLAP, TILING_SETTINGS

    info = get_model_info(name)
    tiling = {s.name: s for s in TILING_SETTINGS}
    return {**info.resolve({"recipe": recipe} if "recipe" in info.params else {}), "tile": tiling["tile"].check(tile),
            "overlap": DEFAULT_OVERLAP}


def _cmd_compare(args: argparse.Namespace) -> int:
    """Run several models on one image; write DIR/<model>.tif, DIR/metrics.json and DIR/provenance.json."""
    import json
    from pathlib import Path

    from core.analysis import PROVENANCE_FILE, provenance_json
    from core.evaluation.score_tables import metrics_entry, seen_label, seen_warning
    from core.io.decode import read_labels
    from core.io.export import label_tiff_bytes
    from models.device import resolve_device
    from models.registry import get_model_info, images_seen, load_model
    from models.runner import run_model
    from workflows.provenance import provenance

    # Every argument is checked before any work: unknown names and missing checkpoint files too.
    recipe = _recipe(args.recipe)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise ValueError("--models names no model; give comma-separated names from `models`")
    for name in names:
        get_model_info(name)
    settings = {name: _model_settings(name, recipe, args.tile) for name in names}
    files = {name: _label_file(name) for name in names}
    if len(set(files.values())) < len(files):
        raise ValueError(f"two models would write the same label file: {', '.join(names)}; rename a checkpoint")
    _check_output_folder(args.out)
    image = _one_image(args.image, args.plane)
    gt = None
    if args.gt:
        gt, _ = read_labels(Path(args.gt).read_bytes(), args.gt)
        if gt.shape != image.shape[:2]:
            raise ValueError(f"{args.gt}: ground truth is {gt.shape[1]}x{gt.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
    elif image.gt is not None:
        gt = image.gt
    device, metrics = resolve_device(args.device), {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        model = load_model(name, device)
        result = run_model(model, image, **settings[name])
        (out / files[name]).write_bytes(label_tiff_bytes(result.labels))
        entry = metrics[name] = metrics_entry(result, gt)
        seen = images_seen(name)
        entry["seen_in_training"] = seen_label(seen, image) or None  # "training", "validation", "unknown"
        summary = f"f1={entry['f1']:.3f}" if gt is not None else "no ground truth"
        print(f"{name}: {entry['count']} objects in {result.runtime_s:.2f} s on {result.device}; {summary}")
        if (warning := seen_warning(name, entry["seen_in_training"] or "", image.name, seen)) is not None:
            print(f"  note: {warning}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    found_gt = "found with the image" if gt is not None else None
    used_recipe = recipe if any("recipe" in s for s in settings.values()) else None  # else it played no part
    prov = provenance(recipe=used_recipe, models=settings, device=device,
                      extra={"image": args.image, "ground truth": args.gt or found_gt})
    (out / PROVENANCE_FILE).write_text(provenance_json(prov))
    print(f"wrote {len(names)} label images, metrics.json and {PROVENANCE_FILE} to {out}")
    return 0


def _label_file(name: str) -> str:
    """``<model>.tif``; a model named by its file (``unet:runs/cells.unet.pt``) by the file's name
    alone (``unet:cells.unet.pt.tif``), as a folder in the name would be a folder on disk."""
    prefix, sep, where = name.partition(":")
    return f"{prefix}{sep}{where.replace(chr(92), '/').rsplit('/', 1)[-1]}.tif"


FEATURE_ALIASES = {"cnn": "resnet18-imagenet"}
ROLE_FOLDERS = {"image", "images", "img", "imgs", "mask", "masks", "label", "labels", "gt"}


def _load_images(inputs: Sequence[str], batch_from: str | None, plane: int | None, *, masks: str | None = None,
                 problems: list | None = None) -> list:
    """Images of every input (files or folders), names unique, batches as ``batch_from`` says:
    ``folder`` (each image's parent folder), ``regex:PATTERN`` or ``csv:FILE``; by default the
    loader's rules (folders inside a folder or zip, a batches.csv among the files). With ``masks``
    (a folder), ground truth from there, matched to the images by name as the Data page matches
    them. Files that cannot be read are added to ``problems``, or said on stderr without it."""
    from pathlib import Path, PurePosixPath

    from core.data.plates import apply_batch_table, batches_from_pattern, parse_batch_table
    from core.io.load import load_images_and_masks, load_paths

    _check_batch_from(batch_from)
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


def _check_batch_from(batch_from: str | None) -> None:
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


def _check_output_file(path: str, flag: str) -> None:
    """An output file that can be written once the work is done: not a folder, in a folder that exists."""
    from pathlib import Path

    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give the file's name")
    if not target.parent.is_dir():
        raise ValueError(f"{flag} {path}: there is no folder {target.parent}")


def _check_output_folder(path: str) -> None:
    """``--out``: a folder that exists or can be made (it is made once the work is done)."""
    from pathlib import Path

    target = Path(path).expanduser()
    existing = next(folder for folder in (target, *target.parents) if folder.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"--out {path}: {existing} cannot be written to")


def _check_inputs(inputs: Sequence[str]) -> None:
    from pathlib import Path

    missing = [given for given in inputs if not Path(given).exists()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file or folder")


LOG_INTERVAL_S = 5.0  # a log or CI gets a progress line at most this often


class ProgressPrinter:
    """A ``progress(fraction, what)`` for a command: ``name:  42% what``. On a terminal one line
    redrawn in place; to a file or a pipe (a log, CI) whole lines, the first at once and then at most
    one every ``interval`` seconds: a training log was thousands of carriage-return updates on one line.
    :meth:`finish` ends it: the terminal's line is cleared (or kept), a log gets the latest state."""

    def __init__(self, name: str, *, stream: TextIO | None = None, width: int = 80,
                 interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.width, self.interval, self.clock = name, width, interval, clock
        self._stream = stream
        self._last: float | None = None  # when a log line was last written
        self._pending = ""  # a log's latest text not written yet
        self._drawn = False  # a terminal line is showing

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr  # sys.stderr as it is at each call

    @property
    def tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, fraction: float, what: str) -> None:
        text = f"{self.name}: {fraction:4.0%} {what[:self.width]}"
        if self.tty:
            print(f"\r{text:<{len(self.name) + self.width + 7}}", end="", file=self.stream, flush=True)
            self._drawn = True
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._pending = text
            return
        print(text, file=self.stream, flush=True)
        self._last, self._pending = now, ""

    def finish(self, *, keep: bool = False) -> None:
        """The end of this progress: a terminal's line cleared (ended with a newline when ``keep``),
        a log's latest state written if the rate limit held it back."""
        if self.tty:
            if self._drawn:
                end = "\n" if keep else "\r" + " " * (len(self.name) + self.width + 7) + "\r"
                print(end, end="", file=self.stream, flush=True)
        elif self._pending:
            print(self._pending, file=self.stream, flush=True)
        self._drawn, self._pending, self._last = False, "", None


def _check_cell_arguments(args: argparse.Namespace, recipe: Recipe) -> tuple[dict | None, str]:
    """Every argument ``embed`` and ``explain`` share, checked before any work: the segmenter and
    its settings (None for gt), the crops, ``--batch-from``, ``--out``, the inputs, and the device
    (last: it imports torch, seconds a misspelt flag need not wait). Returns the settings and the device."""
    from core.cells.cell_set import check_crop_settings
    from models.device import resolve_device
    from models.registry import get_model_info
    from models.tiling import DEFAULT_TILE

    settings = None
    if args.model != "gt":
        task = get_model_info(args.model).task
        if task != "segment":
            raise ValueError(f"--model {args.model} does not segment (its task: {task}); choose a segmenter from "
                             "`models`, or gt")
        settings = _model_settings(args.model, recipe, DEFAULT_TILE)
    check_crop_settings(args.crop_size, args.crop_mode)
    _check_batch_from(args.batch_from)
    _check_output_folder(args.out)
    _check_inputs(args.inputs)
    return settings, resolve_device(args.device)


def _segment_step(args: argparse.Namespace, settings: dict | None, device: str):
    """``--model``'s segment step of the image loop: a segmenter run with ``settings`` (loaded
    once), or gt for each image's ground truth."""
    from models.registry import load_model
    from models.runner import run_model
    from workflows.cellmap import ground_truth

    if args.model == "gt":
        return ground_truth
    model = load_model(args.model, device)
    return lambda image: run_model(model, image, **settings)


def _images_from_inputs(args: argparse.Namespace, *, log: TextIO,
                        check_images: Callable[[list], None] | None = None) -> list:
    """Inputs -> images (batches as ``--batch-from`` says), said on ``log``; ``check_images`` may
    refuse them before any is segmented, and gt needs ground truth for every image."""
    images = _load_images(args.inputs, args.batch_from, args.plane)
    batches = sorted({img.batch for img in images})
    print(f"{len(images)} images in {len(batches)} batches ({', '.join(batches[:8])})", file=log, flush=True)
    if check_images is not None:
        check_images(images)
    if args.model == "gt":
        missing = [img.name for img in images if img.gt is None]
        if missing:
            raise ValueError(f"--model gt needs ground truth for every image; none for {', '.join(missing[:5])}")
    return images


def _crop(args: argparse.Namespace) -> dict[str, Any]:
    return {"size": args.crop_size, "mode": args.crop_mode, "mask_background": args.mask_background}


def _cmd_embed(args: argparse.Namespace) -> int:
    """Cells -> features -> map and batch-effect metrics; writes cells.csv, cells.parquet,
    batch_effect.json, map.html, map.png and provenance.json into --out."""
    from pathlib import Path

    from core.analysis import PROVENANCE_FILE
    from models.cellmap import MapSettings, embedders
    from models.registry import get_model_info
    from workflows.cellmap import CellMapRequest, run_cellmap
    from workflows.cli_options import settings_from_args

    t0 = time.perf_counter()
    # Every argument is checked before any work: `--k 0` used to segment every image first.
    recipe = _recipe(args.recipe)
    name = FEATURE_ALIASES.get(args.features, args.features)
    if get_model_info(name).task != "embed":
        raise ValueError(f"--features {args.features} does not give features; choose one of {', '.join(embedders())}")
    map_settings = settings_from_args(MapSettings, args)  # refused with the page's message when out of range
    settings, device = _check_cell_arguments(args, recipe)
    images = _images_from_inputs(args, log=sys.stdout)
    request = CellMapRequest(args.model, settings, _crop(args), name, {}, map_settings, device,
                             recipe=recipe if args.model in ("classical",) else None)

    def keep(step: str, compute: Callable) -> Any:
        if step == "cells":
            cells = compute(None)
            print(f"{len(cells)} cells by {args.model} ({time.perf_counter() - t0:.1f} s)", flush=True)
            return cells
        progress = ProgressPrinter(name)
        made = compute(progress)
        progress.finish()
        if step == "features":
            print(f"{name}: {made.features.shape[1]} features per cell in {made.seconds:.1f} s")
        return made

    run = run_cellmap(images, request, segment=_segment_step(args, settings, device), keep=keep, allow_download=True,
                      extra={"inputs": list(args.inputs), "batch_from": args.batch_from})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run.analysis.write_files(out)
    metrics = json.loads(run.analysis.files["batch_effect.json"])
    print(f"batch effect: {metrics['verdict']} — {metrics.get('reason', '')}")
    for note in metrics.get("warnings", []):
        print(f"note: {note}")
    print(f"wrote cells.csv, cells.parquet, batch_effect.json, map.html, map.png and {PROVENANCE_FILE} to {out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _classifier_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every cell-classifier setting, from the flags given and the registry's defaults for the rest."""
    from models.explain_cells import CLASSIFIER
    from models.registry import get_model_info

    info = get_model_info(CLASSIFIER)
    given = {s.name: getattr(args, s.name) for s in info.settings if getattr(args, s.name, None) is not None}
    return info.resolve(given)


def _check_classifier_crops(size: int, layer: str | None) -> None:
    """The crop size the classifier takes and ``--layer`` among its CAM layers, asked of the
    classifier itself (an untrained one of this size: milliseconds)."""
    from models.classifier import ClassifierConfig, build_classifier
    from models.explain import cam_layers

    config = ClassifierConfig(channels=1, size=size, n_classes=2)  # its crop-size rule; channels, classes: any
    layers = list(cam_layers(build_classifier(config)))
    if layer is not None and layer not in layers:
        raise ValueError(f"--layer {layer}: the classifier has no such layer; CAM layers: {', '.join(layers)}")


def _check_target_images(images: list, target: str) -> None:
    """Before segmenting: every image has a ``target`` value (batch, condition), and the values can
    be cross-validated by image (at least two, each in two images), as the classifier will ask."""
    from models.classifier import check_target
    from models.explain_cells import unlabelled_images

    if target == "cluster":
        return
    values = [getattr(img, target) for img in images]
    if missing := unlabelled_images(target, {img.name: value for img, value in zip(images, values, strict=True)}):
        raise ValueError(f"--target {target}: {len(missing)} of {len(images)} images have no {target} (e.g. "
                         f"{missing[0]}); give them one with --batch-from csv:FILE (filename,batch,condition)")
    try:
        check_target(values, [img.name for img in images])
    except ValueError as exc:
        raise ValueError(f"--target {target}: {exc}") from exc


def _cmd_explain(args: argparse.Namespace) -> int:
    """Cells -> a classifier of batch/condition/cluster -> CAMs -> inside-mask shares; writes
    cam_cells.csv, classifier.json, overlays/ and provenance.json into --out."""
    from pathlib import Path

    from core.analysis import PROVENANCE_FILE
    from models.cellmap import MapSettings
    from models.explain import CAM_METHOD_NAMES
    from models.explain_cells import DEFAULT_CELLS_PER_CLASS
    from workflows.cellmap import find_cells
    from workflows.explain import ExplainRequest, run_explain

    t0 = time.perf_counter()
    recipe = _recipe(args.recipe)
    # A misspelt or out-of-range setting fails before any work.
    settings = _classifier_settings(args)
    if args.method not in CAM_METHOD_NAMES:
        raise ValueError(f"unknown CAM method {args.method!r}; choose one of {', '.join(CAM_METHOD_NAMES)}")
    per_class = DEFAULT_CELLS_PER_CLASS if args.cells_per_class is None else args.cells_per_class
    if per_class < 1:
        raise ValueError(f"--cells-per-class must be at least 1; got {per_class}")
    k = MapSettings(k=MapSettings().k if args.k is None else args.k).k
    segmenter, device = _check_cell_arguments(args, recipe)
    _check_classifier_crops(args.crop_size, args.layer)
    images = _images_from_inputs(args, log=sys.stderr,
                                 check_images=lambda images: _check_target_images(images, args.target))
    cells = find_cells(images, _segment_step(args, segmenter, device), crop=_crop(args))
    print(f"{len(cells)} cells by {args.model} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    if args.target == "cluster":
        print(f"{k} k-means clusters of the cells' morphology features", file=sys.stderr)
    request = ExplainRequest(args.target, settings, method=args.method, layer=args.layer, per_class=per_class, k=k,
                             deletion=args.deletion_test, device=device,
                             extra={"inputs": list(args.inputs), "batch_from": args.batch_from})

    def keep(step: str, compute: Callable) -> Any:
        if step == "deletion":
            print("deletion/insertion test…", file=sys.stderr)
            return compute(None)
        progress = ProgressPrinter("training" if step == "classifier" else args.method)
        made = compute(progress)
        progress.finish()
        if step == "classifier":
            print(f"classifier trained in {made.seconds:.1f} s", file=sys.stderr)
        return made

    run = run_explain(images, cells, request, keep=keep,
                      segmenter=(args.model, segmenter) if segmenter is not None else None,
                      recipe=recipe if args.model == "classical" else None)
    trained, record = run.trained, run.analysis
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "overlays").rglob("*.png"):  # a previous run's cells must not mix with these
        old.unlink()
    record.write_files(out)
    n_png = sum(name.startswith("overlays/") for name in record.files)
    report = json.loads(record.files["classifier.json"])
    print(f"{args.target}: balanced accuracy {trained.balanced_accuracy:.2f} on unseen images (chance "
          f"{trained.chance:.2f}), {len(trained.y):,} cells, {trained.n_images} images, {trained.folds} folds")
    if trained.balanced_accuracy < trained.chance + 0.1:
        print(f"note: the {args.target} can hardly be told from the crops: the CAMs explain a classifier that "
              "mostly guesses")
    for name, reading in report["cams"]["classes"].items():
        print(f"{name}: {reading['focus']} — {reading['reading']}")
    if run.deletion is not None:
        print(f"deletion test: {run.deletion.reading()}")
    print(f"wrote cam_cells.csv ({len(record.tables['cam_cells'])} cells, {args.method}), classifier.json, {n_png} "
          f"overlays in overlays/ and {PROVENANCE_FILE} to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


TRAINING_FLAGS = ("epochs", "steps_per_epoch", "batch_size", "lr", "tile", "patience", "seed")


def _cmd_train(args: argparse.Namespace) -> int:
    """Images + masks -> a split -> a trained model's best checkpoint and its metadata JSON: the
    Train page's pipeline (workflows.training), with progress printed."""
    from pathlib import Path

    from core.training.data import check_val_fraction
    from models.checkpoint_file import metadata_path
    from models.registry import trainer_of
    from workflows.training import checkpoint_target, estimate_seconds, plan_training, run_training

    # Every argument is checked before any work (the device last: it imports torch).
    family, trainer = trainer_of(args.model)  # the registry's families that train here
    # Unset flags take the family's defaults (UNetTraining's, ...): one definition, shared with the Train page.
    given = {k: getattr(args, k) for k in TRAINING_FLAGS if getattr(args, k) is not None}
    trainer.settings(given)
    out = checkpoint_target(family.name, args.out)
    for flag, folder in (("--images", args.images), ("--masks", args.masks)):
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"{flag} {folder}: no such folder")
    if args.val_split is not None:
        check_val_fraction(args.val_split)
    _check_batch_from(args.batch_from)
    from models.device import resolve_device

    device = resolve_device(args.device)
    problems: list = []
    images = _load_images([args.images], args.batch_from, args.plane, masks=args.masks, problems=problems)
    with_gt = [img for img in images if img.gt is not None]
    if not with_gt:
        where = f"in {args.masks}" if args.masks else f"with the images in {args.images}"
        masks = sorted(p.name for p in Path(args.masks).rglob("*") if p.is_file()) if args.masks else []

        def few(names: list[str]) -> str:
            return ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")

        seen = f" (images {few([img.name for img in images])}; masks {few(masks)})" if images and masks else ""
        raise ValueError(f"no mask {where} matched any of the {len(images)} images by name{seen}; the mask of image "
                         "x is x.tif or x_mask.tif (.png too) in the masks folder")
    for problem in problems[:10]:
        print(f"note: {problem}", file=sys.stderr)
    val_batches = [b.strip() for b in args.val_batches.split(",") if b.strip()] if args.val_batches else []
    plan = plan_training(family.name, with_gt, settings=given, out=out, val_batches=val_batches,
                         val_fraction=args.val_split)
    pairs, split = plan.pairs, plan.split
    batches = sorted({p.batch for p in pairs})
    settings = ", ".join(f"{k} {v}" for k, v in plan.training.to_dict().items())
    print(f"{len(pairs)} images with ground truth ({sum(p.n_objects for p in pairs)} objects, batches "
          f"{', '.join(batches)}); {len(plan.train)} train, {len(plan.val)} validate ({split.method} split"
          f"{': ' + ', '.join(split.val_batches) if split.val_batches else ''}); training a {family.label} on "
          f"{device}: {settings}", flush=True)
    eta = estimate_seconds(plan, device) if device == "cpu" else None
    if eta is not None:  # say how long before a long CPU run starts
        print(f"on this CPU that takes about {eta / 60:.0f} minutes at most (early stopping may end it sooner); "
              "a GPU is much faster", flush=True)

    last_f1: list[float] = []
    printer = ProgressPrinter("training", width=110)

    def progress(fraction: float, what: str) -> None:
        if last_f1 and "validation F1" not in what:  # the step lines: the latest epoch's F1 too
            what = what.replace(" · about", f" · val F1 {last_f1[-1]:.3f} · about", 1)
        printer(fraction, what)

    try:
        # A family that takes threads (the U-Net) trains on one in the app (the server stays responsive); here, all.
        trained = run_training(plan, device=device, progress=progress, on_epoch=lambda record: last_f1.append(record.f1),
                               threads=args.threads or os.cpu_count() or 1).trained
    except KeyboardInterrupt:  # the trainers write each better epoch's checkpoint at once: say where
        printer.finish(keep=True)
        if out.is_file():
            print(f"interrupted: the best checkpoint so far is {out} (metadata {metadata_path(out)})",
                  file=sys.stderr)
        raise
    printer.finish(keep=True)  # keep the last progress line
    best, history = trained.best, trained.history
    seconds = trained.metadata["seconds"]
    print(f"trained {len(history)} epochs in {seconds:.0f} s ({seconds / len(history):.1f} s per epoch, "
          f"validation included); {trained.stopped}")
    print(f"best epoch {best.epoch}: validation F1 {best.f1:.3f}, precision {best.precision:.3f}, recall "
          f"{best.recall:.3f} at IoU 0.5 on {len(plan.val)} images")
    kept = trained.metadata["validation"]
    if kept.get("averaged_epochs"):
        first, *_, last = kept["averaged_epochs"]
        print(f"kept the weights of epochs {first}-{last} averaged: validation F1 {kept['f1']:.3f}, precision "
              f"{kept['precision']:.3f}, recall {kept['recall']:.3f} (as good as the best epoch's within 0.01, and "
              "likelier to carry over to new images)")
    name = plan.model_name
    print(f"checkpoint: {out}\nmetadata: {metadata_path(out)}\n" + (
        f"use it as --model {name}" if name else
        f"copy it into {trainer.checkpoint_path('x').parent} to use it as a model"))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from models.registry import availability, list_models

    for info in list_models():
        ok, why = availability(info.name)
        kind = "features" if info.task == "embed" else "boxes" if info.box_only else "masks"
        print(f"{info.name}\t{info.family}\t{kind}\t{'available' if ok else 'unavailable'}\t{info.task}\t{why}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from models.cellmap import MapSettings
    from models.registry import families
    from models.tiling import TILING_SETTINGS
    from workflows.cli_options import add_family_options, add_setting_options

    parser = argparse.ArgumentParser(prog="python -m core", description="CellScope command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe images: one line each (name, size, dtype, channels)")
    info.add_argument("paths", nargs="+", help="image files, zips or folders (read recursively)")
    info.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    info.set_defaults(func=_cmd_info)

    example = sub.add_parser("example", help="write the example dataset (images/, masks/, batches.csv)")
    example.add_argument("--out", required=True, help="output folder")
    example.add_argument("--seed", type=int, default=7, help="random seed (default 7, the app's example)")
    example.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    example.add_argument("--fields", type=int, default=4, help="fields per plate (default 4)")
    example.set_defaults(func=_cmd_example)

    recipe = sub.add_parser("recipe", help="print a preprocessing recipe as JSON (the default one unless --recipe)")
    recipe.add_argument("--recipe", help="validate and print this recipe file, defaults filled in")
    recipe.set_defaults(func=_cmd_recipe)

    pre = sub.add_parser("preprocess", help="run the recipe's image steps; write the processed image (float32 TIFF)")
    pre.add_argument("image", help="one image file")
    pre.add_argument("-o", "--output", required=True, help="output TIFF")
    pre.add_argument("--recipe", help="recipe JSON (default: the built-in nuclei recipe)")
    pre.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    pre.set_defaults(func=_cmd_preprocess)

    seg = sub.add_parser("segment", help="segment one image into cells; write a label TIFF (0 = background)")
    seg.add_argument("image", help="one image file")
    seg.add_argument("-o", "--output", required=True, help="output label TIFF, same height and width as the image")
    seg.add_argument("--model", default="classical", help="segmentation model, see `models` (default: classical)")
    seg.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N")
    seg.add_argument("--recipe", help="recipe JSON for the classical model (default: the built-in nuclei recipe)")
    seg.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    add_setting_options(seg, TILING_SETTINGS, only=("tile",))
    seg.set_defaults(func=_cmd_segment)

    cmp = sub.add_parser("compare", help="run several models on one image: DIR/<model>.tif, DIR/metrics.json, DIR/provenance.json")
    cmp.add_argument("image", help="one image file")
    cmp.add_argument("--models", required=True, help="comma-separated model names, see `models`")
    cmp.add_argument("--gt", help="ground-truth label image (0 = background, 1..N = cells) for metrics")
    cmp.add_argument("--out", required=True, help="output folder")
    cmp.add_argument("--recipe", help="recipe JSON for the classical model")
    cmp.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    cmp.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    add_setting_options(cmp, TILING_SETTINGS, only=("tile",))
    cmp.set_defaults(func=_cmd_compare)

    tr = sub.add_parser("train", help="train a segmenter on images and their masks; writes the best checkpoint "
                        "and its metadata JSON")
    tr.add_argument("--model", required=True, help="family to train: unet, rcnn (Mask R-CNN) or yolo (YOLO-seg); "
                    "`models` lists the families")
    tr.add_argument("--images", required=True, help="folder of images (read recursively), or a folder with images/ "
                    "and masks/ inside when --masks is not given")
    tr.add_argument("--masks", default=None, help="folder of label masks (0 = background, 1..N = cells), matched to "
                    "the images by name as the Data page matches them: x.tif or x_mask.tif for image x")
    tr.add_argument("--out", required=True, help="checkpoint file to write (e.g. cells.unet.pt; its metadata goes "
                    "beside it as cells.unet.json); a plain name (no folder, no suffix) saves it in the weights "
                    "folder as the model trained:FAMILY:NAME")
    split = tr.add_mutually_exclusive_group()
    split.add_argument("--val-split", type=float, default=None, help="fraction of the images that validate, drawn at "
                       "random with --seed (default: split_by_image's)")
    split.add_argument("--val-batches", default=None, help="comma-separated batches (plates) that validate, to test "
                       "carrying over to plates the model never saw")
    tr.add_argument("--batch-from", default=None, help="folder, regex:PATTERN or csv:FILE (filename,batch), as for "
                    "embed; default: folders and a batches.csv among the images")
    # Unset training settings take the family's defaults (UNetTraining's, ...: the Train page's), printed when
    # training starts and recorded in the metadata; each family's class checks the values, as on the page.
    add_family_options(tr, {f.label: (f.trainer.settings_class, dict(f.trainer.aliases)) for f in families(trainable=True)},
                       TRAINING_FLAGS)
    tr.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N")
    tr.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    tr.add_argument("--threads", type=int, default=None, help="CPU threads for the U-Net (default: every core; the "
                    "Train page uses one, so that the server stays responsive)")
    tr.set_defaults(func=_cmd_train)

    models = sub.add_parser("models", help="list every model (segmenters and feature extractors) and whether each "
                            "can run here")
    models.set_defaults(func=_cmd_models)

    emb = sub.add_parser("embed", help="cells -> features -> t-SNE/UMAP map and batch-effect metrics; writes "
                         "cells.csv, cells.parquet, batch_effect.json, map.html, map.png, provenance.json")
    _add_cell_arguments(emb)
    emb.add_argument("--features", default="morphology", help="morphology, autoencoder, cnn (= resnet18-imagenet) "
                     "or another feature model from `models` (default: morphology)")
    # The map settings' defaults, ranges and help are MapSettings' (the Cell map page's).
    add_setting_options(emb, MapSettings, only=("correction", "control", "method", "perplexity", "iterations",
                                                "clusters", "k", "seed"),
                        flags={"correction": "--correct", "method": "--map"}, default_text={"control": "all cells"})
    emb.set_defaults(func=_cmd_embed)

    exp = sub.add_parser("explain", help="train a classifier of the cells' batch, condition or cluster and show what "
                         "it looks at (CAMs): inside the cells or the background; writes cam_cells.csv, "
                         "classifier.json, overlays/ and provenance.json")
    _add_cell_arguments(exp)
    exp.add_argument("--target", required=True, choices=("batch", "condition", "cluster"),
                     help="what the classifier learns to tell from each cell's crop")
    # Defaults left unset here are the library's (models/): importing it to name them would slow every command.
    exp.add_argument("--k", type=int, default=None, help="with --target cluster: k-means clusters of the cells' "
                     "morphology features, as the Cell map makes them (default: the Cell map's)")
    exp.add_argument("--method", default="gradcam", help="CAM method of pytorch-grad-cam: gradcam, gradcam++, "
                     "hirescam, scorecam, eigencam or layercam (default gradcam)")
    exp.add_argument("--layer", default=None, help="the classifier's layer to take CAMs at: block1, block2 or block3 "
                     "(default: the last, block3)")
    exp.add_argument("--cells-per-class", type=int, default=None, help="cells explained per true class, wrongly "
                     "classified ones first (default: the Explain page's)")
    exp.add_argument("--deletion-test", action="store_true", help="also run the deletion/insertion test on up to 64 "
                     "explained cells: does removing the top CAM pixels lower the score faster than random pixels?")
    # Classifier settings: unset ones take the registry's defaults (the Explain page's); provenance.json records them.
    exp.add_argument("--epochs", type=int, default=None, help="training epochs (default: the Explain page's)")
    exp.add_argument("--batch-size", type=int, default=None, help="crops per optimisation step")
    exp.add_argument("--lr", type=float, default=None, help="Adam's learning rate, one of the Explain page's choices")
    exp.add_argument("--folds", type=int, default=None, help="cross-validation folds, by image")
    exp.add_argument("--seed", type=int, default=None, help="random seed for training, the explained cells and "
                     "the clusters")
    exp.add_argument("--max-train-cells", type=int, default=None, help="train on at most this many cells, drawn at "
                     "random")
    exp.set_defaults(func=_cmd_explain)
    return parser


def _add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``embed`` and ``explain`` share: inputs -> images -> labels -> cells and their crops."""
    parser.add_argument("inputs", nargs="+", help="image files, zips or folders (read recursively)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default="classical", help="segmenter (see `models`), or gt to use each image's "
                        "ground truth (default: classical)")
    parser.add_argument("--recipe", help="recipe JSON for the classical segmenter (default: the built-in one)")
    parser.add_argument("--batch-from", default=None, help="folder (each image's parent folder), regex:PATTERN (a "
                        "named group 'batch') or csv:FILE (filename,batch[,condition]); default: folders and a "
                        "batches.csv found among the inputs")
    parser.add_argument("--crop-size", type=int, default=32, help="crop side in pixels (default 32)")
    parser.add_argument("--crop-mode", default="scale", choices=("scale", "pad"), help="scale each cell's window to "
                        "the crop size, or pad a fixed window at native scale (default scale)")
    parser.add_argument("--mask-background", action="store_true", help="zero the pixels outside each cell in its "
                        "crop")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N")
    parser.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max "
                        "projection")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, RuntimeError) as exc:  # one line (WeightsUnavailable too), never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`
        return 0
    except KeyboardInterrupt:
        return 130
