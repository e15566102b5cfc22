"""The lesson "Is my segmentation good? F1, IoU, AP": its file read against the registered actions
and checkpoints, each checkpoint on the example plates (passing) and on a planted wrong result
(failing), and the Lesson page taken step by step in AppTest as a student would."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from conftest import open_page

from components.lesson_all_actions import known_actions
from components.lesson_quality import (
    RECIPES,
    ap_reading,
    changed_outline,
    comparison_reading,
    iou_reading,
    matching_reading,
    scores_table,
    shrunk_labels,
    typical_nucleus,
)
from core.evaluation.matching import match_instances, match_over_thresholds, matched_objects
from core.lesson.all_checks import known_checkpoints, run_checkpoint
from core.lesson.checkpoints import CHECKPOINTS
from core.lesson.spec import LESSONS_DIR, LessonError, load_lesson, parse_lesson
from core.segmentation.recipe import DEFAULT_RECIPE
from models.registry import load_model
from workflows.lesson import lesson_images

LESSON = LESSONS_DIR / "segmentation-quality.yaml"
STEPS = ["iou", "matching", "ap", "which-is-better"]


@pytest.fixture(scope="module")
def lesson():
    return load_lesson(LESSON, actions=set(known_actions()), checkpoints=set(known_checkpoints()))


@pytest.fixture(scope="module")
def images(lesson):
    return [img for img in lesson_images(lesson.dataset) if img.gt is not None]


@pytest.fixture(scope="module")
def predicted(images):
    """The classical recipe's labels of the first image, through the registry as the lesson runs it."""
    return load_model("classical", allow_download=False).predict(images[0], recipe=DEFAULT_RECIPE).labels


def check(lesson, step_id: str, result: dict):
    step = next(s for s in lesson.steps if s.id == step_id)
    return run_checkpoint(step.checkpoint, result, step.params)


# ------------------------------------------------------------------------- the lesson file


def test_the_lesson_file_names_only_registered_actions_and_checkpoints(lesson):
    assert [s.id for s in lesson.steps] == STEPS and lesson.dataset == "example"
    for step in lesson.steps:
        assert step.action.startswith("quality_") and step.checkpoint.startswith("quality_")
        assert step.page == ("data" if step.id == "iou" else "compare")
        inspect.signature(CHECKPOINTS[step.checkpoint]).bind({}, **step.params)  # its params are the checkpoint's


def test_a_misspelt_checkpoint_is_refused_with_its_step():
    text = LESSON.read_text(encoding="utf-8").replace("checkpoint: quality_ap\n", "checkpoint: quality_apx\n")
    with pytest.raises(LessonError, match=r"step 3: unknown checkpoint 'quality_apx'"):
        parse_lesson(text, "segmentation-quality", source=LESSON.name, actions=set(known_actions()),
                     checkpoints=set(known_checkpoints()))


# ------------------------------------------------------------------------- 1. IoU


def test_a_disc_shrunk_by_k_pixels_keeps_the_square_of_its_radius_ratio():
    yy, xx = np.mgrid[:60, :60]
    disc = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 10 ** 2).astype(np.uint8)
    reading = iou_reading(disc, changed_outline(disc, -2, 0))
    assert reading["iou"] == pytest.approx(((10 - 2) / 10) ** 2, abs=0.04)
    assert reading["iou"] == reading["area_pred"] / reading["area_true"]  # inside it: IoU = the area kept
    moved = iou_reading(disc, changed_outline(disc, 0, 10))  # a radius sideways: a third of the union
    assert moved["iou"] == pytest.approx(0.24, abs=0.03) and moved["area_pred"] == moved["area_true"]


def test_iou_checkpoint_passes_on_a_nucleus_found_then_missed_and_fails_on_a_wrong_iou(lesson, images):
    gt = images[0].gt
    ids = np.unique(gt[gt > 0])
    true = (gt == ids[typical_nucleus(gt) - 1]).astype(np.uint8)
    found, missed = iou_reading(true, changed_outline(true, -1, 0)), iou_reading(true, changed_outline(true, 0, 9))
    assert 0.6 < found["iou"] < 0.9 and missed["iou"] < 0.5
    result = {**missed, "lowest_iou": missed["iou"], "highest_iou": found["iou"]}
    passed = check(lesson, "iou", result)
    assert passed.passed is True and passed.value == missed["iou"] and f"{found['iou']:.2f}" in passed.text
    only_found = check(lesson, "iou", {**found, "lowest_iou": found["iou"], "highest_iou": found["iou"]})
    assert only_found.passed is None and "shrink or shift" in only_found.text
    planted = {**result, "iou": missed["intersection"] / missed["area_true"]}  # intersection over the truth alone
    wrong = check(lesson, "iou", planted)
    assert wrong.passed is False and "is not intersection / union" in wrong.text


# ------------------------------------------------------------------------- 2. matching and F1


def test_matched_objects_are_the_pairs_match_instances_counts(images, predicted):
    gt = images[0].gt
    for t in (0.5, 0.75, 0.9):
        true_ids, pred_ids, ious = matched_objects(gt, predicted, t)
        m = match_instances(gt, predicted, t)
        assert len(true_ids) == len(set(true_ids)) == len(set(pred_ids)) == m.tp > 0
        assert (ious >= t).all() and ious.mean() == pytest.approx(m.mean_iou)


def test_f1_checkpoint_passes_at_a_strict_threshold_and_fails_on_a_wrong_f1(lesson, images, predicted):
    strict = matching_reading(images[0].gt, predicted, 0.8)
    assert strict["f1"] < strict["f1_at_50"] and strict["f1_at_50"] > 0.9
    passed = check(lesson, "matching", strict)
    assert passed.passed is True and f"= {strict['f1']:.2f}" in passed.text
    assert check(lesson, "matching", matching_reading(images[0].gt, predicted, 0.5)).passed is None
    planted = {**strict, "f1": strict["tp"] / (strict["tp"] + strict["fp"] + strict["fn"])}  # AP's formula
    assert check(lesson, "matching", planted).passed is False
    uncounted = {**strict, "fn": strict["fn"] + 3}  # three true nuclei lost from the counts
    assert "do not add up" in check(lesson, "matching", uncounted).text


# ------------------------------------------------------------------------- 3. AP


def test_ap_checkpoint_passes_on_the_shrunk_truth_and_fails_on_ap_at_one_threshold(lesson, images, predicted):
    gt = images[0].gt
    recipe = match_over_thresholds(gt, predicted)
    reading = ap_reading(recipe, match_over_thresholds(gt, shrunk_labels(gt, 1)), 1)
    assert reading["shrunk_f1_at_50"] == 1.0 and reading["shrunk_ap"] < 0.8 and 0.5 < reading["ap"] < 0.9
    passed = check(lesson, "ap", reading)
    assert passed.passed is True and passed.value == pytest.approx(1.0 - reading["shrunk_ap"])
    unshrunk = ap_reading(recipe, match_over_thresholds(gt, gt), 0)
    assert unshrunk["shrunk_ap"] == 1.0 and check(lesson, "ap", unshrunk).passed is None
    planted = {**reading, "ap": reading["ap_per_threshold"][0]}  # AP at IoU 0.5 alone
    wrong = check(lesson, "ap", planted)
    assert wrong.passed is False and "not the mean" in wrong.text


# ------------------------------------------------------------------------- 4. which is better


@pytest.fixture(scope="module")
def comparisons(images):
    """Recipe B without the watershed (decided), and with no morphology (undetermined)."""
    def reading(b):
        return comparison_reading(scores_table(images, {RECIPES["A"]: DEFAULT_RECIPE, RECIPES["B"]: b}))

    return (reading(DEFAULT_RECIPE.with_step("watershed", enabled=False)),
            reading(DEFAULT_RECIPE.with_step("morphology", operation="none")))


def test_the_paired_checkpoint_passes_on_a_decided_and_an_undetermined_change(lesson, comparisons):
    merged, same = comparisons
    assert merged["images"] == 12 and merged["determined"] == 1 and merged["high"] < -0.1  # touching nuclei merge
    assert same["determined"] == 0 and same["low"] <= 0 <= same["high"]
    for reading, word in ((merged, "decided"), (same, "undetermined")):
        result = {**reading, "changed": 1, "decided_seen": 1, "undecided_seen": 1}
        passed = check(lesson, "which-is-better", result)
        assert passed.passed is True and f": {word}." in passed.text
    halfway = check(lesson, "which-is-better", {**merged, "changed": 1, "decided_seen": 1, "undecided_seen": 0})
    assert halfway.passed is None and "cannot decide" in halfway.text


def test_the_paired_checkpoint_fails_on_a_verdict_the_interval_does_not_support(lesson, comparisons):
    merged, same = comparisons
    seen = {"changed": 1, "decided_seen": 1, "undecided_seen": 1}
    overclaimed = check(lesson, "which-is-better", {**same, **seen, "determined": 1})
    assert overclaimed.passed is False and "yet the verdict says decided" in overclaimed.text
    flipped = check(lesson, "which-is-better", {**merged, **seen, "diff": -merged["diff"]})
    assert flipped.passed is False and "is not B's mean F1 minus A's" in flipped.text
    assert check(lesson, "which-is-better", {"changed": 0}).passed is None


# ------------------------------------------------------------------------- the Lesson page


KEY = "ls.segmentation-quality."


@pytest.fixture(scope="module")
def page():
    return open_page("pages/lesson.py", lesson="segmentation-quality", step="iou")


def _on_step(at, step: str):
    at.query_params["step"] = step
    at.run()
    assert not at.exception, at.exception
    assert any(h.value.startswith(f"Step {STEPS.index(step) + 1} of 4") for h in at.subheader)
    return at


def _passed(at) -> list[str]:
    return [s.value for s in at.success if s.value.startswith("**Checkpoint passed.**")]


@pytest.mark.parametrize("step", STEPS)
def test_each_step_opens_on_the_lesson_page(page, step):
    at = _on_step(page, step)
    assert at.title[0].value == "Is my segmentation good? F1, IoU, AP"
    assert any(i.value.startswith("**Checkpoint") for i in [*at.info, *at.success, *at.warning])


def test_the_iou_step_passes_once_one_outline_is_found_and_one_missed(page):
    at = _on_step(page, "iou")
    at.slider(key=f"{KEY}iou.grow").set_value(-1).run()
    assert not _passed(at) and any("shrink or shift it" in i.value for i in at.info)
    at.slider(key=f"{KEY}iou.grow").set_value(-5).run()
    assert _passed(at) and {m.label: m.value for m in at.metric}["Counts as found at 0.5"] == "no"


def test_the_matching_step_passes_at_a_strict_threshold(page):
    at = _on_step(page, "matching")
    at.slider(key=f"{KEY}matching.threshold").set_value(0.8).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["True nuclei"] == str(int(metrics["TP"]) + int(metrics["FN"])) and _passed(at)


def test_the_ap_step_passes_once_the_truth_is_shrunk(page):
    at = _on_step(page, "ap")
    at.slider(key=f"{KEY}ap.shrink").set_value(1).run()
    assert {m.label: m.value for m in at.metric}["Shrunk 1 px: F1 at 0.5"] == "1.00" and _passed(at)


def test_the_comparison_step_passes_after_a_decided_and_an_undetermined_change(page):
    at = _on_step(page, "which-is-better")
    at.toggle(key=f"{KEY}which-is-better.b.watershed").set_value(False).run()
    assert not _passed(at) and any(w.value.startswith("Use recipe A") for w in at.success)  # the ranking's verdict
    at.toggle(key=f"{KEY}which-is-better.b.watershed").set_value(True)
    at.selectbox(key=f"{KEY}which-is-better.b.morphology").set_value("none").run()
    assert any("cannot be told apart" in w.value for w in at.warning) and _passed(at)
    # the sidebar's marks, drawn after the step: the pass shows in this run
    assert any("4 :green[:material/check_circle:]" in c.value for c in at.sidebar.caption)
