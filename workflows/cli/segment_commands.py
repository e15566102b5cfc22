"""Commands on one image: ``recipe`` (print or check a preprocessing recipe), ``preprocess`` (the
recipe's image steps), ``segment`` (one model -> a label TIFF) and ``compare`` (several models ->
their label images, metrics and provenance)."""

from __future__ import annotations

import argparse

from workflows.cli.inputs import (
    check_output_file,
    check_output_folder,
    fetch_weights,
    load_recipe,
    model_settings,
    one_image,
)
from workflows.cli.runs_commands import check_save_run, save_if_asked


def cmd_recipe(args: argparse.Namespace) -> int:
    print(load_recipe(args.recipe).to_json())
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from core.segmentation.preprocess import run_pipeline

    recipe = load_recipe(args.recipe)
    check_output_file(args.output, "-o")
    image = one_image(args.image, args.plane)
    result = run_pipeline(image.pixels, image.channels, recipe)
    _write_tiff(args.output, result.processed.astype("float32"))
    print(f"{image.name}: wrote {args.output} ({result.processed.shape[1]}x{result.processed.shape[0]} float32, "
          f"the image after background correction); " + "; ".join(result.notes))
    return 0


def _write_tiff(path: str, array) -> None:
    import tifffile

    tifffile.imwrite(path, array, photometric="minisblack")


def cmd_segment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.io.export import label_tiff_bytes
    from models.device import resolve_device
    from models.registry import get_model_info, load_model
    from models.runner import run_model

    # Every argument is checked before any work: an unknown model or a missing checkpoint before torch is imported.
    recipe = load_recipe(args.recipe)
    get_model_info(args.model)
    settings = model_settings(args.model, recipe, args.tile)
    check_output_file(args.output, "-o")
    image = one_image(args.image, args.plane)
    device = resolve_device(args.device)
    fetch_weights([args.model])
    model = load_model(args.model, device)
    result = run_model(model, image, **settings)
    Path(args.output).write_bytes(label_tiff_bytes(result.labels))
    kind = "boxes" if result.box_only else "cells"
    tiles = f" ({result.tiles} tiles)" if result.tiles > 1 else ""
    print(f"{image.name}: {result.count} {kind} by {result.model} on {result.device} in {result.runtime_s:.2f} s"
          f"{tiles} -> {args.output}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Run several models on one image; write DIR/<model>.tif, DIR/metrics.json and DIR/provenance.json."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from core.analysis import PROVENANCE_FILE, provenance_json
    from core.evaluation.ranking import rank_models
    from core.evaluation.score_tables import metrics_entry, seen_label, seen_warning
    from core.io.decode import read_labels
    from core.io.export import label_tiff_bytes
    from models.device import resolve_device
    from models.registry import get_model_info, images_seen
    from workflows.compare import run_compare
    from workflows.provenance import provenance

    # Every argument is checked before any work: unknown names and missing checkpoint files too.
    check_save_run(args)
    recipe = load_recipe(args.recipe)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise ValueError("--models names no model; give comma-separated names from `models`")
    for name in names:
        get_model_info(name)
    settings = {name: model_settings(name, recipe, args.tile) for name in names}
    files = {name: _label_file(name) for name in names}
    if len(set(files.values())) < len(files):
        raise ValueError(f"two models would write the same label file: {', '.join(names)}; rename a checkpoint")
    check_output_folder(args.out)
    image = one_image(args.image, args.plane)
    gt = None
    if args.gt:
        gt, _ = read_labels(Path(args.gt).read_bytes(), args.gt)
        if gt.shape != image.shape[:2]:
            raise ValueError(f"{args.gt}: ground truth is {gt.shape[1]}x{gt.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
    elif image.gt is not None:
        gt = image.gt
    device, metrics = resolve_device(args.device), {}
    fetch_weights(names)
    # The Compare page's pipeline, on this one image (its ground truth the one given or found).
    compared = [replace(image, gt=gt)]
    run = run_compare(compared, settings, device=device)
    if run.problems:
        raise ValueError(run.problems[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        result = run.results[(image.name, name)]
        (out / files[name]).write_bytes(label_tiff_bytes(result.labels))
        entry = metrics[name] = metrics_entry(result, gt)
        seen = images_seen(name)
        entry["seen_in_training"] = seen_label(seen, image) or None  # "training", "validation", "unknown"
        summary = f"f1={entry['f1']:.3f}" if gt is not None else "no ground truth"
        print(f"{name}: {entry['count']} objects in {result.runtime_s:.2f} s on {result.device}; {summary}")
        if (warning := seen_warning(name, entry["seen_in_training"] or "", image.name, seen)) is not None:
            print(f"  note: {warning}")
    if gt is not None and len(names) > 1:
        print(f"which model: {rank_models(run.analysis.tables['scores']).why}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    found_gt = "found with the image" if gt is not None else None
    used_recipe = recipe if any("recipe" in s for s in settings.values()) else None  # else it played no part
    prov = provenance(recipe=used_recipe, models=settings, device=device,
                      extra={"image": args.image, "ground truth": args.gt or found_gt})
    (out / PROVENANCE_FILE).write_text(provenance_json(prov))
    print(f"wrote {len(names)} label images, metrics.json and {PROVENANCE_FILE} to {out}")
    save_if_asked(args, run.analysis, images=compared)
    return 0


def _label_file(name: str) -> str:
    """``<model>.tif``; a model named by its file (``unet:runs/cells.unet.pt``) by the file's name
    alone (``unet:cells.unet.pt.tif``), as a folder in the name would be a folder on disk."""
    prefix, sep, where = name.partition(":")
    return f"{prefix}{sep}{where.replace(chr(92), '/').rsplit('/', 1)[-1]}.tif"
