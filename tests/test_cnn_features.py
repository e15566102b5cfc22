"""models/cnn_features.py: the real torchvision ResNet with random weights at small sizes; colour
mapping, chunking, and weights found, loaded or reported missing exactly as the page will ask."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
import torchvision

from core.data.images import HPA_CHANNELS, ChannelInfo
from models.cnn_features import (
    FEATURE_DIMS,
    IMAGENET_WEIGHTS,
    CnnEmbedder,
    color_matrix,
    colorize,
)
from models.weights import WeightsUnavailable, resolve_weights

SPEC = IMAGENET_WEIGHTS["resnet18"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """One torch thread: with other processes on the 2 cores, two ran these networks 2-10x slower."""


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((24, 32, 32, 2), dtype=np.float32) ** 3  # mostly dark, like fluorescence


@pytest.fixture(scope="module")
def reference_net():
    """A random ResNet-18 with its classifier, saved the way torchvision publishes weights (a state dict)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture
def local_weights(weights_home, reference_net):
    """The random ResNet-18 placed in the weights folder under the ImageNet file's name."""
    weights_home.mkdir(parents=True)
    path = weights_home / SPEC.filename
    torch.save(reference_net.state_dict(), path)
    return replace(SPEC, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), url="http://127.0.0.1:9/never")


COLORS_2 = color_matrix((ChannelInfo("dna", "nucleus", "blue"), ChannelInfo("er", "other", "yellow")))


def test_color_matrix_uses_display_colours_with_yellow_split_red_green():
    assert COLORS_2.tolist() == [[0, 0, 1], [0.5, 0.5, 0]]
    assert color_matrix(HPA_CHANNELS).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0]]


def test_a_green_channel_only_lights_the_green_input():
    crop = torch.rand(3, 1, 8, 8)
    rgb = colorize(crop, torch.tensor([[0.0, 1.0, 0.0]]))
    assert rgb.shape == (3, 3, 8, 8)
    assert torch.equal(rgb[:, 1], crop[:, 0]) and rgb[:, 0].abs().max() == 0 and rgb[:, 2].abs().max() == 0


def test_channels_add_up_and_clip_like_the_display_merge():
    crop = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)  # red, yellow, magenta
    rgb = colorize(crop, torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [1.0, 0, 1.0]]))
    assert rgb.flatten().tolist() == pytest.approx([1.0, 0.4, 0.6])  # red 1 + 0.4 + 0.6 clipped to 1


def test_features_are_the_pooled_penultimate_layer_of_the_loaded_weights(local_weights, reference_net, crops):
    path = resolve_weights(local_weights, allow_download=False)
    embedder = CnnEmbedder(path, "cpu")
    assert embedder.name == "resnet18-imagenet" and embedder.dim == 512
    feats = embedder.features(crops, channel_colors=COLORS_2, input_size=64)
    assert feats.shape == (24, 512) and feats.dtype == np.float32
    # reference: colour merge in NumPy, OpenCV's bilinear resize, torchvision's own ImageNet
    # normalisation, the full ResNet (with its classifier): features times classifier = its logits
    rgb = np.clip(crops @ COLORS_2, 0, 1)
    big = np.stack([cv2.resize(c, (64, 64), interpolation=cv2.INTER_LINEAR) for c in rgb])
    published = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    x = (big - np.array(published.mean, np.float32)) / np.array(published.std, np.float32)
    with torch.inference_mode():
        logits = reference_net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    fc = reference_net.fc
    np.testing.assert_allclose(feats @ fc.weight.detach().numpy().T + fc.bias.detach().numpy(), logits,
                               rtol=0, atol=1e-4)  # measured 2.5e-6; swapped colours: 0.39


def test_features_do_not_depend_on_chunking(crops):
    torch.manual_seed(1)
    embedder = CnnEmbedder(None, "cpu")
    assert embedder.name == "resnet18-random"
    small = embedder.features([crops[i:i + 7] for i in range(0, 24, 7)], channel_colors=COLORS_2, input_size=64,
                              batch_size=16)
    whole = embedder.features(lambda: iter([crops]), channel_colors=COLORS_2, input_size=64, batch_size=16)
    assert np.array_equal(small, whole)
    assert len(np.unique(small.round(4), axis=0)) == 24  # every crop its own features


def test_progress_reaches_one_when_the_total_is_known(crops):
    torch.manual_seed(1)
    seen: list[tuple[float, str]] = []
    CnnEmbedder(None, "cpu").features(crops, channel_colors=COLORS_2, input_size=32, batch_size=8, total=24,
                                      progress=lambda f, m: seen.append((f, m)))
    assert seen[-1][0] == 1.0 and "24 of 24 cells" in seen[-1][1]


def test_resnet50_gives_2048_features():
    embedder = CnnEmbedder(None, "cpu", arch="resnet50")
    feats = embedder.features(np.zeros((2, 32, 32, 1), np.float32), channel_colors=[[1.0, 1.0, 1.0]], input_size=32)
    assert feats.shape == (2, FEATURE_DIMS["resnet50"]) == (2, 2048)


def test_colours_must_match_the_channels(crops):
    embedder = CnnEmbedder(None, "cpu")
    with pytest.raises(ValueError, match="crops must have 3 channels; got 2"):
        embedder.features(crops, channel_colors=color_matrix(HPA_CHANNELS[:3]))
    with pytest.raises(ValueError, match=r"\(C, 3\) matrix"):
        embedder.features(crops, channel_colors=[0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="arch must be one of resnet18, resnet50"):
        CnnEmbedder(None, "cpu", arch="vgg16")


def test_a_file_that_is_not_a_resnet18_is_refused(weights_home):
    weights_home.mkdir(parents=True)
    path = weights_home / SPEC.filename
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="resnet18-f37072fd.pth is not a torchvision resnet18 state dict"):
        CnnEmbedder(path, "cpu")


def test_offline_the_missing_weights_are_named_with_where_to_put_them(weights_home):
    offline = replace(SPEC, url="http://127.0.0.1:9/resnet18-f37072fd.pth")  # nothing listens on port 9
    with pytest.raises(WeightsUnavailable) as err:
        resolve_weights(offline)
    assert "could not download resnet18-f37072fd.pth" in str(err.value) and str(weights_home) in str(err.value)
    with pytest.raises(WeightsUnavailable, match=r"resnet18-f37072fd.pth is not downloaded yet \(47 MB from"):
        resolve_weights(SPEC, allow_download=False)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_specs_match_torchvisions_published_weights(arch):
    published = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    spec = IMAGENET_WEIGHTS[arch]
    assert spec.url == published.url and spec.url.endswith("/" + spec.filename)
    assert spec.filename == f"{arch}-{spec.sha256}.pth"  # torchvision names files by their hash prefix
    assert spec.size_bytes / 2**20 == pytest.approx(published.meta["_file_size"], abs=0.001)
    assert spec.license == "BSD-3-Clause" and spec.trained_on.startswith("ImageNet-1k")
