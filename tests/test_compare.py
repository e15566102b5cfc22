"""models/runner.py, models/tiling.py, core/evaluation/score_tables.py, core/io/export.py: running, tiling, scoring, agreeing, exporting."""

from __future__ import annotations

import io
import itertools
import json
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from core.data.images import CellImage, default_channels
from core.data.instances import Instances, boxes_from_labels
from core.evaluation.matching import match_instances
from core.evaluation.score_tables import agreement_matrix, metrics_entry, objects_table, summary_table
from core.io.export import LabelledImage, coco_instances, results_zip
from models.runner import run_model
from models.tiling import core_bounds, n_tiles, predict_tiled, tile_starts


class ComponentsModel:
    """A perfect segmenter for separated blobs: connected components of pixels > 0."""

    name, device = "components", "cpu"

    def __init__(self, box_only: bool = False) -> None:
        self.box_only, self.calls = box_only, []

    def predict(self, image: CellImage, **params) -> Instances:
        self.calls.append(image.shape)
        labels, _ = ndi.label(image.pixels[:, :, 0] > 0)
        boxes = boxes_from_labels(labels)
        return Instances(labels, boxes, np.linspace(1, 0.5, len(boxes), dtype=np.float32), ("cell",), self.name,
                         self.device, 0.0, box_only=self.box_only)


def _disc_image(side: int, centres: list[tuple[int, int]], radius: int = 20) -> CellImage:
    yy, xx = np.mgrid[:side, :side]
    pixels = np.zeros((side, side, 1), np.uint16)
    for cy, cx in centres:
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2, 0] = 1000
    return CellImage("discs.tif", pixels, default_channels(1))


def test_tiles_cover_the_image_with_at_least_the_overlap():
    for length in (100, 1024, 1025, 1500, 2048, 5000):
        starts = tile_starts(length, 512, 64)
        assert starts[0] == 0 and starts[-1] + min(512, length) == length
        assert all(a + 512 - b >= 64 for a, b in itertools.pairwise(starts))
        bounds = core_bounds(starts, 512, length)
        assert bounds[0] == 0 and bounds[-1] == length and bounds == sorted(bounds)
    assert n_tiles((2048, 1000), 1024, 128) == 3
    with pytest.raises(ValueError, match="larger than the overlap"):
        tile_starts(2000, 64, 64)


@pytest.mark.parametrize("box_only", [False, True])
def test_objects_cut_by_tile_seams_come_back_whole_and_once(box_only):
    # discs on every seam and corner of a 2 x 2 tiling (tile 512, overlap 96 on a 928 px image)
    side, tile, overlap = 928, 512, 96
    seam = core_bounds(tile_starts(side, tile, overlap), tile, side)[1]
    centres = [(seam, seam), (seam, 100), (100, seam), (seam + 15, 800), (800, seam - 12), (60, 60), (850, 850)]
    image = _disc_image(side, centres)
    model = ComponentsModel(box_only)
    whole = model.predict(image)
    tiled = predict_tiled(model, image, tile=tile, overlap=overlap)
    assert tiled.tiles == 4 and len(model.calls) == 5 and tiled.box_only == box_only
    assert tiled.count == whole.count == len(centres)
    if box_only:
        np.testing.assert_allclose(np.sort(tiled.boxes, axis=0), np.sort(whole.boxes, axis=0))
    else:
        m = match_instances(whole.labels, tiled.labels, 0.99)
        assert m.f1 == 1.0 and tiled.labels.max() == len(centres)
        np.testing.assert_array_equal(boxes_from_labels(tiled.labels), tiled.boxes)
    assert not any("cut" in n for n in tiled.notes)


def test_objects_larger_than_the_overlap_are_reported():
    image = _disc_image(900, [(450, 450)], radius=120)
    tiled = predict_tiled(ComponentsModel(), image, tile=512, overlap=64)
    assert any("touch a tile edge" in n for n in tiled.notes)


def test_run_model_tiles_only_large_images_and_records_memory():
    model = ComponentsModel()
    small = run_model(model, _disc_image(300, [(150, 150)]), tile=512)
    big = run_model(model, _disc_image(700, [(150, 150), (600, 600)]), tile=512, overlap=64)
    assert small.tiles == 1 and big.tiles == 4 and big.count == 2

    class Hungry(ComponentsModel):
        def predict(self, image, **params):
            block = np.ones(120 * 2**20 // 8)  # 120 MB, touched, held while the model runs
            time.sleep(0.05)
            del block
            return super().predict(image, **params)

    hungry = run_model(Hungry(), _disc_image(300, [(150, 150)]))
    assert hungry.peak_memory_mb > 90, hungry.peak_memory_mb  # what the run added, recorded on the result


def test_real_classical_model_tiled_scores_like_untiled(example_images):
    from models.registry import load_model

    img = example_images[0]
    model = load_model("classical")
    whole = run_model(model, img)
    tiled = run_model(model, img, tile=320, overlap=64)
    assert tiled.tiles == 4
    f_whole = match_instances(img.gt, whole.labels).f1
    f_tiled = match_instances(img.gt, tiled.labels).f1
    assert f_tiled >= f_whole - 0.03 and abs(tiled.count - whole.count) <= 3


def _labels(*boxes, shape=(40, 60)):
    out = np.zeros(shape, np.int32)
    for i, (y0, x0, y1, x1) in enumerate(boxes, 1):
        out[y0:y1, x0:x1] = i
    return out


def _instances(labels, name, box_only=False):
    boxes = boxes_from_labels(labels)
    return Instances(labels, boxes, np.ones(len(boxes), np.float32), ("cell",), name, "cpu", 0.5,
                     box_only=box_only, peak_memory_mb=12.0)


def test_summary_agreement_and_curve_on_a_worked_case():
    gt = _labels((0, 0, 10, 10), (20, 20, 30, 30), (0, 40, 10, 50))
    same = _instances(gt.copy(), "same")
    half = _instances(_labels((0, 0, 10, 10)), "half")  # 1 of 3 found
    boxes = _instances(gt.copy(), "boxes", box_only=True)
    results = {"same": same, "half": half, "boxes": boxes}
    table, curve = summary_table(results, gt)
    table = table.set_index("model")
    assert table.loc["same", "f1"] == 1.0 and table.loc["same", "matched on"] == "mask IoU"
    assert table.loc["half", "recall"] == pytest.approx(1 / 3, abs=1e-4) and table.loc["half", "precision"] == 1.0
    assert table.loc["boxes", "matched on"] == "box IoU" and table.loc["boxes", "output"] == "boxes"
    assert table.loc["same", "mean area px"] == 100.0 and table.loc["same", "objects"] == 3
    agree = agreement_matrix(results)
    assert agree.loc["same", "half"] == agree.loc["half", "same"] == pytest.approx(0.5)  # 2*1 / (2*1 + 2)
    assert agree.loc["same", "boxes"] == 1.0 and np.all(np.diag(agree) == 1.0)
    assert len(curve) == 3 * 10 and curve[curve.model == "same"].f1.min() == 1.0
    assert summary_table(results, None)[1] is None and "f1" not in summary_table(results, None)[0]


def test_metrics_entry_is_recomputable_from_the_label_file():
    gt = _labels((0, 0, 10, 10), (20, 20, 30, 30))
    pred = _labels((0, 0, 10, 8), (20, 20, 30, 30), (30, 40, 38, 48))
    entry = metrics_entry(_instances(pred, "m"), gt)
    m = match_instances(gt, pred)
    assert entry["count"] == 3 and entry["f1"] == m.f1 and entry["precision"] == pytest.approx(2 / 3)
    assert set(entry) >= {"count", "runtime_s", "precision", "recall", "f1", "ap", "mean_iou", "pq"}
    boxed = metrics_entry(_instances(pred, "b", box_only=True), gt)
    assert boxed["box_iou_matching"]["detections"] == 3 and boxed["output"] == "boxes filled into labels"


def test_coco_json_has_polygons_for_masks_and_boxes_for_detectors():
    labels = _labels((0, 0, 10, 10), (20, 20, 30, 35))
    coco = coco_instances([LabelledImage("a.tif", labels, np.array([0.9, 0.8])),
                           LabelledImage("b.tif", labels, np.array([0.7]), boxes=np.array([[1, 2, 11, 22]], float))])
    assert [im["file_name"] for im in coco["images"]] == ["a.tif", "b.tif"]
    a1, a2, b1 = coco["annotations"]
    assert a1["bbox"] == [0, 0, 10, 10] and a1["area"] == 100 and a1["score"] == 0.9
    assert a2["bbox"] == [20, 20, 15, 10] and len(a2["segmentation"][0]) >= 8
    xs, ys = a2["segmentation"][0][0::2], a2["segmentation"][0][1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (20, 20, 34, 29)
    assert b1["image_id"] == 2 and b1["bbox"] == [1, 2, 10, 20] and "segmentation" not in b1
    json.dumps(coco)  # serialisable as is


def test_results_zip_holds_labels_objects_coco_and_metrics():
    gt = _labels((0, 0, 10, 10), (20, 20, 30, 30))
    image = CellImage("field 1.tif", np.zeros((40, 60, 1), np.uint16), default_channels(1), gt=gt)
    results = {("field 1.tif", "a"): _instances(gt.copy(), "a"),
               ("field 1.tif", "b"): _instances(gt.copy(), "b", box_only=True)}
    table, _ = summary_table({"a": results[("field 1.tif", "a")]}, gt)
    with zipfile.ZipFile(io.BytesIO(results_zip([image], results, table))) as zf:
        names = set(zf.namelist())
        assert names == {"labels/a/field 1.tif", "labels/b/field 1.tif", "coco/a.json", "coco/b.json",
                         "objects.csv", "metrics.csv"}
        np.testing.assert_array_equal(tifffile.imread(io.BytesIO(zf.read("labels/a/field 1.tif"))), gt)
        objects = pd.read_csv(io.BytesIO(zf.read("objects.csv")))
        assert len(objects) == 4 and set(objects.model) == {"a", "b"}
        assert objects.loc[0, "area px"] == 100 and objects.loc[0, "centroid x"] == 4.5
        assert len(json.loads(zf.read("coco/b.json"))["annotations"]) == 2


def test_objects_table_rows_follow_labels():
    labels = _labels((0, 0, 4, 4), (10, 10, 20, 14))
    t = objects_table("x", _instances(labels, "m"))
    assert list(t.label) == [1, 2] and list(t["area px"]) == [16, 40]
    assert list(t["centroid y"]) == [1.5, 14.5]


def test_peak_memory_sees_a_large_allocation():
    from models.runner import PeakMemory

    with PeakMemory("cpu") as mem:
        block = np.ones(200 * 2**20 // 8)  # 200 MB, touched
        time.sleep(0.05)
        del block
    assert mem.peak_mb > 150


def test_a_shared_model_runs_one_prediction_at_a_time():
    import threading

    from models.registry import LoadedModel, ModelInfo

    class Counting(ComponentsModel):
        def __init__(self):
            super().__init__()
            self.active = self.most = 0
            self.guard = threading.Lock()

        def predict(self, image, **params):
            with self.guard:
                self.active += 1
                self.most = max(self.most, self.active)
            time.sleep(0.02)
            try:
                return super().predict(image, **params)
            finally:
                with self.guard:
                    self.active -= 1

    inner = Counting()
    shared = LoadedModel(inner, ModelInfo("counting", "test", "test", None, False, lambda p, d: inner), shared=True)
    image = _disc_image(64, [(30, 30)])
    threads = [threading.Thread(target=shared.predict, args=(image,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(inner.calls) == 6 and inner.most == 1


def test_images_a_model_has_seen_are_marked_by_pixels_and_left_out_of_its_means(example_images):
    """A U-Net trained on 10 of the 12 example images showed a mean F1 of 0.953 over all 12 with no
    mark; the images it saw are now marked (by their pixels) and left out of its mean by default."""
    from core.evaluation.score_tables import SEEN, mean_scores, seen_label, seen_warning
    from core.training.data import SeenImages

    a, b, c = example_images[:3]
    seen = SeenImages("unet:x", training=((a.name, a.hash),), validation=((b.name, b.hash),))
    assert [seen_label(seen, img) for img in (a, b, c)] == ["training", "validation", ""]
    assert seen_label(None, a) == ""  # published weights and the classical model: nothing to mark
    impostor = a.with_(pixels=c.pixels.copy())  # another image under a training image's name
    assert seen_label(seen, impostor) == "" and seen_label(seen, c.with_(name="renamed")) == ""
    assert seen_label(seen, a.with_(name="copy of A")) == "training"  # the same pixels, renamed
    old = SeenImages.from_metadata("unet:old", {"family": "unet", "split": {"train": [a.name]}})
    assert not old.known and seen_label(old, a) == "unknown"
    assert "trained before CellScope recorded" in seen_warning("unet:old", "unknown", a.name, old)
    assert seen_warning("unet:x", "training", a.name).startswith(f"unet:x was trained on {a.name}: its scores here")
    assert seen_warning("unet:x", "", c.name) is None

    table = pd.DataFrame({"image": ["a", "b", "c", "a", "b", "c"], "model": ["unet:x"] * 3 + ["classical"] * 3,
                          "precision": [1.0, 0.9, 0.5, 0.8, 0.8, 0.8], "recall": [1.0] * 6, "f1": [1.0, 0.9, 0.5, 0.8, 0.8, 0.8],
                          "ap": [0.5] * 6, "pq": [0.5] * 6, "runtime s": [0.1] * 6,
                          SEEN: ["training", "validation", "", "", "", ""]})
    means = mean_scores(table)
    assert means.loc["unet:x", "f1"] == 0.5 and means.loc["unet:x", "images"] == 1 and means.loc["unet:x", "left out"] == 2
    assert means.loc["classical", "f1"] == 0.8 and means.loc["classical", "left out"] == 0
    everything = mean_scores(table, include_seen=True)
    assert everything.loc["unet:x", "f1"] == 0.8 and everything.loc["unet:x", "images"] == 3
    all_seen = mean_scores(table.assign(**{SEEN: ["training"] * 3 + [""] * 3}))
    assert np.isnan(all_seen.loc["unet:x", "f1"]) and all_seen.loc["unet:x", "images"] == 0
