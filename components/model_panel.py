"""Choosing models and their settings; loading them once per process; caching their results."""

from __future__ import annotations

import json
import os
from typing import Any

import streamlit as st

from components.recipe_panel import current_recipe
from core.cache import BoundedCache
from core.images import CellImage
from core.preprocess import Recipe
from models.compare import run_model
from models.device import resolve_device
from models.registry import ModelInfo, SharedModel, availability, get_model_info, list_models, load_model
from models.result import Instances
from models.weights import WeightsUnavailable, resolve_weights, weights_dir
from models.yolo import user_weights_folder

FAMILY_ORDER = {"classical": 0, "yolo": 1, "rcnn": 2, "sam": 3}
DEFAULT_MODELS = ("classical", "yolo11s-nuclei")
UPLOAD_ENV = "CELLSCOPE_ALLOW_WEIGHTS_UPLOAD"


def current_device() -> str:
    """The sidebar's choice, falling back to the CPU when that device is absent."""
    try:
        return resolve_device(st.session_state.get("device_choice", "auto"))
    except ValueError:
        return "cpu"


def _models() -> list[ModelInfo]:
    return sorted(list_models(), key=lambda m: (FAMILY_ORDER.get(m.family, 9), m.name))


def model_picker(key: str) -> list[str]:
    """A multiselect of every model, each marked with whether it can run now."""
    infos = _models()
    state = {m.name: availability(m.name)[0] for m in infos}
    names = [m.name for m in infos]
    return st.multiselect(
        "Models", names, default=[n for n in DEFAULT_MODELS if n in names], key=key,
        format_func=lambda name: name if state[name] else f"{name} (needs weights)",
        help="Run side by side on the same image. 'needs weights': downloaded on first use (progress shown), "
             "or placed in the weights folder by hand when this machine is offline. *What each model is* "
             "describes them.",
    )


def model_table() -> list[dict[str, str]]:
    """One row per model: what it is, whether its weights are here, where they come from."""
    rows = []
    for m in _models():
        ok, why = availability(m.name)
        w = m.weights
        rows.append({
            "model": m.name, "ready": "yes" if ok else "needs weights", "what it is": m.description,
            "weights": "none needed" if w is None else
            f"{w.filename} ({w.size_mb:.0f} MB); trained on {w.trained_on}; licence {w.license}",
        })
    return rows


@st.dialog("What each model is", width="large")
def model_guide() -> None:
    """Every model in a readable table, with the weights folder and how to add your own."""
    rows = model_table()
    st.markdown("| model | ready | what it is | weights |\n|---|---|---|---|\n" + "\n".join(
        f"| **{r['model']}** | {r['ready']} | {r['what it is']} | {r['weights']} |" for r in rows))
    st.markdown(f"Weights folder (set `CELLSCOPE_WEIGHTS_DIR` to move it):\n\n`{weights_dir()}`\n\n"
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
        cols = st.columns([3, 1], vertical_alignment="center")
        cols[0].warning(f"{who} {'needs' if len(needing) == 1 else 'need'} {filename} ({spec.size_mb:.0f} MB, "
                        f"{spec.license}) from {spec.url}.")
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
            ready += needing
    return [n for n in names if n in ready]


def model_settings(key: str, names: list[str]) -> dict[str, Any]:
    """Controls for the parameters the chosen models use (``ModelInfo.params``), each with help."""
    used = {param for n in names for param in get_model_info(n).params}
    params: dict[str, Any] = {}
    with st.expander("Model settings"):
        c1, c2 = st.columns(2)
        if "conf" in used:
            params["conf"] = c1.slider("YOLO confidence", 0.05, 0.95, 0.25, 0.05, key=f"{key}.conf",
                                       help="Keep detections scoring at least this. Lower finds more, with more false ones.")
            params["iou"] = c2.slider("YOLO NMS IoU", 0.1, 0.9, 0.5, 0.05, key=f"{key}.iou",
                                      help="Boxes overlapping more than this are merged (non-maximum suppression).")
        if "score_threshold" in used:
            params["score_threshold"] = c1.slider("R-CNN score threshold", 0.05, 0.95, 0.5, 0.05, key=f"{key}.score",
                                                  help="Keep detections scoring at least this.")
            params["mask_threshold"] = c2.slider("Mask R-CNN mask threshold", 0.1, 0.9, 0.5, 0.05, key=f"{key}.mask",
                                                 help="A pixel belongs to the object where the mask probability is above this.")
        if "points_per_side" in used:
            params["points_per_side"] = c1.select_slider(
                "SAM points per side", [8, 16, 24, 32, 48, 64], 32, key=f"{key}.pps",
                help="Automatic mode prompts a grid of this many points per side; more finds smaller cells, slower.")
            params["pred_iou_thresh"] = c2.slider("SAM predicted-IoU threshold", 0.5, 1.0, 0.88, 0.01, key=f"{key}.piou",
                                                  help="Drop masks SAM itself rates below this quality.")
            params["stability_score_thresh"] = c1.slider(
                "SAM stability threshold", 0.5, 1.0, 0.95, 0.01, key=f"{key}.stab",
                help="Drop masks that change much when the mask cut-off moves.")
            params["min_mask_region_area"] = c2.number_input(
                "SAM minimum area (px)", 0, 10_000, 0, 10, key=f"{key}.minarea",
                help="Remove small disconnected bits and holes below this area.")
        params["tile"] = c1.select_slider(
            "Tile size (px)", [512, 768, 1024, 1536, 2048], 1024, key=f"{key}.tile",
            help="Larger images run in overlapping tiles of this size, merged across the seams.")
        params["overlap"] = c2.select_slider(
            "Tile overlap (px)", [32, 64, 128, 192, 256], 128, key=f"{key}.overlap",
            help="Objects up to about half this across are never cut by a seam.")
        if "recipe" in used:
            st.caption("The classical model uses the recipe from the **Preprocess** page (rotation is ignored here, "
                       "so every model sees the same geometry).")
    return params


def classical_recipe() -> Recipe:
    recipe = current_recipe()
    return recipe.with_step("rotate", enabled=False) if recipe.rotate.enabled else recipe


def params_for(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings this model's predict() uses: its cache key."""
    info = get_model_info(name)
    params = {k: settings[k] for k in info.params if k in settings}
    if "recipe" in info.params:
        params["recipe"] = classical_recipe()
    return params


@st.cache_resource(max_entries=6, show_spinner=False)
def shared_model(name: str, weights_key: str, device: str) -> SharedModel:
    """Loaded once per process per (model, weights file, device); used by every session in turn."""
    return load_model(name, device, allow_download=False, shared=True)


@st.cache_resource
def result_store() -> BoundedCache:
    """One per process, keyed by (image, model, parameters, tiling, device): results depend only
    on their inputs, so sessions share them."""
    return BoundedCache(max_entries=256)


def result_key(image: CellImage, name: str, settings: dict[str, Any], device: str) -> tuple:
    """What a result depends on: the image (pixels and channel roles), the model, the settings it
    uses, the tiling and the device."""
    params = params_for(name, settings)
    text = json.dumps({k: (v.to_json() if isinstance(v, Recipe) else v) for k, v in params.items()}, sort_keys=True)
    return (f"{image.hash}{image.channels}", name, text, _tiling(settings), device)


def settings_used(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What ``name`` runs with: its own parameters and the tiling (what exports record)."""
    tile, overlap = _tiling(settings)
    return {**params_for(name, settings), "tile": tile, "overlap": overlap}


def _tiling(settings: dict[str, Any]) -> tuple[int, int]:
    return settings.get("tile", 1024), settings.get("overlap", 128)


def cached_result(image: CellImage, name: str, settings: dict[str, Any], device: str) -> Instances | None:
    return result_store().get(result_key(image, name, settings, device))


def compute_result(image: CellImage, name: str, settings: dict[str, Any], device: str, progress=None) -> Instances:
    """Run (or find) one model on one image; raises WeightsUnavailable / RuntimeError for the page to show."""
    def compute() -> Instances:
        model = shared_model(name, availability(name)[1], device)
        tile, overlap = _tiling(settings)
        return run_model(model, image, tile=tile, overlap=overlap, progress=progress, **params_for(name, settings))

    return result_store().get_or_compute(result_key(image, name, settings, device), compute)
