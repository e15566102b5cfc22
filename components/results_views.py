"""What the Results page draws: the list of runs, and one run's overview, models, cell map,
explanation, provenance and files. Read-only but for deleting a run (after a confirmation)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from components.auth import delete_refusal
from components.downloads import download_button
from components.model_ranking import model_ranking
from components.results_compare import join_comparison
from components.results_map import LINK_PARAMS
from components.results_state import ADDRESS_KEY, date_text, from_link, run_zip, runs_table, search_runs, to_link
from core.analysis import cellscope_version
from core.figures.report import run_report_html
from core.run_tables import cells_per_image, cells_table, f1_by_model, json_file, measurement_columns, spread
from core.runs import Run, RunInfo, delete_run, runs_dir
from core.text import plural

DELETED_KEY = "res.deleted"  # the run just deleted, said once on the next run


def where_runs_come_from() -> str:
    return (f"Runs are saved from the command line with `--save-run NAME` (`compare`, `embed`, `explain`) or "
            "`python -m core run` (a whole screen), and "
            f"from the pages with **Save as run**. They are kept in `{runs_dir()}` (set `CELLSCOPE_RUNS_DIR` to "
            "change it) and shared by everyone using this server.")


def run_list(infos: Sequence[RunInfo]) -> None:
    """The runs as a table, filtered by the search box."""
    if (gone := st.session_state.pop(DELETED_KEY, None)) is not None:
        st.success(f"Deleted the run “{gone}”.")
    if not infos:
        st.info("No saved runs yet. " + where_runs_come_from())
        return
    table = runs_table(infos)
    text = st.text_input("Search runs", key="res.search", placeholder="name, date, model, kind, note, number…",
                         help="Shows the runs holding every word typed, anywhere in their row.")
    shown = search_runs(table, text)
    st.dataframe(shown, hide_index=True, width="stretch", key="res.table", selection_mode="single-row",
                 on_select=functools.partial(open_chosen_row, list(shown["name"])),
                 column_config={"picture": st.column_config.ImageColumn(
                                    "picture", width="small", help="The run's first image, as saved (none: a run "
                                                                   "saved without images)"),
                                "images": st.column_config.NumberColumn(format="localized"),
                                "cells": st.column_config.NumberColumn(format="localized")})
    action = "add that run to those compared" if "compare" in st.query_params else "open that run"
    st.caption(f"{len(shown)} of {plural(len(table), 'run')} · Tick a row's box to {action}. "
               + where_runs_come_from())


def open_chosen_row(names: list[str]) -> None:
    """The list's ``on_select``: the run of the row chosen becomes the run shown (and the address's)."""
    rows = st.session_state["res.table"].selection.rows
    if rows and "compare" in st.query_params:  # Compare runs is on: the row's run joins those compared
        join_comparison(names[rows[0]])
    elif rows:
        st.session_state["res.run"] = names[rows[0]]
        to_link("res.run", "run")


def run_picker(where, infos: Sequence[RunInfo]) -> RunInfo | None:
    """The run chosen, kept in the address as ``?run=NAME``; a link naming no run says so."""
    names = [i.name for i in infos]
    asked = st.query_params.get("run")
    if asked is not None and asked not in names:
        st.error(f"No saved run is named “{asked}” in `{runs_dir()}`: it may have been deleted, or the link "
                 "is mistyped. The saved runs are listed below.")
    if not names:
        return None
    from_link("res.run", "run", names)
    if asked is None and st.session_state["res.run"] is not None:
        to_link("res.run", "run")  # a run chosen before a visit to another page (whose links drop it)
    where.selectbox("Open a run", names, key="res.run", index=None, placeholder="Choose a run",
                    on_change=to_link, args=("res.run", "run"),
                    help="The address of this page names the run: copy it to show a colleague the same view.")
    if asked is not None and asked not in names:
        return None
    return next((i for i in infos if i.name == st.session_state["res.run"]), None)


def views_of(run: Run) -> list[str]:
    kinds = {a.kind for a in run.analyses}
    return ["Overview", *(["Models"] if f1_by_model(run) is not None else []), "Images",
            *(["Cell map"] if "cellmap" in kinds else []), *(["Explain"] if "explain" in kinds else []),
            "Provenance", "Files"]


def view_picker(run: Run) -> str:
    views = views_of(run)
    from_link("res.view", "view", views, "Overview")
    to_link("res.view", "view")  # a link's view this run lacks becomes the one shown, in the address too
    return st.segmented_control("View", views, key="res.view", required=True, label_visibility="collapsed",
                                on_change=to_link, args=("res.view", "view"), help="What to look at.")


def summary_view(run: Run) -> None:
    info = run.info
    cols = st.columns(5)
    cols[0].metric("Images", f"{info.images:,}")
    cols[1].metric("Cells", "–" if info.cells is None else f"{info.cells:,}")
    cols[2].metric("Models", len(info.models), help=", ".join(info.models) or "none")
    cols[3].metric("Analyses", len(run.analyses), help=", ".join(info.kinds))
    cols[4].metric("Saved", info.created[:10], help=info.created)
    st.caption(" · ".join(filter(None, [", ".join(info.kinds), ", ".join(info.models), info.note,
                                        info.owner and f"by {info.owner}"])))


def plate_view(run: Run) -> None:
    """Cells per image by batch and condition, and one measurement's spread."""
    per_image = cells_per_image(run)
    if per_image is None:
        st.info("This run holds no cell counts.")
        return
    st.subheader("Cells per image")
    st.plotly_chart(cells_per_image_figure(per_image), width="stretch")
    keys = ["batch", "condition", *(["model"] if "model" in per_image.columns else [])]  # each model's own counts
    by = per_image.groupby(keys, sort=True)["cells"]
    st.dataframe(by.agg(images="size", cells="sum", mean="mean").round(1).reset_index(), hide_index=True)
    if not (columns := measurement_columns(run)):
        return
    st.subheader("A measurement per batch and condition")
    from_link("res.measure", "measure", columns, "area" if "area" in columns else columns[0])
    to_link("res.measure", "measure")
    column = st.columns([1, 2])[0].selectbox("Measurement", columns, key="res.measure", on_change=to_link, args=("res.measure", "measure"),
                          help="Boxes: 25th to 75th percentile and median; whiskers: 5th and 95th percentile.")
    stats = spread(cells_table(run, ["batch", "condition", column]), column)  # one column of a million cells
    fig, palette = go.Figure(), px.colors.qualitative.Plotly
    for i, (condition, part) in enumerate(stats.groupby("condition", sort=True)):
        fig.add_trace(go.Box(x=part["batch"], q1=part["q1"], median=part["median"], q3=part["q3"],
                             lowerfence=part["p5"], upperfence=part["p95"], name=str(condition) or "(none)",
                             marker_color=palette[i % len(palette)]))
    fig.update_layout(boxmode="group", height=340, margin=dict(l=10, r=10, t=10, b=10), yaxis_title=column,
                      xaxis_title="batch", legend_title_text="condition")
    st.plotly_chart(fig, width="stretch")


BARS_UP_TO = 200  # images drawn one bar each; more as boxes by batch and condition


def cells_per_image_figure(per_image: pd.DataFrame) -> go.Figure:
    """One bar per image, coloured by batch (by model where the counts are each model's), in batch
    and condition order; boxes by batch and condition beyond :data:`BARS_UP_TO` images."""
    palette = px.colors.qualitative.Plotly  # distinct hues: the theme's default blues look alike
    if per_image["image"].nunique() > BARS_UP_TO:
        fig = px.box(per_image, x="batch", y="cells", color="condition", hover_name="image",
                     facet_col="model" if "model" in per_image.columns else None, color_discrete_sequence=palette)
    else:
        ordered = per_image.sort_values(["batch", "condition", "image"], kind="stable")
        by_model = "model" in per_image.columns
        fig = px.bar(ordered, x="image", y="cells", color="model" if by_model else "batch",
                     barmode="group" if by_model else "relative", hover_data=["batch", "condition"], color_discrete_sequence=palette)
        fig.update_xaxes(categoryorder="array", categoryarray=list(dict.fromkeys(ordered["image"])))
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=10, b=10))
    return fig


def models_view(run: Run) -> None:
    table = f1_by_model(run)
    st.subheader("F1 per model (images with ground truth, IoU ≥ 0.5)")
    st.dataframe(table.round(3), hide_index=True)
    fig = px.bar(table, x="model", y="f1", range_y=[0, 1], text_auto=".3f")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(fig, width="stretch")
    if (scores := run.table("compare", "scores")) is not None and "f1" in scores:
        model_ranking(scores, key="res.ranking")


def explain_view(run: Run) -> None:
    report = json_file(run, "explain", "classifier.json")
    if report is None:
        st.info("This explanation has no classifier.json.")
        return
    st.subheader(f"A classifier of {report.get('target', 'classes')}: balanced accuracy "
                 f"{report['balanced_accuracy']:.2f} (chance {report['chance']:.2f}) on unseen images")
    st.caption(f"{plural(report['n_cells'], 'cell')} from {plural(report['n_images'], 'image')}; "
               f"{report.get('cross_validation', '')}")
    cams = report.get("cams")
    if cams:
        st.markdown(f"**Where the CAMs ({cams['method']}, layer {cams['layer']}) look**, per class")
        rows = [{"class": name, "cells": c["n_cells"], "focus": c["focus"], "median inside-mask share": c["median_inside"],
                 "expected from the area": c["median_area"]} for name, c in cams["classes"].items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True,
                     column_config={"median inside-mask share": st.column_config.NumberColumn(format="%.2f"),
                                    "expected from the area": st.column_config.NumberColumn(format="%.2f")})
        st.markdown("\n".join(f"- {c['reading']}" for c in cams["classes"].values()))
    if deletion := report.get("deletion_test"):
        st.caption(f"Deletion test: {deletion.get('reading', '')}")


def provenance_view(run: Run) -> None:
    for analysis in run.analyses:
        prov = analysis.provenance
        st.markdown(f"**{analysis.kind}** · CellScope {cellscope_version(prov)} · device "
                    f"{prov.get('device description') or prov.get('device') or '–'} · {date_text(analysis.created)}")
        with st.expander(f"{analysis.kind}: settings and provenance"):
            st.code(json.dumps({"settings": analysis.settings, "provenance": prov}, indent=2, default=str),
                    language="json")


def files_view(run: Run) -> None:
    info = run.info
    download_button(st, "Download the run (zip)", lambda: run_zip(info.path), file_name=f"{info.name}.zip",
                    mime="application/zip", help="The run's folder as saved: run.json, and each analysis's "
                    "manifest (JSON), tables (Parquet) and files.", key="res.dl.zip")
    download_button(st, "Download the report (HTML)", lambda: run_report_html(run).encode(),
                    file_name=f"{info.name}.html", mime="text/html", key="res.dl.report",
                    help="One file with the run's figures (interactive), tables, settings and versions; it opens "
                         "offline (plotly.js is inside, about 4.6 MB). The same as `python -m core report`.")
    st.caption(f"On the server: `{info.path}`")
    st.subheader("Delete this run")
    if refusal := delete_refusal(info.owner, "run", f"python -m core runs delete {info.name}"):
        st.info(refusal, icon=":material/lock:")  # sign-in on: only the run's owner deletes it
        return
    st.warning("Runs are shared by everyone using this server: deleting it deletes it for them too, and it "
               "cannot be undone.")
    sure = st.checkbox(f"I am sure: delete “{info.name}” for everyone", key="res.sure", value=False)
    if st.button("Delete the run", type="primary", disabled=not sure, key="res.delete"):
        try:
            delete_run(info.name, info.path.parent)
        except (OSError, ValueError) as exc:
            st.error(f"The run could not be deleted: {exc}")
            return
        st.session_state[DELETED_KEY] = info.name
        for key in ("res.run", "res.sure", ADDRESS_KEY):  # the address left behind names the run no more
            st.session_state.pop(key, None)
        for param in ("run", "view", "measure", "image", "model", "image_batch", "image_condition", *LINK_PARAMS):
            if param in st.query_params:
                del st.query_params[param]
        st.rerun()
