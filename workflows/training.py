"""The one training pipeline for segmenters trained on the user's cells: images with ground truth
-> a split -> the family's trainer -> the best epoch's checkpoint in the weights folder, which the
registry lists at once as ``trained:<family>:<name>``.

The Train page's background job (:func:`train_segmenter`) and the CLI's ``train`` command call
the same steps: :func:`plan_training` (every check, the split), :func:`run_training` and
:func:`training_summary`. What a family trains with comes from its registry entry
(:class:`models.registry.Trainer`), so a new family needs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.images import CellImage
from core.training.data import Split, TrainingPair, split_by_batch, split_by_image, training_pairs
from models.registry import Family, Trainer, trained_model_name, trainer_of


@dataclass(frozen=True)
class TrainingPlan:
    """A training checked and ready to run: the family, its settings, where the checkpoint goes,
    and the split of the images with ground truth."""

    family: Family
    training: Any  # the family's training settings (its Trainer.settings_class)
    out: Path
    pairs: list[TrainingPair]
    split: Split
    train: list[TrainingPair]
    val: list[TrainingPair]

    @property
    def trainer(self) -> Trainer:
        assert self.family.trainer is not None
        return self.family.trainer

    @property
    def model_name(self) -> str | None:
        """What the registry will call the checkpoint (None: outside the folder a family lists)."""
        return trained_model_name(self.family.name, self.out)


def checkpoint_target(family: str, out: str) -> Path:
    """The CLI's ``--out``: a checkpoint path, or a plain name (no folder, no suffix) for the
    weights folder."""
    trainer = trainer_of(family)[1]
    path = Path(out).expanduser()
    if "/" not in out and "\\" not in out and not path.suffix:
        return trainer.checkpoint_path(out)
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give the checkpoint's file name, e.g. "
                         f"{path / trainer.checkpoint_path('cells').name}")
    return path


def plan_training(family: str, images: Sequence[CellImage], *, settings: Mapping[str, Any], name: str | None = None,
                  out: Path | None = None, val_batches: Sequence[str] = (),
                  val_fraction: float | None = None) -> TrainingPlan:
    """Check a training of ``family`` on the ``images`` that have ground truth and split them:
    whole batches ``val_batches`` validate, else a seeded ``val_fraction`` of the images. The
    checkpoint goes to ``out``, or to the weights folder under ``name`` (a plain file name)."""
    fam, trainer = trainer_of(family)
    path = Path(out) if out is not None else trainer.checkpoint_path(name or "")  # refuses names with / \\ :
    training = trainer.settings(dict(settings))
    pairs = training_pairs([img for img in images if img.gt is not None])
    split = (split_by_batch(pairs, list(val_batches)) if val_batches else
             split_by_image(pairs, seed=int(getattr(training, "seed", 0)),
                            **({} if val_fraction is None else {"val_fraction": val_fraction})))
    train, val = split.apply(pairs)
    return TrainingPlan(fam, training, path, pairs, split, list(train), list(val))


def estimate_seconds(plan: TrainingPlan, device: str) -> float | None:
    """About how long the training takes at most on ``device`` (None: the family gives no estimate)."""
    estimate = plan.trainer.estimate_seconds
    if estimate is None or not plan.pairs:
        return None
    side = sorted(max(p.image.shape[:2]) for p in plan.pairs)[len(plan.pairs) // 2]
    return estimate(len(plan.pairs), device=device, training=plan.training, image_side=side,
                    val_fraction=len(plan.val) / len(plan.pairs))


def run_training(plan: TrainingPlan, *, device: str = "cpu", stop: Callable[[], bool] | None = None,
                 progress: Callable[[float, str], None] | None = None, on_epoch: Callable[[Any], None] | None = None,
                 threads: int | None = None) -> Any:
    """Train and save the best epoch at ``plan.out``; the trainer's result (``path``, ``best``,
    ``history``, ``metadata``, ``stopped``). ``threads``: CPU threads, for families that take them."""
    extra = {"threads": threads} if threads and plan.trainer.threads else {}
    return plan.trainer.train(plan.train, plan.val, training=plan.training, out=plan.out, device=device,
                              split=plan.split, stop=stop, progress=progress, on_epoch=on_epoch, **extra)


def training_summary(plan: TrainingPlan, result: Any) -> dict[str, Any]:
    """A plain summary (what a job keeps): model name, checkpoint, best epoch, the kept weights'
    validation F1 / precision / recall, why it stopped, the split."""
    kept = result.metadata["validation"]  # the saved weights' scores: the best epoch's, or an average's
    return {"model": plan.model_name or str(plan.out), "checkpoint": str(result.path or plan.out),
            "best_epoch": result.best.epoch, "averaged_epochs": list(kept.get("averaged_epochs") or []),
            "metrics": {k: float(kept[k]) for k in ("f1", "precision", "recall")},
            "stopped": result.stopped, "train_images": len(plan.train), "val_images": len(plan.val),
            "split": plan.split.to_dict()}


def train_segmenter(family: str, images: Sequence[CellImage], *, name: str, settings: Mapping[str, Any],
                    val_batches: Sequence[str] = (), val_fraction: float = 0.2, device: str = "cpu",
                    stop: Callable[[], bool] | None = None, progress: Callable[[float, str], None] | None = None,
                    on_epoch: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train ``family`` on the ``images`` that have ground truth and save the best epoch as the
    model ``trained:<family>:<name>`` in the weights folder; returns :func:`training_summary`."""
    plan = plan_training(family, images, settings=settings, name=name, val_batches=val_batches,
                         val_fraction=val_fraction)
    result = run_training(plan, device=device, stop=stop, progress=progress, on_epoch=on_epoch)
    return training_summary(plan, result)
