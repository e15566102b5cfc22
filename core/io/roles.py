"""Which role an uploaded file plays, from its name and folders alone: an image, the ground truth
of an image (``x_mask.tif``, ``masks/x.tif``), one channel of a Human Protein Atlas set
(``<id>_red.png`` ...), or a plate (batch) table; and the plate a folder names.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TABLE_EXTENSIONS = (".csv", ".tsv")
ACCEPTED_EXTENSIONS = IMAGE_EXTENSIONS + TABLE_EXTENSIONS + (".zip",)

MASK_SUFFIX = re.compile(r"^(?P<stem>.+?)[_\-.](?:mask|masks|label|labels|gt)$", re.IGNORECASE)
MASK_FOLDERS = {"mask", "masks", "label", "labels", "gt", "ground_truth", "groundtruth"}
IMAGE_FOLDERS = {"image", "images", "img", "imgs"}
HPA_NAME = re.compile(r"^(?P<id>.+)_(?P<color>red|green|blue|yellow)$", re.IGNORECASE)
HPA_ORDER = ("red", "green", "blue", "yellow")


def key_and_role(path: str) -> tuple[str, str, str]:
    """Image name, role ('image' | 'mask'), folder batch for one uploaded path."""
    p = PurePosixPath(path)
    folders = [f for f in p.parts[:-1]]
    stem = p.stem
    role = "image"
    if folders and folders[-1].lower() in MASK_FOLDERS:
        role = "mask"
        folders = folders[:-1]
    elif m := MASK_SUFFIX.match(stem):
        role = "mask"
        stem = m["stem"]
    if folders and folders[-1].lower() in IMAGE_FOLDERS:
        folders = folders[:-1]
    batch = folders[-1] if folders else ""
    key = "/".join(folders + [stem])
    return key, role, batch
