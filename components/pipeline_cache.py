"""The Preprocess pipeline's caches, shared by every session of the server: pipeline stages, the
views made from them, per-cell measurements and ground-truth scores."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.cache import BoundedCache
from core.cells.measure import measure_cells
from core.data.images import CellImage
from core.data.instances import Instances, instances_from_labels
from core.evaluation.matching import Matching, match_instances
from core.segmentation.preprocess import PipelineResult, run_pipeline
from core.segmentation.recipe import Recipe


@st.cache_resource(show_spinner=False)
def stage_cache() -> BoundedCache:
    """One per server process, bounded: every stage keyed by image hash + the recipe so far, so
    moving a late slider reuses the earlier stages. Arrays are shared, not copied: the
    pipeline's ~20 MB of 1024 px arrays would cost ~20 ms to pickle per rerun in st.cache_data."""
    return BoundedCache(max_entries=96)


def pipeline(image: CellImage, recipe: Recipe) -> PipelineResult:
    return run_pipeline(image.pixels, image.channels, recipe, image_hash=f"{image.hash}{image.channels}",
                        cache=stage_cache())


@st.cache_data(max_entries=64, show_spinner=False)
def cell_table(_image: CellImage, image_hash: str, channels: tuple, recipe: Recipe) -> pd.DataFrame:
    """Per-cell measurements (on the image as it is: the pipeline's cells are in its frame), cached
    by image hash + recipe."""
    labels = pipeline(_image, recipe).labels
    return measure_cells(labels, _image.pixels, _image.channels)


@st.cache_data(max_entries=256, show_spinner=False)
def gt_scores(_image: CellImage, image_hash: str, channels: tuple, recipe: Recipe) -> Matching:
    """Match against ground truth (both in the image's own frame), cached by image hash + recipe."""
    return match_instances(_image.gt, pipeline(_image, recipe).labels)


def memo(key: tuple, compute):
    """A view's piece, kept in the stage cache while the steps it depends on are unchanged."""
    return stage_cache().get_or_compute(("view", *key), compute)


def pipeline_instances(image: CellImage, recipe: Recipe) -> Instances:
    """The pipeline's cells on ``image`` as the one result type (what the other pages' models give)."""
    result = pipeline(image, recipe)
    return instances_from_labels(result.labels, "classical", notes=tuple(result.notes))
