"""Eight users on one server: N browser sessions at once, each a new user with their own images.

Starts one `streamlit run app.py` (headless, a free port, a temporary runs folder and weights
folder) and drives N Chromium contexts at once (one browser, asyncio; the users' side is
load_users.py) through Data (an upload of the user's own three images: their own names, seed and
width) -> Preprocess -> Compare models (classical + YOLO, this image and all images) -> Save as
run -> Results (the run opened from its link, and its address in another browser), then
``--reruns`` page changes per user round the four pages.

Checks: no exception box or error alert, no console error or failed request, no traceback in the
server log; no cross-talk (every page's image chooser lists exactly the user's images, no other
user's image name appears, their run on Results shows their images); each shared model loaded once
(the server is started through this file, which counts ``LoadedModel`` constructions in the server
process: nothing is added to the app); the server's RSS after warm-up, during and after the reruns.
Response: from the click (or the address typed) until a Streamlit run has ended since (its
``script_finished`` message on the websocket) with the expected text shown, on this process's clock.
Needs Chromium (see README).

    python benchmarks/bench_load.py --sessions 8 --reruns 50 --json load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from browser import SHOTS  # noqa: E402
from load_users import PAGES, RANDOM_YOLO, SHIPPED_YOLO, Session, guarded, rerun, walk  # noqa: E402

MODEL_LOAD = "[bench_load] model loaded:"  # the server process's line per model built
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
        await asyncio.gather(*(guarded(s, walk(s, browser, server.url, server.yolo)) for s in sessions))
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
        "stale_media": [e for s in sessions for e in s.stale_media],
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
        SHOTS.parent.mkdir(parents=True, exist_ok=True)  # artifacts/ is ignored: absent in a fresh clone
        SHOTS.parent.joinpath("load_server.log").write_text(log)  # kept for a look afterwards
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
              f"Download buttons' files asked for after a rerun replaced them (404, not errors): "
              f"{len(result['stale_media'])}",
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
    elif main(sys.argv[1:]):
        sys.exit(1)  # only on problems: `make bench` (benchmarks/run_all.py) goes on to the next benchmark
