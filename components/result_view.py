"""Result panels: pictures with overlay layers that the browser switches on and off.

One element instead of a dozen: every picture of a result arrives in the same message as the
page update (data URIs, no media request to wait for), overlays are separate transparent
layers, and showing or hiding a layer, or enlarging a panel, happens in the browser without
asking the server. A slider move re-sends only what changed: the browser keeps an unchanged
picture (same URI) as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import streamlit as st

from core.figures.display import data_uri

_HTML = """
<div class="cs-rv">
  <div class="cs-rv-toggles"></div>
  <div class="cs-rv-grid"><div class="cs-rv-summary"></div></div>
</div>
"""

_CSS = """
.cs-rv { font-family: var(--st-font); color: var(--st-text-color); }
.cs-rv-toggles { display: flex; flex-wrap: wrap; gap: 0.4rem 1.5rem; font-size: 0.875rem; margin-bottom: 0.6rem; }
.cs-rv-toggle { display: flex; align-items: center; gap: 0.4rem; cursor: pointer; user-select: none; }
.cs-rv-toggle input { accent-color: var(--st-primary-color); width: 1rem; height: 1rem; margin: 0; cursor: pointer; }
.cs-rv-toggle:has(input:disabled) { opacity: 0.45; cursor: not-allowed; }
.cs-rv-grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1rem; }
.cs-rv-panel { margin: 0; min-width: 0; }
.cs-rv-panel.cs-rv-big { grid-column: 1 / -1; }
.cs-rv-stack { position: relative; line-height: 0; cursor: zoom-in; }
.cs-rv-big .cs-rv-stack { cursor: zoom-out; }
.cs-rv-stack img { display: block; width: 100%; height: auto; border-radius: 0.25rem; }
.cs-rv-stack img.cs-rv-layer { position: absolute; inset: 0; height: 100%; }
.cs-rv-stack img.cs-rv-off { visibility: hidden; }
.cs-rv-panel figcaption { font-size: 0.8rem; opacity: 0.7; margin-top: 0.35rem; line-height: 1.3; }
.cs-rv-summary { order: 99; align-self: start; font-size: 0.9rem; line-height: 1.45; }
.cs-rv-grid.cs-rv-even .cs-rv-summary { grid-column: 1 / -1; }
.cs-rv-headline { font-size: 1.75rem; font-weight: 600; line-height: 1.2; margin-bottom: 0.4rem; }
.cs-rv-line { margin-bottom: 0.25rem; }
.cs-rv-note { font-size: 0.8rem; opacity: 0.7; margin-top: 0.4rem; }
"""

_JS = """
const remembered = (id) => `cellscope.view.${id}`;

function recall(toggle) {
  try {
    const saved = window.localStorage.getItem(remembered(toggle.id));
    return saved === null ? toggle.on : saved === '1';
  } catch (e) { return toggle.on; }
}

function remember(id, on) {
  try { window.localStorage.setItem(remembered(id), on ? '1' : '0'); } catch (e) { /* private mode */ }
}

export default function(component) {
  const { data, parentElement } = component;
  const root = parentElement.querySelector('.cs-rv');
  const bar = root.querySelector('.cs-rv-toggles');
  const grid = root.querySelector('.cs-rv-grid');
  const summary = root.querySelector('.cs-rv-summary');

  function showLayers() {
    for (const box of bar.querySelectorAll('input')) {
      const on = box.checked && !box.disabled;
      for (const img of grid.querySelectorAll(`img[data-toggle="${box.dataset.toggle}"]`)) {
        img.classList.toggle('cs-rv-off', !on);
      }
    }
  }

  // The switches: built once, their state kept by the browser (this page and the next visit).
  const toggleIds = data.toggles.map((t) => t.id).join(',');
  if (bar.dataset.ids !== toggleIds) {
    bar.replaceChildren(...data.toggles.map((t) => {
      const label = document.createElement('label');
      label.className = 'cs-rv-toggle';
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.dataset.toggle = t.id;
      box.checked = recall(t);
      box.onchange = () => { remember(t.id, box.checked); showLayers(); };
      label.append(box, document.createTextNode(t.label));
      return label;
    }));
    bar.dataset.ids = toggleIds;
  }
  for (const t of data.toggles) {
    const box = bar.querySelector(`input[data-toggle="${t.id}"]`);
    box.disabled = t.disabled;
    box.parentElement.title = t.help;
  }

  // The panels: rebuilt only when their set or layers change; a picture is replaced only when
  // its URI changed, so an unchanged one is not decoded again.
  const panelIds = data.panels.map((p) => `${p.id}:${p.layers.map((l) => l.id).join('+')}`).join(',');
  if (grid.dataset.ids !== panelIds) {
    for (const old of grid.querySelectorAll('.cs-rv-panel')) old.remove();
    for (const p of data.panels) {
      const fig = document.createElement('figure');
      fig.className = 'cs-rv-panel';
      fig.dataset.panel = p.id;
      const stack = document.createElement('div');
      stack.className = 'cs-rv-stack';
      stack.title = 'Click to enlarge or shrink';
      stack.onclick = () => fig.classList.toggle('cs-rv-big');
      p.layers.forEach((l, i) => {
        const img = document.createElement('img');
        img.dataset.layer = l.id;
        img.alt = l.label;
        if (i > 0) img.className = 'cs-rv-layer';
        if (l.toggle) img.dataset.toggle = l.toggle;
        stack.append(img);
      });
      fig.append(stack, document.createElement('figcaption'));
      grid.insertBefore(fig, summary);
    }
    grid.dataset.ids = panelIds;
  }
  for (const p of data.panels) {
    const fig = grid.querySelector(`figure[data-panel="${p.id}"]`);
    for (const l of p.layers) {
      const img = fig.querySelector(`img[data-layer="${l.id}"]`);
      const src = data.images[l.id];
      if (img.getAttribute('src') !== src) img.setAttribute('src', src);
    }
    fig.querySelector('figcaption').textContent = p.caption;
  }
  grid.classList.toggle('cs-rv-even', data.panels.length % 2 === 0);
  showLayers();

  const s = data.summary;
  const headline = document.createElement('div');
  headline.className = 'cs-rv-headline';
  headline.textContent = s.headline;
  const lines = s.lines.map((text) => {
    const div = document.createElement('div');
    div.className = 'cs-rv-line';
    div.textContent = text;
    return div;
  });
  const notes = s.notes.map((text) => {
    const div = document.createElement('div');
    div.className = 'cs-rv-note';
    div.textContent = `ℹ️ ${text}`;
    return div;
  });
  summary.replaceChildren(headline, ...lines, ...notes);
  // For tests and benchmarks: how many updates arrived, and when the last one was applied.
  root.dataset.updates = String((Number(root.dataset.updates) || 0) + 1);
  root.dataset.updatedAt = String(performance.now());
}
"""

_result_view = st.components.v2.component("cellscope.result_view", html=_HTML, css=_CSS, js=_JS, isolate_styles=False)


@dataclass(frozen=True)
class Layer:
    """One picture of a panel: the first of a panel is the base, later ones are drawn over it
    (transparent PNGs); ``toggle`` names the switch that shows or hides it."""

    id: str
    label: str
    src: str  # a data URI
    toggle: str | None = None

    @classmethod
    def of(cls, id: str, label: str, image, fmt: str = "png", toggle: str | None = None) -> Layer:
        """From an RGB/grey array or encoded bytes."""
        return cls(id, label, data_uri(image, fmt), toggle)


@dataclass(frozen=True)
class Panel:
    id: str
    caption: str
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Toggle:
    id: str
    label: str
    help: str
    on: bool = True  # the default until the user changes it (the browser remembers the choice)
    disabled: bool = False


@dataclass(frozen=True)
class Summary:
    headline: str
    lines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def result_view(panels: list[Panel], toggles: list[Toggle], summary: Summary, *, key: str) -> None:
    """Draw ``panels`` two to a row with ``summary`` in the free cell (or below), switches above."""
    # Each picture once, by layer id: panels share the base image.
    images = {layer.id: layer.src for p in panels for layer in p.layers}
    data = {
        "images": images,
        "panels": [{"id": p.id, "caption": p.caption,
                    "layers": [{"id": x.id, "label": x.label, "toggle": x.toggle} for x in p.layers]} for p in panels],
        "toggles": [asdict(t) for t in toggles],
        "summary": asdict(summary),
    }
    _result_view(key=key, data=data)
