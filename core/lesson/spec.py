"""A lesson as data: one YAML file per lesson in ``lessons/``, read and checked here.

A lesson file names its title, a one-line summary, which images it runs on and its steps, in the
order they are taught. Each step has a slug ``id`` (its address: ``?step=gradcam``), a ``title``,
``why`` (what we are doing and why, Markdown), the ``action`` drawn live (a name the app knows,
see ``components/lesson_actions.py``), ``look_at`` (what to look at in the result), the
``checkpoint`` that reads the result (a name of :mod:`core.lesson.checkpoints`) with its
``params``, a ``try_this`` line and the ``page`` with more (a page's address), with the
``page_settings`` (the page's session keys) that make it show what the step showed when it is
opened on the lesson's images. An instructor reorders, shortens or translates a lesson by editing the
file; a step naming an action or checkpoint that does not exist is refused with the file and the
step named.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LESSONS_DIR = Path(__file__).resolve().parents[2] / "lessons"
DATASETS = ("lesson", "example")  # the images a lesson runs on (core.io.example's two generated sets)
PAGES = ("data", "preprocess", "compare", "cellmap", "explain", "train", "results")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_STEP_KEYS = {"id", "title", "why", "action", "look_at", "checkpoint", "params", "try_this", "page",
              "page_settings"}
_REQUIRED = ("id", "title", "why", "action", "look_at", "checkpoint", "try_this")


class LessonError(ValueError):
    """A lesson file that cannot be taught: the message names the file and the step."""


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    why: str
    action: str
    look_at: str
    checkpoint: str
    try_this: str
    params: Mapping[str, Any] = field(default_factory=dict)
    page: str | None = None
    page_settings: Mapping[str, Any] = field(default_factory=dict)  # the page's session keys, set when opened


@dataclass(frozen=True)
class Lesson:
    id: str  # the file's stem: ?lesson=<id>
    title: str
    summary: str
    dataset: str
    steps: tuple[Step, ...]

    def find(self, step: str | int | None) -> int | None:
        """The position of ``step`` (its id, or its number from 1), None when there is no such step."""
        text = "" if step is None else str(step).strip()
        if text.isdigit():
            return int(text) - 1 if 1 <= int(text) <= len(self.steps) else None
        return next((i for i, s in enumerate(self.steps) if s.id == text), None)

    def index(self, step: str | int | None) -> int:
        """The position of ``step`` (its id, or its number from 1; a number past the end is the last
        step), 0 when unknown or None."""
        found = self.find(step)
        if found is not None:
            return found
        text = "" if step is None else str(step).strip()
        return len(self.steps) - 1 if text.isdigit() and int(text) > len(self.steps) else 0


def _text(where: str, data: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise LessonError(f"{where}: '{key}' is missing")
        return None
    if not isinstance(value, str | int | float) or not str(value).strip():
        raise LessonError(f"{where}: '{key}' must be text; got {value!r}")
    return str(value).strip()


def _step(where: str, data: Any, actions: Collection[str] | None, checkpoints: Collection[str] | None) -> Step:
    if not isinstance(data, Mapping):
        raise LessonError(f"{where}: a step is a mapping of {', '.join(_REQUIRED)}; got {type(data).__name__}")
    if unknown := sorted(set(map(str, data)) - _STEP_KEYS):
        raise LessonError(f"{where}: unknown key(s) {', '.join(unknown)}; a step has {', '.join(sorted(_STEP_KEYS))}")
    values = {k: _text(where, data, k) for k in _REQUIRED}
    if not _SLUG.match(values["id"]):
        raise LessonError(f"{where}: id {values['id']!r} must be lower-case letters, digits and dashes (it is the "
                          "step's address)")
    if actions is not None and values["action"] not in actions:
        raise LessonError(f"{where}: unknown action {values['action']!r}; known: {', '.join(sorted(actions))}")
    if checkpoints is not None and values["checkpoint"] not in checkpoints:
        raise LessonError(f"{where}: unknown checkpoint {values['checkpoint']!r}; known: "
                          f"{', '.join(sorted(checkpoints))}")
    page = _text(where, data, "page", required=False)
    if page is not None and page not in PAGES:
        raise LessonError(f"{where}: page {page!r} is not one of {', '.join(PAGES)}")
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        raise LessonError(f"{where}: 'params' must be a mapping; got {params!r}")
    settings = data.get("page_settings") or {}
    if not isinstance(settings, Mapping) or (settings and page is None):
        raise LessonError(f"{where}: 'page_settings' must be a mapping of the page's settings, with a 'page'")
    return Step(**values, params=dict(params), page=page,
                page_settings=dict(settings))


def parse_lesson(text: str, lesson_id: str, *, source: str = "<text>", actions: Collection[str] | None = None,
                 checkpoints: Collection[str] | None = None) -> Lesson:
    """A lesson from its YAML text; :class:`LessonError` naming ``source`` and the step when it is
    not one. ``actions``/``checkpoints``: the names a step may use (None: not checked)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LessonError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise LessonError(f"{source}: a lesson is a mapping with title, summary, dataset and steps")
    title = _text(source, data, "title")
    summary = _text(source, data, "summary")
    dataset = _text(source, data, "dataset", required=False) or "lesson"
    if dataset not in DATASETS:
        raise LessonError(f"{source}: dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise LessonError(f"{source}: 'steps' must be a list of at least one step")
    parsed = tuple(_step(f"{source}, step {i + 1}", s, actions, checkpoints) for i, s in enumerate(steps))
    ids = [s.id for s in parsed]
    if dup := sorted({i for i in ids if ids.count(i) > 1}):
        raise LessonError(f"{source}: step id(s) {', '.join(dup)} used twice; each step needs its own address")
    return Lesson(lesson_id, title, summary, dataset, parsed)


def load_lesson(path: str | Path, **names: Collection[str] | None) -> Lesson:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LessonError(f"{path.name}: cannot be read ({exc})") from None
    return parse_lesson(text, path.stem, source=path.name, **names)


def lesson_files(folder: str | Path = LESSONS_DIR) -> list[Path]:
    """The lesson files, in name order (the first is the default lesson)."""
    return sorted(Path(folder).glob("*.yaml"))
