"""A run still being written by a batch job (``python -m core run``): its progress on the Results
page, redrawn every few seconds, and the run opened by itself once it is whole."""

from __future__ import annotations

import streamlit as st

from core.run_parts import job_progress
from core.runs import RUN_FILE, RunInfo
from core.text import duration

REFRESH_S = 5  # how often the page looks at the job's progress again


def job_view(info: RunInfo) -> None:
    """The job's progress bar with its counts, rate and time left, redrawn every :data:`REFRESH_S`
    seconds; once the job has written ``run.json`` the page reruns and opens the run."""

    @st.fragment(run_every=REFRESH_S)
    def progress() -> None:
        now = job_progress(info.path) or info.progress
        if (info.path / RUN_FILE).is_file() or _moved(now, info.progress):
            st.rerun()  # whole now (the page opens it), or further on: the whole page, the list too, says so
        if now is None:
            st.info(f"The run “{info.name}” is being prepared by a batch job.")
            return
        st.progress(min(now.fraction, 1.0), text=f"**{info.name}** {now.words()}")
        rate = f"{now.rate:.2f} images/s" if now.rate > 0 else "rate not known yet"
        st.caption(f"{rate} · models: {', '.join(info.models)} · {info.path} · The run opens here when the job has "
                   f"written it; this page looks again every {duration(REFRESH_S)}.")
        if now.stale or now.state in ("interrupted", "failed"):
            st.warning("The job stopped before the end (it was interrupted, or its machine went away). The images "
                       "finished are kept: run the same `python -m core run` command again to finish the run.")

    progress()


def _moved(now, then) -> bool:
    """Whether the job said something new since the page was drawn (images done, failed, its state)."""
    if now is None or then is None:
        return now is not then
    return (now.done, now.failed, now.state, now.stale) != (then.done, then.failed, then.state, then.stale)
