"""Model latency on this machine: every family at 512 and 1024 px, SAM prompt latency with a
cached embedding, and the Compare page's rerun time with unchanged inputs. `make bench` runs it.

Every published segmenter of the registry is measured (a family registered is a family measured).
Deep models whose weights are not here run their real architectures with random weights (the
registry's ``random_weights``), loaded through the same builders as downloaded checkpoints:
compute per image is the same, but costs that grow with the number of detections (R-CNN's mask
head, SAM's filtering, Cellpose's flow following) can differ for a trained model on a crowded
field. F1 on the DSB 2018 image in tests/data is measured for the models whose real weights are
here, and said plainly for the others. On a CUDA machine, pass `--device cuda`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from timing import median_seconds  # noqa: E402

from core.io.example import make_example_dataset  # noqa: E402
from models.registry import LoadedModel, availability, get_model_info, load_model  # noqa: E402
from models.runner import run_model  # noqa: E402

SKIP = ("sam-vitl", "sam-vith")  # the same family as sam-vitb, 3 and 7 times its weights: minutes per image here
DSB = ROOT / "tests" / "data" / "dsb2018_nuclei.tif"


def published_segmenters(skip: tuple[str, ...]) -> list[str]:
    """Every segmenter in the registry with published weights or none (not models trained here), in
    display order: a new family is measured as soon as it is registered."""
    from models.registry import display_order, list_models

    found = [m for m in list_models("segment") if m.own_checkpoint is None and m.name not in skip]
    return [m.name for m in sorted(found, key=display_order)]


def _model(name: str, device: str, folder: Path) -> tuple[object, bool]:
    """The model, and whether it has its real weights (else its architecture with random weights,
    written by the registry's ``random_weights`` and read by its own builder)."""
    info = get_model_info(name)
    if availability(name)[0]:
        return load_model(name, device), True
    if info.random_weights is None:
        raise LookupError(f"{name}: weights not here and no random-weights builder")
    path = folder / name / Path(info.weights.filename).name  # the published name: some builders read it
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        info.random_weights(path)
    return LoadedModel(info.builder(path, device), info), False


def automatic_params(name: str) -> dict:
    """SAM-like automatic modes at 16 points per side (the default 32 takes 4x as long here)."""
    return {"points_per_side": 16} if "points_per_side" in get_model_info(name).params else {}


def dsb_f1(model) -> tuple[float, int]:
    """F1 at IoU 0.5 on the DSB 2018 nuclei image in tests/data (125 annotated nuclei)."""
    from core.evaluation.matching import match_instances
    from core.io.load import load_paths

    image = load_paths([str(DSB)]).images[0]
    truth = tifffile.imread(DSB.with_name("dsb2018_nuclei_mask.tif"))
    result = run_model(model, image, **automatic_params(model.name))
    return match_instances(truth, result.labels).f1, result.count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="512 px only, one repeat")
    parser.add_argument("--models", default=None, help="comma-separated names (default: every published segmenter)")
    parser.add_argument("--skip", default=",".join(SKIP), help="names left out of the default list")
    args = parser.parse_args()
    sizes = (512,) if args.quick else (512, 1024)
    repeat = 1 if args.quick else 3
    names = args.models.split(",") if args.models else published_segmenters(tuple(args.skip.split(",")))
    images = {s: make_example_dataset(size=s, fields_per_plate=1)[0] for s in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"device: {args.device}; medians of {repeat} warm runs (one for slow models); first = first call after "
              "loading; memory = growth of the process's resident memory (CUDA: allocation) during the first call\n")
        print("| model | weights | px | first call s | warm s | memory MB | objects |")
        print("|---|---|---|---|---|---|---|")
        real: dict[str, object] = {}
        for name in names:
            try:
                model, has_real = _model(name, args.device, folder)
            except Exception as exc:  # noqa: BLE001 - one family failing is a line of the table, not the end
                print(f"| {name} | – | – | {type(exc).__name__}: {exc} | | | |", flush=True)
                continue
            params = automatic_params(name)
            slow = get_model_info(name).slow_on_cpu and args.device == "cpu"
            for size in sizes:
                img = images[size]
                t0 = time.perf_counter()
                result = run_model(model, img, **params)
                first = time.perf_counter() - t0
                warm = median_seconds(lambda m=model, i=img, p=params: run_model(m, i, **p), repeat=1 if slow else repeat)
                memory = "–" if result.peak_memory_mb is None else f"{result.peak_memory_mb:.0f}"
                label = f"{name} (automatic, 16 points/side)" if params else name
                print(f"| {label} | {'real' if has_real else 'random'} | {size} | {first:.2f} | {warm:.2f} | {memory} | "
                      f"{result.count} |", flush=True)
            if has_real:
                real[name] = model
        print("\n| model | F1 at IoU 0.5, DSB 2018 image (125 nuclei) | objects |")
        print("|---|---|---|")
        for name in names:
            if name in real:
                f1, count = dsb_f1(real[name])
                print(f"| {name} | {f1:.3f} | {count} |", flush=True)
            else:
                print(f"| {name} | not measured: its real weights are not here (random weights find nothing) | |")

        sam = _model("sam-vitb", args.device, folder)[0].model
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
