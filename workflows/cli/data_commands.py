"""Commands about data and models, not analyses: ``info`` (one line per image), ``example`` (the
example dataset on disk) and ``models`` (every model and whether it can run here)."""

from __future__ import annotations

import argparse
import sys
import time

from workflows.cli.inputs import check_output_folder


def cmd_info(args: argparse.Namespace) -> int:
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


def cmd_example(args: argparse.Namespace) -> int:
    from core.io.example import EXAMPLE_FIELDS, EXAMPLE_SEED, EXAMPLE_SIZE, make_example_dataset
    from core.io.export import write_dataset

    for field, value in ((EXAMPLE_SEED, args.seed), (EXAMPLE_SIZE, args.size), (EXAMPLE_FIELDS, args.fields)):
        field.check(value)  # before the folder is made: `--size 0` used to fail inside the generator
    check_output_folder(args.out)
    t0 = time.perf_counter()
    images = make_example_dataset(seed=args.seed, size=args.size, fields_per_plate=args.fields)
    written = write_dataset(images, args.out)
    n_cells = sum(img.n_cells_gt for img in images)
    print(
        f"wrote {len(images)} images ({n_cells} ground-truth nuclei) and {len(written) - len(images)} more files "
        f"to {args.out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models.registry import availability, list_models

    for info in list_models():
        ok, why = availability(info.name)
        kind = "features" if info.task == "embed" else "boxes" if info.box_only else "masks"
        print(f"{info.name}\t{info.family}\t{kind}\t{'available' if ok else 'unavailable'}\t{info.task}\t{why}")
    return 0
