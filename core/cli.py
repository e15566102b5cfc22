"""Command line: ``python -m core info|example ...``; every page computation is reachable here."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from core.io import load_paths

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
    from core.example import make_example_dataset
    from core.io import write_dataset

    t0 = time.perf_counter()
    images = make_example_dataset(seed=args.seed, size=args.size, fields_per_plate=args.fields)
    written = write_dataset(images, args.out)
    n_cells = sum(img.n_cells_gt for img in images)
    print(
        f"wrote {len(images)} images ({n_cells} ground-truth nuclei) and {len(written) - len(images)} more files "
        f"to {args.out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:  # a clean one-line message, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`
        return 0
    except KeyboardInterrupt:
        return 130
