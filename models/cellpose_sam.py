"""Cellpose-SAM (cellpose 4): SAM's ViT-L encoder predicting Cellpose flows, one generalist for cells
and nuclei in any stain and modality.

The weights (``cpsam``, 1.23 GB) come only through :func:`models.weights.resolve_weights` and reach
cellpose as a local path: given a file that exists, ``CellposeModel`` neither downloads nor looks in
its own model folder (``~/.cellpose/models``), and :class:`CellposeSamModel` never hands it anything
else (cellpose would fetch its default model for a name it does not find).

Input: cellpose 4 reads up to three channels, in any order (the model was trained robust to channel
shuffling), and normalises each to its 1-99th percentiles itself. :func:`cellpose_input` builds them
from the image's channel roles: [cytoplasm, nucleus, 0] (cellpose's customary order: whole cells),
or [nucleus, 0, 0] with no cytoplasm channel (what cellpose makes of a grey image: it outlines
nuclei). Protein channels are left out: they are what is measured in the cells, not what outlines them.

Tiling, two levels. The network sees 256-px tiles only; cellpose cuts the image it is given into
such tiles overlapping by ``tile_overlap`` (a fraction) and averages their flows, so no seam shows
inside it, then follows the flows over the whole of it. CellScope's own tiling (``models.tiling``:
1024-px tiles, 128-px overlap, for every model) hands cellpose one tile at a time on larger images,
which bounds the memory of the flow following, and merges cells across those seams.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core.data.images import CellImage
from core.data.instances import Instances, boxes_from_labels, compact_labels
from models.registry import Family, ModelInfo, Setting, register_family, register_model
from models.weights import WeightsSpec

CELLPOSE_SETTINGS = (
    Setting("cellpose_diameter", "Cellpose-SAM diameter (px)", 0, "The cells' typical diameter: the image is resized so "
            "they come out 30 px across, the size Cellpose-SAM was trained at. 0: no resizing (it was trained on "
            "cells of many sizes and copes with most without help).", kind="int", low=5, high=500, step=1, special=(0,)),
    Setting("flow_threshold", "Cellpose-SAM flow threshold", 0.4, "Drop cells whose shape disagrees with the "
            "flows by more than this. Higher keeps more (and more ill-shaped) cells; 0 keeps every one.",
            low=0.0, high=3.0, step=0.05),
    Setting("cellprob_threshold", "Cellpose-SAM cell probability threshold", 0.0, "Pixels whose cell logit is "
            "above this belong to cells. Lower finds more and larger cells, higher fewer and smaller.",
            low=-6.0, high=6.0, step=0.25),
    Setting("cellpose_batch_size", "Cellpose-SAM batch size", 8, "How many 256-px tiles the network runs at once: more is "
            "faster on a GPU and needs more memory.", kind="choice", options=(1, 2, 4, 8, 16, 32, 64)),
    Setting("tile_overlap", "Cellpose-SAM tile overlap", 0.1, "How much cellpose's own 256-px network tiles "
            "overlap (a fraction of a tile); their flows are averaged across the overlap. More is smoother "
            "and slower.", low=0.05, high=0.5, step=0.05),
)

CPSAM_WEIGHTS = WeightsSpec(
    name="cellpose-sam", filename="cpsam", url="https://huggingface.co/mouseland/cellpose-sam/resolve/main/cpsam",
    sha256="e1440429eb384f95afe32bcba6510f90d518eaedc917ede549bed6804004abe2", size_bytes=1_233_587_898,
    license="BSD-3-Clause (cellpose code and the Hugging Face model card); the training data are partly "
            "non-commercial: check before commercial use",
    trained_on="the Cellpose data sets and other public cell and nucleus collections (fluorescence, brightfield, "
               "phase, histology); some of them, the Cellpose data set among them, are under non-commercial "
               "licences (CC-BY-NC)",
    source="MouseLand (Pachitariu, Rariden & Stringer 2025, Cellpose-SAM), huggingface.co/mouseland/cellpose-sam, "
           "the file cellpose 4.2.1.1 names 'cpsam'; SHA-256 as the BioImage.IO description of Cellpose-SAM "
           "records it",
)


def bfloat16_here(device: str) -> bool:
    """Whether the network runs in bfloat16 (cellpose's default): on GPUs, and on CPUs that do bfloat16
    natively (this 2-core machine's AMX, shared: a 512-px image 129-157 s in bfloat16, 171-314 s in
    float32, and half the memory); float32 elsewhere, where emulated bfloat16 would be slower."""
    if not device.startswith("cpu"):
        return True
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cellpose_input(image: CellImage) -> tuple[np.ndarray, str]:
    """The three channels Cellpose-SAM reads, (H, W, 3) float32 in the image's own units, and a note
    saying which channels they are."""
    nucleus, cyto = image.channel_index("nucleus"), image.channel_index("cytoplasm")
    h, w = image.shape[:2]
    planes = np.zeros((h, w, 3), np.float32)
    name = {i: f"'{c.name}'" for i, c in enumerate(image.channels)}
    if cyto is not None:
        planes[..., 0] = image.pixels[..., cyto]
        if nucleus is not None:
            planes[..., 1] = image.pixels[..., nucleus]
            return planes, f"Cellpose-SAM read cytoplasm {name[cyto]} and nucleus {name[nucleus]}: whole cells"
        return planes, f"Cellpose-SAM read cytoplasm {name[cyto]} only (no channel marked nucleus): whole cells"
    first = 0 if nucleus is None else nucleus
    planes[..., 0] = image.pixels[..., first]
    if nucleus is None:
        return planes, (f"Cellpose-SAM read the first channel {name[first]} (no channel marked nucleus or "
                        "cytoplasm)")
    return planes, (f"Cellpose-SAM read nucleus {name[nucleus]} only: nuclei (mark a cytoplasm channel on the "
                    "Data page for whole cells)")


class CellposeSamModel:
    """cellpose's ``CellposeModel`` built from a local weights file; ``predict`` gives Instances."""

    family = "cellpose"

    def __init__(self, name: str, weights: Path, device: str) -> None:
        import torch
        from cellpose.models import CellposeModel

        self.name, self.device = name, device
        path = Path(weights)
        if not path.is_file():  # cellpose would download its default model instead
            raise ValueError(f"{name}: no weights file at {path}")
        not_weights = (f"{path} is not Cellpose-SAM weights; delete it and download it again, or place the file "
                       f"named {path.name} from huggingface.co/mouseland/cellpose-sam there")
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)  # mapped: keys only are read
        except Exception as exc:  # noqa: BLE001 - a truncated download, another format: whatever the reader says
            raise ValueError(f"{not_weights} ({type(exc).__name__}: {exc})") from exc
        if not isinstance(state, dict) or "W2" not in state or "encoder.cls_token" in state:  # cellpose's own tests
            raise ValueError(f"{not_weights} (no state dict of cellpose 4's CPSAM network in it)")
        try:
            self._model = CellposeModel(pretrained_model=str(path), device=torch.device(device),
                                        use_bfloat16=bfloat16_here(device))
        except RuntimeError as exc:  # out of memory and the like stay what they are
            if "size mismatch" in str(exc):
                raise ValueError(f"{not_weights} (its tensors have other shapes than CPSAM's)") from exc
            raise
        # cellpose loads non-strictly: tensors the file lacks would stay random without a word.
        missing = set(self._model.net.state_dict()) - {k.removeprefix("module.") for k in state}
        if missing:
            raise ValueError(f"{path} lacks {len(missing)} of Cellpose-SAM's tensors (e.g. {sorted(missing)[0]}): "
                             f"not Cellpose-SAM weights; delete it and download it again")

    @property
    def network(self) -> Any:
        """The torch module cellpose runs (``CPSAM``)."""
        return self._model.net

    def predict(self, image: CellImage, *, cellpose_diameter: int, flow_threshold: float, cellprob_threshold: float,
                cellpose_batch_size: int, tile_overlap: float) -> Instances:
        # Named for the family: the U-Net's nucleus diameter and the trainers' batch size mean other things.
        diameter, batch_size = cellpose_diameter, cellpose_batch_size
        t0 = time.perf_counter()
        planes, note = cellpose_input(image)
        masks, flows, _ = self._model.eval(
            planes, channel_axis=2, diameter=diameter or None, flow_threshold=flow_threshold,
            cellprob_threshold=cellprob_threshold, batch_size=batch_size, tile_overlap=tile_overlap, normalize=True)
        labels = np.asarray(masks, np.int32).reshape(image.shape[:2])
        labels, _ = compact_labels(labels, np.zeros(int(labels.max(initial=0)), np.float32))
        scores = _mean_probability(labels, np.asarray(flows[2], np.float32).reshape(image.shape[:2]))
        return Instances(labels, boxes_from_labels(labels), scores, ("cell",), self.name, self.device,
                         time.perf_counter() - t0, notes=(note,))


def _random_cpsam(path: Path) -> None:
    """The full CPSAM network (ViT-L encoder) with random weights, saved as cellpose saves it."""
    import torch
    from cellpose.vit import CPSAM

    torch.save(CPSAM().state_dict(), path)


def _mean_probability(labels: np.ndarray, cellprob: np.ndarray) -> np.ndarray:
    """Each cell's score: its pixels' mean cell probability (the sigmoid of cellpose's logit);
    cellpose itself scores no cell."""
    n = int(labels.max(initial=0))
    prob = 1.0 / (1.0 + np.exp(-np.clip(cellprob, -50, 50)))
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    total = np.bincount(flat, weights=prob.ravel(), minlength=n + 1)[1:]
    return (total / np.maximum(area, 1)).astype(np.float32)


register_family(Family(
    "cellpose", "Cellpose-SAM", "Cellpose-SAM (cellpose 4): one generalist model for cells and nuclei, Cellpose "
    "flows from Segment Anything's ViT-L encoder.", order=35, settings=CELLPOSE_SETTINGS,
    no_cam_reason="Cellpose-SAM predicts flows and a cell probability for every pixel, not scored detections: "
                  "it has no detector CAM"))
register_model(ModelInfo(
    "cellpose-sam", "cellpose",
    "Cellpose-SAM: cells from the cytoplasm and nucleus channels, nuclei from the nucleus channel alone; "
    "about 1.2 GB of weights, slow on a CPU.",
    CPSAM_WEIGHTS, False, lambda path, device: CellposeSamModel("cellpose-sam", path, device),
    CELLPOSE_SETTINGS, slow_on_cpu=True, random_weights=lambda path: _random_cpsam(path),
))
