"""Stochastic weight averaging (Izmailov et al. 2018): a network with the mean of several epochs'
weights, its batch-norm statistics measured anew."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def average_weights(model: torch.nn.Module, states: Sequence[dict[str, torch.Tensor]],
                    next_batch: Callable[[], torch.Tensor], calibration_steps: int = 30) -> torch.nn.Module:
    """``model`` with the mean of ``states`` loaded, then its batch-norm statistics measured anew
    on ``calibration_steps`` batches of training inputs from ``next_batch()`` (averaged weights need
    their own: the running statistics of the epochs averaged do not describe them); in eval mode."""
    import torch

    model.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                           for k, v in states[-1].items()})
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(calibration_steps):
            model(next_batch())
    for m in norms:
        m.momentum = 0.1
    return model.eval()
