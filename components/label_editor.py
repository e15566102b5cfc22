"""Editing a label image by pointing at it: the Train page's curation tool in the browser.

The image, the cells filled in their own colours and their outlines arrive as data URIs (a
picture whose URI did not change is not decoded again), stacked and scaled to the column width.
A canvas on top shows what is being drawn (the polygon so far, the brush path, the cut line, the
first cell of a merge) without asking the server; when an action is complete the browser sends
ONE edit event, in image pixels, and :func:`apply_event` turns it into a
:mod:`core.training.label_edit` operation recorded in an :class:`~core.training.label_edit.EditHistory`.

Events (x, y in image pixels, a pixel ``labels[i, j]`` covering ``[j, j + 1) x [i, i + 1)``)::

    {"tool": "delete", "point": [x, y]}                  click a cell
    {"tool": "polygon", "points": [[x, y], ...]}         click vertices; double-click or click the first to close
    {"tool": "brush" | "erase", "points": [...], "radius": r}   drag
    {"tool": "merge", "points": [[x1, y1], [x2, y2]]}    click two cells
    {"tool": "split", "line": [[x0, y0], [x1, y1]]}      drag a line across a cell

Each event also carries an ``id`` unique to this browser view; :func:`label_editor` returns an id
once only, so a rerun never applies an edit twice. Escape cancels a drawing, Backspace removes the
polygon's last vertex.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st

from core.figures.display import data_uri, display_outlines, fill_png, overlay_png, preview
from core.training.label_edit import (
    EditHistory,
    LabelEditError,
    add_brush,
    add_polygon,
    delete_at,
    erase_brush,
    merge,
    split_line,
)

TOOLS = ("delete", "polygon", "brush", "erase", "merge", "split")
MAX_SIDE = 1024  # display pixels: wider than any column, so the browser only ever shrinks
OUTLINE_RGB = (255, 255, 0)
_SEEN_KEEP = 64  # event ids remembered per editor; a repeat can only be the latest few

_HTML = """
<div class="cs-le">
  <div class="cs-le-stack">
    <img class="cs-le-base" alt="image" draggable="false">
    <img class="cs-le-layer cs-le-fill" alt="cells" draggable="false">
    <img class="cs-le-layer cs-le-outlines" alt="outlines" draggable="false">
    <canvas class="cs-le-layer cs-le-draw"></canvas>
  </div>
  <div class="cs-le-hint"></div>
</div>
"""

_CSS = """
.cs-le { font-family: var(--st-font); color: var(--st-text-color); }
.cs-le-stack { position: relative; line-height: 0; user-select: none; }
.cs-le-stack img { display: block; width: 100%; height: auto; border-radius: 0.25rem; image-rendering: pixelated; }
.cs-le-stack .cs-le-layer { position: absolute; inset: 0; width: 100%; height: 100%; }
.cs-le-draw { cursor: crosshair; touch-action: none; }
.cs-le-hint { font-size: 0.8rem; opacity: 0.75; margin-top: 0.35rem; line-height: 1.3; }
"""

_JS = """
const STATE = '__csLabelEditor';
const CLICK_PX = 5;    // a press that moves less than this is a click
const CLOSE_PX = 9;    // a click this close to the first vertex closes the polygon
const SAME_PX = 3;     // a vertex this close to the last one is the same (the clicks of a double-click)

const HINTS = {
  delete: 'Click a cell to delete it.',
  polygon: 'Click to add vertices; double-click or click the first vertex to close. Escape cancels, Backspace removes the last vertex.',
  brush: 'Drag to paint a new cell.',
  erase: 'Drag to erase.',
  merge: 'Click two cells to merge them. Escape cancels.',
  split: 'Drag a line right across a cell to split it.',
};

export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  const root = parentElement.querySelector('.cs-le');
  const canvas = root.querySelector('.cs-le-draw');
  const hint = root.querySelector('.cs-le-hint');
  const images = [['.cs-le-base', data.image], ['.cs-le-fill', data.fill], ['.cs-le-outlines', data.outlines]];
  for (const [sel, src] of images) {
    const img = root.querySelector(sel);
    if (img.getAttribute('src') !== src) img.setAttribute('src', src);
  }

  let s = root[STATE];
  if (!s) s = root[STATE] = { nonce: Math.random().toString(36).slice(2, 10), seq: 0, pts: [], drag: null, down: null, hover: null };
  s.data = data;
  s.send = setTriggerValue;
  const shape = `${data.width}x${data.height}`;
  if (s.tool !== data.tool || s.shape !== shape) {  // another tool or image: drop a half-drawn shape
    s.pts = []; s.drag = null; s.down = null; s.tool = data.tool; s.shape = shape;
  }
  s.pending = null;  // what was sent last is drawn until its result arrives, which is now
  root.dataset.tool = data.tool;
  root.dataset.renders = String((Number(root.dataset.renders) || 0) + 1);

  const rect = () => canvas.getBoundingClientRect();
  // image pixels per screen pixel, separately for x and y: any display scale, any aspect ratio
  const toImage = (ev) => {
    const r = rect();
    const x = (ev.clientX - r.left) * s.data.width / r.width;
    const y = (ev.clientY - r.top) * s.data.height / r.height;
    const clamp = (v, hi) => Math.round(Math.min(Math.max(v, 0), hi - 0.01) * 100) / 100;
    return [clamp(x, s.data.width), clamp(y, s.data.height)];
  };
  const screenDist = (a, b) => {
    const r = rect();
    return Math.hypot((a[0] - b[0]) * r.width / s.data.width, (a[1] - b[1]) * r.height / s.data.height);
  };

  function draw() {
    const r = rect(), dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const sx = w / s.data.width, sy = h / s.data.height, px = 1 / Math.min(sx, sy) * dpr;  // one screen pixel
    ctx.setTransform(sx, 0, 0, sy, 0, 0);
    ctx.lineJoin = 'round'; ctx.lineCap = 'round';
    const path = (pts) => { ctx.beginPath(); pts.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1]))); };
    const dot = (p, rad, color) => { ctx.beginPath(); ctx.arc(p[0], p[1], rad, 0, 2 * Math.PI); ctx.fillStyle = color; ctx.fill(); };
    const tool = s.tool;
    const stroke = s.drag || s.pending;
    if ((tool === 'brush' || tool === 'erase')) {
      if (stroke) {
        path(stroke.length > 1 ? stroke : [stroke[0], stroke[0]]);
        ctx.strokeStyle = tool === 'brush' ? 'rgba(0, 230, 120, 0.5)' : 'rgba(255, 60, 60, 0.5)';
        ctx.lineWidth = 2 * s.data.radius;
        ctx.stroke();
      }
      if (s.hover) {
        ctx.beginPath(); ctx.arc(s.hover[0], s.hover[1], s.data.radius, 0, 2 * Math.PI);
        ctx.strokeStyle = 'white'; ctx.lineWidth = 1.5 * px; ctx.stroke();
      }
    } else if (tool === 'split' && stroke) {
      path(stroke); ctx.strokeStyle = '#ff3b3b'; ctx.lineWidth = 2.5 * px; ctx.stroke();
    } else if (tool === 'polygon') {
      const pts = s.pending || s.pts;
      if (pts.length) {
        path(s.pending || !s.hover ? pts : [...pts, s.hover]);
        if (s.pending) ctx.closePath();
        ctx.strokeStyle = '#00e5ff'; ctx.lineWidth = 2 * px; ctx.stroke();
        for (const p of pts) dot(p, 2.5 * px, '#00e5ff');
        if (!s.pending) dot(pts[0], (pts.length >= 3 ? CLOSE_PX : 3) * px, 'rgba(0, 229, 255, 0.45)');
      }
    } else if (tool === 'merge') {
      for (const p of s.pending || s.pts) dot(p, 5 * px, '#ff00d4');
    }
    root.dataset.vertices = String(s.pts.length);
  }

  function emit(event) {
    s.seq += 1;
    s.send('edit', { ...event, id: `${s.nonce}-${s.seq}` });
    root.dataset.sent = String(s.seq);
  }

  function closePolygon() {
    if (s.pts.length < 3) return;
    emit({ tool: 'polygon', points: s.pts });
    s.pending = s.pts; s.pts = [];
  }

  canvas.onpointerdown = (ev) => {
    if (ev.button !== 0) return;
    canvas.setPointerCapture(ev.pointerId);
    const p = toImage(ev);
    s.down = p;
    if (s.tool === 'brush' || s.tool === 'erase') s.drag = [p];
    else if (s.tool === 'split') s.drag = [p, p];
    draw();
  };
  canvas.onpointermove = (ev) => {
    const p = toImage(ev);
    s.hover = p;
    if (s.drag && (s.tool === 'brush' || s.tool === 'erase')) {
      if (screenDist(p, s.drag[s.drag.length - 1]) >= 2) s.drag.push(p);
    } else if (s.drag && s.tool === 'split') {
      s.drag[1] = p;
    }
    draw();
  };
  canvas.onpointerleave = () => { s.hover = null; draw(); };
  canvas.onpointerup = (ev) => {
    if (!s.down) return;
    const p = toImage(ev);
    const click = screenDist(p, s.down) < CLICK_PX;
    s.down = null;
    const tool = s.tool;
    if (tool === 'brush' || tool === 'erase') {
      if (s.drag) {
        emit({ tool, points: s.drag, radius: s.data.radius });
        s.pending = s.drag;
      }
    } else if (tool === 'split') {
      if (s.drag && !click) {
        s.drag[1] = p;
        emit({ tool, line: s.drag });
        s.pending = s.drag;
      }
    } else if (click && tool === 'delete') {
      emit({ tool, point: p });
    } else if (click && tool === 'merge') {
      s.pts.push(p);
      if (s.pts.length === 2) { emit({ tool, points: s.pts }); s.pending = s.pts; s.pts = []; }
    } else if (click && tool === 'polygon') {
      if (s.pts.length >= 3 && screenDist(p, s.pts[0]) < CLOSE_PX) closePolygon();
      else if (!s.pts.length || screenDist(p, s.pts[s.pts.length - 1]) >= SAME_PX) s.pts.push(p);
    }
    s.drag = null;
    draw();
  };
  canvas.ondblclick = () => { if (s.tool === 'polygon') { closePolygon(); draw(); } };

  if (!root.dataset.keys) {  // one listener per editor, for its whole life
    root.dataset.keys = '1';
    const onKey = (ev) => {
      if (!root.isConnected) { document.removeEventListener('keydown', onKey); return; }
      const typing = ev.target && ev.target.closest && ev.target.closest('input, textarea, [contenteditable]');
      if (typing) return;
      const st = root[STATE];
      if (ev.key === 'Escape' && (st.pts.length || st.drag)) { st.pts = []; st.drag = null; st.down = null; st.redraw(); }
      else if (ev.key === 'Backspace' && st.tool === 'polygon' && st.pts.length) { st.pts.pop(); st.redraw(); ev.preventDefault(); }
    };
    document.addEventListener('keydown', onKey);
  }
  s.redraw = draw;

  hint.textContent = HINTS[data.tool] + (data.tool === 'brush' || data.tool === 'erase' ? ` Radius ${data.radius} px.` : '');
  const base = root.querySelector('.cs-le-base');
  const ready = () => { draw(); root.dataset.ready = shape; };
  if (base.complete && base.naturalWidth) ready(); else base.onload = ready;
}
"""

_label_editor = st.components.v2.component("cellscope.label_editor", html=_HTML, css=_CSS, js=_JS, isolate_styles=False)


def editor_payload(image_rgb: np.ndarray, labels: np.ndarray, *, tool: str, brush_radius: int,
                   max_side: int = MAX_SIDE) -> dict:
    """What the browser gets: the picture, the cells' fill and outlines (data URIs at display
    size, at most ``max_side``), the image's size in pixels (for mapping clicks back) and the tool."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
    image_rgb, labels = np.asarray(image_rgb), np.asarray(labels)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image_rgb must be (H, W, 3) uint8, got {image_rgb.shape} {image_rgb.dtype}")
    if labels.shape != image_rgb.shape[:2]:
        raise ValueError(f"labels are {labels.shape}, the image is {image_rgb.shape[:2]}")
    shown = preview(image_rgb, max_side)
    size = (shown.shape[1], shown.shape[0])
    return {
        "image": data_uri(shown, "jpeg"),
        "fill": data_uri(fill_png(labels, size, alpha=0.4)),
        "outlines": data_uri(overlay_png(display_outlines(labels, size), OUTLINE_RGB)),
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "tool": tool,
        "radius": int(brush_radius),
    }


def take_new_event(event: dict | None, seen: list[str]) -> dict | None:
    """``event`` unless it is None or its id is in ``seen`` (which then records it)."""
    if not isinstance(event, dict) or not event.get("id"):
        return None
    event_id = str(event["id"])
    if event_id in seen:
        return None
    seen.append(event_id)
    del seen[: max(0, len(seen) - _SEEN_KEEP)]
    return event


def label_editor(image_rgb: np.ndarray, labels: np.ndarray, *, key: str, tool: str, brush_radius: int = 5,
                 on_edit: Callable[[dict], None] | None = None, max_side: int = MAX_SIDE) -> dict | None:
    """Show ``labels`` over ``image_rgb`` for editing with ``tool`` (one of :data:`TOOLS`).

    Each edit event (a dict in image pixels) is handed out once: to ``on_edit`` if given, called
    before the script reruns, so the labels passed in this run already show the edit; otherwise
    as the return value (None when there is no new edit), which arrives after the picture was
    drawn: a page that applies it then needs ``st.rerun()`` to show the result."""
    data = editor_payload(image_rgb, labels, tool=tool, brush_radius=brush_radius, max_side=max_side)
    seen = st.session_state.setdefault(f"_label_editor_seen.{key}", [])

    def edited() -> None:
        if on_edit is not None and (event := take_new_event((st.session_state.get(key) or {}).get("edit"), seen)):
            on_edit(event)

    result = _label_editor(key=key, data=data, on_edit_change=edited)
    return take_new_event(result.edit, seen)


def apply_event(history: EditHistory, event: dict, *, brush_radius: int) -> str:
    """Make the edit ``event`` describes on ``history.current`` and record it; its description.

    ``brush_radius`` is used when the event carries no radius of its own. An edit that cannot be
    made raises LabelEditError with a message for the user."""
    labels = history.current
    tool = event.get("tool") if isinstance(event, dict) else None
    try:
        if tool == "delete":
            x, y = _point(event["point"])
            edit = delete_at(labels, y, x)
        elif tool == "polygon":
            edit = add_polygon(labels, event["points"])
        elif tool in ("brush", "erase"):
            radius = float(event.get("radius") or brush_radius)
            edit = (add_brush if tool == "brush" else erase_brush)(labels, event["points"], radius)
        elif tool == "merge":
            edit = merge(labels, _cells_clicked(labels, event["points"], "merge"))
        elif tool == "split":
            (p0, p1) = event["line"]
            edit = _split_crossed(labels, _point(p0), _point(p1))
        else:
            raise LabelEditError(f"unknown edit tool {tool!r}")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, LabelEditError):
            raise
        raise LabelEditError(f"the {tool} edit arrived incomplete ({exc}); please draw it again") from exc
    if not history.apply(edit):
        raise LabelEditError("that edit changes no pixel")
    return edit.description


def _point(p: Sequence[float]) -> tuple[float, float]:
    x, y = (float(v) for v in p)
    if not (np.isfinite(x) and np.isfinite(y)):
        raise LabelEditError("a point of the edit is not a number")
    return x, y


def _cell_at(labels: np.ndarray, x: float, y: float) -> int:
    i, j = int(np.floor(y)), int(np.floor(x))
    if not (0 <= i < labels.shape[0] and 0 <= j < labels.shape[1]):
        raise LabelEditError(f"({x:g}, {y:g}) is outside the image")
    return int(labels[i, j])


def _cells_clicked(labels: np.ndarray, points: Sequence, what: str) -> list[int]:
    ids = [_cell_at(labels, *_point(p)) for p in points]
    if 0 in ids:
        raise LabelEditError(f"a click landed on the background: click inside two cells to {what} them")
    if len(ids) < 2:
        raise LabelEditError(f"click two cells to {what} them")
    if len(set(ids)) < 2:
        raise LabelEditError(f"both clicks are in cell {ids[0]}: click two different cells to {what} them")
    return ids


def _split_crossed(labels: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]):
    """Split the cell the line p0-p1 crosses most (or, if that one does not fall apart, the next)."""
    h, w = labels.shape
    n = int(np.ceil(np.hypot(p1[0] - p0[0], p1[1] - p0[1]) * 2)) + 2  # two samples per pixel: no cell skipped
    xs, ys = np.linspace(p0[0], p1[0], n), np.linspace(p0[1], p1[1], n)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    under = labels[np.floor(ys[inside]).astype(int), np.floor(xs[inside]).astype(int)]
    ids, counts = np.unique(under[under > 0], return_counts=True)
    if not len(ids):
        raise LabelEditError("the line crosses no cell: drag it right across the cell to split")
    error: LabelEditError | None = None
    for label_id in ids[np.argsort(-counts, kind="stable")]:
        try:
            return split_line(labels, int(label_id), p0, p1)
        except LabelEditError as exc:
            error = error or exc
    raise error
