"""Eight users on one server: N browser sessions at once, each a new user with their own images.

Starts one `streamlit run app.py` (headless, a free port, a temporary runs folder and weights
folder) and drives N Chromium contexts at once (one browser, asyncio) through Data (upload of the
session's own three images: distinct names, seeds and widths) -> Preprocess -> Compare models
(classical + YOLO, this image and all images) -> Save as run -> Results (the run opened by its
link, and that link in a new tab), then ``--reruns`` page changes per session over the four pages.

Checks: no exception box or error alert, no console error or failed request, no traceback in the
server log; no cross-talk (every page's image chooser lists exactly the session's images, no other
session's image name appears, its run on Results shows its images); each shared model loaded
once (the server is started through this file, which counts ``LoadedModel`` constructions in the
server process: nothing is added to the app); the server's RSS after warm-up and after the reruns.
Response: from the click (or the navigation) to the end of the Streamlit run it started, with the
expected text shown, on the page's clock. Needs Chromium (see README).

    python benchmarks/bench_load.py --sessions 8 --reruns 50 --json load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import SHOTS  # noqa: E402

MODEL_LOAD = "[bench_load] model loaded:"  # the server process's line per model built
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


def serve(flags: list[str]) -> None:
    """The server process: Streamlit running app.py, every model construction written to the log."""
    import models.registry as registry

    built = registry.LoadedModel.__init__

    def counted(self, model, info, *, shared=False):
        print(f"{MODEL_LOAD} {info.name} shared={shared} device={model.device}", file=sys.stderr, flush=True)
        built(self, model, info, shared=shared)

    registry.LoadedModel.__init__ = counted
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *flags]
    cli.main()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    yolo: str

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def model_loads(self) -> Counter:
        lines = [ln for ln in self.log.read_text().splitlines() if ln.startswith(MODEL_LOAD)]
        return Counter(ln[len(MODEL_LOAD):].split()[0] for ln in lines)


def start_server(folder: Path, random_yolo: bool) -> Server:
    from browser import _free_port

    weights = folder / "weights"
    if random_yolo:  # as tests/test_models.py: the real architecture, random weights
        from ultralytics import YOLO

        (weights / "yolo").mkdir(parents=True)
        YOLO("yolo11n.yaml").save(weights / "yolo" / f"{RANDOM_YOLO}.pt")
    env = {**os.environ, "CELLSCOPE_RUNS_DIR": str(folder / "runs"), "CELLSCOPE_WEIGHTS_DIR": str(weights),
           "YOLO_CONFIG_DIR": str(folder / "ultralytics"), "YOLO_OFFLINE": "true"}
    port, log = _free_port(), folder / "server.log"
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true"], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return Server(url, proc, log, f"user:{RANDOM_YOLO}" if random_yolo else SHIPPED_YOLO)
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("streamlit did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.5)


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
    page.on("response", lambda r: session.errors.append(f"{session.tag}: {r.status} {r.url}")
            if r.status >= 400 and not probe.match(r.url) else None)
    page.on("console", lambda m: session.errors.append(f"{session.tag} console: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text else None)
    page.on("pageerror", lambda e: session.errors.append(f"{session.tag} page error: {e}"))


async def walk(session: Session, browser, server: Server) -> None:
    """A new user's way through the app with their own images, checked on every page."""
    page = session.page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
    watch(session, page)
    main = page.locator("[data-testid='stMain']")
    await act(session, page, "open the app", lambda: page.goto(server.url + "/data"), "example dataset")
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
    if server.yolo != SHIPPED_YOLO:  # the default YOLO swapped for the random one in the chooser
        await act(session, page, "Compare: this image", nav.get_by_text("Compare models").click, "classical:",
                  errors=False)  # without napari-nuclephaser, its default YOLO cannot run: said until swapped
        models = page.locator(".st-key-cmp-models input")
        await models.click()
        await act(session, page, "Compare: choose YOLO", lambda: models.press("Backspace"), "classical:")
        await models.fill(RANDOM_YOLO)
        await act(session, page, "Compare: choose YOLO", lambda: page.get_by_role("option", name=server.yolo).click(),
                  f"{server.yolo}:")
        await page.keyboard.press("Escape")
    else:
        await act(session, page, "Compare: this image", nav.get_by_text("Compare models").click, f"{server.yolo}:")
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


async def sample_rss(server: Server, sessions: list[Session], series: list, every_s: float = 2.0) -> None:
    """The server's RSS every ``every_s`` seconds, with the number of page changes done so far."""
    while True:
        done = sum(len(t) for s in sessions for step, t in s.times.items() if step.startswith("rerun"))
        series.append((done, round(server.rss_mb(), 1)))
        await asyncio.sleep(every_s)


async def drive(server: Server, n: int, reruns: int, folder: Path) -> dict:
    from browser import BROWSER_ARGS, CHROMIUM
    from playwright.async_api import async_playwright

    sessions = [Session(i, folder / f"user{i + 1:02d}") for i in range(n)]
    for s in sessions:
        s.write_upload()
    for s in sessions:
        s.others = [name for other in sessions if other is not s for name in other.names]
    memory: dict[str, float] = {"after start": server.rss_mb()}
    series: list[tuple[int, float]] = []  # (page changes done by all sessions, server RSS in MB)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        t0 = time.perf_counter()
        await asyncio.gather(*(guarded(s, walk(s, browser, server)) for s in sessions))
        walked = time.perf_counter() - t0
        memory["after the walks"] = server.rss_mb()
        warm = min(len(PAGES), reruns)  # one round of the pages: each page's caches filled
        await asyncio.gather(*(guarded(s, rerun(s, warm)) for s in sessions))
        memory[f"after warm-up ({warm} reruns)"] = warm_mb = server.rss_mb()
        sampler = asyncio.create_task(sample_rss(server, sessions, series))
        half = (reruns - warm) // 2
        if half:
            await asyncio.gather(*(guarded(s, rerun(s, half, warm)) for s in sessions))
            memory[f"after {warm + half} reruns"] = server.rss_mb()
        await asyncio.gather(*(guarded(s, rerun(s, reruns - warm - half, warm + half)) for s in sessions))
        memory[f"after {reruns} reruns"] = end_mb = server.rss_mb()
        sampler.cancel()
        await browser.close()
    steps: dict[str, list[float]] = {}
    for s in sessions:
        for step, times in s.times.items():
            steps.setdefault(step, []).extend(times)
    return {
        "sessions": n, "reruns per session": reruns, "yolo": server.yolo,
        "yolo weights": "random (timing only)" if server.yolo != SHIPPED_YOLO else "napari-nuclephaser's, as shipped",
        "walks took s": round(walked, 1),
        "steps": {k: {"n": len(v), "median s": round(statistics.median(v), 3), "worst s": round(max(v), 3)}
                  for k, v in steps.items()},
        "memory MB": {k: round(v, 1) for k, v in memory.items()},
        "memory growth over the reruns MB": round(end_mb - warm_mb, 1),
        "memory MB by page changes done": series,
        "model loads": dict(server.model_loads()),
        "errors": [e for s in sessions for e in s.errors],
        "crosstalk": [c for s in sessions for c in s.crosstalk],
    }


def run_benchmark(sessions: int = 8, reruns: int = 50, random_yolo: bool = False) -> dict:
    """Start the server, drive ``sessions`` users, stop it; the figures and every problem found."""
    with tempfile.TemporaryDirectory(prefix="cellscope-load-") as tmp:
        folder = Path(tmp)
        server = start_server(folder, random_yolo)
        try:
            result = asyncio.run(drive(server, sessions, reruns, folder))
        finally:
            died = server.proc.poll()  # before it is asked to stop: a crash (e.g. -8, SIGFPE)
            server.proc.terminate()
            try:
                server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
        log = server.log.read_text()
        SHOTS.parent.joinpath("load_server.log").write_text(log)  # artifacts/, kept for a look afterwards
        if died is not None:
            result["errors"].append(f"the server stopped by itself during the benchmark, exit code {died}")
        if "Traceback" in log:
            result["errors"].append("server log: " + log[log.index("Traceback"):][:2000])
        runs = folder / "runs"
        result["runs saved"] = sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) if runs.is_dir() else []
        return result


def report(result: dict) -> str:
    lines = [f"{result['sessions']} sessions on one server, {result['reruns per session']} reruns each; "
             f"Compare with classical + {result['yolo']} (YOLO weights: {result['yolo weights']}); "
             f"the walks took {result['walks took s']} s together",
             "", "| step | n | median | worst |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {v['median s']:.2f} s | {v['worst s']:.2f} s |" for k, v in result["steps"].items()]
    lines += ["", "Server RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in result["memory MB"].items()),
              f"Growth over the reruns after warm-up: {result['memory growth over the reruns MB']:+.1f} MB"
              + (f" (sampled every 2 s while rerunning: {min(m for _, m in series):.0f} to "
                 f"{max(m for _, m in series):.0f} MB)" if (series := result["memory MB by page changes done"]) else ""),
              "Model loads: " + (", ".join(f"{k} x{v}" for k, v in result["model loads"].items()) or "none"),
              f"Runs saved: {len(result['runs saved'])}",
              f"Errors: {len(result['errors'])}", *result["errors"][:20],
              f"Cross-talk: {len(result['crosstalk'])}", *result["crosstalk"][:20]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions (default 8)")
    parser.add_argument("--reruns", type=int, default=50, help="page changes per session after the walk (default 50)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--random-yolo", action="store_true",
                        help="compare with a random-weight YOLO11n placed in the weights folder instead of the shipped "
                             "yolo11s-nuclei (automatic where napari-nuclephaser is not installed)")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 99 or args.reruns < 1:
        parser.error("--sessions must be 1 to 99 and --reruns at least 1")
    from browser import CHROMIUM

    if not CHROMIUM:
        raise SystemExit("needs Chromium: apt-get install chromium, or set CELLSCOPE_CHROMIUM")
    import models  # noqa: F401  (registers the models)
    from models.registry import availability

    result = run_benchmark(args.sessions, args.reruns, args.random_yolo or not availability(SHIPPED_YOLO)[0])
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 1 if result["errors"] or result["crosstalk"] else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
