"""Classical segmentation: the Preprocess page's recipe as a model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from core.data.images import CellImage
from core.data.instances import Instances, instances_from_labels
from models.registry import Family, ModelInfo, Setting, register_family, register_model

if TYPE_CHECKING:
    from core.segmentation.levels import PipelineLevels
    from core.segmentation.recipe import Recipe


RECIPE_SETTING = Setting("recipe", "Recipe", None, "The Preprocess page's recipe (None: the built-in default).",
                         kind="recipe")


class ClassicalModel:
    def __init__(self, device: str = "cpu") -> None:
        self.name, self.device = "classical", "cpu"  # OpenCV on the CPU whatever the choice

    def predict(self, image: CellImage, *, recipe: Recipe | None, levels: PipelineLevels | None = None) -> Instances:
        """``recipe`` None: the built-in default recipe. ``levels``: a large image's image-wide levels
        (a block of it, workflows.blocks); None: the image's own."""
        from core.segmentation.preprocess import run_pipeline
        from core.segmentation.recipe import DEFAULT_RECIPE

        t0 = time.perf_counter()
        result = run_pipeline(image.pixels, image.channels, recipe or DEFAULT_RECIPE, levels=levels)
        return instances_from_labels(result.labels, self.name, device=self.device,
                                     runtime_s=time.perf_counter() - t0, notes=tuple(result.notes))


register_family(Family(
    "classical", "Classical", "The Preprocess page's recipe: thresholds, morphology and watershed.", order=10,
    settings=(RECIPE_SETTING,),
    no_cam_reason="the classical pipeline is thresholds and watershed, with no network to explain"))
register_model(ModelInfo(
    "classical", "classical",
    "The Preprocess page's recipe: OpenCV thresholding, morphology and watershed. No weights, CPU.",
    None, False, lambda path, device: ClassicalModel(device), (RECIPE_SETTING,),
    inputs=("levels",),  # not a setting: the image-wide levels a block of a large image is segmented with
))
