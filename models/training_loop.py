"""The one training loop of the segmenters trained here by our own code (U-Net, Mask R-CNN; YOLO-seg
runs inside ultralytics' trainer): epochs of steps, each epoch validated, the best epoch kept with
its checkpoint (:class:`models.best_epoch.BestEpoch`), early stopping, a live report and a stop
flag. A family supplies only how one step runs and how an epoch is validated."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from models.best_epoch import BestEpoch, EpochRecord

if TYPE_CHECKING:
    import torch

Report = Callable[..., None]  # models.autoencoder.ProgressReporter: (fraction, message, force=False)


def run_epochs(
    model: torch.nn.Module,
    best: BestEpoch,
    *,
    epochs: int,
    steps_per_epoch: int,
    step: Callable[[], float],
    validation_scores: Callable[[], dict[str, Any]],
    validation_loss: Callable[[], float],
    report: Report,
    stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    after_validation: Callable[[bool], None] | None = None,
) -> str:
    """Train ``model`` for up to ``epochs`` epochs of ``steps_per_epoch`` calls of ``step()`` (one
    optimiser step; returns its loss); returns why training ended: "completed", "early stopping: ...",
    "stopped during epoch N" or "stopped after epoch N".

    After each epoch ``validation_scores()`` (F1, precision, recall) and ``validation_loss()`` make
    its :class:`EpochRecord` (mean step loss, NaN when no step ran), which ``on_epoch`` hears and
    ``best`` keeps if it is the best yet; ``after_validation(interrupted)`` then runs (e.g. to keep
    the epoch's weights for averaging). ``stop()`` is checked before every step: the epoch under way
    is still validated, so a stop always leaves a model, unless no step of it ran and an earlier
    epoch is kept already. ``report`` hears about every step and, forced, every epoch's end; its
    time left assumes every epoch runs (early stopping only shortens it).
    """
    total_steps = epochs * steps_per_epoch
    for epoch in range(1, epochs + 1):
        model.train()
        losses: list[float] = []
        interrupted = False
        for i in range(steps_per_epoch):
            if stop is not None and stop():
                interrupted = True
                break
            losses.append(step())
            report(((epoch - 1) * steps_per_epoch + i + 1) / total_steps,
                   f"epoch {epoch}/{epochs}, step {i + 1}/{steps_per_epoch}: loss {losses[-1]:.4f}")
        if not losses and best.state is not None:  # stopped between epochs: the best is already kept
            return f"stopped after epoch {epoch - 1}"
        scores = validation_scores()
        record = EpochRecord(epoch, float(np.mean(losses)) if losses else float("nan"), validation_loss(),
                             scores["f1"], scores["precision"], scores["recall"], time.perf_counter() - best.t0)
        if on_epoch is not None:
            on_epoch(record)
        best.update(model, record, scores)
        if after_validation is not None:
            after_validation(interrupted)
        report(epoch * steps_per_epoch / total_steps, f"epoch {epoch}/{epochs}: loss {record.loss:.4f}, "
               f"validation F1 {record.f1:.3f} (best {best.f1:.3f} at epoch {best.epoch})", force=True)
        if interrupted:
            return f"stopped during epoch {epoch}"
        if (why := best.early_stop(epoch)) is not None:
            return why
    return "completed"
