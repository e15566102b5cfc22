"""The lesson's model steps: detectors (boxes against masks) and a U-Net trained on a few labels,
their background preparations run headless on the lesson plates, their checkpoints on the real
numbers and on planted wrong ones, their actions and the Lesson page in AppTest."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, open_page

from core.lesson.all_checks import known_checkpoints, run_checkpoint
from core.lesson.spec import LESSONS_DIR, load_lesson

# A U-Net trained in seconds, for the tests (the lesson's own takes about a minute): 3 epochs of 5
# steps of 96 px tiles at a higher learning rate scored F1 0.82 on the held-out plates.
FAST_TRAINING = {"steps_per_epoch": 5, "batch_size": 8, "tile": 96, "lr": 0.01}
FAST_EPOCHS = 3


known_checkpoints()  # registers the lesson's checkpoints


def step_params(action: str) -> dict:
    lesson = load_lesson(LESSONS_DIR / "cnn-microscopy.yaml")
    return dict(next(s for s in lesson.steps if s.action == action).params)


@pytest.fixture(scope="module")
def images():
    from workflows.lesson import lesson_images

    return lesson_images("lesson")


@pytest.fixture(scope="module")
def weights_folder(weights_home):
    """An empty weights folder: nothing is downloaded or saved into it."""
    return weights_home


@pytest.fixture(scope="module")
def detectors_prepared(images, weights_folder):
    from workflows.lesson_preparation import known_preparations

    heard = []
    scores = known_preparations()["detectors"](images, {}, lambda f, what: heard.append(f))
    return scores, heard


@pytest.fixture(scope="module")
def unet_prepared(images, weights_folder):
    """The ``unet`` preparation itself, headless, with the fast training in place of the lesson's."""
    import workflows.lesson_models as lm
    from workflows.lesson_preparation import known_preparations

    heard = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lm, "LESSON_TRAINING", FAST_TRAINING)
        mp.setattr(lm, "LESSON_EPOCHS", FAST_EPOCHS)
        lesson = known_preparations()["unet"](images, {}, lambda f, what: heard.append(f))
    return lesson, heard


def detectors_result(scores) -> dict:
    return {"classical_f1": scores.score("classical", "f1"), "classical_ap": scores.score("classical", "ap"),
            "boxes_f1": scores.score("perfect boxes", "f1"), "boxes_ap": scores.score("perfect boxes", "ap")}


# ---------------------------------------------------------------------------------------- detectors


def test_the_detectors_preparation_scores_classical_masks_against_perfect_boxes(detectors_prepared):
    scores, heard = detectors_prepared
    assert heard[-1] == 1.0 and scores.images == 8
    # Perfect boxes find every nucleus (F1 ~1 at IoU 0.5, exactly 1 on box IoU) but as outlines they
    # lose AP at strict IoU; the classical masks keep more of theirs.
    assert scores.score("perfect boxes", "f1", matched_on="box IoU") == 1.0
    assert scores.score("perfect boxes", "f1") > 0.95 and scores.score("perfect boxes", "ap") < 0.6
    assert scores.score("classical", "f1") > 0.9 and scores.score("classical", "ap") > 0.6
    assert scores.f1_at("classical", 0.75) > scores.f1_at("perfect boxes", 0.75)
    table = scores.at(0.75)
    assert list(table.columns) == ["model", "kind", "matched on", "F1 at IoU 0.50", "AP 0.50:0.95", "F1 at IoU 0.75"]
    assert set(table["kind"]) >= {"boxes", "masks"}
    with pytest.raises(ValueError, match="not one of the thresholds"):
        scores.at(0.33)
    first = next(iter(scores.labels.values()))
    assert set(first) >= {"classical", "perfect boxes"} and first["classical"].shape == (512, 512)


def test_the_ap_is_the_projects_metric_recomputed(images, detectors_prepared):
    """The classical recipe's AP is the mean over images of core.evaluation's AP 0.5:0.95."""
    from core.evaluation.matching import segmentation_scores

    scores, _ = detectors_prepared
    aps = [segmentation_scores(img.gt, scores.labels[img.name]["classical"].astype(np.int32))["ap"] for img in images]
    assert scores.score("classical", "ap") == pytest.approx(np.mean(aps))


def test_models_without_weights_are_listed_never_downloaded(weights_folder, monkeypatch):
    import models.weights
    from workflows.lesson_models import NOT_HERE, lesson_detectors

    def no_download(*args, **kwargs):
        raise AssertionError("the lesson must not download weights")

    monkeypatch.setattr(models.weights, "download", no_download)
    present, absent = lesson_detectors()
    assert present[0] == "classical"
    assert "yolo11n-nuclei" in present  # shipped inside an installed package
    assert absent["maskrcnn-coco"] == NOT_HERE and absent["cellpose-sam"] == NOT_HERE
    assert not set(present) & set(absent) and not any(weights_folder.iterdir())


def test_masks_beat_boxes_passes_on_the_lesson_and_fails_on_planted_numbers(detectors_prepared):
    scores, _ = detectors_prepared
    result = detectors_result(scores)
    check = run_checkpoint("masks_beat_boxes", result, step_params("detectors"))
    assert check.passed is True and check.value == pytest.approx(result["classical_ap"] - result["boxes_ap"], abs=1e-3)
    assert f"{result['classical_ap']:.2f}" in check.text and f"{result['boxes_ap']:.2f}" in check.text
    planted = {**result, "classical_ap": result["boxes_ap"] - 0.05}  # masks no better than boxes
    assert run_checkpoint("masks_beat_boxes", planted, step_params("detectors")).passed is False
    close = {**result, "classical_ap": result["boxes_ap"] + 0.05}  # better, but by less than the margin asked
    assert run_checkpoint("masks_beat_boxes", close, {"min_margin": 0.1}).passed is False
    assert run_checkpoint("masks_beat_boxes", {"boxes_ap": 0.5}).passed is None  # not done yet
    assert run_checkpoint("masks_beat_boxes", {**result, "classical_ap": float("nan")}).passed is False


# -------------------------------------------------------------------------------------------- U-Net


def test_the_curated_split_takes_the_plates_in_turn_and_holds_the_rest_out(images):
    from workflows.lesson_models import curated_split

    train, val, test = curated_split(images, 2)
    assert train == ["plate1_field1", "plate2_field1"] and val == ["plate1_field2"] and len(test) == 5
    assert not set(test) & {*train, *val} and len({*train, *val, *test}) == 8
    assert len(curated_split(images, 6)[2]) == 1
    with pytest.raises(ValueError, match="train on 1 to 6 images"):
        curated_split(images, 7)


def test_the_unet_preparation_trains_outside_the_weights_folder_and_scores_held_out_images(unet_prepared,
                                                                                            weights_folder):
    lesson, heard = unet_prepared
    assert heard[-1] == 1.0 and any(0 < f < 0.9 for f in heard)  # training, then scoring
    assert lesson.train == ["plate1_field1", "plate2_field1"] and len(lesson.test) == 5 and lesson.epochs == FAST_EPOCHS
    assert not any(weights_folder.iterdir())  # the checkpoint went to a temporary folder, now gone
    # Held out: the means are over the test images alone, recomputed from the per-image table.
    table = lesson.table.set_index(["image", "model"])["f1"]
    assert lesson.unet_f1 == pytest.approx(np.mean([table[(n, "U-Net")] for n in lesson.test]))
    assert lesson.classical_f1 == pytest.approx(np.mean([table[(n, "classical")] for n in lesson.test]))
    seen = lesson.table.loc[lesson.table["model"] == "U-Net"].set_index("image")["seen in training"]
    assert seen[lesson.train].eq("training").all() and seen[lesson.val].eq("validation").all()
    assert seen[lesson.test].eq("").all()
    assert set(lesson.labels) == set(lesson.test)
    assert lesson.result() == {"unet_f1": lesson.unet_f1, "classical_f1": lesson.classical_f1, "train_images": 2,
                               "test_images": 5}


def test_unet_vs_classical_passes_on_the_measured_numbers_and_fails_on_planted_ones(unet_prepared):
    lesson, _ = unet_prepared
    result = lesson.result()
    check = run_checkpoint("unet_vs_classical", result, step_params("unet"))
    assert check.passed is True, check.text
    assert f"F1 {result['unet_f1']:.2f}" in check.text and f"{result['classical_f1']:.2f}" in check.text
    assert "5 held-out images" in check.text and "Trained on 2 images" in check.text
    planted = {**result, "unet_f1": 0.3}
    failed = run_checkpoint("unet_vs_classical", planted, step_params("unet"))
    assert failed.passed is False and "only F1 0.30" in failed.text
    assert run_checkpoint("unet_vs_classical", {**result, "test_images": 0}).passed is False  # undetermined
    assert run_checkpoint("unet_vs_classical", {"unet_f1": 0.9}).passed is None


def test_the_preparations_import_no_streamlit():
    code = ("import sys; from workflows.lesson_preparation import known_preparations; p = known_preparations(); "
            "assert {'detectors', 'unet'} <= set(p); assert 'streamlit' not in sys.modules, 'streamlit imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------------------------------ AppTest


def _step_script():
    """One lesson step's action alone, with the prepared result the test put in session state."""
    import streamlit as st

    from components.lesson_actions import StepContext
    from components.lesson_all_actions import known_actions
    from core.lesson.spec import LESSONS_DIR, load_lesson

    lesson = load_lesson(LESSONS_DIR / "cnn-microscopy.yaml")
    step = next(s for s in lesson.steps if s.action == st.session_state["action"])
    ctx = StepContext(lesson, step, st.session_state["images"], st.session_state.get("prepared"),
                      st.session_state.get("state", "done"), f"ls.{lesson.id}.{step.id}.", "cpu")
    st.session_state["result"] = known_actions()[step.action](ctx)


def run_step(action: str, images, prepared, state: str = "done"):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_step_script, default_timeout=60)
    at.session_state["action"], at.session_state["images"] = action, images
    at.session_state["prepared"], at.session_state["state"] = prepared, state
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_detectors_step_draws_the_table_curve_and_image_and_moves_with_the_iou(images, detectors_prepared):
    scores, _ = detectors_prepared
    at = run_step("detectors", images, scores)
    result = at.session_state["result"]
    assert result["classical_ap"] == scores.score("classical", "ap") and result["iou"] == 0.5
    assert result["detectors_run"] >= 1  # the YOLO nuclei models shipped in a package
    assert len(at.dataframe) == 2 and len(at.get("plotly_chart")) == 1  # scores and the models not run here
    at.select_slider(key="ls.cnn-microscopy.detectors.iou").set_value(0.75).run()
    result = at.session_state["result"]
    assert result["iou"] == 0.75 and result["classical_f1_at_iou"] == pytest.approx(scores.f1_at("classical", 0.75))
    assert any("F1 at IoU 0.75" in str(df.value.columns.tolist()) for df in at.dataframe)
    waiting = run_step("detectors", images, None, state="running")
    assert waiting.session_state["result"] is None and any("background" in c.value for c in waiting.caption)


def test_the_unet_step_shows_held_out_scores_and_offers_a_live_run(images, unet_prepared):
    lesson, _ = unet_prepared
    at = run_step("unet", images, lesson)
    assert at.session_state["result"] == lesson.result()
    assert any(i.value.startswith("**Held out.**") and "other 5 images" in i.value for i in at.info)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["U-Net F1 (held out)"] == f"{lesson.unet_f1:.2f}"
    assert at.selectbox(key="ls.cnn-microscopy.u-net.image").options == lesson.test
    assert at.slider(key="ls.cnn-microscopy.u-net.n_train").value == 2


def test_the_lesson_page_opens_at_the_detectors_step(tmp_path, monkeypatch):
    """The Lesson page at ?lesson=cnn-microscopy&step=detectors: its background preparation (the
    detectors' alone here) finishes and the step shows its scores and a passed checkpoint."""
    import yaml

    import components.lesson_view as view
    import workflows.lesson_preparation as wl
    from components.lesson_all_actions import known_actions
    from core.lesson.all_checks import known_checkpoints
    from workflows.lesson_models import prepare_detectors

    # The lesson's steps whose actions this tree has (each step is its own module's), in a copy.
    data = yaml.safe_load((LESSONS_DIR / "cnn-microscopy.yaml").read_text())
    data["steps"] = [s for s in data["steps"] if s["action"] in known_actions() and s["checkpoint"] in known_checkpoints()]
    path = tmp_path / "cnn-microscopy.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setattr(view, "lesson_files", lambda: [path])
    monkeypatch.setattr(wl, "known_preparations", lambda: {"detectors": prepare_detectors})
    view.preparation.clear()
    at = open_page("pages/lesson.py", lesson="cnn-microscopy", step="detectors")
    deadline = time.monotonic() + 90
    while not any("Checkpoint passed" in s.value for s in at.success) and time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
    view.preparation.clear()
    assert any("Checkpoint passed" in s.value and "AP" in s.value for s in at.success), [e.value for e in at.info]
    assert at.query_params["step"] == "detectors" and at.dataframe and not at.error


def test_run_it_live_retrains_with_the_students_choice_and_shows_it_beside_the_prepared_run(images, unet_prepared,
                                                                                             monkeypatch):
    import workflows.lesson_models as lm

    lesson, _ = unet_prepared
    monkeypatch.setattr(lm, "LESSON_TRAINING", {"steps_per_epoch": 2, "batch_size": 4, "tile": 64, "lr": 0.01})
    at = run_step("unet", images, lesson)
    at.slider(key="ls.cnn-microscopy.u-net.n_train").set_value(1)
    at.slider(key="ls.cnn-microscopy.u-net.epochs").set_value(2).run()
    assert any("Trains on plate1_field1; validates on plate2_field1; tests on the other 6 images" in c.value
               for c in at.caption)
    at.button(key="lesson.fixed.ls.cnn-microscopy.u-net.train").click().run()
    assert not at.exception, at.exception
    mine = at.session_state["result"]
    assert mine["train_images"] == 1 and mine["test_images"] == 6 and 0 <= mine["unet_f1"] <= 1
    assert at.toggle(key="ls.cnn-microscopy.u-net.mine").value is True  # the student's run, the prepared one a click away
    at.toggle(key="ls.cnn-microscopy.u-net.mine").set_value(False).run()
    assert at.session_state["result"] == lesson.result()
