"""Cellpose-SAM through the registry: the real CPSAM network (cellpose's class, SAM's ViT encoder with
global attention, patch 8, flow readout) at a small width and depth with random weights, saved as the
``cpsam`` file in the weights folder and loaded by ``load_model`` as the app loads it, with every
download path blocked."""

from __future__ import annotations

import urllib.request
from dataclasses import replace

import numpy as np
import pytest

from core.data.images import HPA_CHANNELS, CellImage, ChannelInfo, default_channels
from core.data.instances import boxes_from_labels
from models import registry
from models.registry import availability, get_family, get_model_info, load_model
from models.weights import WeightsUnavailable


def tiny_vit(checkpoint=None):
    """SAM with a 2-block, 32-wide ViT encoder: what CPSAM takes as its ViT-L, smaller."""
    from segment_anything.build_sam import _build_sam

    return _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                      checkpoint=None)


@pytest.fixture
def small_cpsam(monkeypatch):
    """cellpose builds CPSAM from segment_anything's ``vit_l`` entry: the small encoder stands in."""
    from segment_anything.build_sam import sam_model_registry

    monkeypatch.setitem(sam_model_registry, "vit_l", tiny_vit)


@pytest.fixture(scope="module")
def cpsam_state(tmp_path_factory):
    import torch
    from cellpose.vit import CPSAM
    from segment_anything.build_sam import sam_model_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sam_model_registry, "vit_l", tiny_vit)
        torch.manual_seed(0)
        return CPSAM().state_dict()


@pytest.fixture
def downloads(monkeypatch, tmp_path):
    """Every way cellpose (or torch, or urllib) could fetch a file records the attempt and fails;
    cellpose's own model folder moves to an empty place that must stay absent."""
    import cellpose.models
    import cellpose.utils
    import torch.hub

    tried: list[str] = []

    def refuse(*args, **kwargs):
        tried.append(str(args[:1]))
        raise OSError("network blocked in this test")

    for target, attr in ((urllib.request, "urlopen"), (cellpose.utils, "urlopen"),
                         (cellpose.utils, "download_url_to_file"), (cellpose.models, "cache_model_path"),
                         (torch.hub, "download_url_to_file"), (torch.hub, "load_state_dict_from_url")):
        monkeypatch.setattr(target, attr, refuse)
    monkeypatch.setattr(cellpose.models, "MODEL_DIR", tmp_path / "cellpose-home")
    monkeypatch.setattr(cellpose.models, "MODEL_LIST_PATH", str(tmp_path / "cellpose-home" / "gui_models.txt"))
    return tried


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    home = tmp_path / "weights"
    home.mkdir()
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(home))
    return home


@pytest.fixture
def placed(weights_home, cpsam_state, monkeypatch, small_cpsam):
    """The small network's weights where the app looks for ``cpsam``; the published checksum is not
    theirs, so the entry checks none."""
    import torch

    torch.save(cpsam_state, weights_home / "cpsam")
    info = get_model_info("cellpose-sam")
    monkeypatch.setitem(registry._REGISTRY, "cellpose-sam", replace(info, weights=replace(info.weights, sha256=None)))
    return weights_home / "cpsam"


def _image(channels: tuple[ChannelInfo, ...], h: int = 64, w: int = 80, seed: int = 0) -> CellImage:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4000, (h, w, len(channels))).astype(np.uint16)
    return CellImage(f"img{seed}", pixels, channels)


LOOSE = {"cellprob_threshold": -6.0, "flow_threshold": 0.0}  # random weights: keep whatever the flows make


def test_predict_through_load_model_gives_a_label_image_of_the_image_size(placed, downloads):
    import cellpose.models

    model = load_model("cellpose-sam", "cpu", allow_download=False)
    img = _image((ChannelInfo("dapi", "nucleus", "blue"), ChannelInfo("actin", "cytoplasm", "red")))
    result = model.predict(img, **LOOSE)
    assert result.labels.shape == (64, 80) and result.labels.dtype == np.int32
    assert result.count > 0 and result.labels.max() == result.count == len(result.scores)
    assert np.array_equal(result.boxes, boxes_from_labels(result.labels)) and not result.box_only
    assert ((result.scores > 0) & (result.scores < 1)).all() and result.model == "cellpose-sam"
    assert result.notes == ("Cellpose-SAM read cytoplasm 'actin' and nucleus 'dapi': whole cells",)
    assert downloads == [] and not cellpose.models.MODEL_DIR.exists()  # cellpose fetched nothing, looked nowhere
    assert model.model.network.out.weight.shape == (192, 256, 1, 1)  # the CPSAM readout: 3 maps x 8 x 8 per token


def test_a_missing_file_is_refused_before_cellpose_can_fetch_its_default(tmp_path, downloads, small_cpsam):
    from models.cellpose_sam import CellposeSamModel

    with pytest.raises(ValueError, match=f"no weights file at {tmp_path / 'cpsam'}"):
        CellposeSamModel("cellpose-sam", tmp_path / "cpsam", "cpu")
    assert downloads == []  # cellpose would otherwise download cpsam_v2 into ~/.cellpose/models


def test_files_that_are_not_its_weights_are_refused_by_name(placed, cpsam_state, downloads):
    import torch

    placed.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{placed} is not Cellpose-SAM weights"):
        load_model("cellpose-sam", "cpu", allow_download=False)
    torch.save({k: v for k, v in cpsam_state.items() if k != "W2"}, placed)
    with pytest.raises(ValueError, match="no state dict of cellpose 4's CPSAM network in it"):
        load_model("cellpose-sam", "cpu", allow_download=False)
    torch.save(cpsam_state | {"out.bias": torch.zeros(7)}, placed)
    with pytest.raises(ValueError, match="its tensors have other shapes than CPSAM's"):
        load_model("cellpose-sam", "cpu", allow_download=False)
    torch.save({k: v for k, v in cpsam_state.items() if k != "out.bias"}, placed)  # cellpose loads non-strictly
    with pytest.raises(ValueError, match="lacks 1 of Cellpose-SAM's tensors \\(e.g. out.bias\\)"):
        load_model("cellpose-sam", "cpu", allow_download=False)
    assert downloads == []


def test_large_images_run_in_cellscope_tiles(placed):
    from models.runner import run_model

    model = load_model("cellpose-sam", "cpu", allow_download=False)
    img = _image(default_channels(1), h=60, w=110, seed=1)
    result = run_model(model, img, tile=64, overlap=16, **model.info.resolve(LOOSE))
    assert result.tiles == 2 and result.labels.shape == (60, 110) and result.count == result.labels.max() > 0


def test_settings_are_checked_before_the_model_runs():
    info = get_model_info("cellpose-sam")
    assert info.resolve({}) == {"cellpose_diameter": 0, "flow_threshold": 0.4, "cellprob_threshold": 0.0, "cellpose_batch_size": 8,
                                "tile_overlap": 0.1}
    assert info.resolve({"cellpose_diameter": 17})["cellpose_diameter"] == 17
    for bad, message in (({"cellpose_diameter": 3}, "cellpose_diameter must be between 5 and 500 \\(or 0\\); got 3"),
                         ({"cellpose_diameter": 12.5}, "cellpose_diameter must be a whole number"),
                         ({"flow_threshold": 3.5}, "flow_threshold must be between 0 and 3"),
                         ({"cellprob_threshold": -7.0}, "cellprob_threshold must be between -6 and 6"),
                         ({"cellpose_batch_size": 3}, "cellpose_batch_size must be one of 1, 2, 4, 8, 16, 32, 64"),
                         ({"tile_overlap": 0.9}, "tile_overlap must be between 0.05 and 0.5"),
                         ({"diam": 30}, "cellpose-sam has no setting 'diam'")):
        with pytest.raises(ValueError, match=message):
            info.resolve(bad)


def test_offline_the_message_names_the_file_and_the_folder(weights_home):
    with pytest.raises(WeightsUnavailable) as err:
        load_model("cellpose-sam", "cpu", allow_download=False)
    message = str(err.value)
    assert message.startswith("cpsam is not downloaded yet (1,234 MB from "
                              "https://huggingface.co/mouseland/cellpose-sam/resolve/main/cpsam)")
    assert f"copy it to {weights_home / 'cpsam'}" in message


def test_availability_says_what_is_needed_and_where(weights_home, placed):
    assert availability("cellpose-sam") == (True, f"weights at {placed}")
    placed.unlink()
    assert availability("cellpose-sam") == (
        False, f"needs cpsam (1234 MB): downloaded on first use, or place it at {weights_home / 'cpsam'}")


def test_weights_entry_is_the_file_cellpose_names_and_the_family_is_registered():
    import cellpose.models

    from models.cellpose_sam import CPSAM_WEIGHTS

    assert "cpsam" in cellpose.models.MODEL_NAMES
    assert CPSAM_WEIGHTS.url == cellpose.models._MODEL_URL + CPSAM_WEIGHTS.filename
    assert len(CPSAM_WEIGHTS.sha256) == 64 and "non-commercial" in CPSAM_WEIGHTS.trained_on
    family, info = get_family("cellpose"), get_model_info("cellpose-sam")
    assert family.label == "Cellpose-SAM" and family.cam is None and "no detector CAM" in family.no_cam_reason
    assert info.slow_on_cpu and info.family == "cellpose" and not info.box_only


@pytest.mark.parametrize(("channels", "fed", "said"), [
    (default_channels(1), (0, None, None), "nucleus 'ch0' only: nuclei"),
    (default_channels(2), (0, None, None), "nucleus 'ch0' only: nuclei"),  # the protein channel is not read
    (HPA_CHANNELS, (0, 2, None), "cytoplasm 'red' and nucleus 'blue': whole cells"),
    ((ChannelInfo("a", "protein"), ChannelInfo("b", "cytoplasm")), (1, None, None), "cytoplasm 'b' only"),
    ((ChannelInfo("a", "other"), ChannelInfo("b", "protein")), (0, None, None), "the first channel 'a'"),
])
def test_channel_roles_make_cellposes_three_channels(channels, fed, said):
    from models.cellpose_sam import cellpose_input

    img = _image(channels, h=16, w=12)
    planes, note = cellpose_input(img)
    assert planes.shape == (16, 12, 3) and planes.dtype == np.float32 and said in note
    for k, source in enumerate(fed):
        expected = np.zeros((16, 12)) if source is None else img.pixels[..., source]
        assert np.array_equal(planes[..., k], expected), k
