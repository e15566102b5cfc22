"""core/training/data.py: pairs, splits by image and by batch, seeded augmentation, tiles."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.images import nucleus_plane
from core.io.example import make_example_dataset
from core.training.data import (
    Augmentation,
    Split,
    TileSampler,
    TrainingPair,
    augment,
    leave_one_batch_out,
    pad_to,
    pairs_hash,
    random_tile,
    split_by_batch,
    split_by_image,
    training_pairs,
)


@pytest.fixture(scope="module")
def images():
    return make_example_dataset(size=96, fields_per_plate=3)  # 3 plates x 3 fields


@pytest.fixture(scope="module")
def pairs(images):
    return training_pairs(images)


def _square_pair(h: int = 40, w: int = 56) -> TrainingPair:
    """A dark image with one bright, labelled rectangle off-centre (every turn and flip moves it)."""
    image = np.zeros((h, w, 1), np.float32)
    labels = np.zeros((h, w), np.int32)
    image[5:15, 8:30] = 1.0
    labels[5:15, 8:30] = 7
    return TrainingPair("square", "b", image, labels)


def test_pairs_hold_the_nucleus_plane_as_inference_normalises_it_and_skip_images_without_truth(images):
    mixed = [images[0], images[1].with_(gt=None), images[2]]
    pairs = training_pairs(mixed)
    assert [p.name for p in pairs] == [images[0].name, images[2].name]
    np.testing.assert_array_equal(pairs[0].image[:, :, 0], nucleus_plane(images[0]))
    np.testing.assert_array_equal(pairs[0].labels, images[0].gt)
    assert pairs[0].n_objects == images[0].n_cells_gt
    assert training_pairs(images[:1], planes="all")[0].image.shape == (96, 96, 3)
    with pytest.raises(ValueError, match="none of the 1 images has ground truth"):
        training_pairs([images[1].with_(gt=None)])
    with pytest.raises(ValueError, match="names must be unique.*plateA_field1"):
        training_pairs([images[0], images[0]])


def test_split_by_image_never_shares_an_image_and_is_seeded(pairs):
    split = split_by_image(pairs, val_fraction=0.3, seed=3)
    assert not set(split.train) & set(split.val)
    assert sorted(split.train + split.val) == sorted(p.name for p in pairs)
    assert len(split.val) == round(0.3 * len(pairs)) == 3
    assert split_by_image(pairs, val_fraction=0.3, seed=3) == split
    assert len({split_by_image(pairs, val_fraction=0.3, seed=s).val for s in range(6)}) > 1
    train, val = split.apply(pairs)
    assert [p.name for p in val] == list(split.val) and len(train) == 6
    assert split.to_dict()["method"] == "image" and split.to_dict()["seed"] == 3


def test_split_by_image_refuses_too_few_images(pairs):
    with pytest.raises(ValueError, match="needs at least 2 images with ground truth.*got 1"):
        split_by_image(pairs[:1])
    with pytest.raises(ValueError, match="val_fraction must be between 0.05 and 0.9; got 1"):
        split_by_image(pairs, val_fraction=1.0)
    two = split_by_image(pairs[:2], val_fraction=0.9)  # always one left to train on
    assert len(two.train) == len(two.val) == 1


def test_a_split_whose_validation_or_training_images_hold_no_cell_is_refused(pairs):
    empty = TrainingPair("blank", "b", pairs[0].image, np.zeros_like(pairs[0].labels))
    with pytest.raises(ValueError, match=r"the validation images \(blank\) hold no labelled cell"):
        Split((pairs[0].name,), ("blank",), "image").apply([pairs[0], empty])
    with pytest.raises(ValueError, match=r"the training images \(blank\) hold no labelled cell"):
        Split(("blank",), (pairs[0].name,), "image").apply([pairs[0], empty])


def test_split_by_batch_holds_out_whole_batches(pairs):
    split = split_by_batch(pairs, ["plateB"])
    batch_of = {p.name: p.batch for p in pairs}
    assert {batch_of[n] for n in split.val} == {"plateB"} and len(split.val) == 3
    assert {batch_of[n] for n in split.train} == {"plateA", "plateC"} and len(split.train) == 6
    folds = leave_one_batch_out(pairs)
    assert [f.val_batches for f in folds] == [("plateA",), ("plateB",), ("plateC",)]
    assert all(not set(f.train) & set(f.val) for f in folds)
    with pytest.raises(ValueError, match="no images in batch 'plateZ'; batches with ground truth: plateA, plateB"):
        split_by_batch(pairs, ["plateZ"])
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        split_by_batch(pairs, ["plateA", "plateB", "plateC"])
    with pytest.raises(ValueError, match="at least 2 batches; got 1"):
        leave_one_batch_out([p for p in pairs if p.batch == "plateA"])


def test_augmentation_moves_labels_with_the_image_and_is_seeded():
    pair = _square_pair()
    shapes = set()
    no_optics = Augmentation(blur=0.0, glow=0.0, noise=0.0)
    for seed in range(40):
        image, labels = augment(pair.image, pair.labels, np.random.default_rng(seed), no_optics)
        assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
        # Gain, gamma, offset and gradient never blur the square's edge: bright exactly where labelled.
        np.testing.assert_array_equal(image[:, :, 0] > 0.5, labels == 7)
        assert (labels == 7).sum() == 10 * 22
        shapes.add(labels.tobytes() + bytes(labels.shape))
        # Optics on, the same draw moves the labels the same way; the same seed gives the same result.
        blurred, same_labels = augment(pair.image, pair.labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(same_labels, labels)
        assert blurred.dtype == np.float32 and 0.0 <= blurred.min() and blurred.max() <= 1.0
        again = augment(pair.image, pair.labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(again[0], blurred)
        np.testing.assert_array_equal(again[1], labels)
    assert len(shapes) == 8  # every flip and 90-degree turn of the rectangle appears


def test_optics_blur_the_edge_add_a_glow_and_noise():
    pair = _square_pair()
    none = Augmentation.none()
    sharp, _ = augment(pair.image, pair.labels, np.random.default_rng(0), none)
    outside = (slice(16, 19), slice(8, 30))  # 1-3 px below the rectangle: dark in the sharp image
    assert sharp[outside].max() == 0.0

    def strongest(**optics):
        """Of 20 draws, the one that changes the image most (each strength is drawn up to its maximum)."""
        aug = Augmentation(flips=False, rotations=False, gain=(1.0, 1.0), gamma=(1.0, 1.0), offset=0.0, gradient=0.0,
                           **optics)
        return max((augment(pair.image, pair.labels, np.random.default_rng(s), aug)[0] for s in range(20)),
                   key=lambda im: float(np.abs(im - sharp).sum()))

    blurred = strongest(blur=1.5, glow=0.0, noise=0.0)
    assert blurred[outside].max() > 0.05 and blurred[10, 19, 0] > 0.9  # light spills past the edge; the middle stays
    glowing = strongest(blur=0.0, glow=0.6, noise=0.0)
    far = (slice(22, 26), slice(8, 30))  # 7-10 px away: only the wide glow reaches it
    assert glowing[far].min() > 0.005 and blurred[far].max() < 1e-3
    assert glowing[10, 19, 0] < 1.0  # the glow is scaled back, so the object dims a little relative to it
    noisy = strongest(blur=0.0, glow=0.0, noise=0.1)
    dark, bright = noisy[25:, 35:, 0], noisy[6:14, 10:28, 0]
    assert 0.005 < dark.std() < bright.std()  # shot noise: more where there is more signal


def test_augmentation_changes_intensity_as_configured():
    pair = _square_pair()
    image, labels = augment(pair.image, pair.labels, np.random.default_rng(0), Augmentation.none())
    np.testing.assert_array_equal(image, pair.image)
    np.testing.assert_array_equal(labels, pair.labels)
    background = [augment(pair.image, pair.labels, np.random.default_rng(s),
                          Augmentation(flips=False, rotations=False))[0][20:, 35:, 0] for s in range(10)]
    assert max(b.max() for b in background) > 0.02  # offsets and gradients lift the dark background
    assert max(b.max() - b.min() for b in background) > 0.0  # and a gradient makes it uneven


def test_tiles_have_the_requested_size_and_small_images_are_padded():
    pair = _square_pair(40, 56)
    tile, labels = random_tile(pair.image, pair.labels, 64, np.random.default_rng(0))
    assert tile.shape == (64, 64, 1) and labels.shape == (64, 64)
    assert (labels == 7).sum() == 220 and not labels[40:].any() and not labels[:, 56:].any()
    np.testing.assert_array_equal(tile[40:, :, 0], 0.0)  # the median of a mostly dark image
    padded, none = pad_to(pair.image, 30, 30)
    assert padded is pair.image and none is None
    sampler = TileSampler([pair], 32, seed=1)
    x, y = sampler.batch(5)
    assert x.shape == (5, 32, 32, 1) and y.shape == (5, 32, 32) and y.dtype == np.int32
    x2, y2 = TileSampler([pair], 32, seed=1).batch(5)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_data_hash_follows_pixels_and_labels(pairs):
    h = pairs_hash(pairs)
    assert pairs_hash(list(reversed(pairs))) == h
    changed = TrainingPair(pairs[0].name, pairs[0].batch, pairs[0].image, pairs[0].labels * 0)
    assert pairs_hash([changed, *pairs[1:]]) != h
