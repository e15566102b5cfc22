"""The Train page's *Trainings*: this workspace's trainings, newest first, each with its state, a
Stop button, its progress, its curves, and once done its scores and a way to Compare."""

from __future__ import annotations

import streamlit as st

from components.model_panel import add_to_comparison
from components.training_state import my_jobs, training_queue
from core.figures.training import training_figure
from core.text import plural
from core.training.jobs import TrainingJob
from models.registry import get_family

STATE_STYLE = {"queued": ":material/schedule:", "running": ":material/play_circle:", "stopping": ":material/stop_circle:",
               "done": ":material/check_circle:", "stopped": ":material/stop_circle:", "failed": ":material/error:"}


def job_view(job: TrainingJob) -> None:
    head, stop = st.columns([4, 1], vertical_alignment="center")
    try:
        label = get_family(job.family).label
    except ValueError:  # a family no longer registered
        label = job.family
    head.markdown(f"{STATE_STYLE.get(job.state, '')} **{label} '{job.name}'** · {job.state}"
                  + (f" · {job.position} ahead of it" if job.state == "queued" and job.position else ""))
    if not job.is_finished and stop.button("Stop", key=f"tr.stop.{job.id}", width="stretch",
                                           help="Ends training after the current step; the best epoch so far is kept."):
        training_queue().stop(job.id)
        st.rerun()
    if job.state in ("running", "stopping"):
        st.progress(min(max(job.fraction, 0.0), 1.0), text=job.message or "starting…")
    if job.epochs:
        st.plotly_chart(training_figure(job.epochs, best_epoch=job.best_epoch), width="stretch",
                        key=f"tr.curve.{job.id}.{len(job.epochs)}", config={"displaylogo": False})
    if job.state == "failed":
        st.error(f"Training failed: {job.error}")
    elif job.is_finished and job.result:
        job_result(job)


def job_result(job: TrainingJob) -> None:
    """A finished training's model: its validation scores (or a warning that it found almost no cells)."""
    metrics = job.result.get("metrics", {})
    if metrics.get("f1", 0.0) < 0.05:
        st.warning(f"**{job.result['model']}** was saved ({job.result.get('stopped', job.state)}) but found almost "
                   f"no cells on the validation images (F1 {metrics.get('f1', 0.0):.3f}): train longer, or start "
                   "from pretrained weights, before using it.")
        return
    averaged = job.result.get("averaged_epochs") or []
    kept = (f"the weights of epochs {averaged[0]}-{averaged[-1]} averaged (the best single epoch was "
            f"{job.result.get('best_epoch')})" if averaged else f"best epoch {job.result.get('best_epoch')}")
    st.success(f"**{job.result['model']}** is ready ({job.result.get('stopped', job.state)}): {kept}, validation F1 "
               f"{metrics.get('f1', float('nan')):.3f} at IoU 0.5 (precision {metrics.get('precision', float('nan')):.3f}, "
               f"recall {metrics.get('recall', float('nan')):.3f}) on {plural(job.result.get('val_images', 0), 'image')}. "
               "It is in the Compare page's model list now.")
    if st.button("Compare it with the other models", key=f"tr.compare.{job.id}", icon=":material/compare:",
                 on_click=add_to_comparison, args=(job.result["model"],),
                 help="Open the Compare page with this model added to the chosen ones."):
        st.switch_page("pages/compare.py")


def jobs_view() -> None:
    jobs = my_jobs()
    if not jobs:
        st.caption("No training yet in this workspace.")
        return
    for job in jobs[:5]:
        with st.container(border=True):
            job_view(job)


def trainings() -> None:
    """The list of trainings: while something trains it refreshes itself every 2 s; otherwise it is drawn once."""
    active = any(not j.is_finished for j in my_jobs())
    st.fragment(run_every=2.0 if active else None)(jobs_view)()
