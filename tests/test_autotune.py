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
