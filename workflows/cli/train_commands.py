"""The ``train`` command: images and their masks -> a split -> a trained segmenter's best checkpoint
and its metadata JSON, through the Train page's pipeline (workflows.training), progress printed."""

from __future__ import annotations

import argparse
import os
import sys

from workflows.cli.inputs import check_batch_from, load_images
from workflows.cli.progress import ProgressPrinter

# The training settings the command takes as flags; unset ones take the family's defaults.
TRAINING_FLAGS = ("epochs", "steps_per_epoch", "batch_size", "lr", "tile", "patience", "seed")


def cmd_train(args: argparse.Namespace) -> int:
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
    check_batch_from(args.batch_from)
    from models.device import resolve_device

    device = resolve_device(args.device)
    problems: list = []
    images = load_images([args.images], args.batch_from, args.plane, masks=args.masks, problems=problems)
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

