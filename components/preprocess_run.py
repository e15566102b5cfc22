"""The Preprocess page's "Recipe & all images" view: the recipe as a file, the recipe run on every
image (a table, all measurements and all label images, marked out of date when the recipe or the
images change), and auto-tuning on ground truth with the tuned recipe offered only when better."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import streamlit as st

from components.downloads import download_button
from components.pipeline_cache import cell_table, gt_scores, pipeline_instances
from components.preprocess_fragments import use_recipe
from components.recipe_panel import current_recipe
from components.save_run import HeldRecord, default_run_name, held, save_run_control
from components.state import dataset
from core.analysis import with_provenance
from core.data.images import CellImage
from core.segmentation.autotune import MAX_TUNING_IMAGES, MIN_GAIN, TuneResult, autotune, recipe_changes
from core.segmentation.recipe import DEFAULT_RECIPE, Recipe
from core.text import plural
from workflows.segmentation import run_segmentation


def recipe_files() -> None:
    """The recipe as JSON: shown, downloaded, uploaded, reset."""
    st.markdown("**The recipe**: every step's settings, as JSON")
    recipe = current_recipe()
    if msg := st.session_state.pop("recipe_message", None):
        st.success(msg)
    with st.expander("Show the recipe's JSON"):
        st.code(recipe.to_json(), language="json")
    row = st.container(horizontal=True)
    download_button(row, "Download recipe", recipe.to_json(), file_name="cellscope_recipe.json", mime="application/json",
                       help="The ordered steps and parameters as JSON; the CLI takes it with --recipe.")
    row.button("Reset to default", on_click=use_recipe, args=(DEFAULT_RECIPE, "Reset to the default recipe."),
              help="The built-in recipe for fluorescent nuclei.")

    def _upload() -> None:
        f = st.session_state.get("recipe_upload")
        if f is None:
            return
        try:
            recipe = Recipe.from_json(f.getvalue())
        except ValueError as exc:
            # Kept while the file stays in the box: an error must not vanish on the next rerun.
            st.session_state.recipe_error = (f.file_id, f"**{f.name}** was not loaded: {exc}. Fix the file or "
                                             "remove it (×) and upload another.")
            return
        use_recipe(recipe, f"Loaded the recipe from {f.name}.")

    upload = st.file_uploader("Upload recipe (JSON)", type=["json"], key="recipe_upload", on_change=_upload,
                              help="A recipe downloaded here or printed by `python -m core recipe`.")
    error = st.session_state.get("recipe_error")
    if error and upload is not None and upload.file_id == error[0]:
        st.error(error[1])


def recipe_row(image: CellImage, recipe: Recipe, result) -> dict:
    """One image's line of the all-images table: its cells and, with ground truth, F1."""
    row = {"cells": result.count}
    if image.gt is not None:
        row["f1"] = round(gt_scores(image, image.hash, image.channels, recipe).f1, 4)
    return row


def run_recipe(images: list[CellImage], recipe: Recipe, progress: Callable[[float, str], None]
               ) -> tuple[list[str], tuple[pd.DataFrame, pd.DataFrame, bytes, dict], HeldRecord]:
    """``recipe`` on every image: the problems, (per-image table, every cell's measurements, the
    label images zipped, provenance) of the images it ran on, and its record (to save as a run)."""
    run = run_segmentation(images, recipe, segment=lambda img: pipeline_instances(img, recipe),
                           measure=lambda img, _: cell_table(img, img.hash, img.channels, recipe),
                           row=lambda img, r: recipe_row(img, recipe, r), progress=progress)
    record = run.analysis  # the analysis record: its tables and files are what the page shows and offers
    return run.problems, (record.tables["summary"], record.tables["cells"], record.files["labels.zip"],
                          record.provenance), HeldRecord(record)


def changed_since(inputs: Iterable[tuple[str, Any, Any]]) -> list[str]:
    """What of ``(what, now, then)`` changed since a result was made: its staleness, in words."""
    return [what for what, now, then in inputs if now != then]


def all_images_and_tune(recipe: Recipe) -> None:
    ds = dataset()
    st.markdown("**Apply the recipe to every image**")
    if st.button("Run on all images", help="Segment and measure every image in the dataset with this recipe."):
        bar = st.progress(0.0)
        problems, st.session_state.batch_result, st.session_state.batch_record = run_recipe(list(ds), recipe, lambda f, what: bar.progress(
            f, text=f"Segmenting: {what}…"))
        bar.empty()
        for problem in problems:
            st.error(problem)
        st.session_state.batch_recipe = (recipe, ds.signature())
    if "batch_result" in st.session_state:
        summary, cells, zipped_labels, prov = st.session_state.batch_result
        made_with, made_on = st.session_state.get("batch_recipe", (None, None))
        if changed := changed_since((("the recipe", recipe, made_with), ("the images", ds.signature(), made_on))):
            st.warning(f"These results are out of date: {' and '.join(changed)} changed since they were made. Press "
                       "**Run on all images** again to update them.", icon=":material/history:")
        st.dataframe(summary, hide_index=True, width="stretch")
        if "f1" in summary:
            st.caption(f"Mean F1 @ IoU 0.5 over {plural(int(summary['f1'].notna().sum()), 'image')} with ground truth: {summary['f1'].mean():.3f}")
        c1, c2 = st.columns(2)
        download_button(c1, "All measurements (CSV)", lambda: with_provenance(cells, prov).to_csv(index=False),
                           file_name="cellscope_cells.csv", mime="text/csv",
                           help="Every cell of every image, with image, batch and condition columns, and columns "
                                "naming the CellScope version, device and recipe.")
        download_button(c2, "All label images (zip)", zipped_labels, file_name="cellscope_labels.zip", mime="application/zip",
                           help="One label TIFF per image: 0 = background, 1..N = cells; provenance.json records the "
                                "recipe and versions.")
        if (record := held(st.session_state.get("batch_record"))) is not None:
            save_run_control("pre_run_name", [record], default_name=default_run_name("segmentation"),
                             images=list(ds))

    st.markdown("**Auto-tune on ground truth**")
    with_gt = [img for img in ds if img.gt is not None]
    if st.button("Auto-tune", disabled=not with_gt,
                 help=f"Searches threshold method, blur, watershed seed distance and minimum area for the best mean F1 "
                      f"at IoU 0.5 on up to {MAX_TUNING_IMAGES} images with ground truth, taken in turn from each batch; "
                      f"a change counts if it gains at least {MIN_GAIN} F1. The other images with ground truth then "
                      "check whether the gain carries over to images the search did not use."
                 if with_gt else "Needs images with ground truth."):
        bar = st.progress(0.0, text="Tuning…")
        try:
            result = autotune(with_gt, recipe, progress=lambda f, what: bar.progress(min(f, 1.0), text=f"Trying {what}"))
        except ValueError as exc:
            st.error(str(exc))
        else:
            st.session_state.tune_result, st.session_state.tune_made_on = result, ds.signature()
        bar.empty()
    if tuned := st.session_state.get("tune_result"):
        tune_report(tuned, recipe, images_changed=st.session_state.get("tune_made_on") != ds.signature())


def tune_report(tuned: TuneResult, recipe: Recipe, *, images_changed: bool = False) -> None:
    """What the search found, on which images, and the tuned recipe to use only when it is better."""
    scope = tuned.scope()
    if recipe != tuned.start:
        st.warning("The recipe changed after this search; it compares the settings it started from, not the current "
                   "ones. Press **Auto-tune** again to search from the current recipe.", icon=":material/history:")
    if images_changed:
        st.warning("The images or their ground truth changed after this search: its scores are of the images as they "
                   "were. Press **Auto-tune** again to search on them as they are.", icon=":material/history:")
    if not tuned.improved:
        st.info(f"No setting in the search beat the recipe it started from: F1 @ IoU 0.5 {tuned.start_f1:.3f} "
                f"({scope}), {len(tuned.trials)} trials. Nothing to change.")
    else:
        st.success(f"Best F1 @ IoU 0.5: **{tuned.best_f1:.3f}**, up from {tuned.start_f1:.3f} ({scope}; "
                   f"{len(tuned.trials)} trials)")
        st.dataframe(pd.DataFrame(recipe_changes(tuned.start, tuned.best)).astype(str), hide_index=True,
                     width="stretch")
        if (reading := tuned.held_out_reading()) is not None:
            (st.warning if tuned.held_out_worse else st.caption)(reading)
    if tuned.with_gt > len(tuned.images):
        st.caption(f"These F1s are means over the {len(tuned.images)} tuning images only, so they differ from the mean "
                   f"over all {tuned.with_gt} images with ground truth that **Run on all images** shows.")
    if not tuned.improved:
        return
    if recipe == tuned.best:
        st.button("The tuned recipe is in use", disabled=True, icon=":material/check:", key="tuned_in_use",
                  help="The controls on the left show it, and it is the classical model on every page.")
    else:
        st.button("Use the tuned recipe", on_click=use_recipe, type="primary",
                  args=(tuned.best, f"Now using the tuned recipe (F1 {tuned.best_f1:.3f}, {scope})."),
                  help="Load it into the controls; it becomes the classical model on every page.")
