"""CellScope: the router and the shared sidebar. Run with `make run` (or `streamlit run app.py`)."""

import streamlit as st

from components.routing import routed
from components.sidebar import render_sidebar


def run() -> None:
    st.set_page_config(page_title="CellScope", page_icon="🔬", layout="wide")
    page = st.navigation(
        [
            st.Page("pages/data.py", title="Data", icon=":material/photo_library:", default=True),
            st.Page("pages/preprocess.py", title="Preprocess", icon=":material/tune:"),
            st.Page("pages/compare.py", title="Compare models", icon=":material/compare:"),
        ]
    )
    try:
        with routed():
            page.run()
    finally:
        # Drawn after the page so it shows what the page just loaded or changed.
        render_sidebar()


if __name__ == "__main__":
    run()
