"""The cell classifier: learns planted differences, is scored by image (never an image on both
sides of a split), reports chance, curves and a confusion matrix, is seeded, and refuses targets
it cannot score with a message that says why."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from core.cells.cell_set import CellSet
from core.data.images import CellImage, default_channels
from models.classifier import (
    CLASSIFIER_SETTINGS,
    ClassifierTrainer,
    check_target,
    cv_splits,
    load_classifier,
    predict_proba,
    save_classifier,
    train_classifier,
)
from models.registry import get_model_info, list_models, load_model

FAST = {"epochs": 4, "batch_size": 32, "lr": 3e-3, "folds": 2, "seed": 0}


def planted_crops(classes: int = 2, images_per_class: int = 4, cells_per_image: int = 12, size: int = 16,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops (n, size, size, 1) in [0, 1]: a disc whose brightness says the class, on noise;
    every image its own small brightness offset (field-to-field variation)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (size / 4) ** 2
    crops, target, groups = [], [], []
    for c in range(classes):
        for i in range(images_per_class):
            offset = rng.normal(0, 0.02)
            for _ in range(cells_per_image):
                img = 0.15 + offset + rng.normal(0, 0.05, (size, size)) + disc * (0.3 + 0.25 * c)
                crops.append(np.clip(img, 0, 1)[:, :, None])
                target.append(f"class{c}")
                groups.append(f"img{c}_{i}")
    return np.asarray(crops, np.float32), np.asarray(target), np.asarray(groups)


def planted_cells(kind: str, *, images_per_class: int = 6, grid: int = 4, side: int = 128, size: int = 32,
                  seed: int = 0) -> CellSet:
    """Two batches "A" and "B" of ``images_per_class`` one-channel images of ``grid`` x ``grid`` round
    cells (radius 6-10 px). ``kind="background"``: only the background level differs between the
    batches (0.15 vs 0.30), the cells are alike (0.55); ``kind="inside"``: only the cells differ
    (0.55 vs 0.80), the background is alike (0.15). Pixel noise SD 0.04."""
    if kind not in ("background", "inside"):
        raise ValueError(kind)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    step = side // grid
    pairs = []
    for c, batch in enumerate(("A", "B")):
        for i in range(images_per_class):
            labels = np.zeros((side, side), np.int32)
            for n in range(grid * grid):
                cy = (n // grid) * step + step / 2 + rng.uniform(-3, 3)
                cx = (n % grid) * step + step / 2 + rng.uniform(-3, 3)
                r = rng.uniform(6, 10)
                labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = n + 1
            background = 0.15 + (0.15 * c if kind == "background" else 0.0)
            inside = 0.55 + (0.25 * c if kind == "inside" else 0.0)
            image = np.where(labels > 0, inside, background) + rng.normal(0, 0.04, labels.shape)
            pixels = (np.clip(image, 0, 1) * 1000).astype(np.uint16)[:, :, None]
            pairs.append((CellImage(f"{batch}{i}", pixels, default_channels(1), batch=batch), labels))
    return CellSet.build(pairs, size=size)


@pytest.fixture(scope="module")
def three_classes():
    crops, target, groups = planted_crops(classes=3, images_per_class=3)
    return crops, target, groups, train_classifier(crops, target, groups, **(FAST | {"folds": 3, "epochs": 6}))


def test_a_planted_difference_is_learnt_and_scored_on_unseen_images(three_classes):
    crops, target, groups, trained = three_classes
    n = len(crops)
    assert trained.classes == ("class0", "class1", "class2") and trained.folds == 3
    assert trained.balanced_accuracy >= 0.9 and trained.chance == pytest.approx(1 / 3)
    assert trained.skill == pytest.approx((trained.balanced_accuracy - 1 / 3) / (2 / 3))
    assert np.array_equal(trained.confusion, confusion_matrix(trained.y, trained.oof_pred))
    assert trained.confusion.sum() == n and np.array_equal(trained.correct, trained.oof_pred == trained.y)
    assert np.allclose(trained.oof_proba.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(trained.oof_confidence, trained.oof_proba.max(axis=1))
    assert trained.train_loss.shape == trained.val_accuracy.shape == (3, 6)
    assert len(trained.final_loss) == 6 and trained.final_loss[-1] < trained.final_loss[0]
    assert trained.val_accuracy[:, -1].mean() >= 0.9
    assert np.array_equal(trained.rows, np.arange(n))
    # The final model (trained on every cell) tells the classes apart too.
    assert (predict_proba(trained.model, crops).argmax(1) == trained.y).mean() >= 0.9
    summary = json.loads(json.dumps(trained.summary()))
    assert summary["chance"] == pytest.approx(1 / 3) and "1/3" in summary["chance_note"]
    assert summary["confusion"] == trained.confusion.tolist() and summary["n_images"] == 9


def test_cross_validation_is_by_image_and_every_cell_is_held_out_once(three_classes):
    _, target, groups, trained = three_classes
    cv = check_target(target, groups)
    splits = cv_splits(cv.y, cv.groups, folds=5, seed=0)
    assert len(splits) == 3  # 5 folds asked, but a class has only 3 images
    tested = np.concatenate([test for _, test in splits])
    assert np.array_equal(np.sort(tested), np.arange(len(target)))
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(target)
    # The result records the fold each cell was held out in: one per image, the same as cv_splits'.
    for image in np.unique(groups):
        assert len(np.unique(trained.fold[groups == image])) == 1
    for f, (_, test) in enumerate(cv_splits(cv.y, cv.groups, folds=3, seed=0)):
        assert np.all(trained.fold[test] == f)


def test_the_same_seed_gives_the_same_scores_and_another_seed_other_ones():
    crops, target, groups = planted_crops(images_per_class=3, cells_per_image=8)
    a, b = (train_classifier(crops, target, groups, **FAST) for _ in range(2))
    assert np.array_equal(a.oof_proba, b.oof_proba) and np.array_equal(a.train_loss, b.train_loss)
    c = train_classifier(crops, target, groups, **(FAST | {"seed": 1}))
    assert not np.array_equal(a.oof_proba, c.oof_proba)


@pytest.mark.parametrize(("classes", "chance"), [(2, 0.5), (4, 0.25)])
def test_chance_is_one_over_the_number_of_classes(classes, chance):
    crops, target, groups = planted_crops(classes=classes, images_per_class=2, cells_per_image=4, size=8)
    trained = train_classifier(crops, target, groups, **(FAST | {"epochs": 1}))
    assert trained.chance == chance and trained.confusion.shape == (classes, classes)


def test_progress_reaches_one_with_an_eta_and_hears_every_epoch():
    crops, target, groups = planted_crops(images_per_class=2, cells_per_image=8)
    heard: list[tuple[float, str]] = []
    train_classifier(crops, target, groups, **FAST, progress=lambda f, m: heard.append((f, m)))
    fractions = [f for f, _ in heard]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sum("held-out balanced accuracy" in m for _, m in heard) == 2 * FAST["epochs"]
    assert sum(m.startswith("final model: loss") for _, m in heard) == 1
    assert any("left" in m for _, m in heard) and heard[-1][1].startswith("done: balanced accuracy")


@pytest.mark.parametrize(("target", "groups", "message"), [
    (["a"] * 8, ["i1"] * 4 + ["i2"] * 4, "single class .'a'."),
    (["a"] * 4 + ["b"] * 4, ["i1", "i1", "i2", "i2", "i3", "i3", "i3", "i3"], "'b' has cells in 1 image.*at least 2"),
    (["a"] * 4 + [None] * 4, ["i1", "i2"] * 4, "target is missing for 4 cells"),
    (["a", "b"] * 3, ["i1", "i2"] * 4, "target has 6 labels for 8 cells"),
    ([str(v) for v in range(8)] * 8, [f"i{v % 16}" for v in range(64)], None),
])
def test_targets_that_cannot_be_scored_by_image_are_refused_with_the_reason(target, groups, message):
    n = len(groups)
    crops = np.zeros((n, 8, 8, 1), np.float32)
    if message is None:  # 8 classes are fine; 51 are not
        check_target(target, groups)
        many = [str(v) for v in range(51)] * 2
        with pytest.raises(ValueError, match="51 distinct values.*at most 50"):
            check_target(many, [f"i{v % 4}" for v in range(102)])
        return
    with pytest.raises(ValueError, match=message):
        train_classifier(crops, target, groups, **FAST)


def test_bad_crops_and_settings_are_refused():
    crops, target, groups = planted_crops(images_per_class=2, cells_per_image=2, size=8)
    with pytest.raises(ValueError, match=r"\(n, S, S, C\)"):
        train_classifier(crops[:, :, :4], target, groups, **FAST)
    with pytest.raises(ValueError, match="multiple of 4"):
        train_classifier(np.zeros((len(target), 10, 10, 1), np.float32), target, groups, **FAST)
    with pytest.raises(ValueError, match="epochs and batch_size"):
        train_classifier(crops, target, groups, **(FAST | {"epochs": 0}))


def test_one_registration_with_its_settings_as_data_and_a_trainer_that_reads_a_cell_set():
    info = get_model_info("cell-classifier")
    assert info.task == "classify" and info in list_models("classify")
    assert info.params == ("epochs", "batch_size", "lr", "folds", "seed", "max_train_cells")
    assert info.resolve({})["folds"] == 5 and info.resolve({})["epochs"] == CLASSIFIER_SETTINGS[0].default
    with pytest.raises(ValueError, match="no setting 'fold'"):
        info.resolve({"fold": 3})
    with pytest.raises(ValueError, match="folds must be between 2"):
        info.resolve({"folds": 1})
    loaded = load_model("cell-classifier")
    cells = planted_cells("inside", images_per_class=4, size=16)  # 128 cells
    settings = info.resolve(FAST | {"max_train_cells": 100})
    trained = loaded.locked("classify", cells, cells.table["batch"].to_numpy(), **settings)
    assert len(trained.rows) == 100 and np.all(np.diff(trained.rows) > 0)
    assert list(trained.y) == [trained.classes.index(b) for b in cells.table["batch"].to_numpy()[trained.rows]]
    with pytest.raises(ValueError, match="target has 3 labels"):
        ClassifierTrainer(None).classify(cells, ["A", "B", "A"], **settings)


def test_a_saved_classifier_loads_with_weights_only_and_predicts_the_same(three_classes, tmp_path):
    crops, _, _, trained = three_classes
    path = save_classifier(trained, tmp_path / "clf.pt")
    model, classes, summary = load_classifier(path)
    assert classes == trained.classes and summary["balanced_accuracy"] == trained.balanced_accuracy
    assert np.allclose(predict_proba(model, crops), predict_proba(trained.model, crops), atol=1e-6)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a CellScope classifier checkpoint"):
        load_classifier(tmp_path / "junk.pt")
