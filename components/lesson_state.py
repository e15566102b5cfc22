"""What a lesson keeps for each student across a reload: where they are, which steps they did,
which checkpoints passed with which number, and their own settings of every step's widgets
(keys ``ls.<lesson>.<step>.…``). The step is also in the URL (``?lesson=…&step=…``), so an
instructor can open step 5 directly or hand the link to the class: a link without a workspace
id starts a fresh copy for each student."""

from __future__ import annotations

from typing import Any

import streamlit as st

from components.lesson_actions import STEP_KEY_PREFIX
from components.workspace import Kept, forget_widgets

PROGRESS_KEY = "lesson.progress"  # {lesson id: {"at": step id, "checks": {step id: Check.to_json()}}}
PRESENT_KEY = "lesson.present"

KEPT = Kept(state=(PROGRESS_KEY,), widgets=("lesson.choice", PRESENT_KEY), prefixes=(STEP_KEY_PREFIX,))


def progress(lesson_id: str) -> dict[str, Any]:
    every = st.session_state.setdefault(PROGRESS_KEY, {})
    return every.setdefault(lesson_id, {"at": None, "checks": {}})


def record_check(lesson_id: str, step_id: str, check: dict[str, Any]) -> None:
    """Keep a step's checkpoint (a new dict each time: the workspace notices a changed value)."""
    every = dict(st.session_state.get(PROGRESS_KEY, {}))
    mine = dict(every.get(lesson_id, {"at": None, "checks": {}}))
    if mine["checks"].get(step_id) != check:
        mine["checks"] = {**mine["checks"], step_id: check}
        every[lesson_id] = mine
        st.session_state[PROGRESS_KEY] = every


def go_to(lesson_id: str, step_id: str) -> None:
    every = dict(st.session_state.get(PROGRESS_KEY, {}))
    mine = dict(every.get(lesson_id, {"at": None, "checks": {}}))
    mine["at"] = step_id
    every[lesson_id] = mine
    st.session_state[PROGRESS_KEY] = every


def reset(lesson_id: str) -> None:
    """Back to the start: this lesson's checkpoints and the student's settings of its steps forgotten."""
    every = dict(st.session_state.get(PROGRESS_KEY, {}))
    every.pop(lesson_id, None)
    st.session_state[PROGRESS_KEY] = every
    forget_widgets(f"{STEP_KEY_PREFIX}{lesson_id}.")
