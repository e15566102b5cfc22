"""The command line's grammar and its one entry point: :func:`build_parser` (every command and its
options, settings' options made by workflows.cli_options from their declarations) and :func:`main`
(parse, run the command, any error a user can cause one line and exit 1, never a traceback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from workflows.cli.batch_commands import add_run_command
from workflows.cli.cellmap_commands import cmd_embed, cmd_explain
from workflows.cli.data_commands import cmd_example, cmd_info, cmd_models
from workflows.cli.models_commands import add_models_commands
from workflows.cli.runs_commands import add_runs_commands, add_save_run_option
from workflows.cli.segment_commands import cmd_compare, cmd_preprocess, cmd_recipe, cmd_segment
from workflows.cli.train_commands import TRAINING_FLAGS, cmd_train


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    # tifffile logs each damaged tag or page it meets (as warnings and errors) before the reader's own error, which names
    # the file and the fix: a user would read both, twice.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, RuntimeError) as exc:  # one line (WeightsUnavailable too), never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`
        return 0
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    from core.io.example import EXAMPLE_FIELDS, EXAMPLE_SEED, EXAMPLE_SIZE
    from core.training.data import VAL_FRACTION
    from models.cellmap import MapSettings
    from models.explain_cells import CELLS_PER_CLASS
    from models.registry import families
    from models.tiling import TILING_SETTINGS
    from workflows.cli_options import add_family_options, add_setting_options

    parser = argparse.ArgumentParser(prog="python -m core", description="CellScope command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe images: one line each (name, size, dtype, channels)")
    info.add_argument("paths", nargs="+", help="image files, zips or folders (read recursively)")
    info.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    info.set_defaults(func=cmd_info)

    example = sub.add_parser("example", help="write the example dataset (images/, masks/, batches.csv)")
    example.add_argument("--out", required=True, help="output folder")
    add_setting_options(example, (EXAMPLE_SEED, EXAMPLE_SIZE, EXAMPLE_FIELDS))  # checked by make_example_dataset
    example.set_defaults(func=cmd_example)

    recipe = sub.add_parser("recipe", help="print a preprocessing recipe as JSON (the default one unless --recipe)")
    recipe.add_argument("--recipe", help="validate and print this recipe file, defaults filled in")
    recipe.set_defaults(func=cmd_recipe)

    pre = sub.add_parser("preprocess", help="run the recipe's image steps; write the processed image (float32 TIFF)")
    pre.add_argument("image", help="one image file")
    pre.add_argument("-o", "--output", required=True, help="output TIFF")
    pre.add_argument("--recipe", help="recipe JSON (default: the built-in nuclei recipe)")
    pre.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    pre.set_defaults(func=cmd_preprocess)

    seg = sub.add_parser("segment", help="segment one image into cells; write a label TIFF (0 = background)")
    seg.add_argument("image", help="one image file")
    seg.add_argument("-o", "--output", required=True, help="output label TIFF, same height and width as the image")
    seg.add_argument("--model", default="classical", help="segmentation model, see `models` (default: classical)")
    seg.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N")
    seg.add_argument("--recipe", help="recipe JSON for the classical model (default: the built-in nuclei recipe)")
    seg.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    add_setting_options(seg, TILING_SETTINGS, only=("tile",))
    seg.set_defaults(func=cmd_segment)

    cmp = sub.add_parser("compare", help="run several models on one image: DIR/<model>.tif, DIR/metrics.json, DIR/provenance.json")
    cmp.add_argument("image", help="one image file")
    cmp.add_argument("--models", required=True, help="comma-separated model names, see `models`")
    cmp.add_argument("--gt", help="ground-truth label image (0 = background, 1..N = cells) for metrics")
    cmp.add_argument("--out", required=True, help="output folder")
    cmp.add_argument("--recipe", help="recipe JSON for the classical model")
    cmp.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    cmp.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    add_setting_options(cmp, TILING_SETTINGS, only=("tile",))
    add_save_run_option(cmp)
    cmp.set_defaults(func=cmd_compare)

    tr = sub.add_parser("train", help="train a segmenter on images and their masks; writes the best checkpoint "
                        "and its metadata JSON")
    tr.add_argument("--model", required=True, help="family to train: unet, rcnn (Mask R-CNN) or yolo (YOLO-seg); "
                    "`models` lists the families")
    tr.add_argument("--images", required=True, help="folder of images (read recursively), or a folder with images/ "
                    "and masks/ inside when --masks is not given")
    tr.add_argument("--masks", default=None, help="folder of label masks (0 = background, 1..N = cells), matched to "
                    "the images by name as the Data page matches them: x.tif or x_mask.tif for image x")
    tr.add_argument("--out", required=True, help="checkpoint file to write (e.g. cells.unet.pt; its metadata goes "
                    "beside it as cells.unet.json); a plain name (no folder, no suffix) saves it in the weights "
                    "folder as the model trained:FAMILY:NAME")
    split = tr.add_mutually_exclusive_group()
    split.add_argument("--val-split", type=float, default=None, help="fraction of the images that validate, drawn at "
                       f"random with --seed, {VAL_FRACTION.allowed()} (default: {VAL_FRACTION.default:g}, the page's)")
    split.add_argument("--val-batches", default=None, help="comma-separated batches (plates) that validate, to test "
                       "carrying over to plates the model never saw")
    tr.add_argument("--batch-from", default=None, help="folder, regex:PATTERN or csv:FILE (filename,batch), as for "
                    "embed; default: folders and a batches.csv among the images")
    # Unset training settings take the family's defaults (UNetTraining's, ...: the Train page's), printed when
    # training starts and recorded in the metadata; each family's class checks the values, as on the page.
    add_family_options(tr, {f.label: (f.trainer.settings_class, dict(f.trainer.aliases)) for f in families(trainable=True)},
                       TRAINING_FLAGS)
    tr.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N")
    tr.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    tr.add_argument("--threads", type=int, default=None, help="CPU threads for the U-Net (default: every core; the "
                    "Train page uses one, so that the server stays responsive)")
    tr.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="list every model (segmenters and feature extractors) and whether each "
                            "can run here")
    models.set_defaults(func=cmd_models)
    add_models_commands(models)  # models delete NAME

    emb = sub.add_parser("embed", help="cells -> features -> t-SNE/UMAP map and batch-effect metrics; writes "
                         "cells.csv, cells.parquet, batch_effect.json, map.html, map.png, provenance.json")
    _add_cell_arguments(emb)
    emb.add_argument("--features", default="morphology", help="morphology, autoencoder, cnn (= resnet18-imagenet) "
                     "or another feature model from `models` (default: morphology)")
    # The map settings' defaults, ranges and help are MapSettings' (the Cell map page's).
    add_setting_options(emb, MapSettings, only=("correction", "control", "method", "perplexity", "iterations",
                                                "n_neighbors", "min_dist", "clusters", "k", "min_cluster_size",
                                                "seed"),
                        flags={"correction": "--correct", "method": "--map"}, default_text={"control": "all cells"})
    emb.set_defaults(func=cmd_embed)

    exp = sub.add_parser("explain", help="train a classifier of the cells' batch, condition or cluster and show what "
                         "it looks at (CAMs): inside the cells or the background; writes cam_cells.csv, "
                         "classifier.json, overlays/ and provenance.json")
    _add_cell_arguments(exp)
    exp.add_argument("--target", required=True, choices=("batch", "condition", "cluster"),
                     help="what the classifier learns to tell from each cell's crop")
    # Defaults left unset here are the library's (models/): importing it to name them would slow every command.
    exp.add_argument("--k", type=int, default=None, help="with --target cluster: k-means clusters of the cells' "
                     "morphology features, as the Cell map makes them (default: the Cell map's)")
    exp.add_argument("--method", default="gradcam", help="CAM method of pytorch-grad-cam: gradcam, gradcam++, "
                     "hirescam, scorecam, eigencam or layercam (default gradcam)")
    exp.add_argument("--layer", default=None, help="the classifier's layer to take CAMs at: block1, block2 or block3 "
                     "(default: the last, block3)")
    add_setting_options(exp, (CELLS_PER_CLASS,), flags={"per_class": "--cells-per-class"})  # the page's slider
    exp.add_argument("--deletion-test", action="store_true", help="also run the deletion/insertion test on up to 64 "
                     "explained cells: does removing the top CAM pixels lower the score faster than random pixels?")
    # Classifier settings: unset ones take the registry's defaults (the Explain page's); provenance.json records them.
    exp.add_argument("--epochs", type=int, default=None, help="training epochs (default: the Explain page's)")
    exp.add_argument("--batch-size", type=int, default=None, help="crops per optimisation step")
    exp.add_argument("--lr", type=float, default=None, help="Adam's learning rate, one of the Explain page's choices")
    exp.add_argument("--folds", type=int, default=None, help="cross-validation folds, by image")
    exp.add_argument("--seed", type=int, default=None, help="random seed for training, the explained cells and "
                     "the clusters")
    exp.add_argument("--max-train-cells", type=int, default=None, help="train on at most this many cells, drawn at "
                     "random")
    exp.set_defaults(func=cmd_explain)
    add_runs_commands(sub)
    add_run_command(sub)
    return parser


def _add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``embed`` and ``explain`` share: inputs -> images -> labels -> cells and their crops."""
    parser.add_argument("inputs", nargs="+", help="image files, zips or folders (read recursively)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default="classical", help="segmenter (see `models`), or gt to use each image's "
                        "ground truth (default: classical)")
    parser.add_argument("--recipe", help="recipe JSON for the classical segmenter (default: the built-in one)")
    parser.add_argument("--batch-from", default=None, help="folder (each image's parent folder), regex:PATTERN (a "
                        "named group 'batch') or csv:FILE (filename,batch[,condition]); default: folders and a "
                        "batches.csv found among the inputs")
    parser.add_argument("--crop-size", type=int, default=32, help="crop side in pixels (default 32)")
    parser.add_argument("--crop-mode", default="scale", choices=("scale", "pad"), help="scale each cell's window to "
                        "the crop size, or pad a fixed window at native scale (default scale)")
    parser.add_argument("--mask-background", action="store_true", help="zero the pixels outside each cell in its "
                        "crop")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N")
    parser.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max "
                        "projection")
    add_save_run_option(parser)
