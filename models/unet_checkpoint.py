"""U-Net checkpoints: plain data (``torch.save`` of tensors, numbers and strings, read back with
``torch.load(weights_only=True)``), named ``<name>.unet.pt``, with a ``<name>.unet.json`` of the same
metadata beside it for people and for listing models without importing torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.checkpoint_file import cpu_state, load_weights, read_checkpoint, write_checkpoint
from models.unet_network import UNetConfig, build_unet

if TYPE_CHECKING:
    import torch

FORMAT = "cellscope_unet"
FORMAT_VERSION = 1
SUFFIX = ".unet.pt"


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: UNetConfig,
                    metadata: dict[str, Any]) -> Path:
    """Write weights, architecture and metadata as plain data (``torch.load(weights_only=True)``
    reads it), atomically (a kill mid-write leaves the previous file), plus ``<name>.json`` with
    the same metadata beside it."""
    data = {"format": FORMAT, "version": FORMAT_VERSION, "state_dict": cpu_state(state_dict),
            "config": config.to_dict(), "metadata": metadata}
    return write_checkpoint(path, data, {"format": FORMAT, "config": config.to_dict(), **metadata})


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (eval mode, on ``device``) and metadata of a :func:`save_checkpoint` file, read with
    ``torch.load(weights_only=True)``; ValueError naming the file for anything else."""
    data = read_checkpoint(path, fmt=FORMAT, version=FORMAT_VERSION, what="CellScope U-Net checkpoint",
                           hint="train one on the Train page or with `python -m core train --model unet`")
    model = build_unet(UNetConfig.from_dict(data.get("config") or {}))
    return load_weights(model, data.get("state_dict"), path, device, "the recorded architecture"), \
        dict(data.get("metadata") or {})
