"""InstanSeg through the registry, offline: the real architecture (instanseg's UNet with its pixel
classifier and channel-invariant adaptor) with random weights at a small width, scripted and zipped
as the release packs it, found in the weights folder and run by the adapter the app uses."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import sys
import types
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.images import CellImage, ChannelInfo
from models import registry
from models.instanseg import FLUORESCENCE_WEIGHTS, TORCHSCRIPT, input_planes, unpacked_torchscript
from models.registry import availability, get_family, get_model_info, list_models, load_model
from models.weights import WeightsUnavailable, sha256_of

MODELS = ("instanseg-fluo-nuclei", "instanseg-fluo-cells")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """One torch thread: with other processes on the 2 cores, two ran these networks 2-10x slower."""


def scripted_instanseg(*, nuclei_seed_bias: float, cells_seed_bias: float, cells_and_nuclei: bool = True,
                       seed_gain: float = 3.0):
    """instanseg's own export path (``export_to_torchscript`` without its files): InstanSeg_UNet from the
    model builder, the pixel classifier, the channel-invariant AdaptorNet, wrapped in InstanSeg_Torchscript
    and scripted, at small widths. Random weights find nothing, so the seed maps' last batch norms are
    shifted: ``nuclei_seed_bias`` 5 seeds objects everywhere, -20 none."""
    with pytest.MonkeyPatch.context() as patch:
        if importlib.util.find_spec("seaborn") is None:  # the loss module imports it at its top, for a plot
            patch.setitem(sys.modules, "seaborn", types.ModuleType("seaborn"))
        from instanseg.utils.loss.instanseg_loss import InstanSeg as InstanSegMethod
        from instanseg.utils.loss.instanseg_loss import InstanSeg_Torchscript
        from instanseg.utils.model_loader import build_model_from_dict
        from instanseg.utils.models.ChannelInvariantNet import AdaptorNetWrapper

    torch.manual_seed(0)
    config = dict(model_str="InstanSeg_UNet", layers=[8, 16], norm="BATCH", dim_in=3, dim_coords=2, n_sigma=2,
                  dim_seeds=1, multihead=False, dropprob=0.0, cells_and_nuclei=cells_and_nuclei)
    net = build_model_from_dict(config)
    method = InstanSegMethod(n_sigma=2, feature_engineering_function="0", dim_coords=2, dim_seeds=1,
                             cells_and_nuclei=cells_and_nuclei, device="cpu")
    net = method.initialize_pixel_classifier(net, MLP_width=5)
    heads = net.decoders[0].final_block  # per output: coordinates (2), sigma (2), seed map (1)
    with torch.no_grad():
        for index, bias in ((2, nuclei_seed_bias), (5, cells_seed_bias))[: 2 if cells_and_nuclei else 1]:
            heads[index][1].weight.fill_(seed_gain)
            heads[index][1].bias.fill_(bias)
    net = AdaptorNetWrapper(net, adaptor_net_str="1", norm="BATCH", device="cpu", layers=[8, 4, 2]).eval()
    return torch.jit.script(InstanSeg_Torchscript(net, cells_and_nuclei=cells_and_nuclei, pixel_size=0.5, n_sigma=2,
                                                  feature_engineering_function="0", backbone_dim_in=3))


def release_zip(script, path: Path) -> Path:
    """A zip laid out as the bioimage.io package: a folder with rdf.yaml and instanseg.pt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pt = path.with_name("exported.pt")
    script.save(str(pt))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("fluorescence_nuclei_and_cells/rdf.yaml", "format_version: 0.5.3\ntype: model\n")
        zipped.write(pt, f"fluorescence_nuclei_and_cells/{TORCHSCRIPT}")
    pt.unlink()
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """The test release zip, built once; each test copies it into its own weights folder."""
    script = scripted_instanseg(nuclei_seed_bias=5.0, cells_seed_bias=-20.0)
    return release_zip(script, tmp_path_factory.mktemp("release") / "fluorescence_nuclei_and_cells.zip")


@pytest.fixture
def weights(release, tmp_path, monkeypatch) -> Path:
    """The zip placed in a fresh weights folder, the registry's spec given its checksum (none is
    published: this checks the path a checksum takes)."""
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    dest = tmp_path / FLUORESCENCE_WEIGHTS.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(release.read_bytes())
    spec = dataclasses.replace(FLUORESCENCE_WEIGHTS, sha256=sha256_of(dest))
    for name in MODELS:
        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(get_model_info(name), weights=spec))
    return dest


def cells_image(name: str = "field", *, cytoplasm: bool = True, size: tuple[int, int] = (72, 88)) -> CellImage:
    rng = np.random.default_rng(0)
    roles = ["nucleus", "protein", "cytoplasm" if cytoplasm else "other"]
    channels = tuple(ChannelInfo(f"c{i}-{role}", role) for i, role in enumerate(roles))
    return CellImage(name, rng.integers(0, 4000, (*size, 3)).astype(np.uint16), channels)


def test_the_family_and_its_models_are_registered():
    family = get_family("instanseg")
    assert family.label == "InstanSeg" and family.cam is None and "no detector CAM" in family.no_cam_reason
    segmenters = {m.name for m in list_models("segment")}
    assert set(MODELS) <= segmenters
    for name in MODELS:
        info = get_model_info(name)
        assert info.weights.url.endswith("fluorescence_nuclei_and_cells.zip") and info.weights.sha256 is None
        assert info.weights.license.startswith("Apache-2.0") and not info.box_only and info.slow_on_cpu
        assert info.params == ("pixel_size", "instanseg_seed_threshold", "input_channels")


def test_nuclei_and_cells_come_from_their_own_outputs(weights):
    image = cells_image()
    nuclei = load_model("instanseg-fluo-nuclei", "cpu").predict(image)
    cells = load_model("instanseg-fluo-cells", "cpu").predict(image)
    for result in (nuclei, cells):
        assert result.labels.shape == (72, 88) and result.labels.dtype == np.int32
        assert result.count == result.labels.max() == len(result.scores) and result.boxes.shape == (result.count, 4)
        assert np.array_equal(np.unique(result.labels[result.labels > 0]), np.arange(1, result.count + 1))
    # The test network seeds nuclei everywhere and cells nowhere: each model reads its own output.
    assert nuclei.count >= 1 and cells.count == 0
    assert nuclei.model == "instanseg-fluo-nuclei" and np.all(nuclei.scores == 1)
    assert nuclei.notes[0] == "channels read: c0-nucleus (nucleus), c2-cytoplasm (cytoplasm)"


def test_cells_need_a_cytoplasm_channel_and_nuclei_do_not(weights):
    image = cells_image("no-cyto.tif", cytoplasm=False)
    with pytest.raises(ValueError, match="no-cyto.tif has none.*role 'cytoplasm' .channel roles on the Data page"):
        load_model("instanseg-fluo-cells", "cpu").predict(image)
    nuclei = load_model("instanseg-fluo-nuclei", "cpu").predict(image)
    assert nuclei.labels.shape == (72, 88) and nuclei.count >= 1
    assert nuclei.notes[0] == "channels read: c0-nucleus (nucleus)"


def test_which_channels_the_model_reads():
    image = cells_image()
    planes, names = input_planes(image, "nucleus + cytoplasm")
    assert planes.dtype == np.float32 and np.array_equal(planes, image.pixels[:, :, [0, 2]])
    assert input_planes(image, "all channels")[0].shape == (72, 88, 3)
    no_roles = image.with_(channels=tuple(dataclasses.replace(c, role="other") for c in image.channels))
    assert np.array_equal(input_planes(no_roles, "nucleus + cytoplasm")[0], image.pixels[:, :, [0]])
    with pytest.raises(ValueError, match="input_channels must be one of"):
        input_planes(image, "red")


def test_settings_reach_instanseg(weights, monkeypatch):
    from instanseg import InstanSeg

    calls = []
    original = InstanSeg.eval_small_image

    def spy(self, image, **kwargs):
        calls.append((image.shape, kwargs))
        return original(self, image, **kwargs)

    monkeypatch.setattr(InstanSeg, "eval_small_image", spy)
    model = load_model("instanseg-fluo-nuclei", "cpu")
    model.predict(cells_image())
    result = model.predict(cells_image(), pixel_size=0.25, instanseg_seed_threshold=0.4, input_channels="all channels")
    assert calls[0][0] == (72, 88, 2) and calls[0][1]["pixel_size"] is None and "seed_threshold" not in calls[0][1]
    assert calls[1][0] == (131, 131, 3)  # mirrored out to 65 px once halved
    assert calls[1][1]["pixel_size"] == 0.25 and calls[1][1]["seed_threshold"] == 0.4
    assert calls[1][1]["target"] == "nuclei"
    assert result.labels.shape == (72, 88)  # run at half the size, labels back at the image's size
    assert "rescaled from 0.25 to the model's 0.5 µm per pixel" in result.notes


def test_settings_are_validated():
    info = get_model_info("instanseg-fluo-cells")
    assert info.resolve({}) == {"pixel_size": 0.0, "instanseg_seed_threshold": 0.0, "input_channels": "nucleus + cytoplasm"}
    assert info.resolve({"pixel_size": 0.325, "instanseg_seed_threshold": 0.5})["pixel_size"] == 0.325
    for bad, message in (({"pixel_size": 3}, "pixel_size must be between 0.01 and 2"),
                         ({"instanseg_seed_threshold": 0.01}, "instanseg_seed_threshold must be between 0.05 and 0.95"),
                         ({"input_channels": "red"}, "input_channels must be one of"),
                         ({"seed_threshold": 0.5}, "has no setting 'seed_threshold'")):
        with pytest.raises(ValueError, match=message):
            info.resolve(bad)


def test_the_package_never_downloads(weights, monkeypatch):
    import requests
    import torch.hub
    from instanseg.utils import utils as instanseg_utils

    def blocked(*args, **kwargs):
        raise AssertionError("the network was used")

    for owner, attr in ((socket.socket, "connect"), (urllib.request, "urlopen"), (requests, "get"),
                        (requests.Session, "request"), (torch.hub, "download_url_to_file"),
                        (instanseg_utils, "download_model")):
        monkeypatch.setattr(owner, attr, blocked)
    monkeypatch.setenv("INSTANSEG_BIOIMAGEIO_PATH", str(weights.parent / "never"))
    result = load_model("instanseg-fluo-nuclei", "cpu", allow_download=False).predict(cells_image())
    assert result.count >= 1 and not (weights.parent / "never").exists()


def test_the_release_downloads_into_its_folder_through_the_weights_manager(release, tmp_path, monkeypatch):
    """The real urllib path (a file:// address standing in for GitHub's), into the weights folder's
    instanseg/ subfolder, progress reported, no partial file left."""
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    spec = dataclasses.replace(FLUORESCENCE_WEIGHTS, url=release.as_uri(), sha256=sha256_of(release))
    monkeypatch.setitem(registry._REGISTRY, MODELS[0], dataclasses.replace(get_model_info(MODELS[0]), weights=spec))
    seen = []
    model = load_model(MODELS[0], "cpu", progress=lambda done, total: seen.append(done))
    dest = tmp_path / "instanseg" / "fluorescence_nuclei_and_cells.zip"
    assert dest.read_bytes() == release.read_bytes() and seen[-1] == dest.stat().st_size
    assert sorted(p.name for p in dest.parent.iterdir()) == ["fluorescence_nuclei_and_cells",  # unpacked
                                                             "fluorescence_nuclei_and_cells.zip"]  # no .part
    assert model.predict(cells_image()).labels.shape == (72, 88)


def test_the_zip_is_unpacked_once_beside_it_and_again_when_it_changes(weights):
    load_model("instanseg-fluo-nuclei", "cpu")
    target = weights.with_suffix("") / TORCHSCRIPT
    first = target.stat().st_mtime_ns
    load_model("instanseg-fluo-cells", "cpu")
    assert target.stat().st_mtime_ns == first
    os.utime(weights, ns=(first + 10**9, first + 10**9))
    assert unpacked_torchscript(weights) == target and target.stat().st_mtime_ns != first
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".part")] == []


def test_a_broken_zip_says_which_file_and_what_to_do(tmp_path):
    not_a_zip = tmp_path / "fluorescence_nuclei_and_cells.zip"
    not_a_zip.write_bytes(b"partial download")
    with pytest.raises(WeightsUnavailable, match=f"{not_a_zip} is not a readable zip.*delete {not_a_zip}"):
        unpacked_torchscript(not_a_zip)
    empty = tmp_path / "other.zip"
    with zipfile.ZipFile(empty, "w") as zipped:
        zipped.writestr("rdf.yaml", "type: model\n")
    with pytest.raises(WeightsUnavailable, match=f"{empty} holds no instanseg.pt.*not an InstanSeg model"):
        unpacked_torchscript(empty)


def test_a_checksum_mismatch_is_refused(weights, monkeypatch):
    spec = dataclasses.replace(FLUORESCENCE_WEIGHTS, sha256="0" * 64)
    monkeypatch.setitem(registry._REGISTRY, MODELS[0], dataclasses.replace(get_model_info(MODELS[0]), weights=spec))
    with pytest.raises(WeightsUnavailable, match="does not match the expected checksum"):
        load_model(MODELS[0], "cpu", allow_download=False)


def test_offline_message_and_availability_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    where = tmp_path / "instanseg" / "fluorescence_nuclei_and_cells.zip"
    ok, why = availability("instanseg-fluo-cells")
    assert not ok and why == f"needs instanseg/fluorescence_nuclei_and_cells.zip (15 MB): downloaded on first use, or place it at {where}"
    with pytest.raises(WeightsUnavailable) as caught:
        load_model("instanseg-fluo-cells", "cpu", allow_download=False)
    assert "download fluorescence_nuclei_and_cells.zip on another computer" in str(caught.value)
    assert f"copy it to {where}" in str(caught.value)


def test_availability_once_the_zip_is_placed(weights):
    assert availability("instanseg-fluo-nuclei") == (True, f"weights at {weights}")


def test_images_smaller_than_instansegs_window_run_mirrored(weights):
    """instanseg's post-processing aborts the process on an image under 64 px a side (at the model's
    scale, 63 px did): the adapter mirrors it out to 65 and cuts the labels back (at another pixel
    size: test_settings_reach_instanseg)."""
    model = load_model("instanseg-fluo-nuclei", "cpu")
    for size in ((12, 12), (40, 70)):
        result = model.predict(cells_image(size=size))
        assert result.labels.shape == size and result.count >= 1


def test_a_nuclei_only_model_cannot_give_cells(weights, monkeypatch):
    import models.instanseg as adapter

    loaded = adapter.load_torchscript

    def nuclei_only(path, device):
        script = loaded(path, device)
        script.cells_and_nuclei = False  # what instanseg's single-output models say
        return script

    monkeypatch.setattr(adapter, "load_torchscript", nuclei_only)
    with pytest.raises(WeightsUnavailable, match="fluorescence_nuclei_and_cells.zip segments nuclei only"):
        load_model("instanseg-fluo-cells", "cpu")
    assert load_model("instanseg-fluo-nuclei", "cpu").model.target == "nuclei"
