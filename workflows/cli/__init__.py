"""Command line: ``python -m core info|example ...`` (also ``workflows.cli:main`` for a ``cellscope`` console
script); every page computation is reachable here, through the same workflows the pages call.

One subject per module: :mod:`~workflows.cli.parser` (the commands, their options and ``main``),
:mod:`~workflows.cli.inputs` (images from files, folders and zips; arguments checked before any work),
:mod:`~workflows.cli.progress` (progress lines), and the commands by group:
:mod:`~workflows.cli.data_commands` (info, example, models), :mod:`~workflows.cli.segment_commands`
(recipe, preprocess, segment, compare), :mod:`~workflows.cli.cellmap_commands` (embed, explain) and
:mod:`~workflows.cli.train_commands` (train)."""

from workflows.cli.parser import build_parser, main
from workflows.cli.progress import LOG_INTERVAL_S, ProgressPrinter
from workflows.cli.train_commands import TRAINING_FLAGS

__all__ = ["LOG_INTERVAL_S", "TRAINING_FLAGS", "ProgressPrinter", "build_parser", "main"]
