"""Which parts of the Preprocess page a change reruns: the recipe panel and each view are fragments
of their own, so a slider move reruns only the open view (a handful of browser messages per move;
hidden views cost nothing), and a recipe loaded from elsewhere redraws the panel too."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAPIException

from components.recipe_panel import load_recipe
from core.segmentation.recipe import STEP_ORDER, Recipe

CONTROLS = "pre_controls"  # the recipe panel's fragment
HISTOGRAM = "pre_histogram"  # the Result view's histogram, a fragment below its pictures
# The views, each drawn by a fragment of its own: a slider move reruns only the open view's, so
# the browser gets a handful of messages per move and hidden views cost nothing.
VIEWS = {"Result": "pre_result", "Thresholds": "pre_thresholds", "Cells & crops": "pre_measure",
        "Recipe & all images": "pre_batch"}


def open_views(step: str | None = None) -> tuple[str, ...]:
    """The keys of the open view's fragments that a change of ``step`` (None: of anything) must
    rerun: the histogram only follows the steps up to the threshold."""
    view = VIEWS.get(st.session_state.get("pre_tab"), VIEWS["Result"])
    if view != VIEWS["Result"] or step in STEP_ORDER[STEP_ORDER.index("threshold") + 1:]:
        return (view,)
    return view, HISTOGRAM


def redraw_all() -> None:
    """Callback: rerun the recipe panel and the open view (everything when the view changed in the
    same rerun: its fragment is not drawn yet)."""
    try:
        st.rerun([CONTROLS, *open_views()])
    except StreamlitAPIException:
        st.rerun()


def use_recipe(recipe: Recipe, message: str = "") -> None:
    """Callback: make ``recipe`` current, say so, and redraw the controls and the views."""
    load_recipe(recipe)
    if message:
        st.session_state.recipe_message = message
    redraw_all()
