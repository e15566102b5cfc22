"""The label editor widget: edit events applied through core.training.label_edit (exact results), refusals,
each event applied once, the widget under AppTest, and a real browser deleting and drawing cells."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from components.label_editor import TOOLS, apply_event, editor_payload, take_new_event
from core.training import label_edit as le
from core.training.label_edit import EditHistory, LabelEditError

ROOT = Path(__file__).resolve().parents[1]


def cells() -> np.ndarray:
    """10 x 12: cell 1 (rows 0-2, cols 0-2), cell 2 (rows 5-8, cols 2-9), the rest background."""
    labels = np.zeros((10, 12), np.int32)
    labels[0:3, 0:3] = 1
    labels[5:9, 2:10] = 2
    return labels


def history() -> EditHistory:
    return EditHistory(cells())


# --- apply_event: each tool gives exactly what core.training.label_edit gives -------------------------

@pytest.mark.parametrize(("event", "expected"), [
    ({"tool": "delete", "point": [1.5, 2.2]}, lambda lab: le.delete(lab, 1)),
    ({"tool": "polygon", "points": [[5, 0], [9, 0], [9, 3], [5, 3]]}, lambda lab: le.add_polygon(lab, [(5, 0), (9, 0), (9, 3), (5, 3)])),
    ({"tool": "brush", "points": [[6, 1], [10, 1]], "radius": 1}, lambda lab: le.add_brush(lab, [(6, 1), (10, 1)], 1)),
    ({"tool": "erase", "points": [[3.5, 6.5]], "radius": 1.5}, lambda lab: le.erase_brush(lab, [(3.5, 6.5)], 1.5)),
    ({"tool": "merge", "points": [[0.5, 0.5], [8.5, 7.5]]}, lambda lab: le.merge(lab, [1, 2])),
    ({"tool": "split", "line": [[6.5, 3.0], [6.5, 9.5]]}, lambda lab: le.split_line(lab, 2, (6.5, 3.0), (6.5, 9.5))),
])
def test_apply_event_makes_the_core_edit_and_records_it(event, expected):
    h = history()
    want = expected(cells())
    description = apply_event(h, {**event, "id": "a-1"}, brush_radius=3)
    np.testing.assert_array_equal(h.current, want.labels)
    assert description == want.description
    assert h.descriptions == [want.description]
    h.undo()
    np.testing.assert_array_equal(h.current, cells())


def test_apply_event_exact_pixels_for_delete_merge_and_split():
    h = history()
    assert apply_event(h, {"tool": "split", "line": [[6.5, 3.0], [6.5, 9.5]]}, brush_radius=3) == "split cell 2 into cells 2, 3"
    # column 6 is cut and goes to the nearest part; the left part (cols 2..5 + cut) is the larger, keeps id 2
    assert set(np.unique(h.current[5:9, 2:10])) == {2, 3}
    assert (h.current[5:9, 7:10] == 3).all() and (h.current[5:9, 2:6] == 2).all()
    assert apply_event(h, {"tool": "merge", "points": [[9.5, 6.5], [2.5, 6.5]]}, brush_radius=3) == "merged cells 2, 3 into cell 2"
    np.testing.assert_array_equal(h.current, cells())
    assert apply_event(h, {"tool": "delete", "point": [9.99, 8.99]}, brush_radius=3) == "deleted cell 2"
    assert np.unique(h.current).tolist() == [0, 1]


def test_brush_uses_the_pages_radius_when_the_event_has_none():
    h = history()
    apply_event(h, {"tool": "brush", "points": [[8.5, 1.5]]}, brush_radius=1)
    np.testing.assert_array_equal(h.current, le.add_brush(cells(), [(8.5, 1.5)], 1).labels)
    assert (h.current == 3).sum() == 5  # a plus sign: centre and its 4 neighbours


def test_split_picks_the_cell_the_line_crosses_most():
    labels = cells()
    labels[3:5, 4:6] = 1  # cell 1 has a far piece the line clips at one end
    h = EditHistory(labels)
    apply_event(h, {"tool": "split", "line": [[4.5, 4.5], [4.5, 9.5]]}, brush_radius=3)
    np.testing.assert_array_equal(h.current, le.split_line(labels, 2, (4.5, 4.5), (4.5, 9.5)).labels)


@pytest.mark.parametrize(("event", "message"), [
    ({"tool": "delete", "point": [6, 1]}, r"no cell at \(6, 1\)"),
    ({"tool": "delete", "point": [20, 1]}, "outside the image"),
    ({"tool": "merge", "points": [[0.5, 0.5], [1.5, 1.5]]}, "both clicks are in cell 1"),
    ({"tool": "merge", "points": [[0.5, 0.5], [6, 1]]}, "landed on the background"),
    ({"tool": "polygon", "points": [[5, 0], [9, 0]]}, "at least 3 points"),
    ({"tool": "polygon", "points": [[0, 0], [3, 0], [3, 3], [0, 3]]}, "existing cells only"),
    ({"tool": "split", "line": [[6, 0], [11, 3]]}, "crosses no cell"),
    ({"tool": "split", "line": [[4.5, 6.5], [7.5, 6.5]]}, "does not cut cell 2"),
    ({"tool": "erase", "points": [[8, 1]], "radius": 1}, "no cell under the eraser"),
    ({"tool": "brush", "points": [[1.5, 1.5]], "radius": 1}, "covers no background"),
    ({"tool": "lasso", "points": []}, "unknown edit tool 'lasso'"),
    ({"tool": "delete"}, "arrived incomplete"),
    ({"tool": "split", "line": [[1, 2]]}, "arrived incomplete"),
])
def test_refused_edits_say_why_and_leave_the_history_alone(event, message):
    h = history()
    with pytest.raises(LabelEditError, match=message):
        apply_event(h, event, brush_radius=3)
    assert h.n_edits == 0
    np.testing.assert_array_equal(h.current, cells())


# --- each event once ---------------------------------------------------------------------------

def test_an_event_id_is_taken_once_and_a_rerun_without_an_event_gives_none():
    seen: list[str] = []
    event = {"tool": "delete", "point": [1, 1], "id": "abc-1"}
    h = history()
    # the click, the same trigger value seen again on a rerun, a rerun with no event
    taken = [take_new_event(raw, seen) for raw in (event, dict(event), None)]
    assert taken == [event, None, None]
    applied = [apply_event(h, e, brush_radius=3) for e in taken if e is not None]
    assert applied == ["deleted cell 1"] and h.n_edits == 1
    assert take_new_event({"tool": "delete", "point": [1, 1]}, seen) is None  # no id: not from the editor
    assert take_new_event({**event, "id": "abc-2"}, seen) is not None  # the next action is new


def test_seen_ids_stay_bounded():
    seen: list[str] = []
    for i in range(200):
        take_new_event({"id": f"n-{i}"}, seen)
    assert len(seen) == 64 and seen[-1] == "n-199"


# --- what the browser gets ---------------------------------------------------------------------

def _decode(uri: str, flags=cv2.IMREAD_UNCHANGED) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), flags)


def test_payload_keeps_image_pixels_for_coordinates_and_shrinks_only_the_pictures():
    labels = np.zeros((300, 2000), np.int32)  # wide, larger than the display
    labels[100:200, 500:700] = 4
    image = np.zeros((300, 2000, 3), np.uint8)
    data = editor_payload(image, labels, tool="split", brush_radius=7)
    assert (data["width"], data["height"], data["tool"], data["radius"]) == (2000, 300, "split", 7)
    for name in ("image", "fill", "outlines"):
        assert _decode(data[name]).shape[:2] == (154, 1024), name  # aspect kept: 300 * 1024 / 2000
    fill = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["fill"].split(",", 1)[1]))))
    assert (fill[52:102, 256:358] > 0).all() and (fill[:51] == 0).all() and (fill[103:] == 0).all()  # the cell, scaled with the picture


def test_payload_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown tool"):
        editor_payload(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int32), tool="lasso", brush_radius=3)
    with pytest.raises(ValueError, match="labels are"):
        editor_payload(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.int32), tool="delete", brush_radius=3)
    assert set(TOOLS) == {"delete", "polygon", "brush", "erase", "merge", "split"}


# --- Streamlit ---------------------------------------------------------------------------------

# A page using the editor: the tool from a radio, each event applied to a history in session state.
EDITOR_SCRIPT = '''
import numpy as np
import streamlit as st

from components.label_editor import apply_event, label_editor
from core.training.label_edit import EditHistory, LabelEditError

st.title("Label editor")
if "history" not in st.session_state:
    labels = np.zeros((120, 200), np.int32)
    labels[20:60, 20:70] = 1
    labels[70:110, 120:180] = 2
    st.session_state.history = EditHistory(labels)
history = st.session_state.history


def edited(event: dict) -> None:
    try:
        st.session_state.said = apply_event(history, event, brush_radius=4)
    except LabelEditError as exc:
        st.session_state.said = f"refused: {exc}"


tool = st.radio("Tool", ["delete", "polygon", "brush", "erase", "merge", "split"], horizontal=True)
image = np.full((120, 200, 3), 40, np.uint8)
late = label_editor(image, history.current, key="editor", tool=tool, brush_radius=4, on_edit=edited)
assert late is None  # on_edit took it
ids = np.unique(history.current)
st.write(f"cells: {len(ids[ids > 0])} edits: {history.n_edits}")
st.write("ids: " + ",".join(str(i) for i in ids[ids > 0]))
st.write("sizes: " + ",".join(str(int((history.current == i).sum())) for i in ids[ids > 0]))
st.write(f"said: {st.session_state.get('said', '')}")
st.button("Rerun")
'''

# The alpha of the fill layer at image pixel (x, y): the cells as the browser shows them (the
# layer is at image size here, the image being smaller than the display).
FILL_ALPHA_JS = '''([x, y]) => {
  const img = document.querySelector('.cs-le-fill');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(x, y, 1, 1).data[3];
}'''


def test_the_editor_renders_under_apptest(tmp_path):
    from streamlit.testing.v1 import AppTest

    script = tmp_path / "editor_page.py"
    script.write_text(EDITOR_SCRIPT)
    at = AppTest.from_file(str(script), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert "cells: 2 edits: 0" in [m.value for m in at.markdown]
    at.radio[0].set_value("polygon").run()  # another tool: a rerun, no event, nothing applied
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert "cells: 2 edits: 0" in [m.value for m in at.markdown]


@pytest.mark.e2e
def test_browser_edits_cells_with_every_tool(tmp_path):
    from browser import BROWSER_ARGS, CHROMIUM, SHOTS, _free_port, require_chromium
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    script = tmp_path / "editor_page.py"
    script.write_text(EDITOR_SCRIPT)
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        with sync_playwright() as p:
            SHOTS.mkdir(parents=True, exist_ok=True)
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(url)
            main = page.locator("[data-testid='stMain']")
            expect(main).to_contain_text("cells: 2 edits: 0", timeout=30_000)
            editor = main.locator(".cs-le")
            expect(editor).to_have_attribute("data-ready", "200x120", timeout=15_000)
            canvas = editor.locator("canvas")
            box = canvas.bounding_box()
            assert box["width"] > 400 and abs(box["height"] / box["width"] - 120 / 200) < 0.01  # scaled, aspect kept

            def at(x: float, y: float) -> tuple[float, float]:  # image pixels -> page coordinates
                return box["x"] + x * box["width"] / 200, box["y"] + y * box["height"] / 120

            assert page.evaluate(FILL_ALPHA_JS, [150, 90]) > 0
            page.mouse.click(*at(150, 90))  # inside cell 2
            expect(main).to_contain_text("cells: 1 edits: 1", timeout=15_000)
            expect(main).to_contain_text("ids: 1")
            expect(main).to_contain_text("said: deleted cell 2")
            page.wait_for_function(f"() => ({FILL_ALPHA_JS})([150, 90]) === 0", timeout=5000)  # the picture too
            main.get_by_role("button", name="Rerun").click()  # a rerun does not apply the click again
            page.wait_for_timeout(1000)
            expect(main).to_contain_text("cells: 1 edits: 1")

            main.get_by_text("polygon", exact=True).click()
            expect(editor).to_have_attribute("data-tool", "polygon", timeout=10_000)
            for x, y in [(100, 10), (180, 10), (180, 50)]:
                page.mouse.click(*at(x, y))
            expect(editor).to_have_attribute("data-vertices", "3")
            page.mouse.dblclick(*at(100, 50))  # the fourth vertex, and close
            expect(main).to_contain_text("cells: 2 edits: 2", timeout=15_000)
            expect(main).to_contain_text("ids: 1,2")  # the new cell takes max + 1
            sizes = main.get_by_text("sizes:").inner_text().split(": ")[1].split(",")
            assert int(sizes[0]) == 40 * 50 and abs(int(sizes[1]) - 80 * 40) < 100  # the polygon where it was drawn

            def use(tool: str) -> None:
                main.get_by_text(tool, exact=True).click()
                expect(editor).to_have_attribute("data-tool", tool, timeout=10_000)

            def drag(*points: tuple[float, float]) -> None:
                page.mouse.move(*at(*points[0]))
                page.mouse.down()
                for point in points[1:]:
                    page.mouse.move(*at(*point), steps=8)
                page.mouse.up()

            use("merge")
            page.mouse.click(*at(45, 40))
            page.mouse.click(*at(140, 30))
            expect(main).to_contain_text("cells: 1 edits: 3", timeout=15_000)
            use("split")
            drag((45.5, 10), (45.5, 70))  # across the left piece: each part of the merged cell gets an id
            expect(main).to_contain_text("cells: 3 edits: 4", timeout=15_000)
            sizes = [int(n) for n in main.get_by_text("sizes:").inner_text().split(": ")[1].split(",")]
            assert sizes[0] == 80 * 40 and sizes[1] + sizes[2] == 40 * 50 and min(sizes[1:]) > 900
            use("brush")
            drag((10, 100), (60, 100))
            expect(main).to_contain_text("cells: 4 edits: 5", timeout=15_000)
            page.wait_for_function(f"() => ({FILL_ALPHA_JS})([30, 100]) > 0", timeout=5000)
            use("erase")
            drag((0, 97), (70, 97), (70, 103), (0, 103))
            expect(main).to_contain_text("cells: 3 edits: 6", timeout=15_000)
            page.screenshot(path=str(SHOTS / "label_editor.png"))
            assert page.locator("[data-testid='stException']").count() == 0
            expect(main).to_contain_text("said: erased")
            page.wait_for_function(f"() => ({FILL_ALPHA_JS})([30, 100]) === 0", timeout=5000)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log_path.read_text()
