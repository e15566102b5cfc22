"""The CNN lesson's image steps: the HPA-style image, each checkpoint on the lesson's own images
(computed with the functions the actions call) and on a planted wrong result, and the Lesson
page running each step in AppTest with its checkpoint passed."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import ROOT, open_page

from core.data.images import COLORS, HPA_CHANNELS, nucleus_plane
from core.io.hpa_example import make_hpa_example
from core.io.roles import HPA_ORDER
from core.lesson.all_checks import run_checkpoint
from core.lesson.image_checks import (
    cells_reading,
    channels_reading,
    foreground_iou,
    merge_weights,
    threshold_views,
    thresholds_reading,
    yellow_split,
)
from core.lesson.spec import load_lesson
from core.segmentation.recipe import Recipe
from models.registry import load_model
from workflows.lesson import lesson_images

LESSON = ROOT / "lessons" / "cnn-microscopy.yaml"
STEPS = ("images", "opencv", "find-cells")


@pytest.fixture(scope="module")
def images():
    return lesson_images("lesson")


@pytest.fixture(scope="module")
def hpa():
    return make_hpa_example()


@pytest.fixture(scope="module")
def params():
    """Each of these steps' checkpoint parameters, as the lesson file gives them."""
    return {s.id: s.params for s in load_lesson(LESSON).steps if s.id in STEPS}


# ---------------------------------------------------------------------------------------
# The HPA-style image


def test_the_hpa_image_has_the_atlas_four_channels_in_its_order_roles_and_colours(hpa):
    assert tuple(ch.name for ch in hpa.channels) == HPA_ORDER == ("red", "green", "blue", "yellow")
    assert hpa.channels == HPA_CHANNELS
    assert [(ch.role, ch.color) for ch in hpa.channels] == [("cytoplasm", "red"), ("protein", "green"),
                                                            ("nucleus", "blue"), ("other", "yellow")]
    assert hpa.pixels.shape == (512, 512, 4) and hpa.pixels.dtype == np.uint16
    assert (hpa.pixels.max(axis=(0, 1)) > 255).all()  # every channel needs more than 8 bits
    assert hpa.n_cells_gt == 16 and make_hpa_example().hash == hpa.hash  # the same image every time
    assert make_hpa_example(seed=4).hash != hpa.hash


def test_the_hpa_channels_lie_where_their_organelles_do(hpa):
    import cv2

    nuclei = hpa.gt > 0
    red, green, blue, yellow = (hpa.pixels[:, :, i].astype(float) for i in range(4))
    assert blue[nuclei].mean() > 5 * blue[~nuclei].mean()  # the nucleus stain
    assert green[nuclei].mean() > 3 * green[~nuclei].mean()  # the protein: in the nucleoli
    distance = cv2.distanceTransform((~nuclei).astype(np.uint8), cv2.DIST_L2, 5)
    near, far = (distance > 0) & (distance < 15), distance > 60
    assert yellow[near].mean() > 3 * yellow[far].mean()  # the ER: perinuclear
    brightest_red = red > np.percentile(red, 98)
    assert (brightest_red & ~nuclei).sum() > 0.95 * brightest_red.sum()  # the microtubules: around the nuclei
    with pytest.raises(ValueError, match="at least 128 px"):
        make_hpa_example(size=64)


# ---------------------------------------------------------------------------------------
# images: sixteen_bit


def test_the_merge_weights_are_read_off_the_merge_and_split_yellow_in_half(images, hpa):
    assert merge_weights(images[0]) == pytest.approx(np.array([COLORS[c.color] for c in images[0].channels]),
                                                     abs=0.01)
    split = yellow_split(hpa)
    assert split["yellow_to_red"] == pytest.approx(0.5, abs=0.01) == split["yellow_to_green"]
    assert np.isnan(yellow_split(images[0])["yellow_to_red"])  # no yellow channel in the lesson's plates


def test_sixteen_bit_passes_on_every_lesson_field(images, hpa, params):
    for image in images:
        result = channels_reading(image, hpa)
        check = run_checkpoint("sixteen_bit", result, params["images"])
        assert check.passed, (image.name, check)
        assert 2000 < result["max_value"] < 65536 and result["bits"] in (12, 13)
        assert result["stored_bits"] == 16 and 0.05 < result["share_above_255"] < 0.7  # plate 2: its medium lifts the background
    assert "needs 12 bits" in run_checkpoint("sixteen_bit", channels_reading(images[0], hpa)).text


def test_sixteen_bit_fails_on_an_eight_bit_image(images, hpa):
    photo = images[0].with_(pixels=np.clip(images[0].pixels // 16, 0, 255).astype(np.uint8))
    check = run_checkpoint("sixteen_bit", channels_reading(photo, hpa))
    assert check.passed is False and check.value <= 255 and "fits in 8 bits" in check.text


def test_sixteen_bit_fails_when_the_merge_does_not_split_yellow(images, hpa, monkeypatch):
    monkeypatch.setitem(COLORS, "yellow", (1.0, 1.0, 0.0))  # a merge that paints yellow at full red and green
    result = channels_reading(images[0], hpa)
    assert result["yellow_to_red"] == pytest.approx(1.0)
    check = run_checkpoint("sixteen_bit", result)
    assert check.passed is False and "yellow went 1.00 to red and 1.00 to green" in check.text


def test_sixteen_bit_waits_for_a_result():
    assert run_checkpoint("sixteen_bit", None).passed is None
    assert run_checkpoint("sixteen_bit", {"max_value": 300}).passed is None  # the bits are missing


# ---------------------------------------------------------------------------------------
# opencv: threshold_vs_truth


def test_foreground_iou():
    truth = np.zeros((10, 10), np.int32)
    truth[2:6, 2:6] = 3
    assert foreground_iou(truth > 0, truth) == 1.0
    assert foreground_iou(np.zeros((10, 10), bool), truth) == 0.0
    half = np.zeros((10, 10), bool)
    half[2:4, 2:6] = True
    assert foreground_iou(half, truth) == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        foreground_iou(half, truth[:5])


def _thresholds(image, level=0.5, sigma=2.0):
    return thresholds_reading(threshold_views(nucleus_plane(image), image.gt, level=level, sigma=sigma), sigma=sigma)


def test_threshold_vs_truth_passes_on_every_lesson_field_at_the_default_settings(images, params):
    for image in images:
        result = _thresholds(image)
        check = run_checkpoint("threshold_vs_truth", result, params["opencv"])
        assert check.passed, (image.name, check)
        assert result["iou_otsu_gaussian"] > result["iou_otsu"] > result["iou_global"]  # blur helps; mid-grey is too high
        assert 0.15 < result["level_otsu"] < 0.4 and result["level_global"] == 0.5
    assert run_checkpoint("threshold_vs_truth", _thresholds(images[0]), params["opencv"]).text.startswith(
        "Gaussian blur + Otsu (level 0.24) overlaps the true nuclei with IoU 0.77")


def test_threshold_vs_truth_fails_on_a_threshold_that_floods_everything(images, params):
    flooded = foreground_iou(np.ones(images[0].gt.shape, bool), images[0].gt)
    result = {**_thresholds(images[0]), "iou_otsu": flooded, "iou_otsu_gaussian": flooded}
    check = run_checkpoint("threshold_vs_truth", result, params["opencv"])
    assert flooded < 0.3 and check.passed is False and check.value == pytest.approx(flooded)
    assert "change the blur" in check.text


def test_threshold_vs_truth_fails_when_a_level_tuned_by_eye_beats_otsu(images, params):
    result = _thresholds(images[0], level=0.1)  # picked against the truth: above 0.9 IoU on this image
    assert result["iou_global"] > result["iou_otsu_gaussian"]
    check = run_checkpoint("threshold_vs_truth", result, params["opencv"])
    assert check.passed is False and "tuned it by eye" in check.text and "0.10" in check.text


# ---------------------------------------------------------------------------------------
# find-cells: cells_found


@pytest.fixture(scope="module")
def classical():
    return load_model("classical")


def test_cells_found_passes_on_every_lesson_field_with_the_classical_recipe(images, classical, params):
    for image in images:
        result = cells_reading(image.gt, classical.predict(image, recipe=Recipe()).labels)
        check = run_checkpoint("cells_found", result, params["find-cells"])
        assert check.passed, (image.name, check)
        assert abs(result["n_found"] - result["n_truth"]) <= 3 and result["f1"] > 0.9


def test_cells_found_fails_on_a_segmentation_with_half_the_cells(images, params):
    truth = images[0].gt
    half = np.where(truth % 2 == 1, truth, 0)
    result = cells_reading(truth, half)
    assert result["n_found"] == pytest.approx(result["n_truth"] / 2, abs=1)
    check = run_checkpoint("cells_found", result, params["find-cells"])
    assert check.passed is False and check.value == pytest.approx(2 / 3, abs=0.02) and "too few" in check.text


def test_cells_found_fails_when_the_minimum_size_drops_real_nuclei(images, classical, params):
    recipe = Recipe().with_step("filters", min_area=400)
    check = run_checkpoint("cells_found", cells_reading(images[0].gt, classical.predict(images[0], recipe=recipe)
                                                        .labels), params["find-cells"])
    assert check.passed is False and "too few" in check.text


# ---------------------------------------------------------------------------------------
# The Lesson page on each step


@pytest.fixture
def lesson_page(tmp_path, monkeypatch):
    """The Lesson page on these three steps of the lesson file (as it is written; the other steps'
    actions belong to other modules), at ``step``."""
    import components.lesson_view as lesson_view

    data = yaml.safe_load(LESSON.read_text(encoding="utf-8"))
    data["steps"] = [s for s in data["steps"] if s["id"] in STEPS]
    path = tmp_path / "cnn-microscopy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    monkeypatch.setattr(lesson_view, "lesson_files", lambda: [path])

    def open_step(step: str):
        at = open_page("pages/lesson.py", lesson="cnn-microscopy", step=step)
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
        return at

    return open_step


def _passed(at) -> list[str]:
    return [s.value for s in at.success if s.value.startswith("**Checkpoint passed.**")]


def test_the_page_passes_the_images_step_and_hides_yellow(lesson_page):
    at = lesson_page("images")
    (text,) = _passed(at)
    assert "needs 12 bits" in text and "yellow 0.50 to red and 0.50 to green" in text
    assert at.session_state["lesson.progress"]["cnn-microscopy"]["checks"]["images"]["passed"] is True
    assert len(at.get("plotly_chart")) == 1 and len(at.get("image")) == 2  # the histogram; two merges
    merged = [img.url for el in at.get("image") for img in el.proto.imgs]
    at.checkbox(key="ls.cnn-microscopy.images.hpa_show_hpa_example_3").uncheck().run()  # yellow off
    assert not at.exception and _passed(at)
    after = [img.url for el in at.get("image") for img in el.proto.imgs]
    assert after[0] == merged[0] and after[1] != merged[1]  # the HPA merge without its ER


def test_the_page_passes_the_opencv_step_and_explains_a_level_tuned_by_eye(lesson_page):
    at = lesson_page("opencv")
    (text,) = _passed(at)
    assert "Gaussian blur + Otsu (level 0.24) overlaps the true nuclei with IoU 0.77" in text
    assert [m.value for m in at.metric] == ["IoU 0.32", "IoU 0.72", "IoU 0.77"]
    at.slider(key="ls.cnn-microscopy.opencv.level").set_value(0.1).run()
    assert not at.exception and not _passed(at)
    assert any("tuned it by eye" in w.value for w in at.warning)
    at.slider(key="ls.cnn-microscopy.opencv.canny").set_value((0.3, 0.3)).run()  # low = high: said, not raised
    assert not at.exception and any("low threshold below the high one" in i.value for i in at.info)


def test_the_page_passes_the_find_cells_step_and_fails_with_a_large_minimum_size(lesson_page):
    at = lesson_page("find-cells")
    (text,) = _passed(at)
    assert text.startswith("**Checkpoint passed.** Found 64 nuclei where the truth has 64: F1 1.00")
    assert [m.value for m in at.metric] == ["64", "64", "1.00"]
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 10
    at.toggle(key="ls.cnn-microscopy.find-cells.auto_min").set_value(False).run()
    at.slider(key="ls.cnn-microscopy.find-cells.min_area").set_value(400).run()
    assert not at.exception and not _passed(at)
    assert any("too few" in w.value for w in at.warning)
