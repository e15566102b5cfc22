"""Helpers for driving the app in headless Chromium: the end-to-end tests and browser benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CELLSCOPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "artifacts" / "screenshots"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium package (apt-get install chromium)")
        pytest.skip("no Chromium found: install it (Debian/Ubuntu: apt-get install chromium) or set CELLSCOPE_CHROMIUM")


SERVER_PIDS: dict[str, int] = {}  # url -> process id of each server streamlit_server started


@contextmanager
def streamlit_server(log_dir: Path) -> Iterator[str]:
    """`streamlit run app.py` on a free localhost port; fails if the server logs a traceback."""
    port = _free_port()
    log_path = log_dir / f"streamlit_{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        SERVER_PIDS[url] = proc.pid
        try:
            deadline = time.time() + 90
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("streamlit did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    server_log = log_path.read_text()
    assert "Traceback" not in server_log, server_log[-5000:]


def settle(page, timeout_ms: int = 90_000) -> None:
    """Wait until Streamlit has finished running the script and the page stopped changing."""
    page.wait_for_selector("[data-testid='stMain'] h1", timeout=timeout_ms)
    deadline = time.time() + timeout_ms / 1000
    last, stable_since = None, time.time()
    while time.time() < deadline:
        running = page.locator("[data-testid='stStatusWidget'], [data-testid='stSpinner']").count() > 0
        text = page.inner_text("[data-testid='stMain']")
        if running or text != last:
            last, stable_since = text, time.time()
        elif time.time() - stable_since > 1.5:
            return
        page.wait_for_timeout(250)
    raise AssertionError("page did not settle")




# The Preprocess page's result pictures (components/result_view.py): the segmentation panel's
# outline layer changes with every recipe slider.
RESULT_OUTLINES = ".cs-rv figure[data-panel='segmentation'] img[data-layer='outlines']"

CHANGED_IMAGE_JS = """([selector, old]) => {
  const img = document.querySelector(selector);
  return img && img.src !== old && img.complete && img.naturalWidth > 0;
}"""


# The page's own clock, for latency as a user sees it: the time of the last key press and the
# load time of every image, both on performance.now(). The driver's clock adds its own round
# trips (~20-100 ms on 2 shared cores), so benchmarks report both.
LATENCY_PROBE_JS = """() => {
  if (window.__cellscopeProbe) return;
  const probe = window.__cellscopeProbe = {keydown: null, loads: {}};
  document.addEventListener('keydown', () => { probe.keydown = performance.now(); }, {capture: true});
  document.addEventListener('load', (e) => {
    if (e.target.tagName === 'IMG') probe.loads[e.target.src] = performance.now();
  }, true);
}"""


# A result update (components/result_view.py counts them) has arrived and its pictures loaded.
RESULT_UPDATED_JS = """(old) => {
  const root = document.querySelector('.cs-rv');
  return root && root.dataset.updates !== old && [...root.querySelectorAll('img[src]')].every((i) => i.complete);
}"""


def result_updates(page) -> str:
    return page.evaluate("() => document.querySelector('.cs-rv')?.dataset.updates ?? ''")


def result_latency(page) -> float:
    """Seconds from the last key press until the result view had applied its last update and
    loaded every picture that update changed, on the page's clock."""
    return page.evaluate(
        """() => {
          const root = document.querySelector('.cs-rv');
          const p = window.__cellscopeProbe;
          const loads = [...root.querySelectorAll('img[src]')].map((i) => p.loads[i.src] ?? 0);
          return (Math.max(Number(root.dataset.updatedAt), ...loads) - p.keydown) / 1000;
        }""")


def image_src(page, selector: str) -> str:
    return page.evaluate("(selector) => document.querySelector(selector).src", selector)


def download(page, label: str, folder: Path, timeout_ms: int = 90_000) -> Path:
    """Click the download button ``label`` and return the file the browser received (fails when
    none arrives: the deferred file could not be made, or its id was dropped)."""
    button = page.locator("[data-testid='stDownloadButton']").get_by_role("button", name=label)
    with page.expect_download(timeout=timeout_ms) as info:
        button.click()
    received = info.value
    assert received.failure() is None, f"{label}: {received.failure()}"
    path = folder / received.suggested_filename
    received.save_as(path)
    assert path.stat().st_size > 0, f"{label}: empty file"
    return path


def choose(page, key: str, option: str) -> None:
    """Pick ``option`` in the selectbox whose widget key is ``key``."""
    page.locator(f".st-key-{key.replace('.', '-')}").get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=True).click()
