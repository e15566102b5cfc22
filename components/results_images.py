"""The Results page's image browser: one saved image with each model's outlines and its numbers
(image, models and filters in the address), and a grid of cells' crops for any view that picks
cells. Pictures come from the run's saved display images, one at a time (core/run_images.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from components.image_viewer import picture
from components.results_state import from_link, from_link_list, to_link
from core.figures.display import data_uri, draw_outlines
from core.run_images import cell_crops, image_index, run_image, run_labels
from core.runs import Run
from core.text import plural

# Distinct on dark pictures and from each other; a model keeps its colour whatever else is shown.
OUTLINE_COLOURS = (("yellow", (255, 255, 0)), ("magenta", (255, 0, 255)), ("cyan", (0, 255, 255)),
                   ("orange", (255, 140, 0)), ("lime", (120, 255, 60)), ("red", (255, 40, 40)),
                   ("white", (255, 255, 255)), ("blue", (70, 110, 255)))
SCORE_COLUMNS = ("objects", "f1")  # precision and recall are on the Models view; a narrow column holds these
CROPS_PER_ROW = 8


def without_images(run: Run) -> None:
    st.info(f"The run “{run.info.name}” was saved without its images, so there are no pictures or outlines to "
            "show. Runs saved now keep them: save the result again with **Save as run** on its page (Preprocess, "
            "Compare, Cell map or Explain), or with `--save-run NAME` on the command line.")


def run_models(run: Run) -> list[str]:
    """Every model with label images in the run, in the order saved: its outline colour's order."""
    return list(dict.fromkeys(model for a in run.analyses for _, model in a.labels))


def outline_colour(models: Sequence[str], model: str) -> tuple[str, tuple[int, int, int]]:
    return OUTLINE_COLOURS[list(models).index(model) % len(OUTLINE_COLOURS)]


def image_scores(run: Run, image: str, labels: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per model with labels of ``image``: objects (counted on its label image) and, where the run
    scored it against ground truth, precision, recall and F1."""
    rows = {model: {"model": model, "objects": int(np.count_nonzero(np.unique(lab)))} for model, lab in labels.items()}
    scores = run.table("compare", "scores")
    if scores is not None:
        for row in scores[scores["image"] == image].to_dict("records"):
            if row["model"] in rows:
                rows[row["model"]].update({k: row[k] for k in SCORE_COLUMNS if k in row and pd.notna(row[k])})
    summary = run.table("segmentation", "summary")
    seg = run.analysis("segmentation")
    if summary is not None and "f1" in summary.columns and seg is not None:
        model = str(seg.settings.get("model", ""))
        hit = summary[summary["image"] == image]
        if model in rows and len(hit) and pd.notna(hit["f1"].iat[0]) and "f1" not in rows[model]:
            rows[model]["f1"] = float(hit["f1"].iat[0])
    return pd.DataFrame(list(rows.values()), columns=["model", *SCORE_COLUMNS]).dropna(axis=1, how="all")


def _filter(where, index: pd.DataFrame, column: str, key: str, param: str, every: str) -> str | None:
    options = sorted(map(str, index[column].unique()))
    from_link(key, param, options, None)
    return where.selectbox(f"{column.capitalize()}", options, key=key, index=None, placeholder=every,
                           on_change=to_link, args=(key, param),
                           help=f"Show only the images of this {column} in the list of images (empty: all).")


def image_picker(index: pd.DataFrame) -> str | None:
    """Batch and condition filters and the image, all in the address."""
    c1, c2, c3 = st.columns([1, 1, 2])
    batch = _filter(c1, index, "batch", "res.img_batch", "image_batch", "All batches")
    condition = _filter(c2, index, "condition", "res.img_condition", "image_condition", "All conditions")
    keep = np.ones(len(index), bool)
    for column, value in (("batch", batch), ("condition", condition)):
        if value is not None:
            keep &= (index[column].astype(str) == value).to_numpy()
    shown = index[keep]
    names = shown["image"].astype(str).tolist()
    if not names:
        st.info("No saved image has this batch and condition: clear a filter.")
        return None
    if (asked := st.query_params.get("image")) is not None and asked not in set(index["image"].astype(str)):
        st.warning(f"This run has no image named “{asked}” (a mistyped or shortened link?): showing {names[0]}.")
    from_link("res.image", "image", names, names[0])
    to_link("res.image", "image")  # a link's image outside the filters becomes the one shown, in the address too
    return c3.selectbox("Image", names, key="res.image", on_change=to_link, args=("res.image", "image"),
                        help=f"{plural(len(names), 'image')} shown of {len(index):,}; type to search by name.")


def image_view(run: Run) -> None:
    """One saved image with the chosen models' outlines, and its numbers per model."""
    index = image_index(run)
    if index is None:
        without_images(run)
        return
    image = image_picker(index)
    if image is None:
        return
    rgb, labels, models = run_image(run, image), run_labels(run, image), run_models(run)
    if rgb is None:
        st.error(f"The picture of {image} is missing from the run's folder ({run.info.path / 'images'}).")
        return
    choices = [m for m in models if m in labels]
    asked = [v for raw in st.query_params.get_all("model") for v in raw.split(",") if v]
    if unknown := [m for m in asked if m not in choices]:
        st.warning(f"No outlines of {', '.join(unknown)} on {image} in this run: showing "
                   f"{'the other models chosen' if len(unknown) < len(asked) else 'every model'}.")
        if len(unknown) == len(asked):
            del st.query_params["model"]  # then every model, as a link without models shows
            st.session_state.pop("res.models", None)
    from_link_list("res.models", "model", choices, choices)
    to_link("res.models", "model")
    chosen = st.multiselect("Outlines", choices, key="res.models", on_change=to_link, args=("res.models", "model"),
                            placeholder="No model's outlines" if choices else "This image has no label images",
                            help="Draw these models' objects' outlines over the picture, each model in its colour.")
    drawn = rgb
    for model in chosen:
        drawn = draw_outlines(drawn, labels[model], outline_colour(models, model)[1])
    row = index[index["image"] == image].iloc[0]
    left, right = st.columns([3, 2])
    picture(drawn, where=left, fmt="png", caption=f"{image} · batch {row['batch'] or '–'} · condition "
            f"{row['condition'] or '–'} · {row['width']}×{row['height']} px, shown at {row['scale']:.0%}")
    with right:
        if not labels:
            st.caption("No model's label image of this image was saved.")
            return
        table = image_scores(run, image, labels)
        table.insert(1, "outline", [outline_colour(models, m)[0] if m in chosen else "(hidden)" for m in table["model"]])
        st.dataframe(table, hide_index=True, width="stretch", column_config={"f1": st.column_config.NumberColumn(format="%.3f")})
        st.caption("Objects counted on each model's saved label image; F1 at IoU 0.5 where the run scored the image "
                   "against its ground truth (precision and recall: the Models view).")


def crops_panel(run: Run, cells: pd.DataFrame, limit: int = 48) -> None:
    """The crops of ``cells``' first ``limit`` rows (columns ``image``, ``centroid_y``,
    ``centroid_x``; ``cell_id`` for the caption where there is one), from the run's saved pictures."""
    if image_index(run) is None:
        without_images(run)
        return
    if cells.empty:
        st.caption("No cells to show.")
        return
    rows = cells.head(limit).reset_index(drop=True)
    crops = cell_crops(run, rows)
    shown = [(crop, _caption(rows, i)) for i, crop in enumerate(crops) if crop is not None]
    if not shown:
        st.info("The run kept no picture of these cells' images.")
        return
    st.image([data_uri(crop) for crop, _ in shown], caption=[c for _, c in shown], width=96)
    left_out = len(cells) - len(rows)
    missing = len(crops) - len(shown)
    st.caption(" · ".join(filter(None, [f"{plural(len(shown), 'cell')} shown", left_out and f"{left_out:,} more not shown",
                                        missing and f"{plural(missing, 'cell')} of images the run kept no picture of"])))


def _caption(rows: pd.DataFrame, i: int) -> str:
    if "cell_id" in rows.columns:
        return str(rows["cell_id"].iat[i])
    return f"{rows['image'].iat[i]} ({rows['centroid_y'].iat[i]:.0f}, {rows['centroid_x'].iat[i]:.0f})"
