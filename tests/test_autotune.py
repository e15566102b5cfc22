from __future__ import annotations

import pytest

from core.segmentation.autotune import autotune, recipe_changes, tuning_images
from core.segmentation.recipe import Recipe


def test_autotune_improves_a_poor_start(example_images):
    images = example_images[:2]
    poor = Recipe().with_step("threshold", method="manual", value=0.9).with_step("filters", min_area=80)
    seen = []
    result = autotune(images, poor, rounds=1, progress=lambda f, what: seen.append(f))
    assert result.best_f1 > result.start_f1 + 0.3 and result.best_f1 > 0.85
    assert result.best.threshold.method != "manual"
    assert seen[-1] == 1.0 and len(result.trials) > 5


def test_autotune_needs_ground_truth(example_images):
    with pytest.raises(ValueError, match="ground truth"):
        autotune([example_images[0].with_(gt=None)], Recipe())


def test_tuning_images_are_taken_in_turn_from_each_batch(example_images):
    """The first 4 of the example are all plate A: tuning on them tuned to one plate."""
    names = [img.name for img in tuning_images(example_images)]
    assert names == ["plateA_field1", "plateB_field1", "plateC_field1", "plateA_field2"]
    assert tuning_images([example_images[0].with_(gt=None), example_images[5]]) == [example_images[5]]


def test_a_search_that_finds_nothing_better_keeps_the_recipe_and_says_on_which_images(example_images, monkeypatch):
    """It used to drop the rotate step from the 'tuned' recipe, so a search that changed nothing
    still offered a recipe different from the current one."""
    import core.segmentation.autotune as A

    monkeypatch.setattr(A, "SEARCH_SPACE", (("filters", "min_area", (-1, 2000)),))
    start = Recipe().with_step("rotate", enabled=True, angle=30)
    result = autotune(example_images, start, rounds=1, max_images=2)
    assert not result.improved and result.best == start and result.best.rotate.angle == 30
    assert result.images == ("plateA_field1", "plateB_field1") and result.with_gt == 12
    assert result.scope() == "mean over 2 tuning images of the 12 with ground truth (plateA_field1, plateB_field1)"
    assert result.start_f1 == result.best_f1 > 0.9  # the rotated recipe scores in the image's frame


def test_recipe_changes_lists_each_changed_parameter():
    before = Recipe()
    after = before.with_step("threshold", method="otsu").with_step("filters", min_area=30)
    assert recipe_changes(before, after) == [
        {"parameter": "threshold.method", "was": "adaptive_gaussian", "tuned": "otsu"},
        {"parameter": "filters.min_area", "was": -1, "tuned": 30}]
    assert recipe_changes(before, before) == []


def test_the_tuned_recipe_is_checked_on_the_images_the_search_did_not_use(example_images):
    """The F1 the search maximised was the only figure shown: a fit to 4 images read as a better recipe."""
    poor = Recipe().with_step("threshold", method="manual", value=0.9).with_step("filters", min_area=80)
    images = example_images[:3] + example_images[4:7] + example_images[8:10]  # 8 images of 3 plates
    result = autotune(images, poor, rounds=1, max_images=2)
    assert result.improved and len(result.images) == 2
    assert set(result.held_out) == {img.name for img in images} - set(result.images) and len(result.held_out) == 6
    from core.segmentation.autotune import mean_f1

    held = [img for img in images if img.name in result.held_out]
    assert result.held_start_f1 == pytest.approx(mean_f1(held, poor))
    assert result.held_best_f1 == pytest.approx(mean_f1(held, result.best))
    assert "the gain carries over" in result.held_out_reading() and not result.held_out_worse


def test_held_out_readings_say_worse_and_undetermined():
    import dataclasses

    from core.segmentation.autotune import Trial, TuneResult

    start, tuned = Recipe(), Recipe().with_step("threshold", method="otsu")
    base = TuneResult(tuned, 0.9, 0.8, (Trial(start, 0.8, "start"),), ("a",), 3, ("b", "c"), 0.80, 0.70)
    assert base.held_out_worse and "worse on images it was not tuned on" in base.held_out_reading()
    same = dataclasses.replace(base, held_best_f1=0.802)
    assert not same.held_out_worse and "undetermined" in same.held_out_reading()
    assert dataclasses.replace(base, held_out=(), held_start_f1=None, held_best_f1=None).held_out_reading() is None


def test_a_gain_under_the_minimum_is_not_a_better_recipe(example_images, monkeypatch):
    """Any gain counted: a change worth a thousandth of F1 on 4 images was offered as tuned."""
    import core.segmentation.autotune as A

    scores = iter([0.800, 0.803, 0.801])  # start, then two trials under MIN_GAIN above it
    monkeypatch.setattr(A, "mean_f1", lambda images, recipe, cache=None: next(scores))
    monkeypatch.setattr(A, "SEARCH_SPACE", (("filters", "min_area", (10, 30)),))
    result = autotune(example_images[:2], Recipe(), rounds=1)
    assert not result.improved and result.best == Recipe() and result.best_f1 == 0.8
