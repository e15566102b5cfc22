"""A saved run as one self-contained HTML report that opens offline: plotly.js inlined once, each
figure interactive, the map and overlays as embedded PNGs, tables, settings and versions.

Sections per analysis kind: plates and cells per image (segmentation, cellmap), F1 per model
(compare), the map and the plate-effect verdict (cellmap), the classifier and its CAM reading
(explain), the training curve (training); then each analysis's inputs, settings and provenance.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from core.analysis import Analysis, cellscope_version
from core.figures.cellmap import map_figure
from core.runs import Run

MAX_TABLE_ROWS = 50  # rows of a table printed in full; longer ones show their first rows and say so
MAX_MAP_POINTS = 50_000  # an interactive map of more cells is drawn from a seeded sample (the PNG has them all)
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem} h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:.5rem 0;
font-size:.85rem} td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left} .cards{display:flex;gap:1rem;flex-wrap:wrap} .card{border:1px solid
#ddd;border-radius:.4rem;padding:.5rem .9rem} .card b{display:block;font-size:1.3rem} pre{background:#f7f7f7;
padding:.6rem;overflow:auto;font-size:.8rem} img{max-width:100%} .wide{overflow-x:auto} .note{color:#666;font-size:.85rem}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _figure(fig: go.Figure) -> str:
    return fig.to_html(include_plotlyjs=False, full_html=False, config={"displaylogo": False})


def _table(frame: pd.DataFrame, what: str = "rows") -> str:
    shown = frame.head(MAX_TABLE_ROWS)
    note = (f'<p class="note">The first {MAX_TABLE_ROWS} of {len(frame):,} {what}; the whole table is in the run '
            "folder as Parquet.</p>") if len(frame) > MAX_TABLE_ROWS else ""
    table = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep="")
    return f'<div class="wide">{table}</div>{note}'


def _png(data: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _cells_per_image(cells: pd.DataFrame, title: str) -> str:
    if not {"image", "batch"} <= set(cells.columns) or cells.empty:
        return ""
    counts = cells.groupby(["batch", "image"]).size().rename("cells").reset_index()
    fig = go.Figure([go.Bar(x=part["image"], y=part["cells"], name=str(batch)) for batch, part in counts.groupby("batch")])
    fig.update_layout(title=title, xaxis_title="image", yaxis_title="cells", height=360, legend_title="batch",
                      margin=dict(l=40, r=20, t=50, b=80))
    return _figure(fig)


def _segmentation(analysis: Analysis) -> str:
    parts = ["<h3>Cells per image</h3>", _cells_per_image(analysis.tables.get("cells", pd.DataFrame()),
                                                          "Cells per image, by plate")]
    if "summary" in analysis.tables:
        parts += ["<h3>Per image</h3>", _table(analysis.tables["summary"], "images")]
    return "".join(parts)


def _compare(analysis: Analysis) -> str:
    scores = analysis.tables.get("scores", pd.DataFrame())
    if scores.empty or "f1" not in scores.columns or scores["f1"].isna().all():
        return "<p>No image had ground truth: no F1.</p>" + (_table(scores) if len(scores) else "")
    means = scores.dropna(subset=["f1"]).groupby("model")["f1"].agg(["mean", "count"]).reset_index()
    fig = go.Figure(go.Bar(x=means["model"], y=means["mean"], text=[f"{v:.3f}" for v in means["mean"]],
                           textposition="outside"))
    fig.update_layout(title="Mean F1 at IoU 0.5 over the images with ground truth", yaxis_range=[0, 1.05],
                      height=360, margin=dict(l=40, r=20, t=50, b=40))
    return "<h3>F1 per model</h3>" + _figure(fig) + _table(scores, "image x model rows")


def _cellmap(analysis: Analysis) -> str:
    parts = []
    if "batch_effect.json" in analysis.files:
        metrics = json.loads(analysis.files["batch_effect.json"])
        parts.append(f"<h3>Plate effect</h3><p><b>{_esc(metrics.get('verdict', ''))}</b>: "
                     f"{_esc(metrics.get('reason', ''))}</p>")
        parts += [f'<p class="note">{_esc(w)}</p>' for w in metrics.get("warnings", [])]
    cells = analysis.tables.get("cells", pd.DataFrame())
    if {"x", "y", "batch"} <= set(cells.columns) and len(cells):
        shown = cells.sample(MAX_MAP_POINTS, random_state=0) if len(cells) > MAX_MAP_POINTS else cells
        keep = [c for c in ("x", "y", "batch", "condition", "image", "cluster") if c in shown.columns]
        sampled = f" (a seeded sample of {MAX_MAP_POINTS:,} of {len(cells):,} cells)" if len(shown) < len(cells) else ""
        parts += ["<h3>Cell map</h3>",
                  _figure(map_figure(shown[keep].reset_index(drop=True), "batch", title=f"Cells by plate{sampled}"))]
    elif "map.png" in analysis.files:
        parts += ["<h3>Cell map</h3>", _png(analysis.files["map.png"], "cell map")]
    parts.append(_cells_per_image(cells, "Cells per image, by plate"))
    return "".join(parts)


def _explain(analysis: Analysis) -> str:
    if "classifier.json" not in analysis.files:
        return ""
    report = json.loads(analysis.files["classifier.json"])
    parts = [f"<h3>Classifier</h3><p>Balanced accuracy {report.get('balanced_accuracy', float('nan')):.3f} on "
             f"images it never saw, chance {report.get('chance', float('nan')):.3f}.</p>"]
    classes = report.get("cams", {}).get("classes", {})
    if classes:
        rows = pd.DataFrame([{"class": name, "focus": r.get("focus", ""), "reading": r.get("reading", "")}
                             for name, r in classes.items()])
        parts += ["<h3>Where each class's evidence lies (CAMs)</h3>", _table(rows, "classes")]
    overlays = sorted(name for name in analysis.files if name.startswith("overlays/") and name.endswith(".png"))
    if overlays:
        parts.append("<h3>Overlays</h3>" + "".join(_png(analysis.files[name], name) for name in overlays[:8]))
    return "".join(parts)


def _training(analysis: Analysis) -> str:
    history = analysis.tables.get("history", pd.DataFrame())
    if history.empty or "epoch" not in history.columns:
        return ""
    fig = go.Figure([go.Scatter(x=history["epoch"], y=history[c], name=c, mode="lines+markers")
                     for c in ("loss", "val_loss", "f1") if c in history.columns])
    fig.update_layout(title="Training: loss and validation F1 per epoch", height=360, margin=dict(l=40, r=20, t=50, b=40))
    return "<h3>Training</h3>" + _figure(fig) + _table(history, "epochs")


SECTIONS = {"segmentation": _segmentation, "compare": _compare, "cellmap": _cellmap, "explain": _explain,
            "training": _training}


def _details(analysis: Analysis) -> str:
    inputs = pd.DataFrame([{"image": f.name, "batch": f.batch, "condition": f.condition,
                            "channels": ", ".join(f"{n} ({r})" for n, r in f.channels), "pixels sha256": f.pixels_hash[:16],
                            "ground truth": "yes" if f.gt_hash else ""} for f in analysis.inputs])
    settings = json.dumps(analysis.manifest()["settings"], indent=2, sort_keys=True)
    prov = json.dumps(analysis.provenance, indent=2, sort_keys=True, default=str)
    return (f"<details><summary>Inputs ({len(inputs)} images), settings and provenance</summary>"
            f"{_table(inputs, 'images')}<h4>Settings</h4><pre>{_esc(settings)}</pre>"
            f"<h4>Provenance</h4><pre>{_esc(prov)}</pre></details>")


def run_report_html(run: Run) -> str:
    """The report of ``run``: one HTML document with no outside reference (it opens offline)."""
    info = run.info
    cards = [("images", info.images), ("cells", f"{info.cells:,}" if info.cells is not None else "—"),
             ("analyses", ", ".join(info.kinds)), ("models", ", ".join(info.models) or "—")]
    cards += [(name, value) for name, value in info.numbers.items()]
    body = [f"<h1>{_esc(info.name)}</h1>",
            f'<p class="sub">Saved {_esc(info.created)}' + (f" by {_esc(info.owner)}" if info.owner else "")
            + (f" · {_esc(info.note)}" if info.note else "") + "</p>",
            '<div class="cards">' + "".join(f'<div class="card"><b>{_esc(v)}</b>{_esc(k)}</div>' for k, v in cards)
            + "</div>"]
    for analysis in run.analyses:
        version = cellscope_version(analysis.provenance) if "cellscope" in analysis.provenance else "?"
        body.append(f"<h2>{_esc(analysis.kind.capitalize())}</h2><p class=\"note\">Made {_esc(analysis.created)} "
                    f"with CellScope {_esc(version)} on {_esc(analysis.provenance.get('device', '?'))}.</p>")
        body.append(SECTIONS.get(analysis.kind, lambda a: "")(analysis))
        body.append(_details(analysis))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>CellScope run {_esc(info.name)}</title><style>{CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            + "".join(body) + "</body></html>")
