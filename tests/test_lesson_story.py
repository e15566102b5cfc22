"""The lesson's story (steps 5-7): the checkpoints on planted results, and the Grad-CAM step's
preparation on the lesson plates for real (a shorter training than the lesson's): the plate
classifier works and looks at the background. The whole story at the lesson's own settings runs
in the browser walk (tests/test_e2e.py)."""

from __future__ import annotations

import pytest

from core.lesson.all_checks import run_checkpoint
from workflows.lesson import lesson_images
from workflows.lesson_story import cam_numbers, prepare_grad_cam, story_cells


def test_plates_separate_passes_above_chance_and_shuffled_labels_and_fails_at_chance():
    good = {"batch_accuracy": 0.84, "chance": 0.5, "shuffled": 0.68}
    check = run_checkpoint("plates_separate", good, {"min_margin": 0.2})
    assert check.passed and check.value == 0.84 and "0.84" in check.text and "0.68" in check.text
    assert not run_checkpoint("plates_separate", {**good, "batch_accuracy": 0.6}, {"min_margin": 0.2}).passed
    # above the margin but no better than shuffled labels: not a separation
    assert not run_checkpoint("plates_separate", {**good, "shuffled": 0.9}, {"min_margin": 0.2}).passed
    assert run_checkpoint("plates_separate", {**good, "batch_accuracy": None}).passed is False  # undetermined


def test_looks_at_background_needs_a_working_classifier_and_little_energy_on_the_cells():
    good = {"accuracy": 0.88, "chance": 0.5, "median_inside": 0.014, "median_area": 0.13}
    check = run_checkpoint("looks_at_background", good, {"max_enrichment": 0.8, "min_margin": 0.15})
    assert check.passed and check.value == pytest.approx(0.014 / 0.13) and "0.01" in check.text
    on_cells = run_checkpoint("looks_at_background", {**good, "median_inside": 0.3})
    assert not on_cells.passed and "not on the background" in on_cells.text
    guessing = run_checkpoint("looks_at_background", {**good, "accuracy": 0.55})
    assert not guessing.passed and "hardly tells" in guessing.text


def test_plates_mix_treatment_stays_fails_if_the_plates_still_separate_or_the_treatment_is_lost():
    good = {"batch_accuracy": 0.31, "condition_accuracy": 0.89, "chance": 0.5, "batch_accuracy_before": 0.88}
    check = run_checkpoint("plates_mix_treatment_stays", good, {"batch_margin": 0.15, "condition_margin": 0.25})
    assert check.passed and "was 0.88" in check.text and "Below chance is chance too" in check.text
    still = run_checkpoint("plates_mix_treatment_stays", {**good, "batch_accuracy": 0.8})
    assert not still.passed and "still separate" in still.text
    lost = run_checkpoint("plates_mix_treatment_stays", {**good, "condition_accuracy": 0.6})
    assert not lost.passed and "treatment is lost" in lost.text


@pytest.fixture(scope="module")
def images():
    return lesson_images("lesson")


def test_the_lesson_plates_differ_in_the_background_alone(images):
    """Same cells, same nucleus channel; plate 2's other channels brighter only between the cells."""
    plate1, plate2 = images[0], images[4]
    assert (plate1.batch, plate2.batch) == ("plate1", "plate2")
    nucleus1, nucleus2 = plate1.pixels[..., 0].astype(float), plate2.pixels[..., 0].astype(float)
    background1 = plate1.pixels[..., 1][plate1.gt == 0].mean()
    background2 = plate2.pixels[..., 1][plate2.gt == 0].mean()
    assert abs(nucleus1.mean() - nucleus2.mean()) < 0.15 * nucleus1.mean()
    assert background2 > background1 + 100


def test_the_plate_classifier_looks_at_the_background_of_the_lesson_plates(images):
    """The Grad-CAM step's preparation, for real on the lesson plates (4 epochs instead of the lesson's 10)."""
    cells = story_cells(images, {}, mask=False)
    assert len(cells) > 400 and set(cells.table["batch"]) == {"plate1", "plate2"}
    explained = prepare_grad_cam(images, {"classifier": {"epochs": 4}, "per_class": 60}, lambda f, what: None)
    numbers = cam_numbers(explained.trained, explained.run.explanation)
    check = run_checkpoint("looks_at_background", numbers, {"max_enrichment": 0.8, "min_margin": 0.15})
    assert check.passed, check.text
