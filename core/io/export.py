"""Files CellScope writes: the dataset as OME-TIFFs with masks and batches.csv (it loads back
unchanged), label TIFFs, COCO JSON (instances with scores), and the zip of a comparison."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data.images import CellImage
from core.data.instances import Instances
from core.io.label_tiff import label_tiff_bytes  # noqa: F401  (callers import it from here)


@dataclass(frozen=True)
class LabelledImage:
    """One image's objects: a label image (0 = background) with a score per label, and for
    box-only detectors the boxes themselves (x0, y0, x1, y1)."""

    file_name: str
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None


def _polygons(mask: np.ndarray, offset: tuple[int, int]) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    oy, ox = offset
    return [[float(v) for xy in c[:, 0, :] for v in (xy[0] + ox, xy[1] + oy)] for c in contours if len(c) >= 3]


def coco_instances(images: Sequence[LabelledImage], category: str = "cell") -> dict:
    """A COCO instances dict: ``images``, ``categories`` and ``annotations`` with ``score``.

    Masks become polygons (outer contours, pixel coordinates); box-only detections get a
    ``bbox`` and no ``segmentation``.
    """
    from scipy import ndimage as ndi

    out = {"info": {"description": "CellScope predictions"}, "images": [], "annotations": [],
           "categories": [{"id": 1, "name": category, "supercategory": "cell"}]}
    ann_id = 0
    for image_id, item in enumerate(images, 1):
        h, w = item.labels.shape
        out["images"].append({"id": image_id, "file_name": item.file_name, "height": h, "width": w})
        if item.boxes is not None:
            for (x0, y0, x1, y1), score in zip(item.boxes, item.scores, strict=True):
                ann_id += 1
                out["annotations"].append({
                    "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                    "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                    "area": round(float((x1 - x0) * (y1 - y0)), 2), "score": round(float(score), 4),
                })
            continue
        for label, sl in enumerate(ndi.find_objects(item.labels), 1):
            if sl is None:
                continue
            mask = item.labels[sl] == label
            ann_id += 1
            ys, xs = sl
            out["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start],
                "area": int(mask.sum()), "segmentation": _polygons(mask, (ys.start, xs.start)),
                "score": round(float(item.scores[label - 1]), 4) if label - 1 < len(item.scores) else 1.0,
            })
    return out


def labels_zip(labels: Mapping[str, np.ndarray], provenance: Mapping[str, Any] | None = None) -> bytes:
    """One label TIFF per image (``<image>_labels.tif``), and ``provenance.json`` when given."""
    from core.analysis import PROVENANCE_FILE, provenance_json

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, image_labels in labels.items():
            zf.writestr(f"{name}_labels.tif", label_tiff_bytes(image_labels))
        if provenance is not None:
            zf.writestr(PROVENANCE_FILE, provenance_json(provenance))
    return buf.getvalue()


def results_zip(images: Sequence[CellImage], results: Mapping[tuple[str, str], Instances],
                table: pd.DataFrame, *, provenance: Mapping[str, Any] | None = None) -> bytes:
    """Everything from a comparison in one zip: ``labels/<model>/<image>.tif``, ``objects.csv``,
    ``coco/<model>.json`` and ``metrics.csv`` (``table``); ``results`` is keyed by (image, model).
    With ``provenance`` (:func:`workflows.provenance.provenance`), also ``provenance.json``, and both
    CSVs get its columns (:func:`core.analysis.with_provenance`)."""
    from core.analysis import PROVENANCE_FILE, provenance_json, with_provenance

    def stamped(df: pd.DataFrame) -> pd.DataFrame:
        return df if provenance is None else with_provenance(df, provenance)

    from core.evaluation.score_tables import objects_table

    by_name = {img.name: img for img in images}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        objects = []
        for (image_name, model), r in results.items():
            stem = image_name.rsplit(".", 1)[0]
            zf.writestr(f"labels/{model}/{stem}.tif", label_tiff_bytes(r.labels))
            objects.append(objects_table(image_name, r))
        for model in dict.fromkeys(m for _, m in results):
            items = [LabelledImage(name, r.labels, r.scores, r.boxes if r.box_only else None)
                     for (name, m), r in results.items() if m == model and name in by_name]
            zf.writestr(f"coco/{model}.json", json.dumps(coco_instances(items)))
        if objects:
            zf.writestr("objects.csv", stamped(pd.concat(objects, ignore_index=True)).to_csv(index=False))
        zf.writestr("metrics.csv", stamped(table).to_csv(index=False))
        if provenance is not None:
            zf.writestr(PROVENANCE_FILE, provenance_json(provenance))
    return buf.getvalue()


def write_dataset(images: list[CellImage], out_dir: str | Path) -> list[Path]:
    """Write images as OME-TIFF (channel names kept), masks with matching names, and batches.csv."""
    import csv

    import tifffile


    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    written = []
    if any(img.gt is not None for img in images):
        (out / "masks").mkdir(exist_ok=True)
    for img in images:
        path = out / "images" / f"{Path(img.name).name}.tif"
        tifffile.imwrite(
            path,
            np.moveaxis(img.pixels, 2, 0),
            ome=True,
            photometric="minisblack",
            metadata={"axes": "CYX", "Channel": {"Name": [c.name for c in img.channels]}},
        )
        written.append(path)
        if img.gt is not None:
            mpath = out / "masks" / f"{Path(img.name).name}.tif"
            mpath.write_bytes(label_tiff_bytes(img.gt))
            written.append(mpath)
    table = out / "batches.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "batch", "condition"])
        for img in images:
            w.writerow([f"{Path(img.name).name}.tif", img.batch, img.condition])
    written.append(table)
    return written


def dataset_zip(images: list[CellImage]) -> bytes:
    """The dataset as a zip of :func:`write_dataset`'s layout; it uploads back unchanged."""
    import tempfile

    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(images, tmp)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
    return buf.getvalue()
