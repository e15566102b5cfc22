"""Which model for my data: the ranking of every model on the images with ground truth
(:func:`core.evaluation.ranking.rank_models`), its recommendation in words, and F1 against time
per image, where the choice between accuracy and speed is seen at a glance. Shown on Compare's
*All images* and on a saved run's *Models* view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from core.evaluation.ranking import MIN_IMAGES, rank_models

VERDICT_COLOURS = {"leader": "#2ca02c", "tied with the leader": "#1f77b4", "behind the leader": "#7f7f7f",
                   "boxes: not ranked against outlines": "#ff7f0e"}


def model_ranking(scores: pd.DataFrame, *, key: str) -> None:
    """The ranking of ``scores`` (a Compare run's per-image table): verdict, table and chart."""
    ranking = rank_models(scores)
    st.markdown("**Which model for these images**")
    if ranking.recommended is None:
        st.info(ranking.why)
        return
    (st.success if ranking.determined else st.warning)(ranking.why, icon=":material/recommend:")
    table = ranking.table
    gaps = ("f1 behind leader", "interval low", "interval high")  # none for the leader: a dash, not "None"
    shown = table.assign(**{c: table[c].map(lambda v: "–" if pd.isna(v) else f"{v:+.3f}") for c in gaps})
    st.dataframe(shown, hide_index=True, width="stretch", column_config={
        "f1": st.column_config.NumberColumn("F1 (IoU 0.5)", format="%.3f", help="Mean over the images new to the model"),
        "ap": st.column_config.NumberColumn("AP (IoU 0.5–0.95)", format="%.3f"),
        "s per image": st.column_config.NumberColumn("s per image", format="%.2f", help="Mean time to segment one image"),
        "f1 behind leader": st.column_config.TextColumn(
            "F1 below leader", help="Mean over the images both were scored on (paired)"),
        "interval low": st.column_config.TextColumn("95 % low", help="Bootstrap interval over images of the difference"),
        "interval high": st.column_config.TextColumn("95 % high")})
    chart = table.assign(**{"verdict": table["verdict"].where(table["verdict"].isin(VERDICT_COLOURS), "undetermined")})
    fig = px.scatter(chart, x="s per image", y="f1", text="model", color="verdict", log_x=bool((chart["s per image"] > 0).all()),
                     color_discrete_map=VERDICT_COLOURS | {"undetermined": "#9467bd"}, range_y=[0, 1.05],
                     hover_data=["ap", "images"], labels={"f1": "F1 at IoU 0.5", "s per image": "seconds per image"})
    fig.update_traces(textposition="bottom center", marker_size=12)
    fig.update_xaxes(tickformat="~g", dtick=1 if fig.layout.xaxis.type == "log" else None)  # 0.1, 1, 10: not "7" for 0.7
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=20, b=10), legend_title_text="")
    st.plotly_chart(fig, width="stretch", key=f"{key}.chart")
    n = int(np.nanmax(table["images"])) if len(table) else 0
    st.caption(f"Up and to the left is better. Models are told apart by the difference of their F1 on the same "
               f"images, with a 95 % bootstrap interval over images (the image, not the cell, is the unit); "
               f"with fewer than {MIN_IMAGES} images the ranking is undetermined. Images a model was trained or "
               f"validated on are left out of its scores. {n} image{'s' if n != 1 else ''} scored at most.")
