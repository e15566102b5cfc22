"""Is the Cell map still usable at 100,000 points? The page's own figure (core.figures.cellmap,
WebGL) in headless Chromium: time to first draw, a box selection (mouse up -> Plotly's
``plotly_selected`` with the points), and a zoom (relayout -> redrawn); plus what each rerun of
the page costs the server (building the figure and its JSON, which Streamlit sends again).

Headless Chromium draws WebGL in software (SwiftShader) on the CPU, so these are upper bounds
for a desktop browser with a graphics card. Needs Chromium (see README).

    python benchmarks/bench_cellmap_browser.py            # 10k and 100k points
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from browser import BROWSER_ARGS, CHROMIUM  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from core.figures.cellmap import map_figure, map_html  # noqa: E402

PROBE_JS = """() => {
  const gd = document.querySelector('.plotly-graph-div');
  window.bench = {selected: [], drawn: []};
  gd.on('plotly_selected', ev => window.bench.selected.push({t: performance.now(), n: ev ? ev.points.length : 0}));
  gd.on('plotly_afterplot', () => window.bench.drawn.push(performance.now()));
  return true;
}"""


def synthetic_map(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` cells in 12 blobs, 3 batches, like a t-SNE map of a screen."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-40, 40, (12, 2))
    which = rng.integers(0, 12, n)
    xy = centres[which] + rng.normal(0, 4, (n, 2))
    return pd.DataFrame({"cell_id": [f"field{i // 2100:03d}:{i % 2100 + 1}" for i in range(n)],
                         "batch": np.array(["plateA", "plateB", "plateC"])[rng.integers(0, 3, n)],
                         "x": xy[:, 0], "y": xy[:, 1]})


def server_side(frame: pd.DataFrame) -> tuple[float, float]:
    """Seconds to build the figure and serialise it (each rerun), and its JSON size in MB."""
    t0 = time.perf_counter()
    payload = map_figure(frame, "batch").to_json()
    return time.perf_counter() - t0, len(payload) / 1e6


def in_browser(browser, frame: pd.DataFrame, folder: Path, repeat: int = 5) -> dict[str, float]:
    path = folder / f"map_{len(frame)}.html"
    path.write_text(map_html(frame, "batch"), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    t0 = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_function("() => { const gd = document.querySelector('.plotly-graph-div');"
                           " return gd && gd._fullLayout && gd.querySelector('canvas'); }", timeout=120_000)
    page.wait_for_timeout(50)
    first_draw = time.perf_counter() - t0
    page.evaluate(PROBE_JS)
    page.evaluate("() => Plotly.relayout(document.querySelector('.plotly-graph-div'), {dragmode: 'select'})")
    box = page.locator(".nsewdrag").first.bounding_box()
    select, counts, zoom = [], [], []
    for k in range(repeat):
        before = page.evaluate("() => window.bench.selected.length")
        x0, y0 = box["x"] + box["width"] * (0.30 + 0.02 * k), box["y"] + box["height"] * 0.30
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + box["width"] * 0.25, y0 + box["height"] * 0.3, steps=4)
        up = page.evaluate("() => performance.now()")
        page.mouse.up()
        page.wait_for_function(f"() => window.bench.selected.length > {before}", timeout=60_000)
        event = page.evaluate("() => window.bench.selected[window.bench.selected.length - 1]")
        select.append((event["t"] - up) / 1000)
        counts.append(event["n"])
        drawn = page.evaluate("() => window.bench.drawn.length")
        start = page.evaluate("() => performance.now()")
        page.evaluate(f"() => Plotly.relayout(document.querySelector('.plotly-graph-div'),"
                      f" {{'xaxis.range': [{-30 + k}, {20 + k}], 'yaxis.range': [-25, 25]}})")
        page.wait_for_function(f"() => window.bench.drawn.length > {drawn}", timeout=60_000)
        zoom.append((page.evaluate("() => window.bench.drawn[window.bench.drawn.length - 1]") - start) / 1000)
        page.evaluate("() => Plotly.relayout(document.querySelector('.plotly-graph-div'),"
                      " {'xaxis.autorange': true, 'yaxis.autorange': true})")
    page.close()
    return {"first_draw": first_draw, "select": statistics.median(select), "selected": statistics.median(counts),
            "zoom": statistics.median(zoom)}


def main(sizes: list[int]) -> None:
    print("| points | figure + JSON per rerun | JSON | first draw | box selection -> points | zoom redraw |")
    print("|---:|---:|---:|---:|---:|---:|")
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        for n in sizes:
            frame = synthetic_map(n)
            build, mb = server_side(frame)
            r = in_browser(browser, frame, Path(tmp))
            print(f"| {n:,} | {build:.2f} s | {mb:.1f} MB | {r['first_draw']:.1f} s | {r['select']:.2f} s "
                  f"({r['selected']:,.0f} points) | {r['zoom']:.2f} s |", flush=True)
        browser.close()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
