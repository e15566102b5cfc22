"""Figures of a cell map: the interactive Plotly scatter (WebGL, one trace per group so the legend
toggles groups, each point carrying its table row for selections), the cluster composition bars,
and a static PNG for reports. The page and ``python -m core embed`` draw the same figures."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MAX_GROUPS = 40  # more distinct values than this are drawn as a number (a colour scale), not as groups


def _marker_size(n: int) -> float:
    """Smaller points as the map fills: ~7 px for a few hundred cells, 2 px at 100,000."""
    return float(np.clip(12 - 1.9 * np.log10(max(n, 1)) ** 1.3, 2, 8))


def drawn_as_groups(values: pd.Series) -> bool:
    """A few distinct values (batches, clusters, conditions) are groups with a legend; many numbers
    or any fractional measurement, a colour scale."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return not (numeric and (values.nunique() > MAX_GROUPS or pd.api.types.is_float_dtype(values)))


def map_figure(frame: pd.DataFrame, color_by: str, *, x: str = "x", y: str = "y", title: str = "",
               height: int = 500, selected: Sequence[int] = (), compact: bool = False) -> go.Figure:
    """The map of ``frame`` (one row per cell, map coordinates in ``x``/``y``) coloured by the column
    ``color_by``: a few distinct values are groups (legend), many numbers a colour scale. Each
    point's ``customdata`` is its row position in ``frame``, which selections return; selected
    points are drawn larger, the others faded. ``compact``: the legend below, for small side-by-side maps."""
    rows = np.arange(len(frame))
    values = frame[color_by]
    ids = frame["cell_id"].astype(str).to_numpy() if "cell_id" in frame else rows.astype(str)
    size = _marker_size(len(frame))
    fig = go.Figure()
    if not drawn_as_groups(values):
        fig.add_trace(go.Scattergl(
            x=frame[x], y=frame[y], mode="markers", customdata=rows, text=ids, name=color_by,
            marker=dict(size=size, color=values, colorscale="Viridis", showscale=True,
                        colorbar=dict(title=dict(text=color_by, side="right"), thickness=12)),
            selected=dict(marker=dict(size=max(9.0, 2.5 * size), opacity=1.0)), unselected=dict(marker=dict(opacity=0.12)),
            hovertemplate=f"%{{text}}<br>{color_by} %{{marker.color:.3g}}<extra></extra>"))
    else:
        groups = values.astype(str)
        for i, group in enumerate(sorted(groups.unique(), key=_natural)):
            mask = (groups == group).to_numpy()
            fig.add_trace(go.Scattergl(
                x=frame[x][mask], y=frame[y][mask], mode="markers", customdata=rows[mask], text=ids[mask], name=group,
                marker=dict(size=size, color=PALETTE[i % len(PALETTE)], opacity=0.85, line=dict(width=0)),
                selected=dict(marker=dict(size=max(9.0, 2.5 * size), opacity=1.0)),
                unselected=dict(marker=dict(opacity=0.12)),
                hovertemplate=f"%{{text}}<br>{color_by} {group}<extra></extra>"))
    if len(selected):
        pick = np.asarray(selected, int)
        fig.add_trace(go.Scattergl(x=frame[x].to_numpy()[pick], y=frame[y].to_numpy()[pick], mode="markers",
                                   name="selected", hoverinfo="skip", showlegend=False,
                                   marker=dict(size=size + 6, color="rgba(0,0,0,0)", line=dict(color="white", width=1.5))))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10), title=title or None,
                      legend=(dict(title=dict(text=color_by), itemsizing="constant", orientation="h", y=-0.02,
                                   yanchor="top") if compact else
                              dict(title=dict(text=color_by), itemsizing="constant", y=0.92)),
                      dragmode="zoom",  # the Map view sets it from its Lasso / Box / Zoom switch
                      uirevision="cellmap")  # zoom and hidden groups survive a redraw
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False, showgrid=False, scaleanchor="x")
    return fig


def composition_figure(shares: pd.DataFrame, by: str, height: int = 320) -> go.Figure:
    """Stacked bars: per cluster (rows of ``shares``), the share of each ``by`` group (columns)."""
    fig = go.Figure()
    for i, group in enumerate(sorted(shares.columns, key=_natural)):
        fig.add_trace(go.Bar(x=[str(c) for c in shares.index], y=shares[group], name=str(group),
                             marker_color=PALETTE[i % len(PALETTE)],
                             hovertemplate=f"{by} {group}: %{{y:.0%}} of cluster %{{x}}<extra></extra>"))
    fig.update_layout(barmode="stack", height=height, margin=dict(l=10, r=10, t=30, b=10),
                      title=f"Each cluster's cells by {by}", yaxis=dict(tickformat=".0%", title=None),
                      xaxis=dict(title="cluster", type="category"), legend=dict(title=dict(text=by)))
    return fig


def map_html(frame: pd.DataFrame, color_by: str, *, title: str = "", subtitle: str = "") -> str:
    """The interactive map as one self-contained HTML file: plotly.js is inlined (about 4.5 MB), so
    it opens offline, by e-mail or on a lab share, not only next to a CDN."""
    fig = map_figure(frame, color_by, title=title + (f"<br><sup>{subtitle}</sup>" if subtitle else ""), height=720)
    fig.update_layout(dragmode="lasso")
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False, "scrollZoom": True})


def loss_figure(curve: Sequence[float], *, height: int = 240) -> go.Figure:
    """A training loss per epoch (the autoencoder's reconstruction error)."""
    epochs = np.arange(1, len(curve) + 1)
    fig = go.Figure(go.Scatter(x=epochs, y=list(curve), mode="lines+markers", line=dict(color=PALETTE[0]),
                               hovertemplate="epoch %{x}: loss %{y:.5f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), xaxis=dict(title="epoch", dtick=1 if
                      len(epochs) <= 20 else None), yaxis=dict(title="mean squared error"))
    return fig


def map_png(coords: np.ndarray, groups: Sequence, *, title: str = "", subtitle: str = "", legend: str = "",
            size: float = 6.0) -> bytes:
    """A static picture of the map coloured by ``groups`` (matplotlib, no browser needed), the
    legend (titled ``legend``) outside the points so it never hides any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = np.asarray([str(g) for g in groups])
    fig, ax = plt.subplots(figsize=(size, size), dpi=120)
    point = float(np.clip(300 / np.sqrt(max(len(coords), 1)), 1.0, 12.0))
    for i, group in enumerate(sorted(set(groups), key=_natural)):
        mask = groups == group
        ax.scatter(coords[mask, 0], coords[mask, 1], s=point, c=PALETTE[i % len(PALETTE)], label=group, linewidths=0)
    ax.set_axis_off()  # map axes have no units: no ticks, no frame
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title, fontsize=10, loc="left", pad=18 if subtitle else 6)
    if subtitle:
        ax.text(0.0, 1.01, subtitle, transform=ax.transAxes, fontsize=8, color="#555555", va="bottom")
    ax.legend(markerscale=max(1.0, 6 / point), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False, title=legend or None, title_fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _natural(value: object) -> tuple:
    """Sort 'plate2' before 'plate10', and numbers as numbers."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(value)))
