"""Figures of the Explain page (Plotly): the classifier's confusion matrix and training curves,
each class's inside-the-cell shares, and the deletion/insertion curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.figures.cellmap import PALETTE


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], *, height: int = 340) -> go.Figure:
    """Rows = true class, columns = predicted; each cell's share of its row (recall), counts on hover."""
    counts = np.asarray(confusion, float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = [str(c) for c in classes]
    fig = go.Figure(go.Heatmap(z=share, x=names, y=names, zmin=0, zmax=1, colorscale="Blues", customdata=counts,
                               text=[[f"{v:.0%}" for v in row] for row in share], texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{customdata:.0f} cells (%{z:.0%})"
                                             "<extra></extra>", colorbar=dict(tickformat=".0%", thickness=10)))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), title="Confusion (cells of unseen images)",
                      xaxis=dict(title="predicted", type="category"),
                      yaxis=dict(title="true", type="category", autorange="reversed"))
    return fig


def curves_figure(train_loss: np.ndarray, val_accuracy: np.ndarray, chance: float, *, height: int = 340) -> go.Figure:
    """Per epoch, mean over folds: training loss (left axis) and balanced accuracy on the held-out
    images (right axis) with the chance level."""
    loss = np.asarray(train_loss, float).reshape(-1, np.shape(train_loss)[-1]).mean(axis=0)
    acc = np.asarray(val_accuracy, float).reshape(-1, np.shape(val_accuracy)[-1])
    epochs = np.arange(1, len(loss) + 1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=epochs, y=loss, name="training loss", mode="lines+markers", line=dict(color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=epochs, y=acc.mean(axis=0), name="accuracy on unseen images", mode="lines+markers",
                             yaxis="y2", line=dict(color=PALETTE[1]),
                             error_y=dict(type="data", array=acc.std(axis=0), visible=len(acc) > 1, thickness=1)))
    fig.add_trace(go.Scatter(x=[epochs[0], epochs[-1]], y=[chance, chance], name=f"chance ({chance:.2f})",
                             mode="lines", yaxis="y2", line=dict(color="grey", dash="dash")))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), title="Training (mean of the folds)",
                      xaxis=dict(title="epoch", dtick=max(1, len(epochs) // 10)), yaxis=dict(title="loss"),
                      yaxis2=dict(title="balanced accuracy", overlaying="y", side="right", range=[0, 1.02], tickmode="linear",
                                  tick0=0, dtick=0.25, showgrid=False),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def inside_figure(table: pd.DataFrame, *, by: str = "explained_class", order: Sequence[str] = (),
                  height: int = 340) -> go.Figure:
    """Each class's per-cell share of CAM energy inside the cell (box and points), correct and
    wrong predictions side by side, with the share the cells' area alone would give."""
    fig = go.Figure()
    for ok, name, color in ((True, "correct", PALETTE[2]), (False, "wrong", PALETTE[3])):
        part = table[table["correct"] == ok]
        if len(part):
            fig.add_trace(go.Box(x=part[by].astype(str), y=part["inside_mask_fraction"], name=name, marker_color=color,
                                 boxpoints="all", jitter=0.4, pointpos=0, marker=dict(size=3, opacity=0.5),
                                 customdata=part["cell_id"], hovertemplate="%{customdata}: %{y:.2f}<extra></extra>"))
    area = table.groupby(by)["area_fraction"].median()
    fig.add_trace(go.Scatter(x=[str(c) for c in area.index], y=area.to_numpy(), mode="markers", name="cell area share",
                             marker=dict(symbol="line-ew", size=40, line=dict(width=2, color="white")),
                             hovertemplate="the cells cover %{y:.2f} of the crop<extra></extra>"))
    fig.update_layout(height=height, boxmode="group", margin=dict(l=10, r=10, t=40, b=10),
                      title="Share of each cell's CAM inside its outline", yaxis=dict(range=[0, 1], title="inside share"),
                      xaxis=dict(title=by.replace("_", " "), type="category", categoryorder="array",
                                 categoryarray=[str(c) for c in order]), legend=dict(orientation="h", y=-0.2))
    return fig


def deletion_figure(fractions: np.ndarray, curves: dict[str, np.ndarray], *, height: int = 320) -> go.Figure:
    """Mean target probability as pixels are removed (deletion) or restored (insertion), in CAM
    order and in random order."""
    fig = go.Figure()
    styles = {"deletion": (PALETTE[3], "solid"), "random_deletion": (PALETTE[3], "dot"),
              "insertion": (PALETTE[0], "solid"), "random_insertion": (PALETTE[0], "dot")}
    for name, values in curves.items():
        color, dash = styles[name]
        fig.add_trace(go.Scatter(x=fractions, y=np.asarray(values).mean(axis=0), mode="lines+markers",
                                 name=name.replace("_", " "), line=dict(color=color, dash=dash)))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), title="Deletion / insertion test",
                      xaxis=dict(title="share of pixels removed (deletion) or restored (insertion)", tickformat=".0%"),
                      yaxis=dict(title="probability of the explained class", range=[0, 1.02]))
    return fig
