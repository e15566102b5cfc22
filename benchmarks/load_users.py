"""The users' side of benchmarks/bench_load.py: one new user in a browser context (their own images,
their walk through the app, their page changes), every run counted and timed, every page checked
for errors and for another user's images."""

from __future__ import annotations

import asyncio
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from browser import SHOTS

PAGES = ("Data", "Preprocess", "Compare models", "Results")  # the reruns go round them: sidebar link = title
RANDOM_YOLO = "random-yolo11n"  # user:<this> when --random-yolo: YOLO11n's architecture, random weights
SHIPPED_YOLO = "yolo11s-nuclei"  # the Compare page's default YOLO (weights ship with napari-nuclephaser)

SHOWN_JS = """([text, heading]) => {
  const main = document.querySelector(heading ? '[data-testid=stMain] h1' : '[data-testid=stMain]');
  return Boolean(main && main.innerText.includes(text));
}"""
VIEWPORT = {"width": 1500, "height": 1500}
PLOTLY_X_JS = """() => [...document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')]
  .flatMap((gd) => (gd.data || []).flatMap((t) => Array.from(t.x || [])))"""


@dataclass
class Session:
    index: int
    folder: Path
    tag: str = ""
    names: list[str] = field(default_factory=list)
    width: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    crosstalk: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # every other session's image names
    upload: Path | None = None
    page: object = None  # the walk's page, where the reruns go on
    failed: bool = False
    runs: dict = field(default_factory=dict)  # page -> its Runs
    # A download button's file asked for after a rerun replaced it (Streamlit drops a button's old file
    # when it draws the button again): the browser logs a 404; the user sees nothing unless they click
    # the old button in that instant. Counted apart from the errors (seen once, in a CI run on 2026-12-07).
    stale_media: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tag, self.width = f"user{self.index + 1:02d}", 256 - 8 * self.index

    def write_upload(self) -> Path:
        """A zip of three 256-row images of the example's kind (one per plate) with this session's own
        seed, width and names, their ground truth (masks/) and batch table, for the upload form."""
        from core.io.example import make_example_dataset
        from core.io.export import write_dataset

        images = [img.with_(name=f"{self.tag}_{img.name}", pixels=img.pixels[:, :self.width], gt=img.gt[:, :self.width])
                  for img in make_example_dataset(seed=100 + self.index, size=256, fields_per_plate=1)]
        self.names = [img.name for img in images]
        write_dataset(images, self.folder)
        self.upload = self.folder.with_suffix(".zip")
        with zipfile.ZipFile(self.upload, "w") as archive:
            for path in sorted(self.folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(self.folder).as_posix())
        return self.upload

    def check(self, where: str, text: str, choices: list[str] | None = None, plotted: list | None = None) -> None:
        if foreign := [n for n in self.others if n in text]:
            self.crosstalk.append(f"{self.tag} on {where}: shows {foreign}")
        if choices is not None and sorted(choices) != sorted(self.names):
            self.crosstalk.append(f"{self.tag} on {where}: the image chooser offers {choices}")
        if plotted is not None and set(plotted) != set(self.names):
            self.crosstalk.append(f"{self.tag} on {where}: the run's figure shows {sorted(set(plotted))}")


class Runs:
    """The Streamlit runs one page has seen end: each ``script_finished`` message its websockets
    received (a run cut short for a rerun aside), counted and timed on this process's clock. The page's
    own run-state attribute is no clock: React may draw a short run's start and end as one change."""

    def __init__(self, page) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.message, self.ended, self.last = ForwardMsg, 0, 0.0
        page.on("websocket", lambda ws: ws.on("framereceived", self.frame))

    def frame(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            try:
                msg = self.message.FromString(payload)
            except Exception:  # noqa: BLE001 - not a ForwardMsg: not ours to count
                return
            if (msg.WhichOneof("type") == "script_finished"
                    and msg.script_finished != self.message.FINISHED_EARLY_FOR_RERUN):
                self.ended, self.last = self.ended + 1, time.perf_counter()


async def act(session: Session, page, step: str, action, expected: str, *, heading: bool = False,
              errors: bool = True, timeout_s: float = 120) -> None:
    """Do ``action`` (a coroutine function) and wait until a Streamlit run has ended since and the main
    area shows ``expected`` (its title, with ``heading``). The seconds from the action to the later of
    the two go to ``session.times[step]``; then no error may be shown (with ``errors``)."""
    runs = session.runs[page]
    before, t0 = runs.ended, time.perf_counter()
    await action()
    missed = None  # the end of a run after which the main area did not show ``expected`` yet
    while True:
        ended, last = runs.ended > before, runs.last
        if ended and await page.evaluate(SHOWN_JS, [expected, heading]):
            break
        missed = last if ended else None
        if time.perf_counter() > t0 + timeout_s:
            raise RuntimeError(f"{step}: no run ended with {expected!r} shown in {timeout_s:.0f} s "
                               f"({runs.ended - before} runs ended)")
        await asyncio.sleep(0.05)
    # shown at the run's end if the first look after that end found it; else when a look did
    took = (time.perf_counter() if missed == last else last) - t0
    session.times.setdefault(step, []).append(took)
    if errors:
        await no_error_shown(session, page, step)


async def no_error_shown(session: Session, page, where: str) -> None:
    for testid in ("stException", "stAlertContentError"):
        if n := await page.locator(f"[data-testid='{testid}']").count():
            text = await page.locator(f"[data-testid='{testid}']").first.inner_text()
            session.errors.append(f"{session.tag} on {where}: {n} {testid}: {text[:200]}")


async def chooser(page, key: str) -> list[str]:
    """The options of the selectbox with widget key ``key`` (opened and closed again: no rerun)."""
    await page.locator(f".st-key-{key.replace('.', '-')}").get_by_role("combobox").click()
    options = page.get_by_role("option")
    await options.first.wait_for(timeout=30_000)
    found = [t.strip() for t in await options.all_inner_texts()]
    await page.keyboard.press("Escape")
    return found


def watch(session: Session, page) -> None:
    """Count the page's runs; console errors and failed requests into ``session.errors`` (Streamlit's
    base-path probes aside)."""
    session.runs[page] = Runs(page)
    probe = re.compile(r"^https?://[^/]+/[^/]+/_stcore/(health|host-config)$")
    media = re.compile(r"^https?://[^/]+/(?:[^/]+/)?media/[0-9a-f]+\.\w+$")

    def response(r) -> None:
        if r.status == 404 and media.match(r.url):
            session.stale_media.append(f"{session.tag}: 404 {r.url}")
        elif r.status >= 400 and not probe.match(r.url):
            session.errors.append(f"{session.tag}: {r.status} {r.url}")

    def console(m) -> None:
        if m.type != "error" or "Failed to load resource" in m.text:
            return
        if "Download Button source error - 404" in m.text:
            session.stale_media.append(f"{session.tag} console: {m.text}")
        else:
            session.errors.append(f"{session.tag} console: {m.text}")

    page.on("response", response)
    page.on("console", console)
    page.on("pageerror", lambda e: session.errors.append(f"{session.tag} page error: {e}"))


async def walk(session: Session, browser, url: str, yolo: str) -> None:
    """A new user's way through the app with their own images, checked on every page."""
    page = session.page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
    watch(session, page)
    main = page.locator("[data-testid='stMain']")
    await act(session, page, "open the app", lambda: page.goto(url + "/data"), "example dataset")
    await page.locator("[data-testid='stForm'] input[type='file']").set_input_files(str(session.upload))
    await page.get_by_text(session.upload.name).first.wait_for(timeout=60_000)
    await act(session, page, "Data: load 3 images (zip)", page.get_by_role("button", name="Load files").click,
              "Loaded 3 images")
    session.check("Data", await main.inner_text(), await chooser(page, "viewer_image"))
    if f"· {session.width}×256 ·" not in await main.inner_text():
        session.crosstalk.append(f"{session.tag} on Data: the viewer does not show its {session.width}×256 image")
    nav = page.locator("[data-testid='stSidebarNav']")
    await act(session, page, "Preprocess", nav.get_by_text("Preprocess").click, "cells found")
    session.check("Preprocess", await main.inner_text(), await chooser(page, "pre_image"))
    if yolo != SHIPPED_YOLO:  # the default YOLO swapped for the random one in the chooser
        await act(session, page, "Compare: this image", nav.get_by_text("Compare models").click, "classical:",
                  errors=False)  # without napari-nuclephaser, its default YOLO cannot run: said until swapped
        models = page.locator(".st-key-cmp-models input")
        await models.click()
        await act(session, page, "Compare: choose YOLO", lambda: models.press("Backspace"), "classical:")
        await models.fill(RANDOM_YOLO)
        await act(session, page, "Compare: choose YOLO", lambda: page.get_by_role("option", name=yolo).click(),
                  f"{yolo}:")
        await page.keyboard.press("Escape")
    else:
        await act(session, page, "Compare: this image", nav.get_by_text("Compare models").click, f"{yolo}:")
    session.check("Compare", await main.inner_text(), await chooser(page, "cmp.image"))
    await act(session, page, "Compare: All images tab", page.get_by_role("tab", name="All images").click,
              "on all 3 images")
    await act(session, page, "Compare: run on all images", page.get_by_role("button", name="on all 3 images").click,
              "Means over images")
    name = f"{session.tag}-run"
    box = page.locator(".st-key-cmp-run_name input")
    await box.fill(name)
    await act(session, page, "Save as run: name typed", lambda: box.press("Enter"), "Save as run")
    await act(session, page, "Save as run", page.get_by_role("button", name="Save as run").click,
              f"Saved as the run {name}")
    await act(session, page, "Results: the run opened from its link",
              page.get_by_role("link", name=f"Open {name} on the Results page").click, "Cells per image")
    await page.wait_for_function(f"() => ({PLOTLY_X_JS})().length > 0", timeout=60_000)
    session.check("Results", await main.inner_text(), plotted=await page.evaluate(PLOTLY_X_JS))
    other = await browser.new_context(viewport=VIEWPORT)  # the address as sent to a colleague
    tab = await other.new_page()
    watch(session, tab)
    await act(session, tab, "Results: the run's link in another browser", lambda: tab.goto(page.url),
              "Cells per image")
    await tab.wait_for_function(f"() => ({PLOTLY_X_JS})().length > 0", timeout=60_000)
    session.check("Results in another browser", "", plotted=await tab.evaluate(PLOTLY_X_JS))
    await other.close()


async def guarded(session: Session, step) -> None:
    """Run ``step`` (a coroutine); a failure (a timeout: an expected text never came) is an error of
    this session, with a screenshot, and ends its part; the other sessions go on."""
    if session.failed:
        step.close()
        return
    try:
        await step
    except Exception as exc:  # noqa: BLE001 - reported with the others, never hidden
        session.failed = True
        session.errors.append(f"{session.tag} stopped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        pages = [p for p in ([session.page] if session.page else []) if not p.is_closed()]
        if pages:
            SHOTS.mkdir(parents=True, exist_ok=True)
            await pages[0].screenshot(path=str(SHOTS / f"load_{session.tag}_failed.png"), full_page=True)


async def rerun(session: Session, count: int, offset: int = 0) -> None:
    """``count`` page changes through the sidebar, round the four pages; each page checked."""
    page = session.page
    nav, main = page.locator("[data-testid='stSidebarNav']"), page.locator("[data-testid='stMain']")
    for i in range(offset, offset + count):
        title = PAGES[i % len(PAGES)]
        await act(session, page, f"rerun: {title}", nav.get_by_text(title, exact=True).click, title, heading=True)
        plotted = await page.evaluate(PLOTLY_X_JS) if title == "Results" else None
        session.check(f"rerun {i} ({title})", await main.inner_text(), plotted=plotted or None)
