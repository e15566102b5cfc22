"""The Train page's live curve: training and validation loss and validation F1 per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from core.figures.cellmap import PALETTE


def training_figure(epochs: Sequence[Mapping[str, Any]], *, best_epoch: int | None = None,
                    height: int = 320) -> go.Figure:
    """Loss (left axis) and validation F1 at IoU 0.5 (right axis, 0-1) per epoch; the best epoch marked."""
    x = [int(e["epoch"]) for e in epochs]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[e.get("loss") for e in epochs], name="training loss", mode="lines+markers",
                             line=dict(color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=x, y=[e.get("val_loss") for e in epochs], name="validation loss",
                             mode="lines+markers", line=dict(color=PALETTE[0], dash="dot")))
    fig.add_trace(go.Scatter(x=x, y=[e.get("f1") for e in epochs], name="validation F1 (IoU 0.5)", yaxis="y2",
                             mode="lines+markers", line=dict(color=PALETTE[1])))
    if best_epoch is not None and best_epoch in x:
        f1 = next(e.get("f1") for e in epochs if int(e["epoch"]) == best_epoch)
        fig.add_trace(go.Scatter(x=[best_epoch], y=[f1], yaxis="y2", mode="markers", name=f"best (epoch {best_epoch})",
                                 marker=dict(size=14, symbol="star", color=PALETTE[1], line=dict(color="white",
                                                                                                width=1))))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), xaxis=dict(title="epoch", dtick=1 if len(x) <= 20 else None),
                      yaxis=dict(title="loss", rangemode="tozero"),
                      yaxis2=dict(title="validation F1", overlaying="y", side="right", range=[0, 1.02], tickmode="linear",
                                  tick0=0, dtick=0.25, showgrid=False),
                      legend=dict(orientation="h", y=-0.25))
    return fig
