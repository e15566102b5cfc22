from __future__ import annotations

import pytest

from core.autotune import autotune
from core.recipe import Recipe


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
