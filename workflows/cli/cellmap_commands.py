"""The cell-map commands: ``embed`` (cells -> features -> a map and batch-effect metrics) and
``explain`` (cells -> a classifier of batch, condition or cluster -> CAMs), both from images found
in files, folders or zips and segmented by ``--model`` (or their ground truth)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from workflows.cli.inputs import (
    check_batch_from,
    check_inputs,
    check_output_folder,
    fetch_weights,
    load_images,
    load_recipe,
    model_settings,
)
from workflows.cli.progress import ProgressPrinter
from workflows.cli.runs_commands import check_save_run, save_if_asked

if TYPE_CHECKING:
    from core.segmentation.recipe import Recipe

FEATURE_ALIASES = {"cnn": "resnet18-imagenet"}


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
        settings = model_settings(args.model, recipe, DEFAULT_TILE)
    check_crop_settings(args.crop_size, args.crop_mode)
    check_batch_from(args.batch_from)
    check_output_folder(args.out)
    check_inputs(args.inputs)
    return settings, resolve_device(args.device)


def _segment_step(args: argparse.Namespace, settings: dict | None, device: str):
    """``--model``'s segment step of the image loop: a segmenter run with ``settings`` (loaded
    once), or gt for each image's ground truth."""
    from models.registry import load_model
    from models.runner import run_model
    from workflows.cellmap import ground_truth

    if args.model == "gt":
        return ground_truth
    fetch_weights([args.model])
    model = load_model(args.model, device)
    return lambda image: run_model(model, image, **settings)


def _images_from_inputs(args: argparse.Namespace, *, log: TextIO,
                        check_images: Callable[[list], None] | None = None) -> list:
    """Inputs -> images (batches as ``--batch-from`` says), said on ``log``; ``check_images`` may
    refuse them before any is segmented, and gt needs ground truth for every image."""
    images = load_images(args.inputs, args.batch_from, args.plane)
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


def cmd_embed(args: argparse.Namespace) -> int:
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
    check_save_run(args)
    recipe = load_recipe(args.recipe)
    name = FEATURE_ALIASES.get(args.features, args.features)
    if get_model_info(name).task != "embed":
        raise ValueError(f"--features {args.features} does not give features; choose one of {', '.join(embedders())}")
    map_settings = settings_from_args(MapSettings, args)  # refused with the page's message when out of range
    if map_settings.control and map_settings.correction != "standardize":
        raise ValueError(f"--control {map_settings.control} scales each batch by those cells, which only "
                         "--correct standardize does: add --correct standardize, or leave --control out")
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
    save_if_asked(args, run.analysis, images=images)
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


def cmd_explain(args: argparse.Namespace) -> int:
    """Cells -> a classifier of batch/condition/cluster -> CAMs -> inside-mask shares; writes
    cam_cells.csv, classifier.json, overlays/ and provenance.json into --out."""
    from pathlib import Path

    from core.analysis import PROVENANCE_FILE
    from models.cellmap import MapSettings
    from models.explain import CAM_METHOD_NAMES
    from models.explain_cells import CELLS_PER_CLASS
    from workflows.cellmap import find_cells
    from workflows.explain import ExplainRequest, run_explain

    t0 = time.perf_counter()
    check_save_run(args)
    recipe = load_recipe(args.recipe)
    # A misspelt or out-of-range setting fails before any work.
    settings = _classifier_settings(args)
    if args.method not in CAM_METHOD_NAMES:
        raise ValueError(f"unknown CAM method {args.method!r}; choose one of {', '.join(CAM_METHOD_NAMES)}")
    per_class = CELLS_PER_CLASS.check(args.per_class)  # refused with the message ExplainRequest gives
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
    save_if_asked(args, record, images=images)
    return 0

