"""models/best_epoch.py and models/training_loop.py: the best epoch is kept, and an average of the last epochs when it
scores as well; the one epoch loop averages, stops early and stops on request."""

from __future__ import annotations

import torch

from models.best_epoch import BestEpoch, EpochRecord
from models.training_loop import run_epochs


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


class _Script:
    """A family's step and validation, scripted: step losses 1, 2, 3, ... and F1s in the given order."""

    def __init__(self, f1s: list[float], stop_before_step: int | None = None) -> None:
        self.f1s, self.stop_before_step = iter(f1s), stop_before_step
        self.steps = 0
        self.reports: list[tuple[float, str, bool]] = []
        self.after: list[bool] = []

    def step(self) -> float:
        self.steps += 1
        return float(self.steps)

    def scores(self) -> dict[str, float]:
        f1 = next(self.f1s)
        return {"f1": f1, "precision": f1, "recall": f1}

    def stop(self) -> bool:
        return self.stop_before_step is not None and self.steps + 1 >= self.stop_before_step

    def report(self, fraction: float, message: str, force: bool = False) -> None:
        self.reports.append((fraction, message, force))

    def run(self, best: BestEpoch, epochs: int = 5, steps: int = 2, records: list | None = None) -> str:
        return run_epochs(torch.nn.Linear(2, 1), best, epochs=epochs, steps_per_epoch=steps, step=self.step,
                          validation_scores=self.scores, validation_loss=lambda: 0.25, report=self.report,
                          stop=self.stop, on_epoch=None if records is None else records.append,
                          after_validation=self.after.append)


def test_the_training_loop_averages_step_losses_keeps_the_best_epoch_and_stops_early():
    script, records = _Script([0.2, 0.5, 0.4, 0.3, 0.9]), []
    best = BestEpoch({"family": "test"}, patience=2)
    assert script.run(best, records=records) == "early stopping: no better validation F1 for 2 epochs"
    assert [(r.epoch, r.loss, r.val_loss, r.f1) for r in records] == [(1, 1.5, 0.25, 0.2), (2, 3.5, 0.25, 0.5),
                                                                       (3, 5.5, 0.25, 0.4), (4, 7.5, 0.25, 0.3)]
    assert best.history == records and best.epoch == 2 and script.steps == 8 and script.after == [False] * 4
    forced = [(fraction, message) for fraction, message, force in script.reports if force]
    assert forced[1] == (0.4, "epoch 2/5: loss 3.5000, validation F1 0.500 (best 0.500 at epoch 2)")
    assert script.reports[0] == (0.1, "epoch 1/5, step 1/2: loss 1.0000", False) and len(script.reports) == 12


def test_a_stop_validates_the_epoch_under_way_or_ends_between_epochs():
    script = _Script([0.2, 0.6], stop_before_step=4)  # steps 1-3 run: the stop comes in epoch 2
    best = BestEpoch({"family": "test"}, patience=5)
    assert script.run(best) == "stopped during epoch 2"
    assert [r.loss for r in best.history] == [1.5, 3.0] and best.epoch == 2 and script.after == [False, True]
    between = _Script([0.2], stop_before_step=3)  # epoch 1 ends, epoch 2 never starts a step
    best = BestEpoch({"family": "test"}, patience=5)
    assert between.run(best) == "stopped after epoch 1" and len(best.history) == 1
    assert _Script([0.1, 0.2]).run(BestEpoch({"family": "test"}, patience=5), epochs=2) == "completed"
