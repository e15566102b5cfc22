"""A threshold slider whose foreground preview is computed in the browser.

A Streamlit rerun of the Preprocess page takes several hundred milliseconds on a small server,
most of it in Streamlit's own round trip. This component draws the thresholded foreground on a
canvas as the slider moves (a few milliseconds per frame, no server call), and hands the value
to the recipe when the slider is released; the full segmentation then follows.

What the browser gets: the display image, the image being thresholded and, for adaptive
methods, the local mean it is compared with, all as 8-bit PNGs at preview size. The preview
is the same rule as :func:`core.segmentation.preprocess.threshold` on those downscaled images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np
import streamlit as st

from components.recipe_panel import RECIPE_KEY, current_recipe
from components.settings_widgets import widget_args
from core.figures.display import data_uri, to_uint8
from core.schema import field_of
from core.segmentation.preprocess import adaptive_block_size, adaptive_local_mean, threshold_floor
from core.segmentation.recipe import ThresholdStep

_HTML = """
<div class="lt">
  <div class="lt-row">
    <label class="lt-label"></label>
    <input class="lt-slider" type="range">
    <span class="lt-value"></span>
  </div>
  <canvas class="lt-canvas"></canvas>
  <div class="lt-caption"></div>
</div>
"""

_CSS = """
.lt { font-family: var(--st-font); color: var(--st-text-color); }
.lt-row { display: flex; align-items: center; gap: 0.75rem; margin-bottom: 0.4rem; }
.lt-label { font-size: 0.875rem; white-space: nowrap; }
.lt-slider { flex: 1; accent-color: var(--st-primary-color); }
.lt-value { font-variant-numeric: tabular-nums; font-size: 0.875rem; min-width: 3.5rem; text-align: right; }
.lt-canvas { width: 100%; height: auto; display: block; border-radius: 0.25rem; }
.lt-caption { font-size: 0.8rem; opacity: 0.7; margin-top: 0.3rem; }
"""

_JS = """
function pixels(uri) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement('canvas');
      c.width = img.width; c.height = img.height;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      resolve(ctx.getImageData(0, 0, img.width, img.height));
    };
    img.src = uri;
  });
}

export default function(component) {
  const { data, setStateValue, parentElement } = component;
  const root = parentElement.querySelector('.lt');
  const slider = root.querySelector('.lt-slider');
  const shown = root.querySelector('.lt-value');
  const canvas = root.querySelector('.lt-canvas');
  const caption = root.querySelector('.lt-caption');
  root.querySelector('.lt-label').textContent = data.label;
  slider.min = data.min; slider.max = data.max; slider.step = data.step;
  if (root.dataset.token !== data.token) {  // new images or a value set elsewhere
    slider.value = data.value;
    root.dataset.token = data.token;
  }
  const ctx = canvas.getContext('2d');
  let base = null, src = null, local = null, out = null;

  function draw(event) {
    if (!base) return;
    const v = parseFloat(slider.value);
    shown.textContent = v.toFixed(3);
    const n = base.width * base.height, b = base.data, s = src.data, o = out.data;
    let fg = 0;
    for (let i = 0, p = 0; i < n; i++, p += 4) {
      const x = s[p];
      const on = data.mode === 'manual'
        ? x > v * 255
        : x > local.data[p] - v * 255 && x > data.floor;
      if (on) {
        fg++;
        o[p] = b[p] * 0.55; o[p + 1] = b[p + 1] * 0.55 + 200 * 0.45; o[p + 2] = b[p + 2] * 0.55 + 255 * 0.45;
      } else {
        o[p] = b[p]; o[p + 1] = b[p + 1]; o[p + 2] = b[p + 2];
      }
      o[p + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    caption.textContent = `${(100 * fg / n).toFixed(1)} % foreground (live preview, computed in your browser; ` +
      `the segmentation updates when you release the slider)`;
    canvas.dataset.drawn = String(v);
    if (event) {  // from the input event to the new frame on the canvas: what the user waits
      requestAnimationFrame(() => { canvas.dataset.latency = String(performance.now() - event.timeStamp); });
    }
  }

  Promise.all([pixels(data.base), pixels(data.src), data.local ? pixels(data.local) : null]).then(([b, s, l]) => {
    base = b; src = s; local = l;
    canvas.width = b.width; canvas.height = b.height;
    out = ctx.createImageData(b.width, b.height);
    draw();
  });
  slider.oninput = draw;
  slider.onchange = () => setStateValue('value', parseFloat(slider.value));
}
"""

LIVE_METHODS = ("manual", "adaptive_mean", "adaptive_gaussian")  # a threshold set by one slider

_live_threshold = st.components.v2.component("cellscope.live_threshold", html=_HTML, css=_CSS, js=_JS)


def _apply(param: str, rerun: tuple[str, ...]) -> None:
    value = st.session_state["live_threshold"]["value"]
    st.session_state[RECIPE_KEY] = current_recipe().with_step("threshold", **{param: float(value)})
    st.session_state[f"rcp.threshold.{param}"] = float(value)
    if rerun:
        st.rerun(list(rerun))


def preview_planes(processed: np.ndarray, step: ThresholdStep, cell_diameter: float,
                   size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, float]:
    """What the browser thresholds, at preview ``size`` (w, h): the 8-bit image, the 8-bit local
    mean for adaptive methods (else None), and the floor (8-bit units)."""
    w, h = size
    source = 1.0 - processed if step.invert else processed
    src = cv2.resize(to_uint8(source), (w, h), interpolation=cv2.INTER_AREA)
    if step.method == "manual":
        return src, None, 0.0
    block = adaptive_block_size(processed.shape, step, cell_diameter) * w / processed.shape[1]
    block = max(3, int(round(block)) // 2 * 2 + 1)  # the same neighbourhood at preview scale
    return src, adaptive_local_mean(src, step.method, block), threshold_floor(source, step) * 255


def preview_mask(src: np.ndarray, local: np.ndarray | None, floor: float, value: float) -> np.ndarray:
    """The browser's rule (the JavaScript above), in numpy: for tests."""
    if local is None:
        return src > value * 255
    return (src.astype(np.float32) > local.astype(np.float32) - value * 255) & (src > floor)


@st.cache_data(max_entries=32, show_spinner=False)
def _payload(_base_rgb: np.ndarray, _processed: np.ndarray, key: tuple, step: ThresholdStep,
             cell_diameter: float) -> dict:
    """The images the browser needs, encoded once per image and recipe up to the threshold
    (``key``); moving the threshold or any later step reuses them."""
    h, w = _base_rgb.shape[:2]
    src, local, floor = preview_planes(_processed, step, cell_diameter, (w, h))
    return {"base": data_uri(_base_rgb, "jpeg"), "src": data_uri(src), "floor": floor,
            "local": None if local is None else data_uri(local)}


def live_threshold(base_rgb: np.ndarray, processed: np.ndarray, step: ThresholdStep, cell_diameter: float,
                   image_key: str, *, rerun: Sequence[str] = ()) -> None:
    """The live preview for the manual value or the adaptive offset; nothing for Otsu / triangle.

    ``image_key`` identifies the image and the recipe up to the background step; ``rerun``: the
    fragments to rerun when the value is committed (the recipe panel's slider shows it too).
    """
    if step.method not in LIVE_METHODS:
        return
    manual = step.method == "manual"
    param = "value" if manual else "offset"
    shape_step = replace(step, value=0.5, offset=0.0)  # the images do not depend on the slider itself
    data = dict(_payload(base_rgb, processed, (image_key, base_rgb.shape), shape_step, cell_diameter))
    span = widget_args(field_of(ThresholdStep, param))  # the recipe panel's slider's range
    lo, hi, stp = span["min_value"], span["max_value"], span["step"]
    value = getattr(step, param)
    data.update(mode="manual" if manual else "adaptive", label="Threshold (live)" if manual else "Threshold offset (live)",
                value=value, min=lo, max=hi, step=stp, token=f"{image_key}:{value}:{step}")
    _live_threshold(key="live_threshold", data=data, default={"value": value}, on_value_change=lambda: _apply(param, tuple(rerun)))
