"""Choosing models and their settings; loading them once per process; caching their results."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import streamlit as st

from components.recipe_panel import current_recipe
from components.settings_widgets import field_widget
from core.cache import BoundedCache
from core.data.images import CellImage
from core.data.instances import Instances
from core.evaluation.score_tables import agreement_matrix, summary_table
from core.segmentation.recipe import Recipe
from models.device import resolve_device
from models.registry import (
    LoadedModel,
    ModelInfo,
    Setting,
    availability,
    display_order,
    get_model_info,
    list_models,
    load_model,
    setting_key,
)
from models.runner import run_model
from models.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, TILING_SETTINGS
from models.weights import (
    WEIGHTS_DIR_ENV,
    WeightsUnavailable,
    describe,
    offline_advice,
    resolve_weights,
    weights_dir,
)
from models.yolo import user_weights_folder

DEFAULT_MODELS = ("classical", "yolo11s-nuclei")
UPLOAD_ENV = "CELLSCOPE_ALLOW_WEIGHTS_UPLOAD"


def current_device() -> str:
    """The sidebar's choice, falling back to the CPU when that device is absent."""
    try:
        return resolve_device(st.session_state.get("device_choice", "auto"))
    except ValueError:
        return "cpu"


def _models() -> list[ModelInfo]:
    return sorted(list_models("segment"), key=display_order)  # each family's order, from its registry entry


def readiness_label(names: list[str]) -> Callable[[str], str]:
    """A model chooser's ``format_func``: each name, marked "(needs weights)" where it cannot run yet."""
    ready = {name: availability(name)[0] for name in names}
    return lambda name: name if ready.get(name, True) else f"{name} (needs weights)"


def model_picker(key: str) -> list[str]:
    """A multiselect of every model, each marked with whether it can run now."""
    names = [m.name for m in _models()]
    return st.multiselect(
        "Models", names, default=[n for n in DEFAULT_MODELS if n in names], key=key,
        format_func=readiness_label(names),
        help="Run side by side on the same image. 'needs weights': downloaded on first use (progress shown), "
             "or, without internet, placed in the weights folder by whoever runs CellScope. *What each model is* "
             "describes them.",
    )


def add_to_comparison(name: str, key: str = "cmp.models") -> None:
    """Put ``name`` among the Compare page's chosen models (a callback: before that widget is drawn)."""
    chosen = list(st.session_state.get(key, DEFAULT_MODELS))
    st.session_state[key] = chosen if name in chosen else [*chosen, name]


def model_table() -> list[dict[str, str]]:
    """One row per model: what it is, whether its weights are here, where they come from."""
    rows = []
    for m in _models():
        ok, why = availability(m.name)
        w = m.weights
        rows.append({
            "model": m.name, "ready": "yes" if ok else "needs weights", "what it is": m.description,
            "weights": "none needed" if w is None else
            describe(w),
        })
    return rows


@st.dialog("What each model is", width="large")
def model_guide() -> None:
    """Every model in a readable table, with the weights folder and how to add your own."""
    rows = model_table()
    st.markdown("| model | ready | what it is | weights |\n|---|---|---|---|\n" + "\n".join(
        f"| **{r['model']}** | {r['ready']} | {r['what it is']} | {r['weights']} |" for r in rows))
    st.markdown(f"Weights folder, on the machine that runs CellScope (whoever runs it places files there; the "
                f"setting `{WEIGHTS_DIR_ENV}` moves it):\n\n`{weights_dir()}`\n\n"
                f"Your own YOLO `.pt` files (detect or segment) placed in `{user_weights_folder()}` appear as "
                "`user:<name>`.")
    weights_upload()


def weights_upload() -> None:
    """Browser upload of YOLO weights: off unless the server allows it (a .pt file is a pickle that runs code)."""
    if os.environ.get(UPLOAD_ENV) != "1":
        st.caption(f"Uploading weights from the browser is off: a `.pt` file can run code on the server. For a "
                   f"single-user local install, start the app with `{UPLOAD_ENV}=1` to enable it.")
        return
    up = st.file_uploader("Add YOLO weights (.pt)", type=["pt"], key="cmp.weights_upload",
                          help="Saved into the weights folder's yolo/ subfolder; listed as user:<name>.")
    if up is not None:
        folder = user_weights_folder()
        folder.mkdir(parents=True, exist_ok=True)
        name = os.path.basename(up.name)
        (folder / name).write_bytes(up.getvalue())
        st.success(f"Saved {name} to {folder}; pick user:{name.removesuffix('.pt')} above.")


def fetch_missing_weights(names: list[str], *, key: str) -> list[str]:
    """For chosen models without weights: one download button with progress per weights file
    (however many of the models share it), or what to place where. Returns the names that can
    run now. ``key`` names the place on the page: each place draws its own buttons."""
    ready = [n for n in names if availability(n)[0]]
    missing: dict[str, list[str]] = {}  # weights file -> the chosen models that need it
    for name in names:
        if name in ready:
            continue
        spec = get_model_info(name).weights
        if spec is None or not spec.url:
            st.error(f"**{name}** cannot run: {availability(name)[1]}.")
            continue
        missing.setdefault(spec.filename, []).append(name)
    for filename, needing in missing.items():
        spec = get_model_info(needing[0]).weights
        who = ", ".join(f"**{n}**" for n in needing)
        slot = st.empty()  # the warning and its button go once the file is here
        cols = slot.container().columns([3, 1], vertical_alignment="center")
        cols[0].warning(f"{who} {'needs' if len(needing) == 1 else 'need'} {describe(spec)} from {spec.url}. "
                        f"{offline_advice(weights_dir() / filename)}.")
        if cols[1].button(f"Download {spec.size_mb:.0f} MB", key=f"{key}.dl.{filename}", width="stretch",
                          help=f"Fetch {filename} into {weights_dir()}, checksum-verified when one is published."):
            bar = st.progress(0.0, text=f"Downloading {filename}…")

            def progress(done: int, total: int | None, bar=bar, filename=filename) -> None:
                share = min(done / total, 1.0) if total else 0.0
                bar.progress(share, text=f"Downloading {filename}: {done / 1e6:.0f} / {(total or 0) / 1e6:.0f} MB")

            try:
                resolve_weights(spec, progress=progress)
            except WeightsUnavailable as exc:
                bar.empty()
                st.error(f"{who}: {exc}")
                continue
            bar.empty()
            slot.empty()
            st.toast(f"{filename} downloaded and verified.")
            ready += needing
    return [n for n in names if n in ready]


def settings_of(names: list[str]) -> dict[str, Setting]:
    """The settings the chosen models use, each once, in the order the models list them, by their
    key (the name, or ``<family>.<name>`` where families mean different things by one name)."""
    found: dict[str, Setting] = {}
    for name in names:
        info = get_model_info(name)
        for setting in info.settings:
            found.setdefault(setting_key(info, setting), setting)
    return found


def setting_widget(setting: Setting, *, key: str, where=None) -> Any:
    """A model setting's widget from its declaration: a choice on a select slider, a whole number in a
    number box, a fraction on a slider."""
    widget = {"choice": "select_slider", "int": "number_input"}.get(setting.kind)
    return field_widget(where, setting, key, setting.default, widget=widget)


def model_settings(key: str, names: list[str], label: str = "Model settings") -> dict[str, Any]:
    """Controls for the settings the chosen models use and for the tiling, drawn from the registry."""
    chosen = settings_of(names)
    params: dict[str, Any] = {}
    with st.expander(label):
        cols = st.columns(2)
        shown = [(k, s) for k, s in chosen.items() if s.kind != "recipe"] + [(s.name, s) for s in TILING_SETTINGS]
        for i, (name, setting) in enumerate(shown):
            value = setting_widget(setting, key=f"{key}.{name}", where=cols[i % 2])
            try:  # a number box spans a setting's range and its special values: 3 fits "0 or 5 to 500"'s box
                params[name] = setting.check(value)
            except ValueError as exc:
                cols[i % 2].error(f"{exc}: the default, {setting.default}, is used")
                params[name] = setting.default
        if any(s.kind == "recipe" for s in chosen.values()):
            st.caption("The classical model uses the recipe from the **Preprocess** page, rotate step included: its "
                       "cells are mapped back to the image as it is, the frame every model and the ground truth use.")
    return params


def params_for(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Every setting this model's predict() takes (the registry's default where the page has no
    widget value): its cache key, and what exports record."""
    info = get_model_info(name)
    keys = {s.name: setting_key(info, s) for s in info.settings}
    given = {k: settings[keys[k]] for k in info.params if keys[k] in settings}
    if "recipe" in info.params:
        given["recipe"] = current_recipe()
    return info.resolve(given)


@st.cache_resource(max_entries=6, show_spinner=False)
def shared_model(name: str, weights_key: str, device: str) -> LoadedModel:
    """Loaded once per process per (model, weights file, device); used by every session in turn."""
    return load_model(name, device, allow_download=False, shared=True)


@st.cache_resource(show_spinner=False)
def result_store() -> BoundedCache:
    """One per process, keyed by (image, model, parameters, tiling, device): results depend only
    on their inputs, so sessions share them."""
    return BoundedCache(max_entries=256)


def result_key(image: CellImage, name: str, settings: dict[str, Any], device: str) -> tuple:
    """What a result depends on: the image (pixels and channel roles), the model, the settings it
    uses, the tiling and the device."""
    return (f"{image.hash}{image.channels}", name, params_text(params_for(name, settings)), _tiling(settings), device)


def params_text(params: dict[str, Any]) -> str:
    """A model's settings as one string (a recipe as its JSON): what caches are keyed on."""
    return json.dumps({k: (v.to_json() if isinstance(v, Recipe) else v) for k, v in params.items()}, sort_keys=True)


def settings_used(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What ``name`` runs with: its own parameters and the tiling (what exports record)."""
    tile, overlap = _tiling(settings)
    return {**params_for(name, settings), "tile": tile, "overlap": overlap}


def _tiling(settings: dict[str, Any]) -> tuple[int, int]:
    return settings.get("tile", DEFAULT_TILE), settings.get("overlap", DEFAULT_OVERLAP)


def cached_result(image: CellImage, name: str, settings: dict[str, Any], device: str) -> Instances | None:
    return result_store().get(result_key(image, name, settings, device))


def compute_result(image: CellImage, name: str, settings: dict[str, Any], device: str, progress=None) -> Instances:
    """Run (or find) one model on one image; raises WeightsUnavailable / RuntimeError for the page to show."""
    def compute() -> Instances:
        model = shared_model(name, availability(name)[1], device)
        tile, overlap = _tiling(settings)
        return run_model(model, image, tile=tile, overlap=overlap, progress=progress, **params_for(name, settings))

    return result_store().get_or_compute(result_key(image, name, settings, device), compute)


def run_models(image: CellImage, names: list[str], settings: dict, device: str, *, all_now: bool) -> dict[str, Instances]:
    """Results for ``names`` on ``image``: cached ones at once, fast models always, the rest when asked."""
    results: dict[str, Instances] = {}
    for name in names:
        if (found := cached_result(image, name, settings, device)) is not None:
            results[name] = found
    todo = [n for n in names if n not in results
            and (all_now or device != "cpu" or not get_model_info(n).slow_on_cpu)]
    bar = st.progress(0.0) if todo else None
    for i, name in enumerate(todo):
        bar.progress(i / len(todo), text=f"Running {name} on {image.name} ({device})…")
        try:
            results[name] = compute_result(
                image, name, settings, device,
                progress=lambda done, total, n=name: bar.progress(done / total, text=f"{n}: tile {done} of {total}"))
        except WeightsUnavailable as exc:
            st.error(f"**{name}**: {exc}")
        except ValueError as exc:  # a setting or an input the model refuses: its message says what to do
            st.error(f"**{name}** failed on {image.name}: {exc}")
        except (RuntimeError, MemoryError) as exc:  # a model that fails must not take the page down
            st.error(f"**{name}** failed on {image.name}: {exc}. Try the CPU device, a smaller tile size, or another model.")
    results = {n: results[n] for n in names if n in results}  # the order the user chose
    if bar is not None:
        bar.empty()
    return results


@st.cache_data(max_entries=64, show_spinner=False)
def scores(_results: dict[str, Instances], keys: tuple, _gt, gt_hash: str | None):
    """Table, F1 curve and agreement matrix, computed once per set of results (``keys``) and
    ground truth: a rerun that changes nothing matches nothing again."""
    table, curve = summary_table(_results, _gt)
    return table, curve, agreement_matrix(_results) if len(_results) >= 2 else None
