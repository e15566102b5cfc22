"""The Compare page's "All images" view: every chosen model run on every image
(:func:`workflows.compare.run_compare`, cached results reused), marked out of date when the
models, settings, device or images change; F1 per image and model with the images a model has
seen marked, means that leave those out unless asked, and the whole run as a zip."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components.downloads import download_button
from components.model_panel import compute_result, settings_used
from components.model_ranking import model_ranking
from components.save_run import HeldRecord, default_run_name, held, save_run_control
from components.state import dataset
from core.evaluation.score_tables import SEEN, mean_scores
from core.io.export import results_zip
from core.text import plural
from core.training.data import SEEN_ROLES
from workflows.compare import run_compare


def seen_f1(table: pd.DataFrame) -> None:
    """F1 per image and model, the images a model has seen marked, and means that leave them out
    unless asked."""
    if SEEN not in table:  # a table made before the column existed
        table = table.assign(**{SEEN: ""})
    pivot = table.pivot_table(index="image", columns="model", values="f1", sort=False)
    marks = table.pivot(index="image", columns="model", values=SEEN).reindex_like(pivot).fillna("")
    st.markdown("**F1 at IoU 0.5, image × model**")
    shade = {"training": "background-color: rgba(255, 140, 0, 0.45)",
             "validation": "background-color: rgba(255, 140, 0, 0.2)", "unknown": "font-style: italic"}
    styled = pivot.style.format("{:.3f}", na_rep="").apply(lambda _: marks.map(lambda m: shade.get(m, "")), axis=None)
    for role, tag in (("training", "trained on"), ("validation", "validated on"), ("unknown", "?")):
        cells = marks == role
        for model in pivot.columns[cells.any(axis=0)]:
            styled = styled.format(f"{{:.3f}} ({tag})", subset=pd.IndexSlice[pivot.index[cells[model]], [model]])
    st.dataframe(styled, width="stretch")
    seen = table[SEEN].isin(SEEN_ROLES)
    unknown = sorted(table.loc[table[SEEN] == "unknown", "model"].unique())
    if seen.any():
        st.caption(f"Shaded, *(trained on)* or *(validated on)*: an image the model has seen "
                   f"({plural(int(seen.sum()), 'score')}). Its F1 there says how well it fits images it has seen, not "
                   "how it does on new ones.")
    include = st.checkbox("Include the images each model was trained or validated on in its mean", value=False,
                          key="cmp.include_seen", disabled=not seen.any(),
                          help="Off: each model's mean is over the images it has not seen (its checkpoint records "
                               "them, recognised by their pixels).")
    means = mean_scores(table, include_seen=include)
    st.markdown("**Means over images**" + ("" if include or not seen.any() else
                                            ", leaving out the images each model has seen"))
    st.dataframe(means, width="stretch")
    if blind := [m for m in means.index if means.loc[m, "images"] == 0]:
        st.caption(f"{', '.join(blind)}: trained or validated on every image here, so no image is left to score "
                   "it on (an empty row). Add images it has not seen, or tick the box above to see its fit.")
    if unknown:
        st.caption(f"In italics, *(?)*: {', '.join(unknown)}: which images {'it was' if len(unknown) == 1 else 'they were'} "
                   "trained on is unknown (a checkpoint written before CellScope recorded them, or a file placed by "
                   "hand), so their means may include training images.")


def all_images(names: list[str], settings: dict, device: str) -> None:
    ds = dataset()
    st.caption(f"Every model on every one of the {plural(len(ds), 'image')}; cached results are reused.")
    if st.button(f"Run {plural(len(names), 'model')} on all {plural(len(ds), 'image')}", disabled=not names,
                 key="cmp.run_all", help="Progress is shown per image and model. Results are cached, so a second run "
                                         "is instant."):
        bar = st.progress(0.0)
        run = run_compare(list(ds), {n: settings_used(n, settings) for n in names}, device=device,
                          compute=lambda img, name: compute_result(img, name, settings, device),
                          progress=lambda f, what: bar.progress(f, text=what))
        bar.empty()
        for problem in run.problems:
            st.error(problem)
        st.session_state["cmp.all"] = (run.analysis.tables["scores"], run.results, run.analysis.provenance)
        st.session_state["cmp.all_record"] = HeldRecord(run.analysis)  # what Save as run saves
        st.session_state["cmp.all_made"] = ({n: settings_used(n, settings) for n in names}, device, ds.signature())
    if "cmp.all" not in st.session_state:
        return
    table, results, prov = st.session_state["cmp.all"]
    if st.session_state.get("cmp.all_made") != ({n: settings_used(n, settings) for n in names}, device, ds.signature()):
        st.warning("These results are out of date: the models, their settings, the device or the images changed since "
                   "they were made. Press the button above to run again.", icon=":material/history:")
    if table.empty:
        st.warning("Nothing ran; see the messages above.")
        return
    if "f1" in table:
        seen_f1(table)
        model_ranking(table, key="cmp.ranking")
    st.dataframe(table, hide_index=True, width="stretch", height=300)
    download_button(st, "All results (zip)", lambda: results_zip(list(ds), results, table, provenance=prov),
                       file_name="cellscope_compare_all.zip", mime="application/zip",
                       help="Label TIFFs per model and image, objects.csv, COCO JSON per model, metrics.csv and "
                            "provenance.json (settings, weights, device, versions of this run).")
    if (record := held(st.session_state.get("cmp.all_record"))) is not None:
        save_run_control("cmp.run_name", [record], default_name=default_run_name("compare"), images=list(ds))
