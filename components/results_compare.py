"""The Results page's *Compare runs*: two to four saved runs side by side (cells per condition, a
measurement's spread, F1 per model, the plate-effect verdicts, the settings that differ). Images
picked in one run (a drag over its bars, or the list) are highlighted in every run holding the
same pixels. Every choice lives in the address: ``?compare=a,b``, ``?measure=``, ``?pick=``
(once per image), so a copied link reopens the same comparison."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from components.results_state import from_link, load_run, reading, to_link
from core import run_compare as rc
from core.cache import BoundedCache
from core.runs import Run, RunInfo, runs_dir
from core.text import plural

RUN_COLOURS = px.colors.qualitative.Plotly  # one hue per run, in the order chosen
CONDITION_COLOURS = px.colors.qualitative.Set2
BARS_UP_TO = 200  # images drawn one bar each; more as points (still selectable)
NAMES_UP_TO = 30  # images named under the bars, over all the runs' charts in a row
MAX_PICKS = 100  # images kept in the address at once
FADED = 0.25  # the opacity of bars not picked
REFUSED_KEY = "res.cmp.refused"  # a run that could not join the comparison, said once
MODEL_PATTERNS = ("", "/", "x", ".", "+", "-")  # a run's models apart, in its colour


@st.cache_resource(show_spinner=False)
def table_store() -> BoundedCache:
    """The comparison's tables, shared by every session: a pick redraws without recounting (two runs of a
    million cells each took 1.6 s per rerun to count, spread and match)."""
    return BoundedCache(max_entries=32)


def cached(make: Callable[..., Any], runs: Sequence[Run], *args: Any) -> Any:
    """``make(runs, *args)``, computed once per runs (by folder and date) and arguments; read-only."""
    key = (make.__module__, make.__name__, tuple((str(r.info.path), r.info.created) for r in runs), args)
    return table_store().get_or_compute(key, lambda: make(runs, *args))


def compare_toggle(where) -> bool:
    """The Results page's mode: on while the address holds ``?compare=``."""
    st.session_state["res.cmp.on"] = "compare" in st.query_params
    where.toggle("Compare runs", key="res.cmp.on", on_change=_toggled,
                 help="Put two to four saved runs side by side: cells per condition, a measurement, F1 per model, "
                      "the plate-effect verdicts and the settings that differ. The address keeps the runs chosen.")
    return st.session_state["res.cmp.on"]


def _toggled() -> None:
    if st.session_state["res.cmp.on"]:
        st.query_params["compare"] = st.session_state.get("res.run") or ""  # the run open so far is the first
    else:
        for param in ("compare", "pick"):
            if param in st.query_params:
                del st.query_params[param]


def _runs_to_link() -> None:
    st.query_params["compare"] = ",".join(st.session_state["res.cmp.runs"])


def join_comparison(name: str) -> None:
    """The run ``name`` joins those compared (a row ticked in the list of runs); a fifth is refused."""
    asked = [n for n in st.query_params.get("compare", "").split(",") if n]
    if name in asked:
        return
    if len(asked) >= rc.MAX_RUNS:
        st.session_state[REFUSED_KEY] = name
        return
    st.query_params["compare"] = ",".join([*asked, name])


def runs_chosen(where, infos: Sequence[RunInfo]) -> list[RunInfo]:
    """The runs ``?compare=`` names (a missing one reported, more than four refused), as a multiselect."""
    names = [i.name for i in infos]
    asked = list(dict.fromkeys(n for n in st.query_params.get("compare", "").split(",") if n))
    if missing := [n for n in asked if n not in names]:
        st.warning(f"No saved run is named {', '.join(f'“{n}”' for n in missing)} in `{runs_dir()}`: "
                   f"{'it' if len(missing) == 1 else 'they'} may have been deleted, or the link is mistyped. "
                   "The other runs are shown.")
    if (refused := st.session_state.pop(REFUSED_KEY, None)) is not None:
        st.warning(f"“{refused}” was not added: at most {rc.MAX_RUNS} runs can be compared at once. "
                   "Remove one above first.")
    present = [n for n in asked if n in names]
    if len(present) > rc.MAX_RUNS:
        st.error(f"At most {rc.MAX_RUNS} runs can be compared at once; the link names {len(present)} "
                 f"({', '.join(present)}). Choose up to {rc.MAX_RUNS} below.")
        present = []
    st.session_state["res.cmp.runs"] = present
    chosen = where.multiselect(
        "Runs to compare", names, key="res.cmp.runs", max_selections=rc.MAX_RUNS, on_change=_runs_to_link,
        placeholder="Choose two to four runs",
        help=f"{rc.MIN_RUNS} to {rc.MAX_RUNS} saved runs, drawn in this order with one colour each. The address "
             "names them (?compare=a,b): copy it to show a colleague the same comparison.")
    return [i for name in chosen for i in infos if i.name == name]


def compare_view(where, infos: Sequence[RunInfo]) -> None:
    """Compare runs: the runs chosen, then each section."""
    chosen = runs_chosen(where, infos)
    if len(chosen) < rc.MIN_RUNS:
        st.info(f"Choose at least {rc.MIN_RUNS} runs (at most {rc.MAX_RUNS}) to put them side by side"
                + (f": “{chosen[0].name}” needs another run beside it." if chosen else ".")
                + " Runs compare best on the same images: those are matched by their pixels, even when renamed.")
        return
    runs = []
    for info in chosen:
        with reading(info.name):
            run = load_run(info)
            run.check_tables()  # the tables the sections read: a damaged run is left out, said above
            runs.append(run)
    if len(runs) < rc.MIN_RUNS:
        return
    colours = {run.info.name: RUN_COLOURS[i % len(RUN_COLOURS)] for i, run in enumerate(runs)}
    picked = image_picker(runs)
    counts_section(runs, colours)
    images_section(runs, picked)
    measure_section(runs, colours, picked)
    f1_section(runs, colours)
    verdict_section(runs)
    settings_section(runs)


def image_names(runs: Sequence[Run]) -> list[str]:
    """Every image name of the runs, in the order first met."""
    return list(dict.fromkeys(name for run in runs for name in rc.run_images(run)["image"]))


def _all_images(runs: Sequence[Run]) -> list[str]:
    return cached(image_names, runs)


def _set_picks(picks: Sequence[str]) -> None:
    picks = list(dict.fromkeys(picks))[:MAX_PICKS]
    st.session_state["res.cmp.pick"] = picks
    if picks:
        st.query_params["pick"] = picks  # ?pick=a&pick=b: image names may hold commas
    elif "pick" in st.query_params:
        del st.query_params["pick"]


def image_picker(runs: Sequence[Run]) -> list[str]:
    """The images picked, from ``?pick=`` (once per image); names no run holds are said and dropped."""
    options = _all_images(runs)
    asked = st.query_params.get_all("pick")
    if unknown := [p for p in asked if p not in options]:
        st.warning(f"The link picks {plural(len(unknown), 'image')} none of these runs holds: "
                   f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}.")
    st.session_state["res.cmp.pick"] = [p for p in asked if p in options][:MAX_PICKS]
    return st.session_state["res.cmp.pick"]


def counts_section(runs: Sequence[Run], colours: dict[str, str]) -> None:
    st.subheader("Cells per condition")
    by_condition = cached(rc.counts_by, runs)
    if by_condition.empty:
        st.info("None of these runs holds cell counts.")
        return
    fig = go.Figure()
    for (run, model), part in by_condition.groupby(["run", "model"], sort=False):
        models = list(dict.fromkeys(by_condition.loc[by_condition["run"] == run, "model"]))
        fig.add_trace(go.Bar(x=part["condition"].replace("", "(none)"), y=part["cells per image"],
                             name=f"{run} · {model}" if model else run, marker_color=colours[run],
                             marker_pattern_shape=MODEL_PATTERNS[models.index(model) % len(MODEL_PATTERNS)],
                             customdata=part[["images", "cells"]], texttemplate="%{y:.1f}",
                             hovertemplate="%{x}: %{y:.1f} cells per image (%{customdata[1]} cells in "
                                           "%{customdata[0]} images)<extra>%{fullData.name}</extra>"))
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="condition",
                      yaxis_title="cells per image", legend_title_text="run")
    st.plotly_chart(fig, width="stretch", key="res.cmp.counts")
    table = cached(rc.counts_by, runs, ("batch", "condition"))
    if not table["model"].astype(bool).any():
        table = table.drop(columns="model")
    st.expander("Images and cells per run, batch and condition").dataframe(table.round(1), hide_index=True, column_config={"cells per image": st.column_config.NumberColumn(
        format="%.1f", help="The mean over the images of that batch and condition")})


def _select(key: str, names: Sequence[str]) -> None:
    """A per-image chart's ``on_select``: the images under the drag (or clicked) become the picks."""
    points = st.session_state[key].selection.get("points", [])
    _set_picks([str(p["x"]) for p in points if str(p.get("x")) in names])


def per_image_figure(counts: pd.DataFrame, highlight: Sequence[str], title: str, *, names: bool = True) -> go.Figure:
    """One run's cells per image (bars in batch and condition order; points beyond
    :data:`BARS_UP_TO` images), coloured by condition; ``highlight``'s images stand out; ``names``:
    the images' names under the bars (else on hover only)."""
    ordered = counts.sort_values(["batch", "condition", "image"], kind="stable")
    order = list(dict.fromkeys(ordered["image"]))
    bars = len(order) <= BARS_UP_TO
    fig = go.Figure()
    for i, ((condition, model), part) in enumerate(ordered.groupby(["condition", "model"], sort=True)):
        marked = [j for j, image in enumerate(part["image"]) if image in set(highlight)]
        trace = go.Bar if bars else go.Scattergl
        extra = {} if bars else {"mode": "markers"}
        fig.add_trace(trace(x=part["image"], y=part["cells"], customdata=part[["batch"]],
                            name=" · ".join(filter(None, [condition or "(none)", model])),
                            marker_color=CONDITION_COLOURS[i % len(CONDITION_COLOURS)],
                            selectedpoints=marked if highlight else None,
                            unselected={"marker": {"opacity": FADED}},
                            hovertemplate="%{x} (%{customdata[0]}): %{y} cells<extra>%{fullData.name}</extra>", **extra))
    fig.update_xaxes(categoryorder="array", categoryarray=order, showticklabels=names,
                     title_text=None if names else "images (hover for names)")
    fig.update_layout(title=dict(text=title, font_size=14), height=300, margin=dict(l=10, r=10, t=40, b=10),
                      dragmode="select", barmode="group", legend=dict(orientation="h", y=-0.25),
                      yaxis_title="cells")
    return fig


def images_section(runs: Sequence[Run], picked: list[str]) -> None:
    st.subheader("Cells per image: pick images to find them in every run")
    counts = cached(rc.per_image_counts, runs)
    names = _all_images(runs)
    st.multiselect("Images picked", names, key="res.cmp.pick", on_change=lambda: _set_picks(
        st.session_state["res.cmp.pick"]), placeholder="Drag over bars below, or choose images here",
        help="Picked images stand out in every run's chart, matched by their pixels (an image renamed in another "
             f"run is found too). Drag across a chart's bars to pick them; double-click a chart to let go. At most "
             f"{MAX_PICKS} at once; the address keeps them.")
    matched = rc.matched_images(runs, picked)
    version = hashlib.sha1("\0".join(picked).encode()).hexdigest()[:8]  # a new pick redraws every chart anew
    for col, run in zip(st.columns(len(runs)), runs, strict=True):
        part = counts[counts["run"] == run.info.name]
        if part.empty:
            col.caption(f"**{run.info.name}** holds no cell counts.")
            continue
        key = f"res.cmp.sel.{run.info.name}.{version}"
        names_fit = part["image"].nunique() * len(runs) <= NAMES_UP_TO
        fig = per_image_figure(part, matched[run.info.name], run.info.name, names=names_fit)
        col.plotly_chart(fig, key=key, width="stretch", on_select=functools.partial(_select, key, names),
                         selection_mode=("box", "lasso", "points"))
    shared = cached(rc.shared_images, runs)
    everywhere = int((shared["runs"] == len(runs)).sum())
    st.caption(f"{plural(everywhere, 'image')} of {len(shared)} are in every run (the same pixels)."
               + ("" if everywhere == len(shared) else " The others are in some runs only."))
    if picked:
        st.dataframe(picked_table(runs, picked), hide_index=True,
                     column_config={"picked": st.column_config.TextColumn(help="As chosen; its pixels are those "
                                                                               "of the first run holding that name")})


def picked_table(runs: Sequence[Run], picked: Sequence[str]) -> pd.DataFrame:
    """picked, then per run its image there: the name, and how it matched where not by name and pixels."""
    matches = rc.image_matches(runs, picked)
    words = {rc.SAME: "", rc.RENAMED: " (renamed, same pixels)", rc.OTHER_PIXELS: " (same name, other pixels)"}
    matches["shown"] = [("—" if image is None else image + words.get(match, ""))
                        for image, match in zip(matches["image"], matches["match"], strict=True)]
    table = matches.groupby(["picked", "run"], sort=False)["shown"].agg("; ".join).unstack("run")
    return table.reindex(index=list(picked), columns=[r.info.name for r in runs]).reset_index()


def measure_section(runs: Sequence[Run], colours: dict[str, str], picked: Sequence[str]) -> None:
    options = cached(rc.measure_options, runs)
    if not options:
        return
    st.subheader("A measurement per condition")
    from_link("res.cmp.measure", "measure", options, "area" if "area" in options else options[0])
    to_link("res.cmp.measure", "measure")
    column = st.columns([1, 2])[0].selectbox(
        "Measurement", options, key="res.cmp.measure", on_change=to_link, args=("res.cmp.measure", "measure"),
        help="Boxes: 25th to 75th percentile and median; whiskers: 5th and 95th percentile, per run and condition. "
             "Diamonds: the median of each picked image.")
    stats = cached(rc.measure_spread, runs, column)
    medians = rc.image_medians(runs, column, rc.matched_images(runs, picked))
    fig = go.Figure()
    for run in runs:
        name = run.info.name
        part = stats[stats["run"] == name]
        if part.empty:
            continue
        fig.add_trace(go.Box(x=part["condition"].replace("", "(none)"), q1=part["q1"], median=part["median"],
                             q3=part["q3"], lowerfence=part["p5"], upperfence=part["p95"], name=name,
                             offsetgroup=name, marker_color=colours[name], legendgroup=name))
        mine = medians[medians["run"] == name]
        if len(mine):
            fig.add_trace(go.Scatter(x=mine["condition"].replace("", "(none)"), y=mine["median"], mode="markers",
                                     offsetgroup=name, legendgroup=name, showlegend=False, text=mine["image"],
                                     marker=dict(symbol="diamond", size=10, color=colours[name],
                                                 line=dict(width=1.5, color="black")),
                                     hovertemplate="%{text}: median %{y}<extra>" + name + "</extra>"))
    fig.update_layout(boxmode="group", scattermode="group", height=360, margin=dict(l=10, r=10, t=10, b=10),
                      yaxis_title=column, xaxis_title="condition", legend_title_text="run")
    st.plotly_chart(fig, width="stretch", key="res.cmp.box")
    if lacking := [r.info.name for r in runs if r.info.name not in set(stats["run"])]:
        st.caption(f"Not measured in {', '.join(lacking)}.")


def f1_section(runs: Sequence[Run], colours: dict[str, str]) -> None:
    table = cached(rc.f1_table, runs)
    if table.empty:
        return
    st.subheader("F1 per model (images with ground truth, IoU ≥ 0.5)")
    fig = px.bar(table, x="model", y="f1", color="run", barmode="group", range_y=[0, 1], text_auto=".3f",
                 color_discrete_map=colours, hover_data=["images", "precision", "recall"])
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(fig, width="stretch", key="res.cmp.f1")
    st.dataframe(table.round(3), hide_index=True)
    if lacking := [r.info.name for r in runs if r.info.name not in set(table["run"])]:
        st.caption(f"No models scored against ground truth in {', '.join(lacking)}.")


def verdict_section(runs: Sequence[Run]) -> None:
    table = rc.verdicts(runs)
    if table["verdict"].isna().all():
        return
    st.subheader("Plate effect")
    for col, row in zip(st.columns(len(runs)), table.itertuples(index=False), strict=True):
        with col.container(border=True):
            if pd.isna(row.verdict):
                st.metric(row.run, "–", help="This run holds no cell map, so no plate-effect check.")
                st.caption("No plate-effect check in this run.")
                continue
            st.metric(row.run, row.verdict, help="The Cell map's verdict: can the plates be told apart by their cells?")
            st.caption(row.reason or "")
            numbers = {"silhouette": row.silhouette, "iLISI": row.ilisi, "kBET": row.kbet,
                       "classifier": row.classifier_accuracy, "chance": row.chance}
            st.caption(" · ".join(f"{k} {v:.2f}" for k, v in numbers.items() if v is not None and pd.notna(v)))


def settings_section(runs: Sequence[Run]) -> None:
    st.subheader("Settings that differ")
    diff = cached(rc.settings_diff, runs)
    if diff.empty:
        st.success("These runs ran with the same settings, CellScope and package versions, and device.")
        return
    st.dataframe(diff.fillna("—"), hide_index=True, width="stretch",
                 column_config={"setting": st.column_config.TextColumn(
                     help="ANALYSIS.setting as saved; ANALYSIS.provenance.… are versions, device and weights")})
    st.caption(f"{plural(len(diff), 'setting')} differ or are missing (—) in some runs; the rest are the same.")
