"""The classical pipeline's speed: the default recipe on 512, 1024 and 2048 px 16-bit images,
and what a single slider change costs once earlier stages are cached. `make bench` runs it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from timing import median_seconds  # noqa: E402

from core.cache import BoundedCache  # noqa: E402
from core.evaluation.matching import match_instances  # noqa: E402
from core.io.example import make_example_dataset  # noqa: E402
from core.segmentation.preprocess import run_pipeline  # noqa: E402
from core.segmentation.recipe import DEFAULT_RECIPE  # noqa: E402


def median_ms(fn, repeat: int = 9) -> float:
    return median_seconds(fn, repeat) * 1000


def main() -> None:
    print("| image | full pipeline | filters changed | watershed changed | threshold changed | cells | F1 @ IoU 0.5 |")
    print("|---|---|---|---|---|---|---|")
    for size in (512, 1024, 2048):
        img = make_example_dataset(size=size, fields_per_plate=1)[0]
        full = median_ms(lambda img=img: run_pipeline(img.pixels, img.channels, DEFAULT_RECIPE))
        cache = BoundedCache()
        run_pipeline(img.pixels, img.channels, DEFAULT_RECIPE, image_hash=img.hash, cache=cache)
        changes = {}
        for name, step, param, values in (
            ("filters", "filters", "min_area", iter(range(10, 10_000))),
            ("watershed", "watershed", "smoothing", iter(x / 100 for x in range(101, 10_000))),
            ("threshold", "threshold", "offset", iter(-x / 1000 for x in range(11, 10_000))),
        ):
            changes[name] = median_ms(lambda img=img, step=step, param=param, values=values, cache=cache: run_pipeline(
                img.pixels, img.channels, DEFAULT_RECIPE.with_step(step, **{param: next(values)}),
                image_hash=img.hash, cache=cache))
        result = run_pipeline(img.pixels, img.channels, DEFAULT_RECIPE)
        f1 = match_instances(img.gt, result.labels).f1
        print(f"| {size}×{size} 16-bit, 3 channels | {full:.0f} ms | {changes['filters']:.0f} ms | "
              f"{changes['watershed']:.0f} ms | {changes['threshold']:.0f} ms | {result.n_cells} | {f1:.3f} |")


if __name__ == "__main__":
    main()
