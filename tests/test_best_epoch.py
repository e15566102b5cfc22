"""models/best_epoch.py: the best epoch is kept, and an average of the last epochs when it scores as well."""

from __future__ import annotations

import torch

from models.best_epoch import BestEpoch, EpochRecord


def _record(epoch: int, f1: float) -> EpochRecord:
    return EpochRecord(epoch, 0.5, 0.4, f1, f1, f1, float(epoch))


def test_the_best_epoch_is_kept_and_an_average_only_when_it_scores_as_well_within_the_tolerance():
    saved = []
    best = BestEpoch({"family": "test"}, patience=2, save=lambda state, meta: saved.append(meta))
    net = torch.nn.Linear(2, 1)
    assert best.update(net, _record(1, 0.90), {"f1": 0.90, "precision": 0.9, "recall": 0.9})
    assert not best.update(net, _record(2, 0.80), {"f1": 0.80, "precision": 0.8, "recall": 0.8})
    assert best.early_stop(2) is None and best.early_stop(3) is not None
    average = torch.nn.Linear(2, 1)
    assert not best.adopt_average(average, {"f1": 0.885, "precision": 0.9, "recall": 0.87}, [1, 2])  # 0.015 worse
    assert best.averaged is None and torch.equal(best.state["weight"], net.weight)
    assert best.adopt_average(average, {"f1": 0.895, "precision": 0.9, "recall": 0.89}, [1, 2])  # within 0.01
    assert torch.equal(best.state["weight"], average.weight)
    meta = best.finish(torch.nn.Linear(2, 1), "completed")
    assert meta["validation"]["best_epoch"] == 1 and meta["validation"]["averaged_epochs"] == [1, 2]
    assert meta["validation"]["f1"] == 0.895 and saved[-1] == meta
