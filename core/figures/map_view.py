"""The geometry of a cell map's view: a window (the part of the map in view), a selection's shape
(a box or a lasso) as an address keeps it, what a Plotly selection event chose, and the density of
many cells (cells per square of a window, computed with numpy) with its figure. Plain values: the
Results page (components/results_map.py) keeps them in its address; no Streamlit here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from matplotlib.path import Path as Polygon

DENSITY_BINS = 512  # squares along the window's longer side
LASSO_VERTICES = 120  # a lasso kept in an address is thinned to this many corners


def _num(value: float) -> str:
    return f"{float(value):.6g}"


@dataclass(frozen=True)
class Window:
    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def around(cls, x: np.ndarray, y: np.ndarray) -> Window:
        """The bounds of ``x``, ``y`` (widened where all are equal)."""
        x0, x1, y0, y1 = float(np.min(x)), float(np.max(x)), float(np.min(y)), float(np.max(y))
        wide = max(x1 - x0, y1 - y0) or 1.0
        x0, x1 = (x0 - wide / 2, x1 + wide / 2) if x0 == x1 else (x0, x1)
        y0, y1 = (y0 - wide / 2, y1 + wide / 2) if y0 == y1 else (y0, y1)
        return cls(x0, x1, y0, y1)

    @classmethod
    def parse(cls, text: str | None) -> Window | None:
        """``x0,x1,y0,y1`` (either order), or None where it is not four finite numbers with some width."""
        try:
            x0, x1, y0, y1 = (float(v) for v in (text or "").split(","))
        except ValueError:
            return None
        if not np.all(np.isfinite([x0, x1, y0, y1])) or x0 == x1 or y0 == y1:
            return None
        return cls(min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1))

    def text(self) -> str:
        return ",".join(_num(v) for v in (self.x0, self.x1, self.y0, self.y1))

    def holds(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1)


@dataclass(frozen=True)
class Shape:
    """A box (``xs``, ``ys`` its two corners) or a lasso (its corners), in map coordinates."""

    kind: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]

    @classmethod
    def parse(cls, text: str | None) -> Shape | None:
        kind, _, numbers = (text or "").partition(":")
        try:
            values = [float(v) for v in numbers.split(",")]
        except ValueError:
            return None
        if not np.all(np.isfinite(values)):
            return None
        if kind == "box" and len(values) == 4:
            return cls("box", tuple(values[:2]), tuple(values[2:]))
        if kind == "lasso" and len(values) >= 6 and len(values) % 2 == 0:
            return cls("lasso", tuple(values[0::2]), tuple(values[1::2]))
        return None

    @classmethod
    def of(cls, kind: str, xs: Sequence[float], ys: Sequence[float]) -> Shape | None:
        """A shape from Plotly's selection, rounded (and a lasso thinned) as the address keeps it."""
        step = max(1, -(-len(xs) // LASSO_VERTICES))
        xs, ys = list(xs)[::step], list(ys)[::step]
        numbers = [*xs, *ys] if kind == "box" else [v for xy in zip(xs, ys, strict=True) for v in xy]
        return cls.parse(f"{kind}:" + ",".join(_num(v) for v in numbers))

    def text(self) -> str:
        numbers = [*self.xs, *self.ys] if self.kind == "box" else [v for p in zip(self.xs, self.ys, strict=True) for v in p]
        return f"{self.kind}:" + ",".join(_num(v) for v in numbers)

    def holds(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.kind == "box":
            return Window(min(self.xs), max(self.xs), min(self.ys), max(self.ys)).holds(x, y)
        return Polygon(np.column_stack([self.xs, self.ys])).contains_points(np.column_stack([x, y]))

    def bounds(self) -> Window:
        return Window.around(np.array(self.xs), np.array(self.ys))

    def outline(self) -> dict:
        """The shape as a Plotly layout shape (dashed), so a linked selection is seen where it is."""
        if self.kind == "box":
            return dict(type="rect", x0=self.xs[0], x1=self.xs[1], y0=self.ys[0], y1=self.ys[1],
                        line=dict(color="#f0f0f0", dash="dash", width=2))
        path = "M" + "L".join(f"{x},{y}" for x, y in zip(self.xs, self.ys, strict=True)) + "Z"
        return dict(type="path", path=path, line=dict(color="#f0f0f0", dash="dash", width=2))


def selection_of(event: dict, ids: np.ndarray) -> tuple[Shape | None, list[str]]:
    """What a Plotly selection event chose: its box or lasso (the last one drawn), else the ids
    (``ids``, by the points' ``customdata`` row) of the points clicked."""
    sel = event.get("selection", {})
    if sel.get("lasso"):
        return Shape.of("lasso", sel["lasso"][-1]["x"], sel["lasso"][-1]["y"]), []
    if sel.get("box"):
        return Shape.of("box", sel["box"][-1]["x"], sel["box"][-1]["y"]), []
    rows = sorted({int(p["customdata"]) for p in sel.get("points", []) if "customdata" in p})
    return None, [str(ids[r]) for r in rows if 0 <= r < len(ids)]


def density(x: np.ndarray, y: np.ndarray, window: Window, values: np.ndarray | None = None,
            bins: int = DENSITY_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Cells per bin of ``window`` (square bins, ``bins`` along its longer side; rows are y):
    (counts, x centres, y centres, the mean of ``values`` per bin or None). Cells outside the window
    are not counted; those on its far edges go to the last bins."""
    side = max(window.x1 - window.x0, window.y1 - window.y0) / bins
    nx = max(1, min(bins, int(np.ceil((window.x1 - window.x0) / side))))
    ny = max(1, min(bins, int(np.ceil((window.y1 - window.y0) / side))))
    inside = window.holds(x, y)
    ix = np.minimum(((x[inside] - window.x0) / (window.x1 - window.x0) * nx).astype(np.int64), nx - 1)
    iy = np.minimum(((y[inside] - window.y0) / (window.y1 - window.y0) * ny).astype(np.int64), ny - 1)
    flat = iy * nx + ix
    counts = np.bincount(flat, minlength=nx * ny).reshape(ny, nx)
    means = None
    if values is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (np.bincount(flat, weights=values[inside], minlength=nx * ny).reshape(ny, nx) / counts)
    xc = window.x0 + (np.arange(nx) + 0.5) * (window.x1 - window.x0) / nx
    yc = window.y0 + (np.arange(ny) + 0.5) * (window.y1 - window.y0) / ny
    return counts, xc, yc, means


def density_figure(counts: np.ndarray, xc: np.ndarray, yc: np.ndarray, window: Window, means: np.ndarray | None,
                   measure: str, height: int = 560) -> go.Figure:
    """Cells per bin on a log colour scale (or a measurement's mean per bin); an empty bin is blank."""
    shown = counts.astype(np.float32)
    shown[counts == 0] = np.nan
    if means is None:
        z, title, hover = np.log10(shown), "cells", "%{customdata:,} cells<extra></extra>"
        ticks = [m * 10 ** k for k in range(len(str(max(int(counts.max()), 1)))) for m in (1, 2, 5)]
        bar = dict(title=dict(text="cells per square", side="right"), thickness=12,
                   tickvals=np.log10(ticks).tolist(), ticktext=[f"{t:,}" for t in ticks])
    else:
        z, title = np.where(counts > 0, means, np.nan).astype(np.float32), measure
        hover = f"%{{customdata:,}} cells<br>mean {measure} %{{z:.3g}}<extra></extra>"
        bar = dict(title=dict(text=f"mean {measure}", side="right"), thickness=12)
    fig = go.Figure(go.Heatmap(x=xc, y=yc, z=z, customdata=counts.astype(np.int32), colorscale="Viridis",
                               colorbar=bar, hovertemplate=hover, name=title, hoverongaps=False))
    # Two invisible corners: a heatmap offers no box tool, a scatter does (the box zooms in).
    fig.add_trace(go.Scatter(x=[window.x0, window.x1], y=[window.y0, window.y1], mode="markers",
                             marker=dict(opacity=0), hoverinfo="skip", showlegend=False))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), dragmode="select",
                      uirevision=window.text())
    fig.update_xaxes(range=[window.x0, window.x1], showticklabels=False, zeroline=False, showgrid=False)
    fig.update_yaxes(range=[window.y0, window.y1], showticklabels=False, zeroline=False, showgrid=False,
                     scaleanchor="x")
    return fig
