"""Segment Anything through the registry: a tiny real SAM (random weights) saved and loaded as
users' checkpoints are; the embedding is computed once per image; prompts are batched."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.images import CellImage, default_channels
from models import registry
from models.registry import ModelInfo, load_model
from models.weights import WeightsSpec


def tiny_sam():
    from segment_anything.build_sam import _build_sam

    return _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                      encoder_global_attn_indexes=(1,), checkpoint=None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "sam_tiny.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


def tiny_sam_info(filename: str) -> ModelInfo:
    """'sam-tiny': a SamModel whose checkpoint ``filename`` is looked up in the weights folder."""
    import torch

    from models.sam import SAM_PROMPTS, SAM_SETTINGS, SamModel

    def build(path, device):
        def make():
            model = tiny_sam()
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model
        return SamModel("sam-tiny", make, device)

    spec = WeightsSpec("sam-tiny", filename, None, None, None, "test", "nothing", "test")
    return ModelInfo("sam-tiny", "sam", "test", spec, False, build, SAM_SETTINGS, inputs=SAM_PROMPTS, slow_on_cpu=True)


@pytest.fixture
def sam(checkpoint, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(checkpoint.parent))
    monkeypatch.setitem(registry._REGISTRY, "sam-tiny", tiny_sam_info(checkpoint.name))
    return load_model("sam-tiny", "cpu").model  # the SamModel itself: tests look at its encoder count


def _image(seed: int) -> CellImage:
    rng = np.random.default_rng(seed)
    return CellImage(f"img{seed}", rng.integers(0, 4000, (64, 80, 1)).astype(np.uint16), default_channels(1))


def test_box_prompts_give_one_mask_each_and_reuse_the_embedding(sam):
    img = _image(0)
    boxes = np.array([[5, 5, 30, 30], [40, 20, 75, 60]], np.float32)
    first = sam.predict(img, boxes=boxes)
    assert sam.encoder_runs == 1
    second = sam.predict(img, points=np.array([[10, 10], [50, 40], [70, 5]], np.float32))
    assert sam.encoder_runs == 1  # same image: the encoder did not run again
    sam.predict(_image(1), boxes=boxes)
    assert sam.encoder_runs == 2
    for result in (first, second):
        assert result.labels.shape == (64, 80) and not result.box_only
        assert result.count == result.labels.max() == len(result.scores)
        assert result.boxes.shape == (result.count, 4)
    assert first.count <= 2 and second.count <= 3


def test_automatic_mode_runs_with_small_settings(sam):
    result = sam.predict(_image(2), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                         min_mask_region_area=0)
    assert result.labels.shape == (64, 80) and result.count == result.labels.max()


def test_sam_weights_are_described_as_downloads(tmp_path, monkeypatch):
    from models.sam import SAM_WEIGHTS

    assert SAM_WEIGHTS["vit_b"].url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))  # an empty weights folder, whatever this machine has
    ok, why = registry.availability("sam-vitb")
    assert not ok and why.startswith("needs sam_vit_b_01ec64.pth")


def test_detector_boxes_prompt_sam(sam, example_images):
    from models.sam import BoxPromptedSam

    img = example_images[0]
    combo = BoxPromptedSam("classical+sam-tiny", "classical", sam, "cpu")
    result = combo.predict(img)
    n_boxes = int(result.notes[0].split()[0])
    assert n_boxes > 50 and result.notes[0].endswith("boxes from classical")
    assert result.model == "classical+sam-tiny" and result.count <= n_boxes
    assert result.labels.shape == img.gt.shape
