"""models/autoencoder.py: the real convolutional autoencoder, trained at a small size on synthetic
crops (bright discs of varying size), checked on its numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.autoencoder import (
    AUTOENCODER_SETTINGS,
    AutoencoderConfig,
    AutoencoderTrainer,
    build_autoencoder,
    encode,
    load_autoencoder,
    reconstruct,
    sample_crops,
    save_autoencoder,
    train_autoencoder,
)

SIZE, CHANNELS = 32, 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: with other processes on the 2 cores, two threads made a training step 3-10x
    slower (OpenMP threads waiting on each other), which would put these tests past their budget."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def discs(n: int, size: int = SIZE, channels: int = CHANNELS, seed: int = 0) -> np.ndarray:
    """(n, size, size, channels) float32 crops: one disc per channel, varying in place, radius and brightness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, channels), np.float32)
    for i in range(n):
        for c in range(channels):
            cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
            radius = rng.uniform(0.1 * size, 0.35 * size)
            out[i, :, :, c] = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2) * rng.uniform(0.5, 1.0)
    return out


def chunked(crops: np.ndarray, n: int) -> list[np.ndarray]:
    return [crops[i:i + n] for i in range(0, len(crops), n)]


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return discs(256)


@pytest.fixture(scope="module")
def trained(crops):
    calls: list[tuple[float, str]] = []
    result = train_autoencoder(chunked(crops, 100), channels=CHANNELS, size=SIZE, epochs=5, batch_size=16, seed=0,
                               progress=lambda f, m: calls.append((f, m)))
    return result, calls


def test_training_lowers_the_loss_and_beats_the_mean_crop(trained, crops):
    result, _ = trained
    curve = result.loss_curve
    assert len(curve) == 5 and result.train_cells == 256 and result.epochs == 5
    # measured: 0.187 -> 0.031 (ratio 0.16); a learning rate of 1e-9 keeps the ratio at 1.00
    assert curve[-1] < 0.5 * curve[0]
    assert all(later < earlier for earlier, later in zip(curve, curve[1:], strict=False))
    # the reconstructions are better than the best constant guess, the mean crop (measured 0.025 vs 0.061)
    error = float(((reconstruct(result.model, crops) - crops) ** 2).mean())
    baseline = float(((crops - crops.mean(axis=0)) ** 2).mean())
    assert error < 0.7 * baseline
    assert result.seconds > 0 and result.config == AutoencoderConfig(CHANNELS, SIZE, 32)


def test_same_seed_same_curve_whatever_the_chunking_and_the_caller_random_state_is_kept(trained, crops):
    first, _ = trained
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    # two epochs follow the five-epoch run's first two: same weights, same shuffles
    again = train_autoencoder(lambda: iter(chunked(crops, 7)), channels=CHANNELS, size=SIZE, epochs=2,
                              batch_size=16, seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # training did not reseed the caller's generator
    np.testing.assert_allclose(again.loss_curve, first.loss_curve[:2], rtol=0, atol=1e-6)
    other = train_autoencoder(crops, channels=CHANNELS, size=SIZE, epochs=2, batch_size=16, seed=1)
    assert abs(other.loss_curve[0] - first.loss_curve[0]) > 1e-3


def test_training_sample_is_bounded_spread_over_all_crops_and_independent_of_chunking():
    marked = np.zeros((256, 8, 8, 1), np.float32)
    marked[:, 0, 0, 0] = np.arange(256) / 255  # each crop carries its index as its first pixel
    sample, order = sample_crops(chunked(marked, 100), 50, channels=1, size=8, seed=3)
    again, order_again = sample_crops(chunked(marked, 7), 50, channels=1, size=8, seed=3)
    picked = sample[order, 0, 0, 0].astype(int)
    assert sample.dtype == np.uint8 and sample.shape == (50, 8, 8, 1)
    assert np.array_equal(picked, again[order_again, 0, 0, 0].astype(int))
    assert len(set(picked)) == 50
    assert (picked >= 128).sum() >= 15  # not the first chunks: about half come from the second half
    assert sample_crops(marked, 50, channels=1, size=8, seed=4)[0][:, 0, 0, 0].tolist() != picked.tolist()


def test_the_registry_face_trains_with_every_setting_and_max_train_cells_bounds_the_sample(crops):
    settings = {s.name: s.default for s in AUTOENCODER_SETTINGS} | {"epochs": 1, "max_train_cells": 40}
    result = AutoencoderTrainer(None, "cpu").train(crops, channels=CHANNELS, size=SIZE, **settings)
    assert result.train_cells == 40 and len(result.loss_curve) == 1 and result.batch_size == 128
    assert result.config.bottleneck == 32 == encode(result.model, crops[:3]).shape[1]


def test_encode_shape_order_and_chunk_invariance(trained, crops):
    model = trained[0].model
    small = encode(model, chunked(crops, 7))
    assert small.shape == (256, 32) and small.dtype == np.float32
    assert np.array_equal(small, encode(model, lambda: iter(chunked(crops, 100))))
    assert len(np.unique(small.round(5), axis=0)) == 256  # every crop its own code
    with torch.inference_mode():  # the encoder half applied to all crops at once, by hand
        direct = model[0](torch.from_numpy(crops).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(encode(model, crops, batch_size=64), direct, rtol=0, atol=1e-4)
    assert encode(model, []).shape == (0, 32)


def test_encode_reports_progress_when_the_total_is_known(trained, crops):
    seen: list[float] = []
    encode(trained[0].model, chunked(crops, 50), batch_size=64, total=256, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_reconstruct_keeps_the_shape_and_range(trained, crops):
    out = reconstruct(trained[0].model, crops[:4])
    assert out.shape == (4, SIZE, SIZE, CHANNELS) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.05


def test_progress_rises_to_one_with_every_epoch_end_and_a_time_estimate(trained):
    _, calls = trained
    fractions = [f for f, _ in calls]
    assert fractions == sorted(set(fractions))  # strictly increasing
    assert {0.2, 0.4, 0.6, 0.8, 1.0} <= set(fractions)  # every epoch's end is reported
    assert fractions[-1] == 1.0 and "epoch 5/5: loss" in calls[-1][1]
    assert "left" in calls[0][1] and "left" not in calls[-1][1]


def test_save_and_load_round_trip_gives_identical_encodings(trained, crops, tmp_path):
    result = trained[0]
    path = save_autoencoder(result, tmp_path / "ae.pt")
    raw = torch.load(path, weights_only=True)  # plain data: loads without unpickling any code
    assert raw["config"] == {"channels": 2, "size": 32, "bottleneck": 32, "widths": [32, 64, 128]}
    loaded = load_autoencoder(path)
    assert loaded.config == result.config and loaded.loss_curve == result.loss_curve
    assert loaded.train_cells == 256 and loaded.seed == 0
    assert np.array_equal(encode(loaded.model, crops[:40]), encode(result.model, crops[:40]))


def test_other_files_are_refused_as_checkpoints(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match="plain.pt is not a CellScope autoencoder checkpoint"):
        load_autoencoder(plain)
    code = tmp_path / "code.pt"
    torch.save({"obj": AutoencoderConfig(1, 16)}, code)  # a pickled object: refused by weights_only
    with pytest.raises(ValueError, match="code.pt is not a CellScope autoencoder checkpoint"):
        load_autoencoder(code)


@pytest.mark.parametrize("size", [30, 12, 0])
def test_sizes_the_network_cannot_halve_three_times_are_refused(size):
    with pytest.raises(ValueError, match="multiple of 8 and at least 16"):
        AutoencoderConfig(2, size)
    with pytest.raises(ValueError, match="multiple of 8"):
        train_autoencoder(np.zeros((4, max(size, 1), max(size, 1), 2), np.float32), channels=2, size=size)


def test_wrong_crops_are_refused_with_what_was_expected(trained):
    with pytest.raises(ValueError, match="crops must be 32x32 pixels; got 16x16"):
        encode(trained[0].model, np.zeros((3, 16, 16, 2), np.float32))
    with pytest.raises(ValueError, match="crops must have 2 channels; got 3"):
        train_autoencoder(np.zeros((3, 32, 32, 3), np.float32), channels=2, size=32)
    with pytest.raises(ValueError, match="no crops"):
        train_autoencoder([], channels=2, size=32)


@pytest.mark.parametrize(("channels", "size"), [(1, 16), (4, 64)])
def test_any_channel_count_and_size_round_trips_through_the_bottleneck(channels, size):
    model = build_autoencoder(AutoencoderConfig(channels, size, bottleneck=8)).eval()
    x = torch.rand(2, channels, size, size)
    with torch.inference_mode():
        assert model[0](x).shape == (2, 8) and model(x).shape == x.shape
