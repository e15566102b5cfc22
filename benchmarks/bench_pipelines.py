"""The pipelines the pages and the CLI call (workflows/), timed end to end on the example dataset.

What a user waits for after one click: Preprocess's "all images" run (the default recipe over
every image, its tables and files), and the Cell map (cells found by the classical model, their
morphology features, a t-SNE map and the plate-effect metrics). Both go through the one image
loop with the serial executor; the loop's own cost is measured against a plain ``for`` over the
same per-image unit.

Usage: python benchmarks/bench_pipelines.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_seconds  # noqa: E402

from core.io.example import make_example_dataset  # noqa: E402
from core.segmentation.recipe import DEFAULT_RECIPE  # noqa: E402
from models.cellmap import MapSettings  # noqa: E402
from models.registry import load_model  # noqa: E402
from models.runner import run_model  # noqa: E402
from workflows.cellmap import CellMapRequest, run_cellmap  # noqa: E402
from workflows.image_loop import SegmentSettings, run_images, segment_image  # noqa: E402
from workflows.segmentation import recipe_instances, run_segmentation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    images = make_example_dataset()  # 12 images, 512 x 512, 3 channels, 4 plates
    rows = []

    def segmentation() -> None:
        run = run_segmentation(images, DEFAULT_RECIPE)
        run.analysis.files["labels.zip"], run.analysis.files["cells.csv"]  # what the downloads build

    def plain_loop() -> None:
        for image in images:
            recipe_instances(image, DEFAULT_RECIPE)

    def image_loop() -> None:
        run_images(images, segment_image, SegmentSettings(segment=lambda image: recipe_instances(image, DEFAULT_RECIPE)))

    classical = load_model("classical", "cpu")
    request = CellMapRequest("classical", {}, {"size": 64, "mode": "scale", "mask_background": False}, "morphology",
                             {}, MapSettings(), "cpu", recipe=DEFAULT_RECIPE)

    def cellmap() -> None:
        run = run_cellmap(images, request, segment=lambda image: run_model(classical, image))
        run.analysis.files["batch_effect.json"]

    for label, fn in (("default recipe, plain for-loop over 12 images (reference)", plain_loop),
                      ("default recipe through the image loop (serial executor)", image_loop),
                      ("Preprocess 'all images': run_segmentation + labels.zip + cells.csv", segmentation),
                      ("Cell map: classical cells -> morphology -> t-SNE -> plate-effect metrics", cellmap)):
        rows.append((label, median_seconds(fn, repeat=args.repeat)))
    print(f"example dataset: {len(images)} images of {images[0].shape[0]}² x {images[0].shape[2]} channels; "
          f"median of {args.repeat}\n")
    print("| pipeline | median time |\n|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} s |")


if __name__ == "__main__":
    main()
