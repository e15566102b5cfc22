"""``models delete NAME``: delete a model trained here (its checkpoint and the JSON beside it) from
the weights folder. ``models`` alone lists every model (:func:`workflows.cli.data_commands.cmd_models`)."""

from __future__ import annotations

import argparse


def cmd_models_delete(args: argparse.Namespace) -> int:
    from models.trained_models import delete_trained_model

    model = delete_trained_model(args.name)
    print(f"deleted model {model.name} ({model.checkpoint} and its training record)")
    return 0


def add_models_commands(models: argparse.ArgumentParser) -> None:
    """``models``' one subcommand (without one, ``models`` lists every model)."""
    what = models.add_subparsers(dest="models_command", required=False)
    delete = what.add_parser("delete", help="delete a model trained here (trained:<family>:<name>) from the weights "
                             "folder, whoever trained it; a server training it at the moment would write it again")
    delete.add_argument("name", help="the model's name as `models` lists it, e.g. trained:unet:cells")
    delete.set_defaults(func=cmd_models_delete)
