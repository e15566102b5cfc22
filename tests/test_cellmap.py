"""The Cell map end to end: models/cellmap.py (cells -> features -> map -> metrics), the embedders in
the registry, the `embed` command, and the page through AppTest."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, open_page

from core.io.example import make_example_dataset
from core.io.export import write_dataset
from models.cellmap import (
    MapSettings,
    cell_set,
    cells_frame,
    embedders,
    features_of,
    make_map,
    map_title,
    metrics_json,
    verdict_line,
)


@pytest.fixture(scope="module")
def small():
    """3 plates x 4 fields of 256 px (about 20 cells each), the ground truth as segmentation."""
    images = make_example_dataset(size=256, fields_per_plate=4)
    return images, cell_set(images, {img.name: img.gt for img in images}, size=32)


def test_every_feature_extractor_is_an_embedder_in_the_registry():
    assert embedders()[0] == "morphology" and {"autoencoder", "resnet18-imagenet"} <= set(embedders())
    with pytest.raises(ValueError, match="does not give features"):
        features_of(None, "classical", {})


def test_morphology_map_clusters_and_metrics_line_up_with_the_cells(small):
    images, cells = small
    emb = features_of(cells, "morphology", {})
    assert emb.features.shape == (len(cells), len(emb.names)) and "area" in emb.names
    cell_map = make_map(cells, emb, MapSettings(method="pca", k=4))
    assert cell_map.coords.shape == (len(cells), 2) and set(np.unique(cell_map.clusters)) == {0, 1, 2, 3}
    assert cell_map.report["n_cells"] == len(cells) and cell_map.report["n_batches"] == 3
    frame = cells_frame(cells, emb, cell_map)
    assert list(frame.columns[:3]) == ["cell_id", "image", "image_index"]
    assert {"x", "y", "centroid_x", "centroid_y", "cluster", "f_area"} <= set(frame.columns)
    np.testing.assert_array_equal(frame[["x", "y"]].to_numpy(), cell_map.coords)
    assert (frame.groupby("image").size().to_dict()
            == {img.name: img.n_cells_gt for img in images})  # every annotated cell, once
    metrics = metrics_json(cell_map, emb, cells)
    assert {"silhouette", "ilisi", "kbet", "classifier_accuracy", "chance", "verdict"} <= set(metrics)
    json.dumps(metrics, default=float)


def test_a_correction_is_measured_before_and_after(small):
    _, cells = small
    emb = features_of(cells, "morphology", {})
    corrected = make_map(cells, emb, MapSettings(method="pca", correction="standardize", control="control"))
    assert corrected.coords_before is not None and corrected.report_before is not None
    assert corrected.comparison["batch_chance"] == pytest.approx(1 / 3)
    # per-batch standardisation makes each batch's features mean 0: batches can no longer be told apart
    # from their averages, so the classifier's batch accuracy falls
    assert corrected.report["classifier_accuracy"] < corrected.report_before["classifier_accuracy"]
    with pytest.raises(ValueError, match="must be one of"):
        MapSettings(correction="combat")


def test_the_autoencoder_trains_on_the_crops_and_gives_its_bottleneck(small):
    import torch

    torch.set_num_threads(1)
    _, cells = small
    emb = features_of(cells, "autoencoder", {"epochs": 2, "bottleneck": 8, "max_train_cells": 200, "batch_size": 64})
    assert emb.features.shape == (len(cells), 8) and np.isfinite(emb.features).all()
    assert len(emb.extra["loss_curve"]) == 2 and emb.extra["train_cells"] == 200
    assert emb.extra["reconstructions"].shape == emb.extra["examples"].shape == (8, 32, 32, 3)
    with pytest.raises(ValueError, match="has no setting 'epoch'"):
        features_of(cells, "autoencoder", {"epoch": 2})


def test_the_cnn_offline_says_which_file_to_place_where(small, tmp_path, monkeypatch):
    from models.weights import WeightsUnavailable

    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="resnet18-f37072fd.pth"):
        features_of(small[1], "resnet18-imagenet", {})


def _run_embed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", "embed", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_embed_command_finds_a_planted_batch_difference_and_none_where_batches_share_a_plate(tmp_path):
    """The example's plates differ in background, illumination and exposure: a batch effect. Fields
    of one plate split into two "batches" differ in nothing shared by a whole batch: none."""
    images = make_example_dataset(size=256, fields_per_plate=6)
    for plate in ("plateA", "plateB", "plateC"):  # one folder per plate: --batch-from folder
        write_dataset([img.with_(batch="unassigned") for img in images if img.batch == plate], tmp_path / "plates" / plate)
    out = tmp_path / "out"
    r = _run_embed(str(tmp_path / "plates"), "--out", str(out), "--batch-from", "folder", "--model", "gt",
                   "--map", "pca")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "batch_effect.json").read_text())
    assert metrics["verdict"] == "strong", metrics["reason"]
    assert metrics["classifier_accuracy"] > metrics["chance"] + 0.3
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells.batch) == {"plateA", "plateB", "plateC"}
    assert {"image", "batch", "label", "x", "y", "cluster", "cellscope", "provenance_id"} <= set(cells.columns)
    assert set(cells.condition) == {"control", "treated"}  # each plate folder's batches.csv counted
    pd.testing.assert_frame_equal(pd.read_parquet(out / "cells.parquet"), cells, check_dtype=False)
    assert (out / "map.png").read_bytes()[:4] == b"\x89PNG" and "cdn.plot.ly/plotly-" not in (out / "map.html").read_text()

    plate = [img for img in make_example_dataset(size=256, fields_per_plate=8) if img.batch == "plateA"]
    write_dataset(plate, tmp_path / "one")
    split = tmp_path / "split.csv"
    with split.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "batch", "condition"])
        for k, img in enumerate(plate):
            w.writerow([f"{img.name}.tif", "odd" if k % 2 else "even", img.condition])
    r = _run_embed(str(tmp_path / "one"), "--out", str(tmp_path / "out2"), "--batch-from", f"csv:{split}",
                   "--model", "gt", "--map", "pca")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "out2" / "batch_effect.json").read_text())
    assert metrics["verdict"] == "no", metrics["reason"]


def test_embed_command_on_three_plates_of_two_images_cannot_tell(tmp_path):
    """The issue's run: plates A, B, C of two example images each read "no" ("no more than shuffled
    batch labels reach", kBET 11%); the permutation test cannot reach significance there."""
    images = make_example_dataset(size=256, fields_per_plate=2)
    for plate in ("plateA", "plateB", "plateC"):
        write_dataset([img.with_(batch="unassigned") for img in images if img.batch == plate],
                      tmp_path / "plates" / plate[-1])
    r = _run_embed(str(tmp_path / "plates"), "--out", str(tmp_path / "out"), "--batch-from", "folder", "--model", "gt",
                   "--map", "pca")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("batch effect: "))
    assert line.startswith("batch effect: undetermined — Cannot tell whether the batches differ: too few images to "
                           "test: 3 batches of 2 images each can be split into only 15 distinct groupings")
    assert "3 batches need at least 3 images each" in line and "No batch effect" not in line
    metrics = json.loads((tmp_path / "out" / "batch_effect.json").read_text())
    assert metrics["verdict"] == "undetermined" and metrics["n_batches"] == 3
    assert metrics["evidence"]["parts"]["their surroundings"]["n_features"] == 12


def test_embed_command_fails_in_one_line(tmp_path):
    r = _run_embed(str(tmp_path / "nothing"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r.stderr


def test_cell_map_page_shows_the_map_views_and_a_correction():
    at = open_page("pages/cellmap.py")
    charts = at.get("plotly_chart")
    assert charts and not at.exception
    assert any("918 cells from 12 images · morphology features" in c.value for c in at.caption)
    # selecting many cells is a visible switch beside the map (not a tool in Plotly's hover toolbar)
    assert json.loads(charts[0].proto.spec)["layout"]["dragmode"] == "zoom"  # a click selects one cell
    at.button_group(key="cm.drag").set_value("lasso").run()
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["dragmode"] == "lasso"
    assert any("Drag a lasso or a box around cells" in c.value for c in at.caption)
    at.session_state["cm.view"] = "Batch effects"
    at.run()
    assert any("batch effect" in e.value.lower() for e in at.error) and not at.exception  # strong on the example
    metrics = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert list(metrics.columns) == ["metric", "features", "2-D map"]
    assert metrics["features"][0] == "strong" and metrics["2-D map"][0] == "–"  # the verdict row, as the reason says
    assert "batch classifier, their surroundings only" in set(metrics["metric"])
    at.selectbox(key="cm.correction").set_value("harmony").run()
    metrics = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    # Every column says whether it is before or after the correction, the 2-D map's too.
    assert list(metrics.columns) == ["metric", "features, before correction", "features, after Harmony",
                                     "2-D map, after Harmony"] and not at.exception
    assert len(at.get("plotly_chart")) == 4  # before / after, by batch and by condition
    # After Harmony: one message says the verdict and the neighbourhoods together; no green "No batch
    # effect" beside a yellow note that cells cluster by batch.
    verdict = metrics["features, after Harmony"][0]
    assert verdict == "no" and not at.success
    assert any(i.value.startswith("No batch effect: ") and "Locally the batches are not well mixed" in i.value
               for i in at.info)
    assert not any("kBET" in w.value for w in at.warning)
    at.session_state["cm.view"] = "Export"
    at.run()
    assert {b.label for b in at.get("download_button")} == {"Cells (CSV)", "Cells (Parquet)", "Map (HTML)",
                                                              "Map (PNG)", "Metrics (JSON)"}


def test_cell_map_page_waits_for_the_button_for_the_autoencoder():
    at = open_page("pages/cellmap.py")
    at.selectbox(key="cm.features").set_value("autoencoder").run()
    assert any("Press **Compute the map**" in i.value for i in at.info)
    at.number_input(key="cm.feat.epochs").set_value(1).run()
    at.number_input(key="cm.feat.max_train_cells").set_value(300).run()
    at.button(key="cm.run").click().run()
    assert not at.exception and at.get("plotly_chart")
    at.session_state["cm.view"] = "Features"
    at.run()
    assert any("autoencoder" in m.value for m in at.markdown) and at.get("image")


def test_too_few_cells_for_tsne_still_give_a_map_and_say_why():
    images = make_example_dataset(size=128, fields_per_plate=1)[:1]
    cells = cell_set(images, {img.name: img.gt for img in images})
    assert len(cells) < 91
    cell_map = make_map(cells, features_of(cells, "morphology", {}), MapSettings(method="tsne", k=2))
    assert cell_map.coords.shape == (len(cells), 2)
    assert any("too few for t-SNE" in n and "this map is PCA" in n for n in cell_map.notes)
    assert cell_map.method == "pca" and map_title(cells, features_of(cells, "morphology", {}), cell_map).startswith(
        f"PCA of morphology features · {len(cells)} cells, 1 images")


def test_saved_figures_name_each_cell_open_offline_and_say_what_they_show(small):
    from core.figures.cellmap import map_figure, map_html, map_png

    _, cells = small
    emb = features_of(cells, "morphology", {})
    cell_map = make_map(cells, emb, MapSettings(method="pca", correction="standardize"))
    frame = cells_frame(cells, None, cell_map, with_features=False)
    fig = map_figure(frame, "batch")
    first = fig.data[0]
    assert "%{text}" in first.hovertemplate and list(first.text[:1]) == [frame["cell_id"][first.customdata[0]]]
    title = map_title(cells, emb, cell_map)
    assert title == f"PCA of morphology features · {len(cells)} cells, 12 images · after per-batch standardisation"
    html = map_html(frame, "condition", title=title)
    assert "cdn.plot.ly/plotly-" not in html and len(html) > 3_000_000 and json.dumps(title) in html  # plotly.js inlined: works offline
    png = map_png(cell_map.coords, frame["batch"].to_numpy(), title=title, legend="batch")
    assert png[:4] == b"\x89PNG"
    # the verdict travels with the picture, for a slide or a report
    line = verdict_line(cell_map)
    r = cell_map.report
    assert line == (f"Batch effect after correction: {r['verdict']}: batches told apart at "
                    f"{r['classifier_accuracy']:.2f} balanced accuracy on unseen images, chance {r['chance']:.2f}")
    assert line in map_html(frame, "batch", title=title, subtitle=line)
    assert map_png(cell_map.coords, frame["batch"].to_numpy(), title=title, subtitle=line) != png


def test_flat_reconstructions_are_called_undertrained_and_good_ones_are_not():
    from models.autoencoder import reconstruction_note

    rng = np.random.default_rng(0)
    crops = rng.random((8, 16, 16, 3)).astype(np.float32)
    flat = np.broadcast_to(crops.mean(axis=(1, 2, 3), keepdims=True), crops.shape)
    noise = rng.random(crops.shape).astype(np.float32)  # grey noise: "detail", but nothing of the cells
    assert "no better than each crop's mean brightness after 2 epochs" in reconstruction_note(crops, flat, 2)
    assert "Raise Epochs" in reconstruction_note(crops, noise, 2)
    assert reconstruction_note(crops, crops * 0.9 + 0.05, 2) == ""


def test_a_reload_of_the_cell_map_link_restores_it_without_an_error():
    """Defect: the workspace restored the button's and the chart's keys, which Streamlit refuses."""
    from streamlit.testing.v1 import AppTest

    at = open_page("pages/cellmap.py")
    at.selectbox(key="cm.clusters").set_value("hdbscan").run()
    assert at.get("plotly_chart") and not at.exception
    back = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    back.query_params["ws"] = at.query_params["ws"]
    back.run()
    back.switch_page("pages/cellmap.py")
    back.run()
    assert not back.exception, back.exception
    assert back.selectbox(key="cm.clusters").value == "hdbscan" and back.get("plotly_chart")


def test_the_resnet_download_button_fetches_its_weights_and_the_map_uses_them(tmp_path, monkeypatch):
    """Offline, the Cell map names the file and offers one Download button; the button fetches it
    through the real download path (a file:// URL standing in for download.pytorch.org), checks
    its checksum, and the CNN features then make the map."""
    import hashlib

    import torch
    import torchvision

    from models import registry
    from models.registry import ModelInfo
    from models.weights import WeightsSpec

    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    info = registry.get_model_info("resnet18-imagenet")
    remote = tmp_path / "remote" / info.weights.filename
    remote.parent.mkdir()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), remote)
    spec = WeightsSpec(info.weights.name, info.weights.filename, remote.as_uri(),
                       hashlib.sha256(remote.read_bytes()).hexdigest(), remote.stat().st_size, "BSD-3-Clause",
                       "ImageNet", "test")
    monkeypatch.setitem(registry._REGISTRY, info.name, ModelInfo(
        info.name, info.family, info.description, spec, info.box_only, info.builder, info.settings, task=info.task,
        slow_on_cpu=info.slow_on_cpu))
    at = open_page("pages/cellmap.py")
    at.selectbox(key="cm.features").set_value("resnet18-imagenet").run()
    assert any(info.weights.filename in w.value and str(tmp_path / "weights") in w.value for w in at.warning)
    assert not at.get("plotly_chart")
    at.button(key=f"cm.feat.dl.{info.weights.filename}").click().run()
    assert (tmp_path / "weights" / info.weights.filename).read_bytes() == remote.read_bytes()
    assert not any(info.weights.filename in w.value for w in at.warning)
    at.button(key="cm.run").click().run()
    assert not at.exception and at.get("plotly_chart")
    assert any("resnet18-imagenet features (512 per cell)" in c.value for c in at.caption)


def _reloaded(at):
    """The same workspace link opened again (F5), on the Cell map."""
    from streamlit.testing.v1 import AppTest

    back = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    back.query_params["ws"] = at.query_params["ws"]
    back.run()
    back.switch_page("pages/cellmap.py")
    back.run()
    return back


def test_a_reload_after_a_download_click_and_an_autoencoder_map_come_back(tmp_path, monkeypatch):
    """Defects: F5 after a (failed) Download click crashed (the button's key was restored), and an
    autoencoder map asked for the button again after F5."""
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    at = open_page("pages/cellmap.py")
    at.selectbox(key="cm.features").set_value("resnet18-imagenet").run()
    at.button(key="cm.feat.dl.resnet18-f37072fd.pth").click().run()
    assert not at.exception
    back = _reloaded(at)
    assert not back.exception, back.exception
    assert any("resnet18-f37072fd.pth" in w.value for w in back.warning)

    at.selectbox(key="cm.features").set_value("autoencoder").run()
    at.number_input(key="cm.feat.epochs").set_value(1).run()
    at.number_input(key="cm.feat.max_train_cells").set_value(200).run()
    at.button(key="cm.run").click().run()
    assert at.get("plotly_chart")
    back = _reloaded(at)
    assert not back.exception and back.get("plotly_chart")
    assert not any("Press **Compute the map**" in i.value for i in back.info)


def test_changing_the_crop_keeps_morphology_features_and_their_map(monkeypatch):
    """Morphology is measured on the whole cell: a new crop size re-crops (the gallery) but neither
    measures, nor computes features, nor maps again."""
    import models.cellmap as cellmap

    at = open_page("pages/cellmap.py")
    calls = {"features": 0, "map": 0}
    for name in ("features_of", "make_map"):
        real = getattr(cellmap, name)
        monkeypatch.setattr(f"workflows.cellmap.{name}", lambda *a, _real=real, _n=name, **k: (
            calls.__setitem__("features" if _n == "features_of" else "map", calls[
                "features" if _n == "features_of" else "map"] + 1), _real(*a, **k))[1])
    at.selectbox(key="cm.crop_size").set_value(64).run()
    at.toggle(key="cm.mask").set_value(True).run()
    assert not at.exception and at.get("plotly_chart")
    assert calls == {"features": 0, "map": 0}


def test_hdbscan_finding_nothing_says_so(small):
    _, cells = small
    emb = features_of(cells, "morphology", {})
    cell_map = make_map(cells, emb, MapSettings(method="pca", clusters="hdbscan", min_cluster_size=len(cells)))
    assert (cell_map.clusters == -1).all()
    assert any("HDBSCAN found no cluster" in n for n in cell_map.notes)


def test_cell_map_page_with_three_plates_of_two_images_and_the_rest_unassigned():
    """The issue's walk: plates A, B, C of two example images each, the other six without a batch, no
    conditions. Defects: a green "No batch effect" beside a "Few images per batch" note, the images
    without a batch counted as a batch "unassigned", and "Only one condition ('')"."""
    at = open_page("pages/cellmap.py")
    ds = at.session_state["dataset"]
    for img in list(ds):
        plate, field = img.name.split("_field")
        batch = plate[-1] if int(field) <= 2 else "unassigned"
        ds.put(img.with_(batch=batch, condition=""))
    at.session_state["cm.view"] = "Batch effects"
    at.run()
    assert not at.exception and not at.success
    reason = next(i.value for i in at.info if i.value.startswith("Cannot tell whether the batches differ"))
    assert "3 batches of 2 images each can be split into only 15 distinct groupings" in reason
    warnings = [w.value for w in at.warning]
    assert warnings[0].startswith("6 images without a batch (") and "left out of the batch metrics" in warnings[0]
    assert "No cell has a condition: there is no treatment difference to keep." in warnings
    assert not any("Only one condition" in w or "Few images per batch" in w for w in warnings)
    metrics = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert metrics["features"][0] == "undetermined"


def dsb_fields(*, background: tuple[str, ...] = (), batches: str = "AB", layout: tuple[int, int] = (4, 2),
               offset: float = 15.0, noise: float = 8.0) -> list:
    """Real nuclei (tests/data/dsb2018_nuclei.tif, 183 annotated) cut into fields, dealt to
    ``batches`` in turn; the fields of the batches in ``background`` get a brighter, noisier
    background (``offset`` + normal noise of SD ``noise``) outside the annotated nuclei, whose pixels
    stay as they were: a batch effect in the background alone, as a dirtier plate or a lamp makes."""
    import tifffile

    from core.data.images import CellImage, default_channels

    pixels = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei.tif").astype(np.float64)
    mask = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_mask.tif").astype(np.int32)
    rows, cols = layout
    h, w = pixels.shape[0] // rows, pixels.shape[1] // cols
    rng = np.random.default_rng(0)
    fields = []
    for k in range(rows * cols):
        window = np.s_[(k // cols) * h:(k // cols + 1) * h, (k % cols) * w:(k % cols + 1) * w]
        px, labels = pixels[window].copy(), mask[window]
        batch = batches[k % len(batches)]
        if batch in background:
            px += np.where(labels == 0, offset + rng.normal(0.0, noise, px.shape), 0.0)
        px = np.clip(np.round(px), 0, 65535).astype(np.uint16)[:, :, None]
        fields.append(CellImage(f"field{k + 1}", px, default_channels(1), batch=batch, gt=labels))
    return fields


def _dsb_report(fields):
    cells = cell_set(fields, {img.name: img.gt for img in fields})
    return make_map(cells, features_of(cells, "morphology", {}), MapSettings(method="pca")).report


def test_a_background_only_batch_effect_on_real_nuclei_is_found_and_placed_in_the_surroundings():
    """Defect: the default (morphology) features measured only the cells, so a plate whose background
    alone is brighter and noisier read "no batch effect" while a crop classifier found it at 0.89."""
    report = _dsb_report(dsb_fields(background=("B",)))
    assert report["verdict"] == "strong" and report["classifier_accuracy"] > 0.9
    parts = report["evidence"]["parts"]
    # The cells' own measurements -- the features before this fix -- see nothing; the surroundings all.
    assert parts["the cells themselves"]["significant"] is False
    assert parts["the cells themselves"]["balanced_accuracy"] < 0.65
    assert parts["their surroundings"]["significant"] and parts["their surroundings"]["balanced_accuracy"] > 0.9
    assert ("It rests on 10 morphology features per cell: 6 of the cells themselves (shape, intensity), 4 of their "
            "surroundings (a ring around each cell, the image background).") in report["reason"]
    assert report["reason"].endswith("the difference lies in their surroundings, not in the cells themselves.")


def test_real_nuclei_with_no_batch_difference_read_no_and_two_fields_per_batch_undetermined():
    same = _dsb_report(dsb_fields())
    assert same["verdict"] == "no", same["reason"]
    assert same["reason"].startswith("No batch effect: ")
    few = _dsb_report(dsb_fields(background=("B",), batches="ABC", layout=(3, 2)))
    assert few["verdict"] == "undetermined" and few["classifier"]["partitions"] == 15
    assert "3 batches need at least 3 images each" in few["reason"]


def test_a_rotating_recipe_is_said_on_the_cell_map():
    from core.segmentation.recipe import DEFAULT_RECIPE

    at = open_page("pages/cellmap.py")
    ds = at.session_state["dataset"]
    ds.remove([n for n in ds.names if n not in ("plateA_field1", "plateA_field3", "plateB_field1", "plateB_field3")])
    at.session_state["recipe"] = DEFAULT_RECIPE.with_step("rotate", enabled=True, angle=30)
    at.run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("The classical recipe works on each image rotated 30°; its cells are mapped back")
               for c in at.caption)


def test_images_of_two_channel_layouts_are_refused_with_the_layouts_named_on_cell_map_and_explain():
    from core.data.dataset import Dataset
    from core.data.images import CellImage, default_channels

    ds = Dataset()
    ds.add([CellImage("one", np.zeros((64, 64, 1), np.uint16), default_channels(1)),
            CellImage("two", np.zeros((64, 64, 2), np.uint16), default_channels(2))])
    for page in ("pages/cellmap.py", "pages/explain.py"):
        at = open_page(page)
        at.session_state["dataset"] = ds
        at.session_state["dataset_origin"] = "user"
        at.run()
        errors = [e.value for e in at.error]
        assert any("The images have different channels (" in e and "e.g. one" in e and "e.g. two" in e
                   for e in errors), (page, errors)
        assert not at.exception
