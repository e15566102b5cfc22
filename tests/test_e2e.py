"""End to end: `streamlit run` on localhost, every registered page in headless Chromium.

Screenshots land in artifacts/screenshots/. Skipped where no Chromium is installed, except
in CI (CI=true), where it must run.
"""

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

import numpy as np
import pytest
from conftest import ROOT, blobs, tiff_bytes
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

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


def _require_chromium() -> None:
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium package (apt-get install chromium)")
        pytest.skip("no Chromium found: install it (Debian/Ubuntu: apt-get install chromium) or set CELLSCOPE_CHROMIUM")


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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_chromium()
    with streamlit_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


def _settle(page, timeout_ms: int = 90_000) -> None:
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


def _assert_no_error_shown(page, where: str) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, f"exception shown on {where}"
    assert "Traceback" not in page.inner_text("body"), f"traceback shown on {where}"


def test_every_registered_page_renders(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(server)
    _settle(page)
    links = page.locator("[data-testid='stSidebarNav'] a, [data-testid='stSidebarNavLink']")
    # Streamlit shows no navigation for a single page; then the root is the one page.
    hrefs = sorted({links.nth(i).get_attribute("href") for i in range(links.count())} - {None}) or ["/"]
    for href in hrefs:
        page.goto(href if href.startswith("http") else server + "/" + href.lstrip("/"))
        _settle(page)
        name = href.rstrip("/").rsplit("/", 1)[-1] or "home"
        page.screenshot(path=str(SHOTS / f"page_{name}.png"))
        _assert_no_error_shown(page, href)
    page.close()


def test_data_page_shows_example_then_accepts_an_upload(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(server)
    _settle(page)
    main = page.locator("[data-testid='stMain']")
    try:
        expect(main).to_contain_text("You are looking at the example dataset", timeout=30_000)
        expect(main.locator("[data-testid='stImage'] img").first).to_be_visible()  # the viewer
        expect(main).to_contain_text("plateA_field1 · 512×512 · uint16 · 3 channels")
    except AssertionError:
        page.screenshot(path=str(SHOTS / "FAILED_data_start.png"))
        raise

    good = tmp_path / "uploaded_cells.tif"
    good.write_bytes(tiff_bytes(blobs(128, 128, np.uint16)))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    page.locator("[data-testid='stForm'] input[type='file']").set_input_files([str(good), str(bad)])
    page.wait_for_selector("text=uploaded_cells.tif")
    page.get_by_role("button", name="Load files").click()
    try:
        expect(main).to_contain_text("Loaded 1 image(s): uploaded_cells", timeout=60_000)
        expect(main).to_contain_text("broken.png: PNG file is corrupt or truncated")
        expect(page.locator("[data-testid='stSidebar']")).to_contain_text("1 images")
        _settle(page)
    finally:
        page.screenshot(path=str(SHOTS / "data_after_upload.png"))
    body = main.inner_text()
    assert "object at 0x" not in body
    assert "You are looking at the example dataset" not in body
    page.screenshot(path=str(SHOTS / "data_after_upload.png"))
    assert page.locator("[data-testid='stException']").count() == 0
    page.close()


def test_first_visit_to_a_page_url_on_a_fresh_server_gets_the_router(browser, tmp_path):
    """With a pages/ folder, Streamlit runs a directly requested page file without app.py until
    st.navigation has run once; components.routing must hand such a run to the router."""
    with streamlit_server(tmp_path) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(url + "/data")  # the very first request this server sees
        sidebar = page.locator("[data-testid='stSidebar']")
        expect(sidebar).to_contain_text("Compute", timeout=60_000)  # the shared sidebar is there
        expect(page.locator("[data-testid='stSidebarNav']")).to_have_count(0)  # no file-name navigation
        page.screenshot(path=str(SHOTS / "first_visit_direct_url.png"))
        page.close()
