"""`python -m core`: one line per image, one line per bad file, non-zero exit on problems."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
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

    from core.io.export import write_dataset

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

    from core.evaluation.matching import match_over_thresholds
    from core.io.export import write_dataset

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

    from core.segmentation.recipe import Recipe

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


# ---------------------------------------------------------------------------------------------
# Every argument checked before any work; progress a log can read


def _refuse(monkeypatch, targets: tuple[str, ...]) -> list[str]:
    """Each of ``targets`` ("module.function") fails the test when called; their names, as
    called, are in the list returned."""
    import importlib

    calls: list[str] = []

    def refuse(what: str):
        def fail(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} ran before every argument was checked")
        return fail

    import pkgutil
    import sys

    import core
    import models

    # Every module of ours first: one imported during the test would bind the refusing function by
    # name (``from models.registry import load_model``) and keep it after the test, failing others.
    for package in (core, models):
        for info in pkgutil.iter_modules(package.__path__):
            if info.name != "__main__":
                importlib.import_module(f"{package.__name__}.{info.name}")
    for target in targets:
        module, name = target.rsplit(".", 1)
        real = getattr(importlib.import_module(module), name)
        for loaded in [m for m in list(sys.modules.values()) if getattr(m, name, None) is real]:
            monkeypatch.setattr(loaded, name, refuse(name))  # also where it was imported by name
    return calls


MODEL_WORK = ("models.registry.load_model", "models.runner.run_model")


@pytest.fixture
def no_work(monkeypatch):
    """Reading images (embed, explain, train), loading a model or segmenting fails the test."""
    return _refuse(monkeypatch, ("core.io.load.load_paths", "core.io.load.load_images_and_masks", *MODEL_WORK))


@pytest.fixture
def no_model(monkeypatch):
    """Images may be read; loading a model or segmenting fails the test."""
    return _refuse(monkeypatch, MODEL_WORK)


@pytest.fixture
def on_disk(tmp_path, example_images):
    """Two example fields with their masks and batches.csv, and a plain file where a folder is wanted."""
    from core.io.export import write_dataset

    write_dataset(example_images[:2], tmp_path / "data")
    (tmp_path / "a_file").write_text("x")
    return tmp_path


def _main(*args: str, capsys) -> tuple[int, str, str]:
    from workflows.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_k_0_is_refused_in_one_line_before_any_image_is_segmented(on_disk, no_work, capsys):
    """Defect: `embed --k 0` segmented every image, then refused."""
    data, out = str(on_disk / "data"), str(on_disk / "out")
    code, stdout, stderr = _main("embed", data, "--out", out, "--k", "0", capsys=capsys)
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("error: k must be between 2 and 50; got 0"), stderr
    assert no_work == [] and stdout == "" and not (on_disk / "out").exists()
    # the spies do catch the work: the same command with a valid k reaches the segmenter
    with pytest.raises(AssertionError, match="ran before every argument was checked"):
        _main("embed", data, "--out", out, "--k", "3", capsys=capsys)
    assert no_work == ["load_paths"]


@pytest.mark.parametrize(("args", "message"), [
    (("embed", "{data}", "--k", "0"), "k must be between 2 and 50; got 0"),
    (("embed", "{data}", "--perplexity", "1"), "perplexity must be between 2 and 200; got 1"),
    (("embed", "{data}", "--iterations", "10"), "iterations must be between 250 and 5000; got 10"),
    (("embed", "{data}", "--map", "umap", "--n-neighbors", "1"), "n_neighbors must be between 2 and 200; got 1"),
    (("embed", "{data}", "--map", "umap", "--min-dist", "2"), "min_dist must be between 0 and 1; got 2"),
    (("embed", "{data}", "--clusters", "hdbscan", "--min-cluster-size", "2"),
     "min_cluster_size must be between 5 and 1000; got 2"),
    (("embed", "{data}", "--control", "ctrl"), "--control ctrl scales each batch by those cells, which only "
                                               "--correct standardize does"),
    (("embed", "{data}", "--features", "classical"), "--features classical does not give features; choose one of "
                                                      "morphology, autoencoder"),
    (("embed", "{data}", "--features", "nope"), "unknown model 'nope'"),
    (("embed", "{data}", "--model", "morphology"), "--model morphology does not segment"),
    (("embed", "{data}", "--model", "nope"), "unknown model 'nope'"),
    (("embed", "{data}", "--crop-size", "2"), "crop size must be at least 4; got 2"),
    (("embed", "{data}", "--batch-from", "regex:(?P<batch"), "--batch-from regex:(?P<batch: invalid pattern"),
    (("embed", "{data}", "--batch-from", "regex:plate"), "named group called batch"),
    (("embed", "{data}", "--batch-from", "csv:{tmp}/none.csv"), "--batch-from csv:{tmp}/none.csv: no such file"),
    (("embed", "{data}", "--batch-from", "plates"), "--batch-from must be folder, regex:PATTERN or csv:FILE"),
    (("embed", "{data}", "--device", "cuda:99"), "device 'cuda:99' is not available here"),
    (("embed", "{data}", "{tmp}/missing"), "{tmp}/missing: no such file or folder"),
    (("explain", "{data}", "--target", "batch", "--layer", "block9"), "--layer block9: the classifier has no such "
                                                                       "layer; CAM layers: block1, block2, block3"),
    (("explain", "{data}", "--target", "batch", "--crop-size", "30"), "crop size must be a multiple of 4"),
    (("explain", "{data}", "--target", "cluster", "--k", "1"), "k must be between 2 and 50; got 1"),
    (("explain", "{data}", "--target", "batch", "--epochs", "0"), "epochs must be between"),
    (("explain", "{data}", "--target", "batch", "--model", "gt", "--batch-from", "csv:{tmp}/a_file"),
     "--batch-from csv:{tmp}/a_file: "),
])
def test_embed_and_explain_check_every_argument_before_any_work(args, message, on_disk, no_work, capsys):
    fill = {"data": on_disk / "data", "tmp": on_disk}
    code, _, stderr = _main(*(a.format(**fill) for a in args), "--out", str(on_disk / "out"), capsys=capsys)
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert message.format(**fill) in stderr
    assert no_work == [] and not (on_disk / "out").exists()


def test_out_that_is_a_file_is_refused_before_any_work(on_disk, no_work, capsys):
    for command in (("embed", str(on_disk / "data")), ("explain", str(on_disk / "data"), "--target", "batch")):
        code, _, stderr = _main(*command, "--out", str(on_disk / "a_file" / "sub"), capsys=capsys)
        assert code == 1 and stderr == f"error: --out {on_disk / 'a_file' / 'sub'}: {on_disk / 'a_file'} is a file, " \
                                      "not a folder\n"
    assert no_work == []


@pytest.mark.parametrize(("target", "message"), [
    ("batch", "--target batch: the target has a single class ('plateA')"),
    ("condition", "--target condition: the target has a single class ('control')"),
])
def test_explain_refuses_a_target_the_images_cannot_teach_before_segmenting_them(target, message, on_disk, no_model,
                                                                                   capsys):
    """Two fields of plate A, both control: nothing to tell apart, said before the segmenter runs
    (it used to fail after segmenting every image)."""
    code, _, stderr = _main("explain", str(on_disk / "data"), "--target", target, "--out", str(on_disk / "out"),
                            capsys=capsys)
    assert code == 1 and stderr.splitlines()[-1].startswith(f"error: {message}"), stderr
    assert stderr.count("error: ") == 1 and no_model == [] and not (on_disk / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("train", "--model", "unet", "--images", "{data}", "--out", "{tmp}/x.unet.pt", "--val-split", "1.5"),
     "val_fraction must be between 0.05 and 0.9; got 1.5"),
    (("train", "--model", "unet", "--images", "{data}", "--out", "{tmp}/x.unet.pt", "--device", "cuda:99"),
     "device 'cuda:99' is not available here"),
    (("train", "--model", "unet", "--images", "{data}", "--out", "{tmp}/x.unet.pt", "--batch-from", "regex:x"),
     "named group called batch"),
    (("segment", "{image}", "-o", "{tmp}/no/such/l.tif"), "-o {tmp}/no/such/l.tif: there is no folder {tmp}/no/such"),
    (("segment", "{image}", "-o", "{tmp}/l.tif", "--tile", "100"), "tile must be one of 512, 768, 1024"),
    (("compare", "{image}", "--models", "classical", "--out", "{tmp}/a_file"), "{tmp}/a_file is a file, not a folder"),
    (("compare", "{image}", "--models", "classical", "--out", "{tmp}/c", "--tile", "64"), "tile must be one of"),
    (("compare", "{image}", "--models", ",", "--out", "{tmp}/c"), "--models names no model"),
    (("preprocess", "{image}", "-o", "{tmp}/no/such/p.tif"), "-o {tmp}/no/such/p.tif: there is no folder"),
    (("example", "--out", "{tmp}/a_file/x"), "{tmp}/a_file is a file, not a folder"),
    (("example", "--out", "{tmp}/c", "--size", "0"), "size must be between 64 and 4096; got 0"),
    (("example", "--out", "{tmp}/c", "--fields", "0"), "fields must be between 1 and 100; got 0"),
])
def test_train_segment_compare_and_the_rest_check_every_argument_before_any_work(args, message, on_disk, no_work, capsys):
    fill = {"data": on_disk / "data", "tmp": on_disk, "image": on_disk / "data" / "images" / "plateA_field1.tif"}
    code, _, stderr = _main(*(a.format(**fill) for a in args), capsys=capsys)
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert message.format(**fill) in stderr
    assert no_work == [] and not (on_disk / "x.unet.pt").exists() and not (on_disk / "c").exists()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_to_a_log_is_whole_lines_at_most_every_few_seconds():
    """Defect: a training log was thousands of carriage-return updates on one line."""
    import io

    from workflows.cli import LOG_INTERVAL_S, ProgressPrinter

    stream, clock = io.StringIO(), _Clock()
    printer = ProgressPrinter("training", stream=stream, clock=clock)
    for step in range(1001):  # 1,001 updates over 20 s
        clock.now = step * 0.02
        printer(step / 1000, f"step {step}")
    printer.finish()
    text = stream.getvalue()
    assert LOG_INTERVAL_S == 5.0 and "\r" not in text and text.endswith("\n")
    # at 0, 5, 10, 15 and 20 s; finish() has nothing held back (the last update was written)
    assert text.splitlines() == [f"training: {share:4.0%} step {step}" for share, step in
                                 ((0, 0), (0.25, 250), (0.5, 500), (0.75, 750), (1, 1000))]
    stream, clock = io.StringIO(), _Clock()
    printer = ProgressPrinter("cnn", stream=stream, clock=clock)
    for step in range(10):  # 10 updates in 1 s: the first at once, the latest when it ends
        clock.now = step * 0.1
        printer(step / 9, f"chunk {step}")
    printer.finish()
    assert stream.getvalue() == "cnn:   0% chunk 0\ncnn: 100% chunk 9\n"


def test_progress_on_a_terminal_redraws_one_line_and_clears_it():
    import io

    from workflows.cli import ProgressPrinter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    printer = ProgressPrinter("tsne", stream=stream, width=11)
    for step in range(3):
        printer(step / 2, f"iteration {step}")
    printer.finish()
    text = stream.getvalue()
    assert text.count("\r") == 5 and "\n" not in text  # three redraws, then the line blanked
    assert text.split("\r")[2].startswith("tsne: |██████████          |  50% iteration 1")
    assert text.split("\r")[3].rstrip() == "tsne: |████████████████████| 100% iteration 2"
    assert text.endswith("\r" + " " * 45 + "\r")


def test_embed_takes_every_map_setting_the_page_has():
    """The UMAP and HDBSCAN settings had no options: `embed` could not make the page's UMAP map."""
    from models.cellmap import MapSettings
    from workflows.cli.parser import build_parser
    from workflows.cli_options import settings_from_args

    args = build_parser().parse_args(["embed", "x.tif", "--out", "o", "--map", "umap", "--n-neighbors", "7",
                                      "--min-dist", "0.3", "--clusters", "hdbscan", "--min-cluster-size", "40"])
    got = settings_from_args(MapSettings, args)
    assert (got.method, got.n_neighbors, got.min_dist, got.clusters, got.min_cluster_size) == ("umap", 7, 0.3,
                                                                                              "hdbscan", 40)
