"""The example dataset: deterministic, realistic enough, GT consistent, batches really differ."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from core.io.example import PLATES, make_example_dataset
from core.io.export import dataset_zip, write_dataset
from core.io.load import load_files, load_paths


def test_layout(example_images):
    assert len(example_images) == 12
    assert {img.batch for img in example_images} == {p.name for p in PLATES}
    assert {img.condition for img in example_images} == {"control", "treated"}
    for img in example_images:
        assert img.shape == (512, 512, 3) and img.pixels.dtype == np.uint16
        assert [c.role for c in img.channels] == ["nucleus", "cytoplasm", "protein"]
        assert 40 <= img.n_cells_gt <= 120


def test_deterministic_and_seeded(example_images):
    again = make_example_dataset(size=128, fields_per_plate=1)
    assert [i.hash for i in again] == [i.hash for i in make_example_dataset(size=128, fields_per_plate=1)]
    other = make_example_dataset(seed=8, size=128, fields_per_plate=1)
    assert [i.hash for i in again] != [i.hash for i in other]
    assert len({img.hash for img in example_images}) == 12


def test_ground_truth_matches_the_nucleus_channel(example_images):
    for img in example_images:
        gt, nuc = img.gt, img.pixels[..., 0].astype(np.float64)
        labels = np.unique(gt)[1:]
        assert labels.tolist() == list(range(1, len(labels) + 1))
        # every nucleus is one connected object
        for lab, sl in zip(labels, ndi.find_objects(gt), strict=True):
            assert ndi.label(gt[sl] == lab)[1] == 1
        # and brighter than the background around it
        inside = ndi.mean(nuc, gt, labels)
        background = np.median(nuc[ndi.binary_dilation(gt > 0, iterations=25) == 0])
        assert np.mean(inside > background * 1.3) > 0.9
        # touching nuclei exist: some pairs of labels share a border
        shifted = gt[:, 1:] != gt[:, :-1]
        touching = shifted & (gt[:, 1:] > 0) & (gt[:, :-1] > 0)
        assert touching.sum() > 0


def test_plates_differ_in_background_but_conditions_differ_in_biology(example_images):
    def background(img):
        return np.median(img.pixels[..., 0][img.gt == 0])

    bg = {p.name: np.mean([background(i) for i in example_images if i.batch == p.name]) for p in PLATES}
    assert max(bg.values()) - min(bg.values()) > 30  # ADU: a batch effect you can measure

    def nuclear_protein_fraction(img):
        protein = img.pixels[..., 2].astype(float) - np.median(img.pixels[..., 2])
        return protein[img.gt > 0].sum() / protein[protein > 0].sum()

    ctrl = np.mean([nuclear_protein_fraction(i) for i in example_images if i.condition == "control"])
    treated = np.mean([nuclear_protein_fraction(i) for i in example_images if i.condition == "treated"])
    assert treated > ctrl + 0.1


def test_written_files_load_back_identically(tmp_path, example_images):
    images = example_images[:3]
    write_dataset(images, tmp_path)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i.name}.tif" for i in images]
    report = load_paths([tmp_path])
    assert not report.problems
    back = {i.name: i for i in report.images}
    for img in images:
        got = back[img.name]
        assert got.hash == img.hash
        np.testing.assert_array_equal(got.gt, img.gt)
        assert (got.batch, got.condition) == (img.batch, img.condition)
        assert got.channels == img.channels


def test_dataset_zip_uploads_back_unchanged(example_images):
    images = example_images[:2]
    report = load_files([("dataset.zip", dataset_zip(images))])
    assert not report.problems
    assert [(i.name, i.hash, i.batch, i.condition, i.n_cells_gt) for i in report.images] == [
        (i.name, i.hash, i.batch, i.condition, i.n_cells_gt) for i in images
    ]
