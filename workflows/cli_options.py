"""Command-line options made from settings declarations (:class:`core.schema.Field`): the flag's
type, default and help come from the field, and the values are checked by the settings class
itself, so ``train --epochs 100000`` is refused with the message the Train page's validator gives
(one line, exit 1, through the CLI's ``error:`` handler)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.schema import Field, fields_of

_TYPES = {"int": int, "float": float, "text": str}


def _fields(cls_or_fields: Any) -> tuple[Field, ...]:
    return tuple(cls_or_fields) if isinstance(cls_or_fields, Iterable) else fields_of(cls_or_fields)


def flag_of(field: Field, flags: Mapping[str, str] | None = None) -> str:
    """The option of ``field``: ``flags[name]`` where given, else ``--`` and its name with dashes."""
    return (flags or {}).get(field.name) or "--" + field.name.replace("_", "-")


def _default_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value) if value == "" else str(value)


def add_setting_options(parser: argparse.ArgumentParser | Any, cls_or_fields: Any, *, only: Sequence[str] = (),
                        flags: Mapping[str, str] | None = None, defaults: bool = True,
                        default_text: Mapping[str, str] | None = None) -> None:
    """One option per declared field (``only``: those names, in that order), stored under the
    field's name. ``defaults``: the declared default is the option's (False: None, for settings
    whose default depends on another choice, e.g. the family to train; ``default_text`` then says
    what it is). Ranges are not checked here but when the settings record is built
    (:func:`settings_from_args`), with the validator's own message."""
    by_name = {f.name: f for f in _fields(cls_or_fields)}
    for name in only or tuple(by_name):
        field = by_name[name]
        kind = type(field.options[0]) if field.kind == "choice" else _TYPES.get(field.kind)
        if kind is None:
            raise ValueError(f"setting {field.name}: no command-line option for a {field.kind} setting")
        said = (default_text or {}).get(name, _default_text(field.default))
        extra = {"choices": list(field.options)} if field.kind == "choice" and kind is str else {}
        parser.add_argument(flag_of(field, flags), dest=field.name, type=kind,
                            default=field.default if defaults else None, **extra,
                            help=f"{field.help[:1].lower()}{field.help[1:].rstrip('.')} (default: {said})")


def given_settings(cls_or_fields: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The declared settings ``args`` holds a value for (options left unset, None, are left out)."""
    return {f.name: getattr(args, f.name) for f in _fields(cls_or_fields) if getattr(args, f.name, None) is not None}


def settings_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """``cls`` built from the options :func:`add_setting_options` declared (unset ones take the
    class's defaults) and ``fixed``; out-of-range values raise the class's own ValueError."""
    return cls(**{**given_settings(cls, args), **fixed})


def add_family_options(parser: argparse.ArgumentParser | Any, families: Mapping[str, tuple[type, Mapping[str, str]]],
                       names: Sequence[str]) -> None:
    """Options shared by several settings classes whose defaults differ (the families to train):
    ``families`` maps a family's label to its settings class and its own names for the shared
    ones (YOLO's ``tile`` is ``imgsz``). Unset options stay None, and each family's default is
    said in the help; each family's class checks the values."""
    chosen: list[Field] = []
    said: dict[str, str] = {}
    for name in names:
        found = [(label, {f.name: f for f in fields_of(cls)}.get(dict(aliases).get(name, name)))
                 for label, (cls, aliases) in families.items()]
        found = [(label, f) for label, f in found if f is not None]
        if not found:
            raise ValueError(f"no family declares a setting {name!r}")
        chosen.append(dataclasses.replace(found[0][1], name=name))
        said[name] = ", ".join(f"{label} {_default_text(f.default)}" for label, f in found)
    add_setting_options(parser, chosen, defaults=False, default_text=said)
