"""The Cell map page's choices: the cells (segmenter, crops, features and their settings), the map
(method, correction, clustering and their settings), the colour, and when the map is computed."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from components.model_panel import model_settings, setting_widget
from components.settings_widgets import field_widget
from core.schema import fields_of
from models.cellmap import CORRECTION_NAMES, CROP_SIZES, METHOD_NAMES, MapSettings, embedders
from models.registry import get_model_info, list_models
from workflows.cellmap import GROUND_TRUTH

RUN_AT_ONCE = {"morphology"}  # fast enough to compute as soon as chosen; the others wait for the button


def cell_controls(ds, where, more) -> tuple[str, dict, dict, str, dict]:
    """Segmenter, its settings, the crop geometry and the feature extractor: the main choices in
    ``where``, the rest in ``more`` (a popover)."""
    c1, c2 = where
    segmenters = [m.name for m in list_models("segment")]
    if all(img.gt is not None for img in ds):
        segmenters.insert(0, GROUND_TRUTH)
    segmenter = c1.selectbox("Cells from", segmenters, index=segmenters.index("classical"), key="cm.segmenter",
                             help="The segmenter that finds the cells: the classical recipe of the Preprocess page, a "
                                  "model of the Compare page (its results are reused), or the ground truth.")
    features = c2.selectbox("Features", embedders(), key="cm.features",
                            format_func=lambda n: f"{n} · {get_model_info(n).family}" if n != get_model_info(n).family else n,
                            help="morphology: the measured shape and intensity of each cell, and of a ring and the background around it (fast). autoencoder: a "
                                 "convolutional autoencoder trained here on your crops; its bottleneck is the embedding. "
                                 "resnet: an ImageNet-trained CNN's features (weights downloaded on first use).")
    with more:
        d1, d2 = st.columns(2)
        size = d1.selectbox("Crop size (px)", CROP_SIZES, key="cm.crop_size",
                            help="Side of each cell's crop, for the autoencoder and the CNN.")
        mode = d2.selectbox("Crop", ("scale", "pad"), key="cm.crop_mode",
                            format_func=lambda m: {"scale": "scaled to fit", "pad": "native size"}[m],
                            help="Scaled to fit: each cell fills its crop (size is lost, shape kept). Native size: a "
                                 "fixed window centred on the cell, so big and small cells look big and small.")
        mask = st.toggle("Mask the background", key="cm.mask", help="Zero every pixel outside the cell in its crop, "
                         "so features see the cell only (background differences between plates then cannot leak in).")
        seg_settings = (model_settings("cm.seg", [segmenter], f"Segmenter settings ({segmenter})")
                        if segmenter != GROUND_TRUTH else {})
        info = get_model_info(features)
        if info.settings:
            st.caption(f"**{features}** settings")
        cols = st.columns(3)
        feat_settings = {s.name: setting_widget(s, key=f"cm.feat.{s.name}", where=cols[i % 3])
                         for i, s in enumerate(info.settings)}
    return segmenter, seg_settings, {"size": size, "mode": mode, "mask_background": mask}, features, feat_settings


def map_controls(conditions: list[str], where, more, one_batch: bool = False) -> MapSettings:
    c1, c2, c4 = where
    f = {spec.name: spec for spec in fields_of(MapSettings)}  # ranges, defaults, labels: MapSettings' own
    method = field_widget(c1, f["method"], "cm.method", widget="segmented_control", format_func=METHOD_NAMES.get)
    correction = field_widget(c2, f["correction"], "cm.correction", disabled=one_batch,
                              format_func=CORRECTION_NAMES.get)
    clusters = field_widget(c4, f["clusters"], "cm.clusters", format_func={"kmeans": "k-means", "hdbscan": "HDBSCAN"}.get)
    with more:
        control = st.selectbox(f["control"].label, ["all cells", *conditions], key="cm.control",
                               disabled=correction != "standardize", help=f["control"].help)
        d1, d2 = st.columns(2)
        perplexity = field_widget(d1, f["perplexity"], "cm.perplexity", f["perplexity"].default, integer=True)
        iterations = field_widget(d2, f["iterations"], "cm.iterations", f["iterations"].default)
        neighbours = field_widget(d1, f["n_neighbors"], "cm.neighbors", f["n_neighbors"].default)
        min_dist = field_widget(d2, f["min_dist"], "cm.min_dist", f["min_dist"].default)
        k = field_widget(d1, f["k"], "cm.k", f["k"].default)
        min_size = field_widget(d2, f["min_cluster_size"], "cm.min_size", f["min_cluster_size"].default)
        seed = field_widget(d1, f["seed"], "cm.seed", f["seed"].default, widget="number_input")
    if one_batch:
        correction = "none"  # nothing to correct; the box is greyed out
    return MapSettings(method=method, perplexity=float(perplexity), iterations=iterations, n_neighbors=neighbours,
                       min_dist=float(min_dist), seed=int(seed), clusters=clusters, k=k, min_cluster_size=min_size,
                       correction=correction, control="" if control == "all cells" else control)


def color_control(frame: pd.DataFrame, where=st) -> str:
    """The column the map is coloured by (the Map view and the saved figures share it)."""
    features = [c for c in frame.columns if c.startswith(("area", "perimeter", "eccentricity", "solidity", "mean_"))]
    return where.selectbox("Colour by", ["batch", "condition", "image", "cluster", *features], key="cm.color",
                           label_visibility="collapsed", placeholder="Colour by",
                           format_func=lambda c: f"Colour by {c}", help="Groups get a colour each (click the legend to hide one); a measurement, a scale.")


def compute_button(where, key: str, features: str, feat_settings: dict) -> bool:
    """*Compute the map*, highlighted only while it is needed; True when the map is to be shown:
    morphology at once, the others once the button was pressed for these cells and features."""
    ready = (key, features, json.dumps(feat_settings, default=str))
    done = features in RUN_AT_ONCE or st.session_state.get("cm.ready") == ready
    asked = where.button("Compute the map", type="secondary" if done else "primary", key="cm.run",
                         width="stretch",
                         help="Morphology maps appear at once; the autoencoder and the CNN wait for this button (tens "
                              "of seconds or more on a CPU). Every step is kept, so coming back is instant.")
    if not (asked or done):
        st.info(f"Press **Compute the map** to train or run **{features}** on the cells.")
        return False
    return True


def map_shown(key: str, features: str, feat_settings: dict) -> bool:
    """Note that this map is made; True when the button was drawn highlighted before the work (the
    page is then drawn again, now plain)."""
    ready = (key, features, json.dumps(feat_settings, default=str))
    done = features in RUN_AT_ONCE or st.session_state.get("cm.ready") == ready
    st.session_state["cm.ready"] = ready
    return not done
