"""The one training pipeline for segmenters trained on the user's cells: images with ground truth
-> a split -> the family's trainer -> the best epoch's checkpoint in the weights folder, which the
registry lists at once as ``trained:<family>:<name>``.

The Train page's background job (:func:`train_segmenter`) and the CLI's ``train`` command call
the same steps: :func:`check_training_request` and :func:`model_name_problem` (the form's rules),
:func:`plan_training` (every other check, the split), :func:`run_training` (a :class:`TrainingRun`:
the trainer's result, :func:`training_summary` and the run as an :class:`~core.analysis.Analysis`
of kind ``training``). What a family trains with comes from its registry entry
(:class:`models.registry.Trainer`), so a new family needs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.analysis import Analysis, InputFile, LazyFiles, inputs_of
from core.data.images import CellImage
from core.names import name_problem
from core.training.data import Split, TrainingPair, split_by_batch, split_by_image, training_pairs
from models.checkpoint_file import metadata_path
from models.registry import Family, Trainer, trained_model_name, trainer_of
from workflows.provenance import provenance


def model_name_problem(name: str) -> str:
    """Why ``name`` cannot name a model trained here ("" if it can): :func:`core.names.name_problem`.
    The Train page's name field and the CLI's plain ``--out`` name are checked by this one rule."""
    return name_problem(name, "model")


def name_taken(family: str, name: str, pending: Collection[str] = ()) -> str:
    """Why ``name`` cannot be used for a new ``family`` model ("" if it can): a saved model has it,
    or ``pending`` (the names of this family's trainings not finished) does; a new one would
    overwrite it."""
    fam, trainer = trainer_of(family)
    try:
        exists = trainer.checkpoint_path(name).exists()
    except (OSError, ValueError) as exc:
        return f"'{name[:40]}…' cannot be a file name here ({exc.__class__.__name__}): choose a shorter, plainer name."
    if exists:
        return f"A {fam.label} named '{name}' exists already: choose another name."
    if name in pending:
        return f"A training named '{name}' is queued or running: choose another name."
    return ""


def check_training_request(family: str, name: str, *, split: str, val_batches: Sequence[str] = (),
                           batches: Collection[str] = (), pending: Collection[str] = ()) -> str:
    """What is wrong with a training the Train page's form describes ("" if nothing): the name
    (:func:`model_name_problem`, then :func:`name_taken`), and for ``split == "plates"`` the
    held-out plates ``val_batches`` of the ``batches`` with ground truth (one at least, not all)."""
    problem = model_name_problem(name) or name_taken(family, name, pending)
    if split == "plates" and not val_batches:
        problem = "Choose at least one plate to validate on."
    if split == "plates" and set(val_batches) == set(batches):
        problem = "Keep at least one plate for training."
    return problem


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
    inputs: tuple[InputFile, ...] = ()  # the images with ground truth, with their content hashes

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
    weights folder, checked as the Train page checks its names (:func:`model_name_problem`)."""
    trainer = trainer_of(family)[1]
    path = Path(out).expanduser()
    if "/" not in out and "\\" not in out and not path.suffix:
        if problem := model_name_problem(out):
            raise ValueError(f"--out {out}: {problem}")
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
    annotated = [img for img in images if img.gt is not None]
    pairs = training_pairs(annotated)
    split = (split_by_batch(pairs, list(val_batches)) if val_batches else
             split_by_image(pairs, seed=int(getattr(training, "seed", 0)),
                            **({} if val_fraction is None else {"val_fraction": val_fraction})))
    train, val = split.apply(pairs)
    return TrainingPlan(fam, training, path, pairs, split, list(train), list(val), inputs_of(annotated))


def estimate_seconds(plan: TrainingPlan, device: str) -> float | None:
    """About how long the training takes at most on ``device`` (None: the family gives no estimate)."""
    estimate = plan.trainer.estimate_seconds
    if estimate is None or not plan.pairs:
        return None
    side = sorted(max(p.image.shape[:2]) for p in plan.pairs)[len(plan.pairs) // 2]
    return estimate(len(plan.pairs), device=device, training=plan.training, image_side=side,
                    val_fraction=len(plan.val) / len(plan.pairs))


@dataclass(frozen=True)
class TrainingRun:
    """A finished (or stopped) training: the trainer's result (``path``, ``best``, ``history``,
    ``metadata``, ``stopped``), its plain :func:`training_summary` (what a job keeps) and the run
    as a record (:func:`training_analysis`)."""

    trained: Any
    summary: dict[str, Any]
    analysis: Analysis


def run_training(plan: TrainingPlan, *, device: str = "cpu", stop: Callable[[], bool] | None = None,
                 progress: Callable[[float, str], None] | None = None, on_epoch: Callable[[Any], None] | None = None,
                 threads: int | None = None) -> TrainingRun:
    """Train and save the best epoch at ``plan.out``. ``threads``: CPU threads, for families that take them."""
    extra = {"threads": threads} if threads and plan.trainer.threads else {}
    trained = plan.trainer.train(plan.train, plan.val, training=plan.training, out=plan.out, device=device,
                                 split=plan.split, stop=stop, progress=progress, on_epoch=on_epoch, **extra)
    return TrainingRun(trained, training_summary(plan, trained), training_analysis(plan, trained, device))


def training_analysis(plan: TrainingPlan, trained: Any, device: str) -> Analysis:
    """The training as a record: its inputs (the images with ground truth, hashed), its settings
    (family, the family's training settings, the split, device, checkpoint), tables ``history``
    (one row per epoch) and ``images`` (each image's batch, role and cells), and files: the
    checkpoint and its metadata JSON, read when asked."""
    checkpoint = Path(trained.path or plan.out)
    history = pd.DataFrame([r.to_dict() for r in trained.history],
                           columns=["epoch", "loss", "val_loss", "f1", "precision", "recall", "seconds"])
    roles = {**{p.name: "training" for p in plan.train}, **{p.name: "validation" for p in plan.val}}
    images = pd.DataFrame([{"image": p.name, "batch": p.batch, "role": roles.get(p.name, ""), "cells": p.n_objects}
                           for p in plan.pairs], columns=["image", "batch", "role", "cells"])
    settings = {"family": plan.family.name, "model": plan.model_name, "training": plan.training.to_dict(),
                "split": plan.split.to_dict(), "device": device, "checkpoint": str(checkpoint)}
    prov = provenance(device=device, extra={"trained": plan.family.name, "model": plan.model_name,
                                            "checkpoint": str(checkpoint), "stopped": trained.stopped})
    files = LazyFiles({path.name: (lambda path=path: path.read_bytes())
                       for path in (checkpoint, metadata_path(checkpoint)) if path.is_file()})
    return Analysis("training", plan.inputs, settings, prov, tables={"history": history, "images": images},
                    files=files)


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
                    on_epoch: Callable[[Any], None] | None = None) -> TrainingRun:
    """Train ``family`` on the ``images`` that have ground truth and save the best epoch as the
    model ``trained:<family>:<name>`` in the weights folder (the Train page's job keeps the run's
    ``summary``)."""
    plan = plan_training(family, images, settings=settings, name=name, val_batches=val_batches,
                         val_fraction=val_fraction)
    return run_training(plan, device=device, stop=stop, progress=progress, on_epoch=on_epoch)
