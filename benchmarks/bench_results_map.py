"""The Results page's cell map at a million cells, in headless Chromium: seconds from opening a
link to the map drawn, for the density of every cell and for zoomed windows drawn as points
(~100,000 and up to ``--points``); in each points view, a zoom (Plotly's relayout -> redrawn)
and a box selection of about a third of the points (mouse up -> the page shows how many cells).

A synthetic run (12 blobs, 3 batches, 2 conditions, 500 images) is saved with ``save_run`` in a
temporary runs folder; the server is `streamlit run app.py` as a user starts it. Headless
Chromium draws WebGL in software on the CPU: upper bounds for a desktop browser with a graphics
card. Needs Chromium (see README).

    python benchmarks/bench_results_map.py                     # 1,000,000 cells; windows of 100k and 200k
    python benchmarks/bench_results_map.py 1000000 100000 500000
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from browser import BROWSER_ARGS, CHROMIUM, streamlit_server  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from core.analysis import Analysis  # noqa: E402
from core.runs import RUNS_ENV, save_run  # noqa: E402

RUN = "million"
# The map is drawn: the chart's Plotly figure holds a trace of ``kind`` and has been plotted.
DRAWN_JS = """(kind) => {
  const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
  return !!(gd && gd._fullData && gd._fullData.some((t) => t.type === kind) && gd._fullLayout
            && gd.querySelector(kind === 'heatmap' ? 'image' : 'canvas'));
}"""
PROBE_JS = """() => {
  const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
  window.bench = {drawn: []};
  gd.on('plotly_afterplot', () => window.bench.drawn.push(performance.now()));
}"""


def synthetic_cells(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` cells of a map in 12 blobs, with ids, images, batches, conditions and an area."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-40, 40, (12, 2))
    blob = rng.integers(0, 12, n)
    xy = centres[blob] + rng.normal(0, 4, (n, 2))
    image = rng.integers(0, 500, n)
    names = np.array([f"field{i:03d}" for i in range(500)])
    return pd.DataFrame({"cell_id": np.char.add(np.char.add(names[image], ":"), np.arange(1, n + 1).astype(str)),
                         "image": names[image], "batch": np.array(["plateA", "plateB", "plateC"])[image % 3],
                         "condition": np.array(["control", "drug"])[image // 3 % 2], "label": np.arange(1, n + 1),
                         "area": rng.gamma(3, 50, n), "x": xy[:, 0], "y": xy[:, 1], "cluster": blob})


def save_synthetic(n: int, root: Path) -> pd.DataFrame:
    cells = synthetic_cells(n)
    record = Analysis("cellmap", (), {}, {"cellscope": {"version": "bench", "commit": None}}, tables={"cells": cells})
    save_run(RUN, [record], root=root)
    return cells


def window_holding(cells: pd.DataFrame, count: int) -> str:
    """A square window around the map's busiest blob holding about ``count`` cells."""
    x, y = cells["x"].to_numpy(), cells["y"].to_numpy()
    cx, cy = cells.groupby("cluster")[["x", "y"]].median().loc[cells["cluster"].mode()[0]]
    low, high = 0.0, float(max(np.ptp(x), np.ptp(y)))
    for _ in range(40):
        half = (low + high) / 2
        inside = int(((abs(x - cx) <= half) & (abs(y - cy) <= half)).sum())
        low, high = (half, high) if inside < count else (low, half)
    half = high
    return ",".join(f"{v:.6g}" for v in (cx - half, cx + half, cy - half, cy + half))


def open_link(browser, url: str, kind: str) -> tuple[float, object]:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function(DRAWN_JS, arg=kind, timeout=300_000, polling=100)
    return time.perf_counter() - t0, page


def zoom_and_select(page, repeat: int = 3) -> tuple[float, float]:
    """Median seconds of a zoom (relayout -> redrawn) and of a box selection of about a third of the
    points (mouse up -> the count shown; each box a little wider, so each count is new)."""
    page.evaluate(PROBE_JS)
    zooms, selects = [], []
    for k in range(repeat):
        before = page.evaluate("() => window.bench.drawn.length")
        start = page.evaluate("() => performance.now()")
        page.evaluate("""(k) => { const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
                                  const [x0, x1] = gd._fullLayout.xaxis.range, w = (x1 - x0) * (0.3 + 0.05 * k);
                                  Plotly.relayout(gd, {'xaxis.range': [x0 + w, x1 - w]}); }""", k)
        page.wait_for_function(f"() => window.bench.drawn.length > {before}", timeout=120_000)
        zooms.append((page.evaluate("() => window.bench.drawn[window.bench.drawn.length - 1]") - start) / 1000)
        page.evaluate("""() => { const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
                                 Plotly.relayout(gd, {'xaxis.autorange': true, 'yaxis.autorange': true}); }""")
        page.wait_for_timeout(500)
    for k in range(repeat):
        box = page.locator("[data-testid='stPlotlyChart'] .nsewdrag").first.bounding_box()
        x0, y0 = box["x"] + box["width"] * (0.2 + 0.05 * k), box["y"] + box["height"] * 0.2
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + box["width"] * (0.4 + 0.03 * k), y0 + box["height"] * 0.6, steps=5)
        old = page.locator("[data-testid='stHeading']").all_inner_texts()
        t0 = time.perf_counter()
        page.mouse.up()
        page.wait_for_function("""(old) => { const now = [...document.querySelectorAll("[data-testid='stHeading']")]
                                     .map((h) => h.innerText).filter((t) => t.includes('selected'));
                                   return now.length && !old.includes(now[0]); }""", arg=old, timeout=300_000)
        selects.append(time.perf_counter() - t0)
        page.wait_for_timeout(1000)
    return statistics.median(zooms), statistics.median(selects)


def main(n: int, windows: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cells = save_synthetic(n, Path(tmp) / "runs")
        print(f"synthetic run of {n:,} cells saved in {time.perf_counter() - t0:.1f} s", flush=True)
        os.environ[RUNS_ENV] = str(Path(tmp) / "runs")
        with streamlit_server(Path(tmp)) as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            base = f"{server}/results?" + urlencode({"run": RUN, "view": "Cell map"})
            open_link(browser, base, "heatmap")[1].close()  # the server reads the run once (first visit)
            print("| view | cells in view | link -> map drawn | zoom redraw | box selection -> count shown |")
            print("|---|---:|---:|---:|---:|")
            seconds, page = open_link(browser, base, "heatmap")
            print(f"| density, every cell | {n:,} | {seconds:.1f} s | – | – |", flush=True)
            page.close()
            for count in windows:
                window = window_holding(cells, count)
                seconds, page = open_link(browser, f"{base}&{urlencode({'window': window})}", "scattergl")
                drawn = page.evaluate("""() => document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot")
                                                 ._fullData.reduce((s, t) => s + (t._length || 0), 0)""")
                zoom, select = zoom_and_select(page)
                print(f"| points, window `{window}` | {drawn:,} | {seconds:.1f} s | {zoom:.2f} s | {select:.1f} s |",
                      flush=True)
                page.close()
            browser.close()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(args[0] if args else 1_000_000, args[1:] or [100_000, 200_000])
