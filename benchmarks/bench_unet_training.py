"""The README's U-Net numbers: train through the command line on the example dataset (plates A
and B, validated on plate C), then score the checkpoint at its default settings on a fresh
example dataset it never saw (seed 8, 12 fields) and on the real DSB nuclei image in
``tests/data``, with the classical recipe on the same images for reference. `make bench` runs it
(about 9 minutes on 2 cores); ``--checkpoint`` scores an existing checkpoint without training.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402

from core.evaluation.matching import match_instances  # noqa: E402
from core.io.example import make_example_dataset  # noqa: E402
from core.io.export import write_dataset  # noqa: E402
from core.io.load import load_paths  # noqa: E402
from models.registry import get_model_info, load_model  # noqa: E402
from models.runner import run_model  # noqa: E402


def _f1(model_name: str, images: list, **settings) -> list[float]:
    model = load_model(model_name)
    chosen = get_model_info(model_name).resolve(settings)
    return [match_instances(img.gt, run_model(model, img, **chosen).labels, 0.5).f1 for img in images]


def _resized(image, factor: float):
    """The image and its labels resized by ``factor``: the same nuclei under another magnification."""
    import cv2

    h, w = image.shape[:2]
    size = (round(w * factor), round(h * factor))
    pixels = cv2.resize(image.pixels.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    gt = cv2.resize(image.gt.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int32)
    return replace(image, pixels=np.round(pixels).astype(image.pixels.dtype).reshape(size[1], size[0], -1), gt=gt,
                   name=f"{image.name}_x{factor}")


def _f1_as_is(model_name: str, image) -> float:
    """F1 with the image left at its own scale (no resizing, whatever its nuclei's size)."""
    from core.training.data import input_planes
    from models.unet_instances import segment_planes

    segmenter = load_model(model_name).model
    settings = {k: v for k, v in get_model_info(model_name).resolve({}).items() if k != "diameter"}
    labels, _ = segment_planes(segmenter.network, input_planes(image, segmenter.config.planes), **settings)
    return match_instances(image.gt, labels, 0.5).f1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", help="score this U-Net checkpoint instead of training one")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--epochs", type=int, help="most epochs (default: the U-Net's)")
    args = parser.parse_args()
    dsb = load_paths([ROOT / "tests/data"]).images  # the image and its mask, paired by name as the Data page does
    unseen = make_example_dataset(seed=8)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            data, checkpoint = Path(tmp) / "example", str(Path(tmp) / "bench.unet.pt")
            write_dataset(make_example_dataset(), data)
            command = [sys.executable, "-m", "core", "train", "--model", "unet", "--images", str(data),
                       "--val-batches", "plateC", "--seed", str(args.seed), "--out", checkpoint]
            if args.epochs:
                command += ["--epochs", str(args.epochs)]
            t0 = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"training failed: {done.stderr.strip().splitlines()[-1]}")
            wall = time.perf_counter() - t0
            print("\n".join(line for line in done.stdout.splitlines() if not line.startswith("training:")))
            print(f"| U-Net training, command line, wall | {wall / 60:.1f} min |")
        name = f"unet:{checkpoint}"
        unseen_f1 = _f1(name, unseen)
        print(f"| U-Net, unseen example fields (seed 8), F1 at IoU 0.5 | mean {statistics.mean(unseen_f1):.3f}, "
              f"worst {min(unseen_f1):.3f} |")
        print(f"| U-Net, real DSB nuclei, F1 at IoU 0.5 | {_f1(name, dsb)[0]:.3f} |")
        print(f"| classical, real DSB nuclei, F1 at IoU 0.5 | {_f1('classical', dsb)[0]:.3f} |")
        for factor in (0.6, 1.6, 2.0):
            resized = [_resized(dsb[0], factor)]
            print(f"| U-Net, DSB resized {factor}x, F1: nuclei size estimated / image as it is | "
                  f"{_f1(name, resized)[0]:.3f} / {_f1_as_is(name, resized[0]):.3f} |")


if __name__ == "__main__":
    main()
