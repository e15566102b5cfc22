"""CellScope: the router and the shared sidebar. Run with `make run` (or `streamlit run app.py`)."""

import streamlit as st

from components import (
    cellmap_state,
    compare_state,
    curation_state,
    data_state,
    explain_state,
    lesson_state,
    preprocess_state,
    results_state,
    training_state,
)
from components.auth import sign_in_gate
from components.routing import routed
from components.sidebar import render_sidebar
from components.workspace import REDIRECTING_KEY, keep, open_workspace, save_workspace


def run() -> None:
    st.set_page_config(page_title="CellScope", page_icon="🔬", layout="wide")
    data = st.Page("pages/data.py", title="Data", icon=":material/photo_library:", url_path="data")

    def home() -> None:
        # The root URL shows the Data page at its own address, so /data also opens directly.
        st.session_state[REDIRECTING_KEY] = True
        st.switch_page(data, query_params=st.query_params.to_dict())

    # Each page, with the session keys it keeps across a reload (declared beside its state): kept in
    # every run, whatever page it shows, so a page left keeps its settings and a reload finds them.
    pages = [
        (data, data_state.KEPT),
        (st.Page("pages/preprocess.py", title="Preprocess", icon=":material/tune:"), preprocess_state.KEPT),
        (st.Page("pages/compare.py", title="Compare models", icon=":material/compare:"), compare_state.KEPT),
        (st.Page("pages/cellmap.py", title="Cell map", icon=":material/scatter_plot:", url_path="cellmap"),
         cellmap_state.KEPT),
        (st.Page("pages/explain.py", title="Explain", icon=":material/visibility:", url_path="explain"),
         explain_state.KEPT),
        (st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
         training_state.KEPT | curation_state.KEPT),
        (st.Page("pages/results.py", title="Results", icon=":material/folder_open:", url_path="results"),
         results_state.KEPT),
        (st.Page("pages/lesson.py", title="Lesson", icon=":material/school:", url_path="lesson"), lesson_state.KEPT),
    ]
    for page_, kept in pages:
        keep(page_.title, kept)
    page = st.navigation([st.Page(home, title="CellScope", url_path="home", default=True, visibility="hidden"),
                          *(p for p, _ in pages)])
    if not sign_in_gate():  # sign-in on and nobody signed in: its prompt only, no workspace, no page
        return
    open_workspace()  # before any widget: a reload of this tab gets its work back
    save_workspace()  # now too: a widget just changed is kept even if the tab reloads before this run ends
    try:
        with routed():
            page.run()
    finally:
        # Drawn after the page so it shows what the page just loaded or changed.
        render_sidebar()
        save_workspace()


if __name__ == "__main__":
    run()
