"""Slider-to-result latency of the Preprocess page in a real browser, on a 1024 x 1024 16-bit image.

Starts `streamlit run`, uploads the image through the Data page, opens Preprocess, then moves
sliders with the keyboard and times from the key press until the result view has taken the
update and loaded every picture it changed. Needs Chromium (see README). `make bench` runs it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import (  # noqa: E402
    BROWSER_ARGS,
    CHROMIUM,
    LATENCY_PROBE_JS,
    RESULT_UPDATED_JS,
    result_latency,
    result_updates,
    settle,
    streamlit_server,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from core.io.example import make_example_dataset  # noqa: E402
from core.io.export import write_dataset  # noqa: E402


def time_slider(page, widget_key: str, key: str, steps: int) -> tuple[list[float], list[float]]:
    """Press ``key`` on the slider with Streamlit key ``widget_key`` ``steps`` times; seconds until
    the result view shows the update (changed pictures loaded), on the driver's and the page's clock."""
    page.evaluate(LATENCY_PROBE_JS)
    thumb = page.locator(f".st-key-{widget_key.replace('.', '-')} input[type='range']").first
    thumb.focus()
    times, in_page = [], []
    for _ in range(3 * steps):
        old = result_updates(page)
        t0 = time.perf_counter()
        thumb.press(key)
        try:
            page.wait_for_function(RESULT_UPDATED_JS, arg=old, polling="raf", timeout=5_000)
        except PlaywrightTimeout:
            continue  # the move changed nothing shown: an identical result view is not drawn again
        times.append(time.perf_counter() - t0)
        in_page.append(result_latency(page))
        page.wait_for_timeout(600)  # let the run finish completely before the next key
        if len(times) == steps:
            return times, in_page
    raise SystemExit(f"{widget_key}: fewer than {steps} of {3 * steps} key presses changed the result")


LIVE_CANVAS_JS = """(old) => {
  const hosts = [...document.querySelectorAll('*')].filter((e) => e.shadowRoot);
  const canvas = hosts.map((e) => e.shadowRoot.querySelector('.lt-canvas')).find(Boolean)
    || document.querySelector('.lt-canvas');
  return canvas && canvas.dataset.drawn !== old;
}"""


def time_live_preview(page, steps: int) -> tuple[list[float], list[float]]:
    """Key press on the live threshold slider -> its canvas redrawn (no server round trip).

    Two clocks: the driver's (key press sent -> change seen, includes Playwright's round trips)
    and the page's own (the input event's time stamp -> the next animation frame after drawing)."""
    page.get_by_text("Live threshold preview").click()
    slider = page.locator(".lt-slider")
    canvas = page.locator(".lt-canvas")
    slider.wait_for(timeout=30_000)
    page.wait_for_function(LIVE_CANVAS_JS, arg="", polling="raf", timeout=30_000)
    settle(page)
    slider.focus()
    times, in_page = [], []
    for _ in range(steps):
        old = canvas.get_attribute("data-drawn") or ""
        t0 = time.perf_counter()
        slider.press("ArrowLeft")
        page.wait_for_function(LIVE_CANVAS_JS, arg=old, polling="raf", timeout=30_000)
        times.append(time.perf_counter() - t0)
        page.wait_for_timeout(300)
        in_page.append(float(canvas.get_attribute("data-latency")) / 1000)
        page.wait_for_timeout(1200)  # releasing commits the value: let that rerun finish
        settle(page)
        slider.focus()
    return times, in_page


def main(size: int = 1024) -> list[tuple[str, float, float]]:
    if not CHROMIUM:
        raise SystemExit("needs Chromium: apt-get install chromium, or set CELLSCOPE_CHROMIUM")
    from playwright.sync_api import expect, sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = make_example_dataset(size=size, fields_per_plate=1)[:1]
        write_dataset(image, tmp)
        files = [Path(tmp) / "images" / "plateA_field1.tif"]
        with streamlit_server(Path(tmp)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1800})
            page.goto(url)
            settle(page)
            page.locator("[data-testid='stForm'] input[type='file']").set_input_files([str(f) for f in files])
            page.wait_for_selector("text=plateA_field1.tif")
            page.get_by_role("button", name="Load files").click()
            expect(page.locator("[data-testid='stMain']")).to_contain_text("Loaded 1 image", timeout=60_000)
            page.get_by_role("link", name="Preprocess").click()
            expect(page.locator("[data-testid='stMain']")).to_contain_text("cells found", timeout=60_000)
            settle(page)
            for widget, key, what in (
                ("rcp.threshold.offset", "ArrowLeft", "threshold offset (re-runs threshold, morphology, watershed, filters)"),
                ("rcp.watershed.seed_distance", "ArrowRight", "watershed seed distance (re-runs watershed and filters)"),
            ):
                times, in_page = time_slider(page, widget, key, steps=6)
                rows.append((f"{what}, page's clock", statistics.median(in_page), max(in_page)))
                rows.append((f"{what}, driver's clock", statistics.median(times), max(times)))
            times, in_page = time_live_preview(page, steps=6)
            rows.append(("live threshold preview, key press sent -> canvas changed (driver's clock)",
                         statistics.median(times), max(times)))
            rows.append(("live threshold preview, input event -> next frame drawn (page's clock)",
                         statistics.median(in_page), max(in_page)))
            times, in_page = time_slider(page, "rcp.watershed.seed_distance", "ArrowLeft", steps=6)
            rows.append(("watershed seed distance with the live preview shown, page's clock", statistics.median(in_page), max(in_page)))
            # A global threshold: its slider also moves the line on the Plotly histogram.
            page.get_by_text("Live threshold preview").click()
            page.locator(".st-key-rcp-threshold-method").click()
            page.get_by_role("option", name="manual").click()
            page.locator(".st-key-rcp-threshold-value").wait_for(timeout=30_000)
            settle(page)
            times, in_page = time_slider(page, "rcp.threshold.value", "ArrowRight", steps=6)
            rows.append(("manual threshold value (the histogram's line moves too), page's clock", statistics.median(in_page), max(in_page)))
            browser.close()
    return rows


if __name__ == "__main__":
    print("Preprocess page, 16-bit image, key press on a slider -> changed image loaded in Chromium\n")
    print("| image | slider | median | worst |\n|---|---|---|---|")
    for size in [int(a) for a in sys.argv[1:]] or (512, 1024):
        for what, median, worst in main(size):
            print(f"| {size}² | {what} | {median * 1000:.0f} ms | {worst * 1000:.0f} ms |")
