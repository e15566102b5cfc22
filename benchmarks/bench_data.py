"""Data-page timings: example generation, file loading, display merge. `make bench` runs it."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from timing import median_seconds  # noqa: E402

from core.figures.display import composite  # noqa: E402
from core.io.decode import read_image  # noqa: E402
from core.io.example import make_example_dataset  # noqa: E402
from core.io.export import write_dataset  # noqa: E402
from core.io.load import load_paths  # noqa: E402


def main() -> list[tuple[str, float]]:
    rows = [("example dataset: generate 12 x 512² x 3ch", median_seconds(make_example_dataset))]
    images = make_example_dataset()
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(images, tmp)
        rows.append(("example dataset: read back 12 OME-TIFFs + masks", median_seconds(lambda: load_paths([tmp]))))
    import tifffile

    rng = np.random.default_rng(0)
    for side in (512, 1024, 2048):
        pixels = rng.integers(0, 4000, (side, side, 3), dtype=np.uint16)
        with tempfile.NamedTemporaryFile(suffix=".tif") as f:
            tifffile.imwrite(f.name, np.moveaxis(pixels, 2, 0), photometric="minisblack")
            data = Path(f.name).read_bytes()
        rows.append((f"read 16-bit 3-channel TIFF {side}²", median_seconds(lambda data=data: read_image(data, "x.tif"))))
        rows.append((f"display merge (3 channels) {side}²", median_seconds(lambda pixels=pixels: composite(pixels, images[0].channels))))
    return rows


if __name__ == "__main__":
    print("| step | median time |\n|---|---|")
    for name, seconds in main():
        print(f"| {name} | {seconds * 1000:.0f} ms |")
