"""Results: the saved runs, searchable, and one run's plate overview, F1 per model, batch-effect
verdict, cell map and CAM summary, or two to four runs compared. Read-only (but for deleting a
run); the address names the run and the view (or the runs compared), so a copied link shows the
same thing."""

from __future__ import annotations

import streamlit as st

from components.results_compare import compare_toggle, compare_view
from components.results_images import image_view
from components.results_jobs import job_view
from components.results_map import cellmap_view
from components.results_state import load_run, reading, remember_address, restore_address
from components.results_views import (
    explain_view,
    files_view,
    models_view,
    plate_view,
    provenance_view,
    run_list,
    run_picker,
    summary_view,
    view_picker,
)
from components.routing import require_router
from core.runs import list_runs


def results_page() -> None:
    require_router()
    restore_address()  # back from another page: the view left
    st.title("Results")
    infos = list_runs()
    picker, mode = st.columns([3, 2], vertical_alignment="bottom")  # room for four runs compared
    if compare_toggle(mode):
        compare_view(picker, [i for i in infos if i.progress is None])  # whole runs only
        st.divider()
    elif (info := run_picker(picker, infos)) is not None and info.progress is not None:
        job_view(info)  # a batch job's run, not whole yet
        st.divider()
    elif info is not None:
        with reading(info.name):
            run = load_run(info)
            summary_view(run)
            view = view_picker(run)
            {"Overview": lambda: plate_view(run), "Models": lambda: models_view(run), "Images": lambda: image_view(run),
             "Cell map": lambda: cellmap_view(run), "Explain": lambda: explain_view(run),
             "Provenance": lambda: provenance_view(run), "Files": lambda: files_view(run)}[view]()
            st.divider()
    st.subheader("Saved runs")
    run_list(infos)
    remember_address()


results_page()
