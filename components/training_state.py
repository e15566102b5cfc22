"""The server's one training queue (trainings run one at a time, in order, in the background)
and the Train page's view of it: submitting a training of the workspace's images, and reading
its progress back after any rerun or reload."""

from __future__ import annotations

from typing import Any

import streamlit as st

from components.auth import current_user
from components.workspace import ID_KEY, Kept
from core.data.images import CellImage
from core.training.jobs import JobContext, JobQueue, TrainingJob
from models.trained_models import record_owner
from workflows.training import train_segmenter

# What the Train page's training form keeps across a reload (the trainings are the queue's).
KEPT = Kept(
    widgets=("tr.family", "tr.split", "tr.name", "tr.val_batches", "tr.val_fraction"),
    prefixes=("tr.fam.",),
)


@st.cache_resource(show_spinner=False)
def training_queue() -> JobQueue:
    """One per server process: a second training waits for the first (one CPU or GPU is better
    used by one training at a time)."""
    return JobQueue(max_finished=50)


def owner() -> str | None:
    """Jobs belong to the workspace (the ``?ws=`` link), so a reload or another tab finds them."""
    return st.session_state.get(ID_KEY)


def submit_training(family: str, images: list[CellImage], *, name: str, settings: dict[str, Any],
                    val_batches: list[str], val_fraction: float, device: str) -> str:
    """Queue a training of ``family`` on ``images`` (the ones with ground truth); its id."""
    who = current_user()  # read here: the job runs in another thread, without the session

    def run(ctx: JobContext) -> dict[str, Any]:
        try:
            return train_segmenter(family, images, name=name, settings=settings, val_batches=val_batches,
                                   val_fraction=val_fraction, device=device, stop=ctx.stop_requested,
                                   progress=ctx.progress, on_epoch=ctx.epoch).summary
        finally:  # a failed training's best epoch so far is a model too
            if who:
                record_owner(family, name, who)

    params = {"family": family, "name": name, "settings": settings, "val_batches": val_batches,
              "val_fraction": val_fraction, "device": device, "images": len(images)}
    return training_queue().submit(family, name, params, run, owner=owner())


def pending_names(family: str) -> set[str]:
    """The names of ``family``'s trainings queued or running on this server (in any workspace)."""
    return {j.name for j in training_queue().jobs() if j.family == family and not j.is_finished}


def my_jobs() -> list[TrainingJob]:
    """This workspace's trainings, newest first."""
    return training_queue().jobs(owner())
