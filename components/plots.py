"""Plotly figures shared by pages."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def histogram_figure(values: np.ndarray, threshold: float | None = None, *, log_y: bool = True,
                     height: int = 260, title: str = "") -> go.Figure:
    """Intensity histogram of a [0, 1] image with the threshold drawn as a vertical line."""
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)] if values.ndim == 2 else values
    counts, edges = np.histogram(sample, bins=128, range=(0.0, 1.0))
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, marker_color="#7fb3d5", width=1 / 128,
                           hovertemplate="intensity %{x:.3f}<br>pixels %{y}<extra></extra>"))
    if threshold is None:
        title = title or "adaptive threshold: it varies across the image"
    else:
        # The label on the side with room: right of 0.5 it ran past 1 and stretched the axis to 1.5.
        fig.add_vline(x=threshold, line_color="#ff6b6b", line_width=2, annotation_text=f"threshold {threshold:.3f}",
                      annotation_position="top right" if threshold < 0.5 else "top left")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30 if title else 10, b=10), bargap=0,
                      title=title or None, xaxis_title="normalised intensity", xaxis_range=[0, 1], yaxis_title="pixels",
                      yaxis_type="log" if log_y else "linear", showlegend=False)
    return fig


def agreement_heatmap(matrix, height: int = 340) -> go.Figure:
    """Pairwise F1 between models as an annotated heatmap (1 = they find the same objects)."""
    fig = go.Figure(go.Heatmap(
        z=matrix.values, x=list(matrix.columns), y=list(matrix.index), zmin=0, zmax=1, colorscale="Viridis",
        text=np.round(matrix.values, 2), texttemplate="%{text}", colorbar=dict(title="F1"),
        hovertemplate="%{y} vs %{x}: F1 %{z:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      title="Agreement between models (F1 at IoU 0.5)", yaxis_autorange="reversed")
    return fig


def f1_curve_figure(curve, height: int = 340) -> go.Figure:
    """F1 against the IoU threshold used for matching, one line per model."""
    import plotly.express as px

    fig = go.Figure()
    palette = px.colors.qualitative.Plotly  # distinct hues: the theme's default blues look alike
    for i, (model, part) in enumerate(curve.groupby("model", sort=False)):
        fig.add_trace(go.Scatter(x=part["iou"], y=part["f1"], mode="lines+markers", name=model,
                                 line=dict(color=palette[i % len(palette)]),
                                 hovertemplate=f"{model}<br>IoU ≥ %{{x:.2f}}: F1 %{{y:.3f}}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), title="F1 vs IoU threshold (ground truth)",
                      xaxis_title="IoU threshold", yaxis_title="F1", yaxis_range=[0, 1.02],
                      legend=dict(orientation="h", y=-0.25))
    return fig
