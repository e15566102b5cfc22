"""workflows/provenance.py (core/analysis.py its text forms) and the exports that carry it: what produced a result, in every zip and CSV."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from importlib import metadata

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

import core
from core.analysis import provenance_id, provenance_json, with_provenance
from core.data.images import CellImage, default_channels
from core.data.instances import Instances, boxes_from_labels
from core.evaluation.score_tables import summary_table
from core.io.export import results_zip
from core.segmentation.recipe import DEFAULT_RECIPE
from models.registry import get_model_info
from workflows import provenance as prov_mod
from workflows.provenance import PACKAGES, provenance

RECIPE = DEFAULT_RECIPE.with_step("denoise", sigma=2.5)
SETTINGS = {
    "classical": {"recipe": RECIPE, "tile": 1024, "overlap": 128},
    "yolo11s-nuclei": {"conf": 0.3, "iou": 0.45, "tile": 1024, "overlap": 128},
}


def _prov(**changes) -> dict:
    return provenance(**{"recipe": RECIPE, "models": SETTINGS, "device": "cpu", **changes})


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_records_recipe_settings_weights_device_and_versions():
    p = _prov()
    assert p["recipe"] == RECIPE.to_dict() and p["recipe"]["steps"]["denoise"]["sigma"] == 2.5
    assert p["device"] == "cpu" and p["device description"] is None
    classical, yolo = p["models"]["classical"], p["models"]["yolo11s-nuclei"]
    assert classical == {"family": "classical", "weights": None,
                         "settings": {"recipe": RECIPE.to_dict(), "tile": 1024, "overlap": 128}}
    spec = get_model_info("yolo11s-nuclei").weights
    assert yolo["family"] == "yolo" and yolo["settings"] == {"conf": 0.3, "iou": 0.45, "tile": 1024, "overlap": 128}
    assert yolo["weights"]["file"] == spec.filename == "ND_v11s.pt"
    assert yolo["weights"]["sha256"] == spec.sha256 and yolo["weights"]["source url"] is None
    assert set(p["packages"]) == set(PACKAGES)
    for name in ("numpy", "scipy", "scikit-image", "opencv-python-headless", "torch", "torchvision",
                 "ultralytics-opencv-headless", "segment-anything", "tifffile"):
        assert p["packages"][name] == metadata.version(name)
    assert p["cellscope"]["version"] == core.__version__ == "0.4.0"
    assert p["python"] == ".".join(map(str, sys.version_info[:3]))
    created = datetime.fromisoformat(p["created"])
    assert created.tzinfo is not None and abs((datetime.now(UTC) - created).total_seconds()) < 60
    assert json.loads(provenance_json(p)) == p  # JSON as it is
    assert _prov(extra={"image": "a.tif", "shape": (3, 4)})["extra"] == {"image": "a.tif", "shape": [3, 4]}


def test_weights_with_a_download_address_name_it():
    p = provenance(models={"yolo11n-coco": {"conf": 0.25}})
    assert p["models"]["yolo11n-coco"]["weights"]["file"] == "yolo11n.pt"
    assert p["models"]["yolo11n-coco"]["weights"]["source url"] == get_model_info("yolo11n-coco").weights.url
    assert p["recipe"] is None and p["device"] is None and p["extra"] is None


def test_unknown_models_and_settings_without_json_form_are_errors():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        provenance(models={"nope": {}})
    with pytest.raises(TypeError, match="no JSON form"):
        provenance(models={"classical": {"recipe": object()}})


def test_git_commit_is_this_checkout_and_none_outside_a_clone(monkeypatch, tmp_path):
    head = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no") != ""
    assert prov_mod.git_commit() == (f"{head}-dirty" if dirty else head)
    try:
        prov_mod.git_commit.cache_clear()
        monkeypatch.setattr(prov_mod, "_ROOT", tmp_path)  # not a repository
        assert prov_mod.git_commit() is None
        prov_mod.git_commit.cache_clear()
        monkeypatch.setattr(prov_mod, "_ROOT", ROOT)
        monkeypatch.setenv("PATH", str(tmp_path))  # no git program
        assert prov_mod.git_commit() is None
    finally:
        prov_mod.git_commit.cache_clear()
    monkeypatch.undo()
    assert prov_mod.git_commit() == (f"{head}-dirty" if dirty else head)


def test_provenance_id_is_stable_and_follows_every_setting():
    a, b = _prov(), _prov()
    b["created"] = "1999-01-01T00:00:00+00:00"  # the time is not part of it
    assert provenance_id(a) == provenance_id(b)
    assert re.fullmatch(r"p[0-9a-f]{11}", provenance_id(a))
    with pytest.raises(ValueError):  # never a number to a CSV reader ("5306392e3405" was read as infinity)
        float(provenance_id(a))
    changed = {**SETTINGS, "yolo11s-nuclei": {**SETTINGS["yolo11s-nuclei"], "conf": 0.35}}
    ids = {provenance_id(a), provenance_id(_prov(models=changed)), provenance_id(_prov(device="cuda:0")),
           provenance_id(_prov(recipe=RECIPE.with_step("denoise", sigma=3.0)))}
    assert len(ids) == 4


def test_importing_and_using_it_loads_neither_torch_nor_streamlit():
    code = ("import sys\nfrom workflows.provenance import provenance\nfrom core.analysis import provenance_json\n"
            "p = provenance(models={'classical': {}, 'yolo11s-nuclei': {'conf': 0.25}, 'sam-vitb': {}}, device='cpu')\n"
            "provenance_json(p)\nprint('torch' in sys.modules, 'streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_with_provenance_adds_version_device_id_weights_and_settings():
    p = _prov()
    table = pd.DataFrame({"model": ["classical", "yolo11s-nuclei", "classical"], "objects": [3, 4, 5]})
    out = with_provenance(table, p)
    assert list(out.columns) == ["model", "objects", "cellscope", "device", "provenance_id", "weights", "settings"]
    assert list(out["objects"]) == [3, 4, 5] and "cellscope" not in table  # the input is left alone
    commit = p["cellscope"]["commit"]
    assert set(out["cellscope"]) == {f"0.4.0 (git {commit})" if commit else "0.4.0"}
    assert set(out["device"]) == {"cpu"} and set(out["provenance_id"]) == {provenance_id(p)}
    assert list(out["weights"]) == ["none", "ND_v11s.pt", "none"]
    # read back as anyone would: plain read_csv, the settings column parses as JSON
    back = pd.read_csv(io.StringIO(out.to_csv(index=False)))
    assert json.loads(back.loc[0, "settings"])["recipe"] == RECIPE.to_dict()
    assert json.loads(back.loc[1, "settings"]) == {"conf": 0.3, "iou": 0.45, "tile": 1024, "overlap": 128}


def test_with_provenance_keeps_a_devices_column_and_stamps_recipe_tables():
    p = _prov(device="cuda:0")
    ran = pd.DataFrame({"model": ["classical", "yolo11s-nuclei"], "device": ["cpu", "cuda:0"]})
    assert list(with_provenance(ran, p)["device"]) == ["cpu", "cuda:0"]  # what each row really ran on
    cells = pd.DataFrame({"label": [1, 2], "area": [10, 12]})
    stamped = with_provenance(cells, provenance(recipe=RECIPE, device="cpu"))
    assert list(stamped.columns) == ["label", "area", "cellscope", "device", "provenance_id", "settings"]
    assert json.loads(stamped.loc[1, "settings"]) == {"recipe": RECIPE.to_dict()}
    assert "settings" not in with_provenance(cells, provenance(device="cpu"))
    with pytest.raises(ValueError, match="no settings for model.*sam-vitb"):
        with_provenance(pd.DataFrame({"model": ["classical", "sam-vitb"]}), p)


def _instances(labels: np.ndarray, model: str, device: str, box_only: bool = False) -> Instances:
    boxes = boxes_from_labels(labels)
    return Instances(labels, boxes, np.ones(len(boxes), np.float32), ("cell",), model, device, 0.1, box_only=box_only)


def test_results_zip_with_provenance_holds_the_json_and_stamped_csvs():
    gt = np.zeros((40, 60), np.int32)
    gt[0:10, 0:10], gt[20:30, 20:30] = 1, 2
    image = CellImage("field 1.tif", np.zeros((40, 60, 1), np.uint16), default_channels(1), gt=gt)
    runs = {"classical": _instances(gt.copy(), "classical", "cpu"),
            "yolo11s-nuclei": _instances(gt.copy(), "yolo11s-nuclei", "cuda:0", box_only=True)}
    results = {(image.name, name): r for name, r in runs.items()}
    table, _ = summary_table(runs, gt)
    p = _prov(device="cuda:0")
    with zipfile.ZipFile(io.BytesIO(results_zip([image], results, table, provenance=p))) as zf:
        assert "provenance.json" in zf.namelist()
        assert json.loads(zf.read("provenance.json")) == p
        metrics = pd.read_csv(io.BytesIO(zf.read("metrics.csv")))
        objects = pd.read_csv(io.BytesIO(zf.read("objects.csv")))
    assert list(metrics["model"]) == ["classical", "yolo11s-nuclei"] and list(metrics["f1"]) == [1.0, 1.0]
    assert list(metrics["weights"]) == ["none", "ND_v11s.pt"]
    assert list(metrics["device"]) == ["cpu", "cuda:0"] and set(metrics["provenance_id"]) == {provenance_id(p)}
    assert json.loads(metrics.loc[1, "settings"])["conf"] == 0.3
    assert len(objects) == 4 and list(objects["device"]) == ["cpu", "cpu", "cuda:0", "cuda:0"]
    assert list(objects["weights"]) == ["none", "none", "ND_v11s.pt", "ND_v11s.pt"]
    assert set(objects["provenance_id"]) == {provenance_id(p)}
    # without provenance: the zip as before, no provenance columns
    with zipfile.ZipFile(io.BytesIO(results_zip([image], results, table))) as zf:
        assert "provenance.json" not in zf.namelist()
        assert "provenance_id" not in pd.read_csv(io.BytesIO(zf.read("metrics.csv")))


def test_a_gpu_is_described_by_what_torch_reports(monkeypatch):
    import models.device
    from models.device import DeviceInfo

    found = (DeviceInfo("cpu", "CPU (16 cores)"), DeviceInfo("cuda:0", "NVIDIA H200 (139 GiB)"))
    monkeypatch.setattr(models.device, "available_devices", lambda: found)
    assert provenance(device="cuda:0")["device description"] == "NVIDIA H200 (139 GiB)"
    assert provenance(device="cuda")["device description"] == "NVIDIA H200 (139 GiB)"
    assert provenance(device="cpu")["device description"] is None  # torch is not asked on the CPU
