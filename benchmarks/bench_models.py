"""Model latency on this machine: every family at 512 and 1024 px, SAM prompt latency with a
cached embedding, and the Compare page's rerun time with unchanged inputs. `make bench` runs it.

Deep models without offline weights (R-CNN, SAM) run their real architectures with random
weights, loaded through the same builders as downloaded checkpoints: compute per image is the
same, but R-CNN's mask head cost grows with the number of detections, so a trained model on a
crowded field can be somewhat slower. On a CUDA machine, pass `--device cuda`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402

from core.io.example import make_example_dataset  # noqa: E402
from models.registry import get_model_info, load_model  # noqa: E402
from models.runner import run_model  # noqa: E402


def _random_checkpoints(folder: Path) -> dict[str, Path]:
    import torch
    from segment_anything import sam_model_registry

    from models.rcnn import build_rcnn

    torch.manual_seed(0)
    paths = {}
    for kind in ("maskrcnn", "fasterrcnn"):
        paths[f"{kind}-coco"] = folder / f"{kind}.pth"
        torch.save(build_rcnn(kind, 91).state_dict(), paths[f"{kind}-coco"])
    paths["sam-vitb"] = folder / "sam_vit_b.pth"
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), paths["sam-vitb"])
    return paths


def _model(name: str, device: str, checkpoints: dict[str, Path]):
    if name in checkpoints:
        return get_model_info(name).builder(checkpoints[name], device)
    return load_model(name, device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="512 px only, one repeat")
    args = parser.parse_args()
    sizes = (512,) if args.quick else (512, 1024)
    repeat = 1 if args.quick else 3
    images = {s: make_example_dataset(size=s, fields_per_plate=1)[0] for s in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = _random_checkpoints(Path(tmp))
        print(f"device: {args.device}; medians of {repeat} warm runs; first = first call after loading\n")
        print("| model | px | first call s | warm s | objects |")
        print("|---|---|---|---|---|")
        plans = [("classical", {}), ("yolo11n-nuclei", {}), ("yolo11s-nuclei", {}), ("fasterrcnn-coco", {}),
                 ("maskrcnn-coco", {}), ("sam-vitb", {"points_per_side": 16})]
        for name, params in plans:
            model = _model(name, args.device, checkpoints)
            for size in sizes:
                img = images[size]
                t0 = time.perf_counter()
                result = run_model(model, img, **params)
                first = time.perf_counter() - t0
                if name.startswith("sam"):  # each automatic run re-encodes; one warm run is enough
                    warm = median_seconds(lambda m=model, i=img, p=params: run_model(m, i, **p), repeat=1)
                else:
                    warm = median_seconds(lambda m=model, i=img, p=params: run_model(m, i, **p), repeat=repeat)
                label = f"{name} (automatic, 16 points/side)" if name.startswith("sam") else name
                print(f"| {label} | {size} | {first:.2f} | {warm:.2f} | {result.count} |", flush=True)

        sam = _model("sam-vitb", args.device, checkpoints)
        img = images[512]
        t0 = time.perf_counter()
        sam.embed(img)
        embed = time.perf_counter() - t0
        boxes = np.array([[x, y, x + 30, y + 30] for x in range(20, 480, 46) for y in range(20, 480, 46)], np.float32)
        print("\n| SAM ViT-B prompt (cached embedding, 512 px) | ms |")
        print("|---|---|")
        print(f"| image embedding (once per image) | {embed * 1000:.0f} |")
        for label, kwargs in (("1 point", {"points": np.array([[256.0, 256.0]])}),
                              ("10 boxes, one batch", {"boxes": boxes[:10]}),
                              ("100 boxes, one batch", {"boxes": boxes[:100]})):
            ms = median_seconds(lambda k=kwargs: sam.predict(img, **k), repeat=5) * 1000
            print(f"| {label} | {ms:.0f} |", flush=True)
        print(f"\nencoder runs for all prompts above: {sam.encoder_runs}")

    print("\n| Compare page rerun, unchanged inputs (AppTest script run) | ms |")
    print("|---|---|")
    print(f"| classical + yolo11s-nuclei, example image, results cached | {_page_rerun_ms():.0f} |")


def _page_rerun_ms() -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    assert not at.exception
    return statistics.median(times) * 1000


if __name__ == "__main__":
    main()
