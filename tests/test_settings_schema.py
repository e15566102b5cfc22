"""One settings schema: every declared field (the recipe's steps, the map settings, each family's
training settings, every registered model's settings and the tiling) has ONE range. Its widget
offers exactly that range, its CLI option defaults to the declared default, and a value just
outside is refused on the API path and the CLI path with the same one-line message.

The widgets are read as drawn (a recorder standing in for Streamlit, or AppTest for the pages), not
from the declaration, so a range hard-coded in a widget again fails here."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields as dataclass_fields

import numpy as np
import pytest
from conftest import open_page

from core.schema import Field, fields_of
from core.segmentation.recipe import DENOISE_METHODS, STEP_TYPES, Recipe
from models.cellmap import MapSettings
from models.registry import families, list_models
from models.tiling import TILING_SETTINGS
from workflows.cli import build_parser, main

TRAINERS = {f.name: f.trainer for f in families(trainable=True)}
LABELS = {f.name: f.label for f in families(trainable=True)}
TRAINING = {family: t.settings_class for family, t in TRAINERS.items()}
NUMERIC = ("int", "float")


def _span(field: Field) -> tuple:
    """What the widget must offer, from the declaration: the range with its special values."""
    low = min([field.low, *field.special]) if field.low is not None else None
    high = max([field.high, *field.special]) if field.high is not None else None
    return low, high


def _outside(field: Field) -> list:
    """Values just outside ``field``'s range (below and above), or a value that is not one of its options."""
    if field.kind == "choice":
        return [max(field.options) + 1 if isinstance(field.default, int) else "no-such-option"]
    if field.kind not in NUMERIC:
        return []
    step = field.step or 1
    values = []
    if field.high is not None:
        values.append(field.high + step)
    if field.low is not None:
        below = min([field.low, *field.special]) - step
        values.append(below)
    return [int(v) if field.kind == "int" else float(v) for v in values]


def _got(value) -> str:
    """A refused value as the messages write it."""
    return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def _refusal(make) -> str:
    with pytest.raises(ValueError) as caught:
        make()
    return str(caught.value)


# ------------------------------------------------------------------------------- a fake Streamlit

POSITIONAL = {"slider": ("label", "min_value", "max_value", "value", "step"),
              "number_input": ("label", "min_value", "max_value", "value", "step"),
              "select_slider": ("label", "options", "value"), "selectbox": ("label", "options", "index"),
              "segmented_control": ("label", "options"), "checkbox": ("label", "value"), "toggle": ("label", "value"),
              "text_input": ("label", "value"), "radio": ("label", "options")}


class Recorder:
    """Stands in for ``st`` and its columns and containers: every widget's arguments by key."""

    open = True

    def __init__(self, state: dict | None = None) -> None:
        self.session_state = {} if state is None else state
        self.drawn: dict[str, tuple[str, dict]] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def columns(self, spec, **_):
        return [self] * (spec if isinstance(spec, int) else len(spec))

    def __getattr__(self, name: str):
        if name in POSITIONAL:
            return lambda *args, **kwargs: self._widget(name, args, kwargs)
        if name in ("expander", "container", "popover"):
            return lambda *args, **kwargs: self
        return lambda *args, **kwargs: None  # caption, warning, markdown, ...

    def _widget(self, kind: str, args: tuple, kwargs: dict):
        got = dict(zip(POSITIONAL[kind], args, strict=False)) | kwargs
        self.drawn[got["key"]] = (kind, got)
        if got["key"] in self.session_state:
            return self.session_state[got["key"]]
        if "options" in got:
            return list(got["options"])[got.get("index") or 0]
        return got.get("value", got.get("min_value"))


def _assert_drawn_as_declared(kind_args: tuple[str, dict], field: Field, *, options=None) -> None:
    kind, got = kind_args
    where = f"{field.name} ({kind})"
    assert got["label"] == field.label and got["help"] == field.help, where
    if field.kind in NUMERIC and kind in ("slider", "number_input"):
        assert (got["min_value"], got["max_value"]) == pytest.approx(_span(field)), where
        assert got.get("step") == pytest.approx(field.step or 1), where
        if field.kind == "float" and field.step and round(field.step, 2) != field.step:  # e.g. 0.005: "0.01" misled
            assert "format" in got and float(got["format"] % field.step) == pytest.approx(field.step), where
    elif field.kind in NUMERIC or field.kind == "choice":  # a select slider or box: its options
        assert list(got["options"]) == list(options or field.options), where


# ---------------------------------------------------------------------------------- the recipe


def test_every_recipe_field_is_drawn_with_its_declared_range(monkeypatch):
    import components.recipe_panel as panel
    import components.settings_widgets as widgets
    from core.data.images import ChannelInfo

    drawn: dict = {}
    # Every branch: each denoise method and each threshold family shows its own widgets.
    for denoise in DENOISE_METHODS:
        for threshold in ("manual", "otsu_gaussian", "adaptive_gaussian"):
            fake = Recorder({"rcp.denoise.method": denoise, "rcp.threshold.method": threshold})
            monkeypatch.setattr(panel, "st", fake)
            monkeypatch.setattr(widgets, "st", fake)
            panel.recipe_panel([ChannelInfo("DAPI", "nucleus")])
            drawn |= fake.drawn
    checked = 0
    for step, cls in STEP_TYPES.items():
        widget, low, high = panel.PAIRED.get(step, (None, None, None))
        for field in fields_of(cls):
            if field.name in (low, high):
                kind, got = drawn[f"rcp.{step}.{widget}"]
                assert (got["min_value"], got["max_value"], got["step"]) == (
                    field_of_step(step, low).low, field_of_step(step, high).high, field.step), step
                continue
            key = f"rcp.{step}.{field.name}"
            assert key in drawn, f"{key} has no widget"
            if step == "channel":  # its options are the image's channels
                assert drawn[key][1]["label"] == field.label
                continue
            _assert_drawn_as_declared(drawn[key], field)
            checked += 1
    assert checked >= 40  # every step's fields, not a few


def field_of_step(step: str, name: str) -> Field:
    return {f.name: f for f in fields_of(STEP_TYPES[step])}[name]


@pytest.mark.parametrize(("method", "param"), [("manual", "value"), ("adaptive_gaussian", "offset")])
def test_the_live_threshold_slider_has_the_recipe_fields_range(monkeypatch, method, param):
    import components.live_threshold as live
    from core.segmentation.recipe import ThresholdStep

    sent: dict = {}
    monkeypatch.setattr(live, "_payload", lambda *args, **kwargs: {})
    monkeypatch.setattr(live, "_live_threshold", lambda **kwargs: sent.update(kwargs["data"]))
    live.live_threshold(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32), ThresholdStep(method=method),
                        10.0, "image")
    field = field_of_step("threshold", param)
    assert (sent["min"], sent["max"], sent["step"]) == (field.low, field.high, field.step)


def _recipe_cases():
    for step, cls in STEP_TYPES.items():
        for field in fields_of(cls):
            for value in _outside(field):
                yield pytest.param(step, field, value, id=f"{step}.{field.name}={value}")


@pytest.mark.parametrize(("step", "field", "value"), list(_recipe_cases()))
def test_a_recipe_value_just_outside_is_refused_by_the_api_and_the_cli_alike(step, field, value, tmp_path, capsys):
    message = _refusal(lambda: Recipe().with_step(step, **{field.name: value}))
    assert message == f"{step}.{field.name} must be {field.allowed()}; got {_got(value)}"
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"steps": {step: {field.name: value}}}))
    assert main(["recipe", "--recipe", str(path)]) == 1
    assert capsys.readouterr().err == f"error: {path}: {message}\n"  # the file it is in, then the same words


# ------------------------------------------------------------------------- map and training pages


def test_the_cell_map_controls_are_drawn_with_map_settings_ranges():
    at = open_page("pages/cellmap.py")
    declared = {f.name: f for f in fields_of(MapSettings)}
    keys = {"perplexity": "cm.perplexity", "iterations": "cm.iterations", "n_neighbors": "cm.neighbors",
            "min_dist": "cm.min_dist", "k": "cm.k", "min_cluster_size": "cm.min_size"}
    for name, key in keys.items():
        slider, field = at.slider(key=key), declared[name]
        assert (slider.min, slider.max, slider.step) == pytest.approx((field.low, field.high, field.step)), name
        assert slider.label == field.label and slider.value == field.default, name
    seed = at.number_input(key="cm.seed")
    assert (seed.min, seed.max, seed.step, seed.value) == (declared["seed"].low, declared["seed"].high, 1, 0)
    from models.cellmap import CORRECTION_NAMES, METHOD_NAMES

    assert at.selectbox(key="cm.correction").options == [CORRECTION_NAMES[o] for o in declared["correction"].options]
    assert at.selectbox(key="cm.clusters").options == ["k-means", "HDBSCAN"]
    assert len(declared["clusters"].options) == 2
    assert at.button_group(key="cm.method").options == [METHOD_NAMES[o] for o in declared["method"].options]
    assert set(keys) | {"seed", "correction", "clusters", "method", "control"} == set(declared)  # every field drawn


def test_the_train_page_draws_each_familys_settings_with_their_limits():
    MAIN_SETTINGS = ("epochs", "batch_size", "lr", "patience", "seed")  # components/train_form.py's

    at = open_page("pages/train.py")
    for family, cls in TRAINING.items():
        at.selectbox(key="tr.family").set_value(family).run()
        assert not at.exception, at.exception
        for name in MAIN_SETTINGS:
            field, box = {f.name: f for f in fields_of(cls)}[name], at.number_input(key=f"tr.fam.{family}.{name}")
            assert (box.min, box.max, box.step) == pytest.approx((field.low, field.high, field.step)), (family, name)
            assert box.label == field.label and box.value == pytest.approx(field.default), (family, name)
    from core.training.data import VAL_FRACTION

    share = at.slider(key="tr.val_fraction")  # the split's share: train --val-split reads the same declaration
    assert (share.min, share.max, share.step, share.value) == pytest.approx(
        (VAL_FRACTION.low, VAL_FRACTION.high, VAL_FRACTION.step, VAL_FRACTION.default))


# ------------------------------------------------------------------------------ model settings


def _model_fields() -> list[Field]:
    """Every registered model's settings, the U-Net's (registered once a checkpoint exists) and the tiling."""
    from components.model_panel import settings_of
    from models.unet import UNET_SETTINGS

    found = {key: s for key, s in settings_of([m.name for m in list_models()]).items() if s.kind != "recipe"}
    return list(found.values()) + [s for s in UNET_SETTINGS if s.name not in found] + list(TILING_SETTINGS)


def test_every_model_setting_and_the_tiling_are_drawn_with_their_declared_range(monkeypatch):
    import components.model_panel as panel
    import components.settings_widgets as widgets

    fake = Recorder()
    monkeypatch.setattr(panel, "st", fake)
    monkeypatch.setattr(widgets, "st", fake)
    panel.model_settings("t", [m.name for m in list_models()])  # the Compare page's panel
    for field in _model_fields():
        panel.setting_widget(field, key=f"one.{field.name}", where=fake)  # Cell map's and Explain's
    shown = _model_fields()
    assert len(shown) >= 20 and len([k for k in fake.drawn if k.startswith("t.")]) >= 15
    for field in shown:
        _assert_drawn_as_declared(fake.drawn[f"one.{field.name}"], field)
        if f"t.{field.name}" in fake.drawn:
            _assert_drawn_as_declared(fake.drawn[f"t.{field.name}"], field)


def _model_cases():
    by_setting = {}
    for info in list_models():
        for s in info.settings:
            by_setting.setdefault(s.name, info)
    for field in _model_fields():
        for value in _outside(field):
            yield pytest.param(by_setting.get(field.name), field, value, id=f"{field.name}={value}")


@pytest.mark.parametrize(("info", "field", "value"), list(_model_cases()))
def test_a_model_setting_just_outside_is_refused_by_name(info, field, value):
    message = _refusal(lambda: field.check(value))
    assert message.startswith(f"{field.name} must be ")
    if info is not None:  # the registry's own path refuses it with the same words
        assert _refusal(lambda: info.resolve({field.name: value})) == message


@pytest.mark.parametrize("command", ["segment", "compare"])
def test_the_tile_option_is_the_declared_tiling(command, capsys):
    tile = {f.name: f for f in TILING_SETTINGS}["tile"]
    assert _option(command, "--tile").default == tile.default
    args = ["segment", "none.tif", "-o", "x.tif"] if command == "segment" else ["compare", "none.tif", "--models",
                                                                               "classical", "--out", "x"]
    assert main([*args, "--tile", "1000"]) == 1
    assert capsys.readouterr().err == f"error: {_refusal(lambda: tile.check(1000))}\n"


# ----------------------------------------------------------------------------------- the CLI


def _option(command: str, flag: str) -> argparse.Action:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (action,) = [a for a in sub.choices[command]._actions if flag in a.option_strings]
    return action


EMBED_FLAGS = {"correction": "--correct", "control": "--control", "method": "--map", "perplexity": "--perplexity",
               "iterations": "--iterations", "clusters": "--clusters", "k": "--k", "seed": "--seed"}


def test_embed_options_default_to_the_map_settings_the_page_starts_with():
    for name, flag in EMBED_FLAGS.items():
        field = {f.name: f for f in fields_of(MapSettings)}[name]
        action = _option("embed", flag)
        assert action.default == field.default and action.dest == name, flag
    assert MapSettings() == MapSettings(**{n: _option("embed", f).default for n, f in EMBED_FLAGS.items()})


def _map_cases():
    for name in EMBED_FLAGS:
        field = {f.name: f for f in fields_of(MapSettings)}[name]
        for value in _outside(field):
            yield pytest.param(field, value, id=f"{name}={value}")


@pytest.mark.parametrize(("field", "value"), list(_map_cases()))
def test_a_map_setting_just_outside_is_refused_by_the_api_and_embed_alike(field, value, tmp_path, capsys):
    message = _refusal(lambda: MapSettings(**{field.name: value}))
    assert message.startswith(f"{field.name} must be ")
    code = _exit(lambda: main(["embed", str(tmp_path / "none"), "--out", str(tmp_path / "out"),
                               EMBED_FLAGS[field.name], str(value)]))
    err = capsys.readouterr().err
    if field.kind == "choice":  # argparse's own choices: refused before anything runs
        assert code == 2 and "invalid choice" in err
    else:
        assert code == 1 and err == f"error: {message}\n"


def _exit(run) -> int:
    try:
        return run()
    except SystemExit as stop:
        return stop.code


def test_train_options_leave_each_familys_defaults_to_its_declaration():
    from workflows.cli import TRAINING_FLAGS

    for flag in TRAINING_FLAGS:
        action = _option("train", "--" + flag.replace("_", "-"))
        assert action.default is None
        for family, cls in TRAINING.items():
            name = dict(TRAINERS[family].aliases).get(flag, flag)
            declared = {f.name: f for f in fields_of(cls)}
            if name in declared:  # the help says each family's default, the declared one
                assert f"{LABELS[family]} {declared[name].default:g}" in action.help, (flag, family)
    for family, cls in TRAINING.items():  # no option given: the family's declared defaults (the page's)
        assert TRAINERS[family].settings({}) == cls()


def _training_cases():
    from workflows.cli import TRAINING_FLAGS

    for family, cls in TRAINING.items():
        aliases = dict(TRAINERS[family].aliases)
        for field in fields_of(cls):
            flag = next((f for f in TRAINING_FLAGS if aliases.get(f, f) == field.name), None)
            for value in _outside(field):
                yield pytest.param(family, cls, field, flag, value, id=f"{family}.{field.name}={value}")


@pytest.mark.parametrize(("family", "cls", "field", "flag", "value"), list(_training_cases()))
def test_a_training_setting_just_outside_is_refused_by_the_api_and_train_alike(family, cls, field, flag, value,
                                                                               tmp_path, capsys):
    message = _refusal(lambda: cls(**{field.name: value}))
    assert message == f"{field.name} must be {field.allowed()}; got {_got(value)}"
    assert _refusal(lambda: cls.from_dict({field.name: value})) == message  # checkpoints' and the jobs' path
    if flag is None:
        return  # no command-line option for it (the family's other defaults)
    code = main(["train", "--model", family, "--images", str(tmp_path / "none"), "--out", str(tmp_path / "x.pt"),
                 "--" + flag.replace("_", "-"), str(value)])
    assert code == 1 and capsys.readouterr().err == f"error: {message}\n"


def test_the_limits_that_were_only_on_the_train_page_hold_on_the_command_line(tmp_path, capsys):
    code = main(["train", "--model", "unet", "--images", str(tmp_path), "--out", str(tmp_path / "x.pt"), "--epochs",
                 "100000"])
    assert code == 1 and capsys.readouterr().err == "error: epochs must be between 1 and 1000; got 100000\n"


def test_every_settings_class_declares_every_attribute():
    """An attribute without a declaration has no widget, no option and no range: none is left."""
    classes = [*STEP_TYPES.values(), MapSettings, *TRAINING.values()]
    for cls in classes:
        assert [f.name for f in dataclass_fields(cls)] == [f.name for f in fields_of(cls)], cls.__name__


def test_a_subclass_that_only_changes_a_default_keeps_the_inherited_declaration():
    from dataclasses import dataclass

    from core.schema import fields_of, setting

    @dataclass(frozen=True)
    class Base:
        epochs: int = setting(10, label="Epochs", help="Most passes.", low=1, high=1000, step=1)

    @dataclass(frozen=True)
    class Quick(Base):
        epochs: int = 2

    (field,) = fields_of(Quick)
    assert (field.name, field.label, field.default, field.bounds()) == ("epochs", "Epochs", 2, fields_of(Base)[0].bounds())


@pytest.mark.parametrize("value", [9, 1001])
def test_cells_per_class_is_refused_alike_by_the_api_and_explain(value, tmp_path, capsys):
    from models.explain_cells import CELLS_PER_CLASS
    from workflows.explain import ExplainRequest

    assert _option("explain", "--cells-per-class").default == CELLS_PER_CLASS.default  # the page's slider starts there
    message = _refusal(lambda: ExplainRequest("batch", {}, per_class=value))
    assert message == f"per_class must be between 10 and 1000; got {value}"
    code = _exit(lambda: main(["explain", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--target", "batch",
                               "--cells-per-class", str(value)]))
    assert code == 1 and capsys.readouterr().err == f"error: {message}\n"
