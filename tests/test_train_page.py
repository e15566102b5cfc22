"""The Train page in AppTest: a training runs in the background, its curve and result come back
after reruns, the model appears on the Compare page, and bad settings are refused."""

from __future__ import annotations

from conftest import open_page

from components.training_state import training_queue


def test_a_training_runs_in_the_background_and_its_model_reaches_compare(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    at = open_page("pages/train.py")
    assert any("12 images with ground truth" in c.value for c in at.caption)
    at.text_input(key="tr.name").set_value("apptest").run()
    at.number_input(key="tr.fam.unet.epochs").set_value(1).run()
    at.button(key="tr.start").click().run()
    assert not at.exception, at.exception
    jobs = training_queue().jobs(at.session_state["workspace_id"])
    assert jobs and jobs[0].name == "apptest" and jobs[0].params["settings"]["epochs"] == 1
    done = training_queue().wait(jobs[0].id, timeout=240)
    assert done is not None and done.state == "done", (done.state, done.error)
    at.run()
    ready = [s.value for s in at.success if "trained:unet:apptest" in s.value]
    assert ready and "validation F1" in ready[0]
    assert at.get("plotly_chart")  # the curve
    at.button(key=f"tr.compare.{jobs[0].id}").click().run()  # opens Compare with the new model chosen
    assert not at.exception, at.exception
    assert at.multiselect(key="cmp.models").value == ["classical", "yolo11s-nuclei", "trained:unet:apptest"]
    at.switch_page("pages/train.py")
    at.run()
    assert at.text_input(key="tr.name").value != "apptest"  # a fresh name for the next training
    at.text_input(key="tr.name").set_value("apptest").run()  # taken: it would overwrite the model
    assert any("named 'apptest' exists already" in e.value for e in at.error) and at.button(key="tr.start").disabled


def test_bad_names_and_splits_are_refused_before_starting():
    at = open_page("pages/train.py")
    at.text_input(key="tr.name").set_value("../x").run()
    assert any("letters, digits" in e.value for e in at.error) and at.button(key="tr.start").disabled
    at.text_input(key="tr.name").set_value("x" * 300).run()  # a file name too long for the disk crashed the page
    assert not at.exception and any("at most 64 characters" in e.value for e in at.error)
    assert at.button(key="tr.start").disabled
    assert at.number_input(key="tr.fam.unet.batch_size").max == 64 and at.number_input(key="tr.fam.unet.epochs").max == 1000
    at.text_input(key="tr.name").set_value("fine").run()
    at.session_state["tr.split"] = "plates"
    at.run()
    at.multiselect(key="tr.val_batches").set_value(["plateA", "plateB", "plateC"]).run()
    assert any("Keep at least one plate" in e.value for e in at.error) and at.button(key="tr.start").disabled


def test_curated_labels_become_ground_truth_and_the_data_table_says_so():
    import numpy as np

    at = open_page("pages/train.py")
    at.selectbox(key="tr.cur_start").set_value("classical").run()
    at.button(key="tr.cur_begin").click().run()
    assert not at.exception and any(" cells · 0 edits from classical" in c.value for c in at.caption)
    assert any(c.value.endswith("0 edits from classical · not saved") for c in at.caption)
    at.button(key="tr.save").click().run()
    assert not at.exception
    saved = at.session_state["dataset"]["plateA_field1"]
    assert saved.gt_source == "curated (0 edits from classical)"
    cells = len(np.unique(saved.gt)) - 1  # the classical recipe's cells, not the file's
    # the save says so where the button is, and the editor says its labels are the saved ones
    assert any(s.value.startswith(f"Saved: {cells} cells are plateA_field1's ground truth") for s in at.success)
    assert any(c.value == f"{cells} cells · 0 edits from classical · saved as ground truth" for c in at.caption)
    assert at.button(key="tr.save").proto.type == "secondary"
    at.switch_page("pages/data.py")
    at.run()
    table = next(d.value for d in at.dataframe if "labels" in d.value.columns)
    assert table.set_index("name").loc["plateA_field1", "labels"] == "curated (0 edits from classical)"
    assert table.set_index("name").loc["plateB_field1", "labels"] == "file"


def test_the_train_page_imports_no_ultralytics_until_yolo_is_used():
    """Every family's trainer is a real function reference, yet listing them imports no ultralytics."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys\nsys.path.insert(0, 'tests')\nfrom conftest import open_page\n"
            "at = open_page('pages/train.py')\nassert not at.exception, at.exception\n"
            "print('ultralytics' in sys.modules, 'YOLO-seg' in at.selectbox(key='tr.family').options)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.stdout.split()[-2:] == ["False", "True"], out.stderr[-2000:]
