"""Saved runs from the command line: ``runs list``, ``runs show RUN``, ``runs delete RUN``, and
``--save-run NAME`` of ``compare``, ``embed`` and ``explain`` (checked before any work, saved after
it)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from core.analysis import Analysis
    from core.data.images import CellImage


def check_save_run(args: argparse.Namespace) -> None:
    """Refuse a ``--save-run`` name that is not file-safe or is taken, before any work is done."""
    from core.names import name_problem
    from core.runs import runs_dir

    name = getattr(args, "save_run", None)
    if name is None:
        return
    if problem := name_problem(name, "run"):
        raise ValueError(f"--save-run {name}: {problem}")
    if (runs_dir() / name).exists():
        raise ValueError(f"--save-run {name}: a run named {name!r} exists already in {runs_dir()}: choose another "
                         "name, or delete it with `runs delete`")


def save_if_asked(args: argparse.Namespace, *analyses: Analysis, images: Sequence[CellImage] = ()) -> None:
    """Save ``analyses`` (and the display pictures of ``images``, for the Results page's image
    browser) as the run ``--save-run`` names, if it names one, and say where."""
    from core.runs import save_run
    from core.text import plural

    if getattr(args, "save_run", None):
        info = save_run(args.save_run, analyses, images=images)
        print(f"saved run {info.name} ({', '.join(info.kinds)}, {plural(len(images), 'image')} kept) in {info.path}")


def cmd_runs_list(args: argparse.Namespace) -> int:
    from core.runs import list_runs, runs_dir

    runs = list_runs()
    if args.json:
        print(json.dumps([info.to_dict() for info in runs], indent=2))
        return 0
    if not runs:
        print(f"no saved runs in {runs_dir()} (save one with --save-run NAME, or Save as run on a page)")
        return 0
    for info in runs:
        cells = f"{info.cells:,} cells" if info.cells is not None else "no cell table"
        numbers = "; ".join(f"{k} {v}" for k, v in info.numbers.items())
        print(f"{info.name}\t{info.created}\t{'+'.join(info.kinds)}\t{info.images} images\t{cells}\t"
              f"{','.join(info.models)}\t{numbers or info.note}")
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from core.analysis import cellscope_version
    from core.run_images import image_index
    from core.runs import open_run

    run = open_run(args.run)
    print(json.dumps(run.info.to_dict(), indent=2))
    index = image_index(run)
    print("no images kept" if index is None else
          f"{len(index):,} {'image' if len(index) == 1 else 'images'} kept (pictures for the Results page)")
    for analysis in run.analyses:
        tables = ", ".join(f"{name} ({analysis.table_info(name)['rows']:,} rows)" for name in analysis.tables)
        labels = f"; {len(analysis.labels):,} label images" if analysis.labels else ""
        print(f"{analysis.kind}: {len(analysis.inputs)} images; tables {tables or 'none'}{labels}; "
              f"{len(analysis.files)} files; made {analysis.created} with CellScope "
              f"{cellscope_version(analysis.provenance)} on {analysis.provenance.get('device', '?')}")
    return 0


def cmd_runs_delete(args: argparse.Namespace) -> int:
    from core.runs import delete_run

    delete_run(args.run)
    print(f"deleted run {args.run}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.figures.report import run_report_html
    from core.runs import open_run
    from workflows.cli.inputs import check_output_file

    check_output_file(args.output, "-o")
    run = open_run(args.run)
    Path(args.output).write_text(run_report_html(run), encoding="utf-8")
    print(f"wrote the report of {run.info.name} to {args.output} (one file; it opens offline)")
    return 0


def add_runs_commands(sub: argparse._SubParsersAction) -> None:
    """The ``runs`` command and its three subcommands."""
    runs = sub.add_parser("runs", help="saved runs: list, show or delete them (folder: CELLSCOPE_RUNS_DIR)")
    what = runs.add_subparsers(dest="runs_command", required=True)
    listing = what.add_parser("list", help="every saved run, newest first: name, date, kinds, images, cells, models")
    listing.add_argument("--json", action="store_true", help="as JSON, one object per run")
    listing.set_defaults(func=cmd_runs_list)
    show = what.add_parser("show", help="one run: its summary and each analysis's tables, files and provenance")
    show.add_argument("run", help="the run's name")
    show.set_defaults(func=cmd_runs_show)
    delete = what.add_parser("delete", help="delete a run (its folder and everything in it)")
    delete.add_argument("run", help="the run's name")
    delete.set_defaults(func=cmd_runs_delete)
    report = sub.add_parser("report", help="one self-contained HTML report of a saved run (opens offline)")
    report.add_argument("run", help="the run's name (see `runs list`)")
    report.add_argument("-o", "--output", required=True, help="the HTML file to write")
    report.set_defaults(func=cmd_report)


def add_save_run_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save-run", default=None, metavar="NAME", help="also save the analysis as the run NAME "
                        "(letters, digits, '.', '_', '-'; never overwritten), for `runs` and the Results page")
