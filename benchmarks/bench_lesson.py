"""The lesson never waits in front of a class (issue 23): how long the background preparation of
each lesson takes (each slow step, one after another, as the page runs them), and, with
``--browser``, how long each step takes to answer in headless Chromium once it is done, walked
from step 1 to the last with the → key as a student would (a fresh server; the time from the key
press until the page is calm again, less the 1.5 s of calm the wait needs).

    python benchmarks/bench_lesson.py                    # the preparation of every lesson
    python benchmarks/bench_lesson.py --browser          # and the walk in Chromium
    python benchmarks/bench_lesson.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from core.lesson.spec import lesson_files, load_lesson  # noqa: E402
from workflows.lesson import lesson_images  # noqa: E402
from workflows.lesson_preparation import Preparation  # noqa: E402


def preparation_seconds(path: Path) -> dict:
    lesson = load_lesson(path)
    t0 = time.perf_counter()
    images = lesson_images(lesson.dataset)
    made = time.perf_counter() - t0
    prep = Preparation(lesson, images)
    prep.run()  # in this thread: the same steps the page's background thread runs
    steps = {sid: {"state": s.state, "seconds": None if s.seconds is None else round(s.seconds, 1),
                   **({"error": s.message} if s.state == "failed" else {})}
             for sid, s in prep.steps.items() if s.state != "none"}
    return {"lesson": lesson.id, "images_s": round(made, 1), "steps": steps,
            "total_s": round(made + sum(s["seconds"] or 0 for s in steps.values()), 1)}


def browser_walk(lesson_id: str, n_steps: int) -> dict:
    from browser import BROWSER_ARGS, CHROMIUM, settle, streamlit_server
    from playwright.sync_api import expect, sync_playwright

    out: dict = {}
    with tempfile.TemporaryDirectory() as folder, streamlit_server(Path(folder)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        t0 = time.perf_counter()
        page.goto(f"{url}/lesson?lesson={lesson_id}&step=1")
        main = page.locator("[data-testid='stMain']")
        expect(main).to_contain_text(f"Step 1 of {n_steps}", timeout=120_000)
        out["first_open_s"] = round(time.perf_counter() - t0, 1)
        expect(main).not_to_contain_text("Preparing the slow steps", timeout=900_000)
        out["prepared_after_s"] = round(time.perf_counter() - t0, 1)
        settle(page)
        steps = {}
        for i in range(n_steps):
            t1 = time.perf_counter()
            if i:
                page.keyboard.press("ArrowRight")
                expect(main).to_contain_text(f"Step {i + 1} of {n_steps}", timeout=120_000)
            settle(page, 120_000)
            passed = "Checkpoint passed." in main.inner_text()
            steps[page.url.split("step=")[1].split("&")[0]] = {"answer_s": round(time.perf_counter() - t1 - 1.5, 1),
                                                               "checkpoint_passed": passed}
        out["steps"] = steps
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--browser", action="store_true", help="also walk each lesson in Chromium")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = []
    for path in lesson_files():
        row = preparation_seconds(path)
        print(f"{row['lesson']}: preparation {row['total_s']} s (images {row['images_s']} s); "
              + ", ".join(f"{k} {v['seconds']} s" + ("" if v["state"] == "done" else f" ({v['state']})")
                          for k, v in row["steps"].items()), flush=True)
        if args.browser:
            row["browser"] = browser_walk(row["lesson"], len(load_lesson(path).steps))
            walk = row["browser"]
            print(f"  in Chromium: first open {walk['first_open_s']} s, prepared after {walk['prepared_after_s']} s; "
                  + ", ".join(f"{k} {v['answer_s']} s{'' if v['checkpoint_passed'] else ' (checkpoint not passed)'}"
                              for k, v in walk["steps"].items()), flush=True)
        results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
