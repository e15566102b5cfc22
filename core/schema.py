"""Settings declared once: each field's default, range, step, label and help, as data.

A settings class (the recipe's steps, the map settings, a family's training or model settings)
is a frozen dataclass whose attributes are declared with :func:`setting`. From that one
declaration come the validator (:func:`check_fields`, called in ``__post_init__``), the page's
widget (``components.settings_widgets``) and the command-line option (``workflows.cli_options``), so a
limit holds on every path: a value the page's slider cannot reach is refused by the CLI with the
same message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("float", "int", "bool", "choice", "text", "recipe")


@dataclass(frozen=True)
class Field:
    """One setting: its name, what the user reads (label, help), its default and what it may be.

    ``low``/``high`` bound numbers (inclusive); ``special`` lists values outside the range that
    mean something (0 = "from the typical cell size"), ``options`` the values of a choice.
    """

    name: str
    label: str
    default: Any
    help: str
    kind: str = "float"  # float | int | bool | choice | text | recipe (the Preprocess page's recipe: no widget)
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple = ()
    special: tuple = ()  # values allowed outside [low, high], e.g. (0,) = "auto"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.kind == "choice" and self.default not in self.options:
            raise ValueError(f"setting {self.name}: default {self.default!r} is not one of its options")
        if self.kind in ("int", "float") and self.default not in self.special:
            if (self.low is not None and self.default < self.low) or (self.high is not None and self.default > self.high):
                raise ValueError(f"setting {self.name}: default {self.default} is outside {self.allowed()}")

    def allowed(self) -> str:
        """What fits, in words: 'between 2 and 50', 'one of a, b', 'at least 1 (or 0)'."""
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.options))
        if self.kind == "bool":
            return "true or false"
        if self.low is not None and self.high is not None:
            text = f"between {_num(self.low)} and {_num(self.high)}"
        elif self.low is not None:
            text = f"at least {_num(self.low)}"
        elif self.high is not None:
            text = f"at most {_num(self.high)}"
        else:
            text = "a number"
        return text + (f" (or {', '.join(map(_num, self.special))})" if self.special else "")

    def bounds(self) -> tuple[Any, Any]:
        """The smallest and largest value a widget must offer: the range and the special values."""
        numbers = [v for v in (self.low, self.high, *self.special) if v is not None]
        return (min(numbers) if self.low is not None else None, max(numbers) if self.high is not None else None)

    def check(self, value: Any) -> Any:
        """``value`` as this setting's type if it fits, else ValueError naming the setting and what fits."""
        if self.kind in ("recipe", "text"):
            return value
        if self.kind == "choice":
            if value not in self.options:
                raise ValueError(f"{self.name} must be {self.allowed()}; got {value!r}")
            return value
        if self.kind == "bool":
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError(f"{self.name} must be true or false; got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.name} must be a number; got {value!r}")
        if self.kind == "int" and value != int(value):
            raise ValueError(f"{self.name} must be a whole number; got {value}")
        if value not in self.special and ((self.low is not None and value < self.low)
                                          or (self.high is not None and value > self.high)):
            raise ValueError(f"{self.name} must be {self.allowed()}; got {_num(value)}")
        return int(value) if self.kind == "int" else float(value)

    def parse(self, text: str) -> Any:
        """A value typed as text (a CLI option, a query parameter), checked."""
        if self.kind in ("text", "recipe", "choice"):
            return self.check(text)
        if self.kind == "bool":
            lowered = str(text).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{self.name} must be true or false; got {text!r}")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{self.name} must be a number; got {text!r}") from None
        return self.check(int(number) if self.kind == "int" and number == int(number) else number)


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting(default: Any, *, label: str, help: str, low: float | None = None, high: float | None = None,
            step: float | None = None, options: tuple = (), special: tuple = (), kind: str | None = None) -> Any:
    """A dataclass attribute declared with its :class:`Field` (the name is filled from the attribute)."""
    if kind is None:
        kind = ("bool" if isinstance(default, bool) else "int" if isinstance(default, int)
                else "float" if isinstance(default, float) else "choice" if options else "text")
    spec = Field("", label, default, help, kind=kind, low=low, high=high, step=step, options=tuple(options),
                 special=tuple(special))
    return dataclasses.field(default=default, metadata={"setting": spec})


def fields_of(cls_or_obj: Any) -> tuple[Field, ...]:
    """The declared settings of a settings class, in order, each with its attribute's name.

    A subclass that only gives an inherited setting a new default (``epochs: int = 2``) keeps the
    declaration of the class it inherits from (label, help, limits), with its own default."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    found = []
    for f in dataclasses.fields(cls_or_obj):
        spec = f.metadata.get("setting") or _inherited(cls, f.name)
        if spec is None:
            continue
        if f.default is not dataclasses.MISSING and f.default != spec.default:
            spec = dataclasses.replace(spec, default=f.default)
        found.append(dataclasses.replace(spec, name=f.name))
    return tuple(found)


def _inherited(cls: type, name: str) -> Field | None:
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            for f in dataclasses.fields(base):
                if f.name == name and "setting" in f.metadata:
                    return f.metadata["setting"]
    return None


def field_of(cls_or_obj: Any, name: str) -> Field:
    for spec in fields_of(cls_or_obj):
        if spec.name == name:
            return spec
    raise KeyError(name)


def check_fields(obj: Any, where: str = "") -> None:
    """Validate every declared attribute of ``obj`` (call it from ``__post_init__``); the message
    names the setting as ``where.name``."""
    for spec in fields_of(obj):
        try:
            value = spec.check(getattr(obj, spec.name))
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}" if where else str(exc)) from None
        if value != getattr(obj, spec.name) or type(value) is not type(getattr(obj, spec.name)):
            object.__setattr__(obj, spec.name, value)


def from_mapping(cls: type, data: Mapping[str, Any], what: str = "settings") -> Any:
    """``cls(**data)`` with unknown keys refused by name and the known ones listed."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**dict(data))
