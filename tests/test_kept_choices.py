"""Every kept control of every page keeps its value across a visit to another page and a reload.

Each page declares what it keeps (its ``KEPT``) and the workspace keeps it: a new kept widget is
covered without touching this test, because the test finds the widgets from the page itself and
changes each one."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from components.workspace import kept_keys

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("pages/data.py", "pages/preprocess.py", "pages/compare.py", "pages/cellmap.py", "pages/explain.py",
         "pages/train.py")
KEPT_IMAGES = ("plateA_field1", "plateA_field3", "plateB_field1", "plateB_field3")  # a small but two-plate dataset
# Values chosen for a few controls, to keep the test quick (no model downloads, no UMAP compilation)
# and to replay the cases; every other kept control gets a neighbouring value.
CHOSEN = {"cm.segmenter": "ground truth", "cm.crop_mode": "pad", "cm.clusters": "hdbscan", "ex.target": "condition", "tr.family": "rcnn", "tr.split": "plates", "cm.drag": "lasso", "cm.method": "pca", "cm.correction": "harmony", "cm.color": "image",
          "cmp.models": ["classical", "yolo11n-nuclei"], "ex.view": "Cells", "device_choice": "cpu"}
LAST = {"cm.features": "autoencoder"}  # set after the controls drawn only once a map exists


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)


def _kept_controls(at: AppTest) -> dict:
    found = {}

    def walk(node) -> None:
        for child in getattr(node, "children", {}).values():
            key = getattr(child, "key", None)
            if isinstance(key, str) and kept_keys().keeps_widget(key) and hasattr(child, "set_value"):
                found[key] = child
            walk(child)

    walk(at._tree)
    return found


def _other(options: list, current) -> object:
    """An option other than ``current``: the next one."""
    i = options.index(current) if current in options else -1
    return options[(i + 1) % len(options)]


def _change(widget, key: str):
    """Set ``widget`` to a value other than its own; returns the value set."""
    kind = type(widget).__name__
    if key in CHOSEN or key in LAST:
        value = CHOSEN.get(key, LAST.get(key))
    elif kind in ("Selectbox", "ButtonGroup"):
        value = _value_of(widget, _other(list(widget.options), widget.format_func(widget.value)), key)
    elif kind == "Multiselect":
        value = [o for o in map(lambda label: _value_of(widget, label, key), widget.options) if o not in widget.value][:1]
    elif kind == "SelectSlider":
        value = _value_of(widget, _other(list(widget.options), str(widget.format_func(widget.value))), key)
    elif kind in ("Slider", "NumberInput"):
        step = widget.step or 1
        value = widget.value + step if widget.max is None or widget.value + step <= widget.max else widget.value - step
        value = type(widget.value)(round(value, 10))
    elif kind in ("Toggle", "Checkbox"):
        value = not widget.value
    elif kind == "TextInput":
        value = f"{widget.value}x"
    else:
        raise AssertionError(f"no way to change a {kind} ({key}) in this test")
    widget.set_value(value)
    return value


def _value_of(widget, label: str, key: str):
    """The option value whose label is ``label`` (AppTest knows options by their labels only)."""
    for cast in (int, float, str):
        try:
            value = cast(label)
            if str(widget.format_func(value)) == label:
                return value
        except (ValueError, KeyError, TypeError):
            continue
    raise AssertionError(f"{key}: no value for the option {label!r}; give one in CHOSEN")


def _values(at: AppTest, keys) -> dict:
    drawn = _kept_controls(at)
    return {k: drawn[k].value if k in drawn else at.session_state[k] for k in keys}


def _visit(at: AppTest, page: str) -> AppTest:
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def _set_every_kept_control(at: AppTest) -> dict:
    """Change every kept control drawn, round after round (new ones appear as results do)."""
    changed: dict = {}
    for round_ in range(4):
        todo = {k: w for k, w in _kept_controls(at).items()
                if k not in changed and not w.disabled and (k not in LAST or round_ == 3)}
        if not todo:
            continue
        for key, widget in todo.items():
            changed[key] = _change(widget, key)
        at.run()
        assert not at.exception, at.exception
    # what the page settled on (e.g. a slider value rounded by its step)
    return _values(at, changed)


@pytest.mark.parametrize("page", PAGES)
def test_every_kept_control_survives_another_page_and_a_reload(page):
    at = _app().run()
    ds = at.session_state["dataset"]
    ds.remove([n for n in ds.names if n not in KEPT_IMAGES])
    _visit(at, page)
    chosen = _set_every_kept_control(at)
    assert len(chosen) >= 3, f"{page}: only {sorted(chosen)} found"
    other = "pages/preprocess.py" if page == "pages/data.py" else "pages/data.py"
    _visit(at, other)
    _visit(at, page)
    assert _values(at, chosen) == chosen
    # the choices reached the workspace: a reload (or the link opened elsewhere) shows them too
    again = _app()
    again.query_params["ws"] = at.query_params["ws"]
    again.run()
    _visit(again, page)
    assert _values(again, chosen) == chosen
