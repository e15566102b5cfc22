"""A setting's widget made from its declaration (:class:`core.schema.Field`): the label, help,
range, step and options the validator checks are the ones the widget offers, so a page cannot
let the user pick a value the validator refuses, nor hide one it allows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from core.schema import Field

# What a kind is drawn with unless the caller asks for another widget.
DEFAULT_WIDGET = {"bool": "checkbox", "choice": "selectbox", "int": "slider", "float": "slider", "text": "text_input"}


def widget_args(field: Field, *, integer: bool = False) -> dict[str, Any]:
    """min_value / max_value / step of a numeric field's widget (ints where ``integer`` or the
    field is whole-numbered), or options of a choice."""
    if field.kind == "choice":
        return {"options": list(field.options)}
    if field.kind not in ("int", "float"):
        return {}
    low, high = field.bounds()
    cast = int if integer or field.kind == "int" else float
    step = field.step if field.step is not None else (1 if cast is int else None)
    args = {"min_value": None if low is None else cast(low), "max_value": None if high is None else cast(high)}
    if step is not None:
        args["step"] = cast(step)
        if cast is float and (decimals := _decimals(step)) > 2:  # Streamlit shows 2 by default: 0.005 read "0.01"
            args["format"] = f"%.{decimals}f"
    return args


def _decimals(step: float) -> int:
    """Decimal places of ``step`` as written (0.005 -> 3, 0.25 -> 2); at most 6."""
    text = f"{step:.6f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def field_widget(where: Any, field: Field, key: str, value: Any = None, *, widget: str | None = None,
                   label: str | None = None, integer: bool = False, format_func: Callable | None = None,
                   **kwargs: Any) -> Any:
    """Draw ``field``'s widget in ``where`` (``st``, a column, a container) under ``key``.

    ``value``: the initial value (None: the widget's session state, as the recipe panel seeds it);
    ``widget``: slider, number_input, select_slider, selectbox, segmented_control, checkbox,
    toggle or text_input (default: by the field's kind); ``integer``: a float setting drawn with
    whole steps (the Cell map's perplexity); other keywords (on_change, disabled, format, ...)
    go to the widget as they are."""
    where = where if where is not None else st
    kind = widget or DEFAULT_WIDGET[field.kind]
    draw = getattr(where, kind)
    common = dict(key=key, help=field.help, **kwargs)
    if format_func is not None:
        common["format_func"] = format_func
    text = field.label if label is None else label
    if value is not None:
        value = int(value) if integer and not isinstance(value, tuple) else value
    if kind in ("checkbox", "toggle", "text_input"):
        return draw(text, **({} if value is None else {"value": value}), **common)
    if kind in ("selectbox", "segmented_control", "select_slider"):
        options = list(field.options)
        if kind == "selectbox":
            chosen = {} if value is None else {"index": options.index(value)}
        elif kind == "segmented_control":
            chosen = {"default": field.default if value is None else value, "required": True}
        else:
            chosen = {} if value is None else {"value": value}
        return draw(text, options, **chosen, **common)
    args = widget_args(field, integer=integer) | common  # a caller's format wins over the step's
    return draw(text, **args, **({} if value is None else {"value": value}))


def range_widget(where: Any, low: Field, high: Field, key: str, value: tuple | None = None, *,
                 label: str | None = None, **kwargs: Any) -> Any:
    """One range slider for two settings (a low and a high bound): the range is their fields'."""
    where = where if where is not None else st
    args = widget_args(low) | {"max_value": widget_args(high)["max_value"], "key": key, "help": low.help} | kwargs
    return where.slider(low.label if label is None else label, **args, **({} if value is None else {"value": value}))
