"""CAMs of the cell classifier with pytorch-grad-cam: known answers on planted data (a classifier
that can only use the background lights up the background, one that can only use the cells
lights up the cells), agreement with the package called directly, hooks released, one session
per model, flat memory, and the deletion/insertion test against a model whose answer is known."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import numpy as np
import pytest
import torch
from pytorch_grad_cam import EigenCAM, GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_classifier import planted_cells

from core.explain.cam_stats import cam_mask_stats, class_summary
from models.classifier import ClassifierConfig, build_classifier, train_classifier
from models.explain import (
    CAM_METHOD_NAMES,
    DeletionInsertion,
    cam_layers,
    cam_methods,
    compute_cams,
    default_cam_layer,
    deletion_insertion,
    model_lock,
)

# Eigen-CAM is left out of the known-answer test on purpose: it shows the layer's first principal
# component whatever the class (here the cell itself, in both datasets), so it cannot tell the two apart.
CLASS_METHODS = ("gradcam", "gradcam++", "hirescam", "scorecam", "layercam")


@pytest.fixture(scope="module")
def planted():
    """For each kind: the trained classifier, its crops, the cells' masks and batch names."""
    out = {}
    for kind in ("background", "inside"):
        cells = planted_cells(kind)  # 2 batches x 6 images x 16 cells, 32 px crops
        trained = train_classifier(cells.crops(np.arange(len(cells))), cells.table["batch"].to_numpy(),
                                   cells.table["image"].to_numpy(), epochs=8, batch_size=32, lr=3e-3, folds=2)
        out[kind] = (trained, cells.crops(trained.rows), cells.masks(trained.rows))
    return out


@pytest.fixture(scope="module")
def inside_shares(planted):
    """Median inside-mask share of each method's CAMs for each planted kind."""
    shares = {}
    for kind, (trained, crops, masks) in planted.items():
        assert trained.balanced_accuracy >= 0.9, f"{kind}: the classifier did not learn the planted difference"
        for method in CLASS_METHODS:
            cams = compute_cams(trained.model, crops, method=method).cams
            shares[kind, method] = float(np.nanmedian(cam_mask_stats(cams, masks)["inside_fraction"]))
    return shares


@pytest.mark.parametrize("method", CLASS_METHODS)
def test_a_background_only_classifier_lights_the_background_and_an_inside_only_one_the_cells(inside_shares, method):
    background, inside = inside_shares["background", method], inside_shares["inside", method]
    # Measured (gradcam, gradcam++, hirescam, layercam; scorecam): background 0.26 (0.28), inside 0.76 (0.75);
    # cells cover 0.45 of their crops.
    assert background < 0.38, f"{method}: background-only classifier puts {background:.2f} of its CAM inside"
    assert inside > 0.62, f"{method}: inside-only classifier puts only {inside:.2f} of its CAM inside"
    assert inside - background > 0.3


def test_the_per_class_reading_names_the_background_and_the_cells(planted):
    for kind, expected in (("background", "background"), ("inside", "cells")):
        trained, crops, masks = planted[kind]
        result = compute_cams(trained.model, crops)
        names = np.asarray(trained.classes)[result.target]
        table = class_summary(cam_mask_stats(result.cams, masks), names, correct=trained.correct, target="batch")
        assert list(table["focus"]) == [expected, expected], table
        assert all(f"rely mostly on the {expected}" in text for text in table["reading"])


@pytest.mark.parametrize("kind", ["background", "inside"])
def test_removing_the_top_cam_pixels_lowers_the_score_faster_than_random(planted, kind):
    trained, crops, _ = planted[kind]
    sample = crops[::4]
    result = compute_cams(trained.model, sample)
    test = deletion_insertion(trained.model, sample, result.cams, result.target)
    areas = test.areas  # measured: 0.62 vs 0.79 (background), 0.62 vs 0.86 (inside)
    assert areas["deletion"] < areas["random_deletion"] - 0.1, test.reading()
    assert test.beats_random and test.reading().startswith("The CAM beats random pixel order when its top pixels")


# ---------------------------------------------------------------------------------------------
# the contract, on small untrained models


def tiny_model(size: int = 16, channels: int = 2, n_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier(ClassifierConfig(channels, size, n_classes)).eval()


def noise(n: int = 6, size: int = 16, channels: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


def hooks_left(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("layer", ["block2", "block3"])
@pytest.mark.parametrize("method", CAM_METHOD_NAMES)
def test_every_method_gives_one_cam_per_crop_in_zero_to_one_and_leaves_no_hook(method, layer, size):
    model = tiny_model(size)
    result = compute_cams(model, noise(size=size), method=method, layer=layer, batch_size=4)
    assert result.cams.shape == (6, size, size) and result.cams.dtype == np.float32
    peaks = result.cams.max(axis=(1, 2))
    # Each CAM is scaled to its own range: it starts at exactly 0 and reaches 1, unless an untrained
    # net gave it no positive evidence at all (then it is all 0).
    assert np.all(result.cams.min(axis=(1, 2)) == 0.0) and np.all((peaks == 0) | (peaks > 0.99))
    assert np.array_equal(result.target, result.predicted) and result.probability.shape == (6, 3)
    assert (result.method, result.layer) == (method, layer)
    assert hooks_left(model) == 0 and all(p.grad is None for p in model.parameters())


def test_batched_cams_equal_the_package_called_directly_on_all_crops_at_once():
    model, crops = tiny_model(), noise(n=7)
    targets = [ClassifierOutputTarget(c) for c in (0, 1, 2, 0, 1, 2, 0)]
    with GradCAM(model=model, target_layers=[model.block3]) as cam:
        expected = cam(input_tensor=torch.from_numpy(crops).permute(0, 3, 1, 2), targets=targets)
    ours = compute_cams(model, crops, target=np.array([0, 1, 2, 0, 1, 2, 0]), batch_size=3)
    assert np.allclose(ours.cams, expected, atol=1e-6)


def test_our_economy_eigencam_equals_the_package_eigencam_up_to_the_component_sign(monkeypatch):
    import pytorch_grad_cam.eigen_cam as package

    model, crops = tiny_model(32), noise(n=5, size=32)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2)
    with EigenCAM(model=model, target_layers=[model.block2]) as cam:
        plus = cam(input_tensor=x, targets=None)
    projection = package.get_2d_projection
    monkeypatch.setattr(package, "get_2d_projection", lambda a: -projection(a))
    with EigenCAM(model=model, target_layers=[model.block2]) as cam:
        minus = cam(input_tensor=x, targets=None)
    ours = compute_cams(model, crops, method="eigencam", layer="block2").cams
    for i in range(len(crops)):  # each crop's map is the package's with one of the two signs
        assert np.allclose(ours[i], plus[i], atol=1e-5) or np.allclose(ours[i], minus[i], atol=1e-5)


@pytest.mark.parametrize("flip", [False, True])
def test_eigencam_lights_where_the_layer_fires_whatever_the_svd_sign(monkeypatch, flip):
    """The component's sign is turned to agree with the summed activations: a bright square that
    the (ReLU) conv layer responds to is positive on every crop, never the background, also when
    the SVD returns the other (equally valid) sign."""
    if flip:
        svd = np.linalg.svd

        def flipped(a, *args, **kwargs):
            u, s, vt = svd(a, *args, **kwargs)
            return -u, s, -vt

        monkeypatch.setattr(np.linalg, "svd", flipped)
    torch.manual_seed(0)
    model = tiny_model(32)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.abs_()  # every filter responds to brightness
    crops = np.zeros((6, 32, 32, 2), np.float32)
    for i in range(6):
        y, x = 4 + 3 * i, 20 - 3 * i
        crops[i, y:y + 8, x:x + 8] = 1.0
    cams = compute_cams(model, crops, method="eigencam", layer="block2").cams
    for i in range(6):
        y, x = 4 + 3 * i, 20 - 3 * i
        inside = cams[i, y:y + 8, x:x + 8].mean()
        assert inside > cams[i].mean() + 0.1, (i, inside, cams[i].mean())


def test_the_class_to_explain_can_be_predicted_true_or_any_class():
    model, crops = tiny_model(), noise()
    true = np.array([2, 1, 0, 2, 1, 0])
    assert np.array_equal(compute_cams(model, crops, target="true", true=true).target, true)
    by_class = {c: compute_cams(model, crops, target=c) for c in range(3)}
    assert all(np.all(by_class[c].target == c) for c in range(3))
    assert not np.allclose(by_class[0].cams, by_class[1].cams)  # a different class, a different map
    predicted = compute_cams(model, crops)
    for c in range(3):  # per cell, "predicted" is the CAM of the predicted class
        rows = predicted.predicted == c
        assert np.allclose(predicted.cams[rows], by_class[c].cams[rows], atol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "gradcamm"}, "unknown CAM method 'gradcamm'; choose one of gradcam, gradcam\\+\\+"),
    ({"layer": "fc"}, "no layer 'fc'; CAM layers: block1, block2, block3"),
    ({"target": "true"}, "needs the cells' true classes"),
    ({"target": "most likely"}, "target must be one of predicted, true or a class index"),
    ({"target": 3}, "class index 3 is out of range: the model has 3 classes"),
    ({"target": np.array([0, 1])}, "must be 6 integer indices"),
    ({"target": "true", "true": np.array([0.5] * 6)}, "must be 6 integer indices"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
])
def test_bad_requests_are_refused_with_what_fits(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_cams(tiny_model(), noise(), **kwargs)


def test_crops_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="must have 2 channels"):
        compute_cams(tiny_model(), noise(channels=3))
    with pytest.raises(ValueError, match="must be 16x16"):
        compute_cams(tiny_model(), noise(size=32))


def test_layers_are_listed_shallow_to_deep_with_the_last_block_by_default():
    import torchvision

    model = tiny_model()
    assert list(cam_layers(model)) == ["block1", "block2", "block3"] and default_cam_layer(model) == "block3"
    resnet = torchvision.models.resnet18(weights=None)
    assert list(cam_layers(resnet)) == ["layer1", "layer2", "layer3", "layer4"]
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    assert list(cam_layers(plain)) == ["0", "2"]
    with pytest.raises(ValueError, match="no convolution layer"):
        cam_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# ---------------------------------------------------------------------------------------------
# safety: hooks, locks, memory


def test_hooks_are_released_after_an_error_inside_the_cam_block():
    model = tiny_model()

    def fail(fraction: float, message: str) -> None:
        raise KeyError("the page went away")

    with pytest.raises(KeyError, match="the page went away"):
        compute_cams(model, noise(), batch_size=2, progress=fail)
    assert hooks_left(model) == 0
    assert compute_cams(model, noise()).cams.shape == (6, 16, 16)  # and the model still works


def test_an_index_error_is_not_swallowed_by_the_package():
    """pytorch-grad-cam's ``__exit__`` prints an IndexError and swallows it; it must reach the caller."""
    model = tiny_model()

    def fail(fraction: float, message: str) -> None:
        raise IndexError("out of range somewhere")

    with pytest.raises(RuntimeError, match="gradcam failed at layer 'block3': out of range somewhere"):
        compute_cams(model, noise(), progress=fail)
    assert hooks_left(model) == 0


def test_one_lock_per_model_and_a_second_caller_waits_for_it():
    model, other = tiny_model(), tiny_model()
    assert model_lock(model) is model_lock(model) and model_lock(model) is not model_lock(other)
    results: list = []
    with model_lock(model):  # as if another session were explaining this model
        worker = threading.Thread(target=lambda: results.append(compute_cams(model, noise())))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and results == []  # it waits rather than hooking a hooked model
        compute_cams(other, noise())  # another model is not held up
    worker.join(timeout=60)
    assert len(results) == 1 and hooks_left(model) == 0


def test_concurrent_explanations_of_one_model_equal_the_sequential_ones():
    model, crops = tiny_model(), noise(n=12)
    expected = compute_cams(model, crops, batch_size=4).cams
    out: list[np.ndarray] = [None] * 4  # type: ignore[list-item]

    def run(i: int) -> None:
        out[i] = compute_cams(model, crops, batch_size=4).cams

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.allclose(cams, expected, atol=1e-6) for cams in out)


def test_memory_stays_flat_over_50_explanations():
    import psutil

    model, crops = tiny_model(), noise(n=32)
    for _ in range(3):  # warm up: lazy imports, allocator pools
        compute_cams(model, crops)
    gc.collect()
    rss = psutil.Process().memory_info().rss
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            compute_cams(model, crops)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    rss_grown_mb = (psutil.Process().memory_info().rss - rss) / 2**20
    assert grown < 256 * 1024, f"Python/numpy memory grew {grown / 1024:.0f} KiB over 50 explanations"
    assert rss_grown_mb < 30, f"RSS grew {rss_grown_mb:.0f} MB over 50 explanations"
    assert hooks_left(model) == 0


# ---------------------------------------------------------------------------------------------
# deletion / insertion on a model whose answer is known


class CentreBrightness(torch.nn.Module):
    """Two logits: 0 and 20 x (mean brightness of the central 4 x 4 pixels - 0.5). So the class-1
    probability depends on those 16 pixels only."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, :, 6:10, 6:10].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(centre), self.scale * (centre - 0.5)], dim=1)


def centre_crops(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    crops = np.full((n, 16, 16, 1), 0.4, np.float32)
    crops[:, 6:10, 6:10] = 1.0
    cam = np.zeros((n, 16, 16), np.float32)
    cam[:, 6:10, 6:10] = 1.0
    return crops, cam


def test_deletion_and_insertion_tell_a_right_cam_from_a_wrong_one():
    model = CentreBrightness()
    crops, right = centre_crops()
    wrong = 1.0 - right  # points everywhere but the centre
    targets = np.ones(len(crops), np.int64)
    good = deletion_insertion(model, crops, right, targets, fill="zero")
    bad = deletion_insertion(model, crops, wrong, targets, fill="zero")
    start = 1 / (1 + np.exp(-20 * 0.5))  # centre at 1.0
    gone = 1 / (1 + np.exp(-20 * -0.5))  # centre at 0.0
    assert good.fractions.tolist() == pytest.approx([i / 10 for i in range(11)])
    assert good.deletion[:, 0] == pytest.approx(start, abs=1e-5) and good.deletion[:, -1] == pytest.approx(gone, abs=1e-5)
    assert good.insertion[:, 0] == pytest.approx(gone, abs=1e-5) and good.insertion[:, -1] == pytest.approx(start, abs=1e-5)
    # The 16 centre pixels are the first 6.25% of the crop: gone after one step of 10%.
    assert good.deletion[:, 1] == pytest.approx(gone, abs=1e-5) and good.insertion[:, 1] == pytest.approx(start, abs=1e-5)
    areas = good.areas
    assert areas["deletion"] < areas["random_deletion"] - 0.2 and areas["insertion"] > areas["random_insertion"] + 0.2
    assert good.beats_random and good.insertion_beats_random and not bad.beats_random
    assert "removed and when they are put back" in good.reading()
    assert bad.reading().startswith("The CAM does not beat random pixel order, so do not trust it here")
    assert good.summary()["areas"] == areas and len(good.summary()["deletion"]) == 11


def test_deletion_fills_and_bad_inputs():
    model = CentreBrightness()
    crops, cam = centre_crops(2)
    targets = np.ones(2, np.int64)
    mean_fill = deletion_insertion(model, crops, cam, targets, fill="mean", steps=4)
    centre_mean = float(crops[0].mean())  # the centre filled with the crop's mean
    assert mean_fill.deletion[0, -1] == pytest.approx(1 / (1 + np.exp(-20 * (centre_mean - 0.5))), abs=1e-5)
    assert deletion_insertion(model, crops, cam, targets, fill="blur", steps=4).deletion.shape == (2, 5)
    with pytest.raises(ValueError, match="fill must be one of mean, zero, blur"):
        deletion_insertion(model, crops, cam, targets, fill="noise")
    with pytest.raises(ValueError, match="one \\(S, S\\) CAM and one target per crop"):
        deletion_insertion(model, crops, cam[:1], targets)


def test_cam_methods_are_the_packages_classes():
    import pytorch_grad_cam as pgc

    methods = cam_methods()
    assert tuple(methods) == CAM_METHOD_NAMES
    assert methods["gradcam"] is pgc.GradCAM and methods["scorecam"] is pgc.ScoreCAM
    assert issubclass(methods["eigencam"], pgc.EigenCAM)


def test_the_deletion_verdict_weighs_the_gain_against_cell_to_cell_noise():
    """Hand-worked: per-cell deletion areas; the gain is random minus CAM, with a 95 % interval."""
    f = np.linspace(0, 1, 3)
    flat = np.full((4, 3), 0.8, np.float32)

    def test(cam_levels):
        deletion = np.repeat(np.asarray(cam_levels, np.float32)[:, None], 3, axis=1)
        return DeletionInsertion(f, deletion, flat, flat, flat, "mean")

    clear = test([0.5, 0.5, 0.5, 0.5])  # every cell: area 0.5 vs 0.8 at random
    assert clear.deletion_gain == pytest.approx((0.3, 0.3, 0.3), abs=1e-6)
    assert clear.beats_random and "only slightly" not in clear.reading()
    slight = test([0.77, 0.77, 0.77, 0.77])
    assert slight.beats_random and "only slightly" in slight.reading()
    noisy = test([0.5, 1.1, 0.5, 1.1])  # mean gain 0 +- 0.34: no better than random
    mean, low, high = noisy.deletion_gain
    assert mean == pytest.approx(0.0, abs=1e-6) and low < 0 < high
    assert not noisy.beats_random and "do not trust it" in noisy.reading()


def test_images_a_classifier_cannot_use_are_named_the_same_for_the_page_and_the_cli():
    from models.explain_cells import unlabelled_images

    assert unlabelled_images("batch", {"a": "plateA", "b": "unassigned", "c": "plateB"}) == ["b"]
    assert unlabelled_images("batch", {"a": "unassigned", "b": "unassigned"}) == []  # one 'batch': said elsewhere
    assert unlabelled_images("condition", {"a": "treated", "b": "", "c": ""}) == ["b", "c"]
    assert unlabelled_images("cluster", {"a": ""}) == []
