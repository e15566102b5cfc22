"""`python -m core`: one line per image, one line per bad file, non-zero exit on problems."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import ROOT, blobs, png_bytes, tiff_bytes


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_info_good_files(tmp_path):
    (tmp_path / "a.tif").write_bytes(tiff_bytes(blobs()))
    (tmp_path / "b.png").write_bytes(png_bytes(np.dstack([blobs(dtype=np.uint8, seed=s) for s in range(3)])))
    r = run_cli("info", str(tmp_path / "a.tif"), str(tmp_path / "b.png"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("a\t64x64\tuint16\t1 channels")
    assert lines[1].startswith("b\t64x64\tuint8\t3 channels")


def test_info_bad_files_one_line_each_and_nonzero_exit(tmp_path):
    (tmp_path / "good.tif").write_bytes(tiff_bytes(blobs()))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    (tmp_path / "empty.tif").write_bytes(b"")
    r = run_cli("info", str(tmp_path / "good.tif"), str(tmp_path / "broken.png"), str(tmp_path / "empty.tif"))
    assert r.returncode == 1
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("good\t")
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in r.stderr
    assert errors[0].startswith("error: broken.png: ") and errors[1].startswith("error: empty.tif: file is empty")


def test_info_missing_path(tmp_path):
    r = run_cli("info", str(tmp_path / "nope.tif"))
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'nope.tif'}: no such file or folder"


def test_example_writes_a_dataset_info_reads_back(tmp_path):
    r = run_cli("example", "--out", str(tmp_path), "--size", "128", "--fields", "1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "plateA_field1.tif", "plateB_field1.tif", "plateC_field1.tif"
    ]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == sorted(p.name for p in (tmp_path / "images").iterdir())
    assert (tmp_path / "batches.csv").read_text().splitlines()[0] == "filename,batch,condition"
    info = run_cli("info", str(tmp_path))
    assert info.returncode == 0, info.stderr
    lines = info.stdout.strip().splitlines()
    assert len(lines) == 3 and all("gt=" in ln for ln in lines)
    assert "batch=plateB" in lines[1]


def test_segment_classical_writes_a_label_tiff_of_the_image_size(tmp_path, example_images):
    import tifffile

    from core.export import write_dataset

    write_dataset(example_images[:1], tmp_path)
    image = tmp_path / "images" / "plateA_field1.tif"
    out = tmp_path / "labels.tif"
    r = run_cli("segment", "--model", "classical", str(image), "-o", str(out))
    assert r.returncode == 0, r.stderr
    labels = tifffile.imread(out)
    assert labels.shape == (512, 512) and labels.max() > 50 and labels.min() == 0
    assert f"{labels.max()} cells" in r.stdout


def test_preprocess_and_recipe_round_trip(tmp_path):
    image = tmp_path / "a.tif"
    image.write_bytes(tiff_bytes(blobs(80, 80)))
    recipe = tmp_path / "r.json"
    recipe.write_text(run_cli("recipe").stdout.replace('"sigma": 1.0', '"sigma": 2.0'))
    out = tmp_path / "pre.tif"
    r = run_cli("preprocess", "--recipe", str(recipe), str(image), "-o", str(out))
    assert r.returncode == 0, r.stderr
    import tifffile

    pre = tifffile.imread(out)
    assert pre.shape == (80, 80) and pre.dtype == np.float32 and 0 <= pre.min() and pre.max() <= 1


def test_segment_bad_recipe_and_unknown_model_are_one_line(tmp_path):
    image = tmp_path / "a.tif"
    image.write_bytes(tiff_bytes(blobs()))
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": {"threshold": {"method": "magic"}}}')
    r = run_cli("segment", str(image), "-o", str(tmp_path / "l.tif"), "--recipe", str(bad))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "threshold.method must be one of" in r.stderr
    r = run_cli("segment", str(image), "-o", str(tmp_path / "l.tif"), "--model", "nope")
    assert r.returncode == 1 and "unknown model 'nope'" in r.stderr


def test_models_lists_each_model_with_its_availability():
    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    lines = [ln.split("\t") for ln in r.stdout.strip().splitlines()]
    assert {"classical", "yolo11n-nuclei", "maskrcnn-coco"} <= {ln[0] for ln in lines}
    assert all(ln[3] in ("available", "unavailable") for ln in lines)


def test_compare_writes_labels_and_metrics_anyone_can_recompute(tmp_path, example_images):
    import json

    import tifffile

    from core.export import write_dataset
    from core.metrics import match_over_thresholds

    write_dataset(example_images[:1], tmp_path)
    image, gt = tmp_path / "images" / "plateA_field1.tif", tmp_path / "masks" / "plateA_field1.tif"
    out = tmp_path / "cmp"
    r = run_cli("compare", str(image), "--models", "classical,yolo11n-nuclei", "--gt", str(gt), "--out", str(out))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"classical", "yolo11n-nuclei"}
    truth = tifffile.imread(gt)
    for name, entry in metrics.items():
        labels = tifffile.imread(out / f"{name}.tif")
        assert labels.shape == truth.shape
        # an independent computation from the written files: same numbers
        per_t = match_over_thresholds(truth, labels)
        assert entry["count"] == len(np.unique(labels[labels > 0]))
        assert entry["f1"] == per_t[0].f1 and entry["pq"] == per_t[0].pq
        assert entry["ap"] == np.mean([m.ap for m in per_t])
    assert metrics["classical"]["f1"] > 0.9
    assert "box_iou_matching" in metrics["yolo11n-nuclei"] and "box_iou_matching" not in metrics["classical"]


def test_compare_rejects_unknown_models_and_wrong_gt(tmp_path):
    image = tmp_path / "a.tif"
    image.write_bytes(tiff_bytes(blobs()))
    r = run_cli("compare", str(image), "--models", "classical,nope", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "unknown model 'nope'" in r.stderr and r.stderr.count("\n") == 1
    gt = tmp_path / "gt.tif"
    gt.write_bytes(tiff_bytes(np.zeros((10, 10), np.uint16)))
    r = run_cli("compare", str(image), "--models", "classical", "--gt", str(gt), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "ground truth is 10x10" in r.stderr


def test_compare_writes_provenance_naming_each_models_settings(tmp_path):
    import json
    from importlib import metadata

    from core.recipe import Recipe

    image = tmp_path / "a.tif"
    image.write_bytes(tiff_bytes(blobs(96, 96)))
    recipe = tmp_path / "r.json"
    recipe.write_text(run_cli("recipe").stdout.replace('"sigma": 1.0', '"sigma": 2.0'))
    out = tmp_path / "cmp"
    r = run_cli("compare", str(image), "--models", "classical,yolo11n-nuclei", "--recipe", str(recipe),
                "--device", "cpu", "--tile", "512", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "provenance.json" in r.stdout
    prov = json.loads((out / "provenance.json").read_text())
    classical, yolo = prov["models"]["classical"], prov["models"]["yolo11n-nuclei"]
    assert classical["settings"] == {"recipe": Recipe.from_json(recipe.read_text()).to_dict(), "tile": 512, "overlap": 128}
    assert classical["settings"]["recipe"]["steps"]["denoise"]["sigma"] == 2.0 and classical["weights"] is None
    assert prov["recipe"] == classical["settings"]["recipe"]
    # the adapter's own defaults, written out: what predict() ran with
    assert yolo["settings"] == {"conf": 0.25, "iou": 0.5, "tile": 512, "overlap": 128}
    assert yolo["weights"]["file"] == "ND_v11n.pt" and yolo["family"] == "yolo"
    assert prov["device"] == "cpu" and prov["extra"] == {"image": str(image), "ground truth": None}
    assert prov["packages"]["numpy"] == metadata.version("numpy")
    assert set(json.loads((out / "metrics.json").read_text())) == {"classical", "yolo11n-nuclei"}
