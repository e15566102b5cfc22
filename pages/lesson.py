"""Lesson: a course's story told step by step on live CellScope widgets, with explanations beside
the results and a checkpoint on each step (lessons are YAML files in lessons/)."""

from __future__ import annotations

import streamlit as st

from components.lesson_view import (
    catalog,
    choose_lesson,
    current_index,
    navigation,
    preparation,
    preparation_status,
    presenter_css,
    step_list,
    step_view,
)
from components.model_panel import current_device
from components.routing import require_router


def lesson_page() -> None:
    require_router()
    lessons, problems = catalog()
    for problem in problems:
        st.error(f"A lesson file cannot be used: {problem}")
    if not lessons:
        st.title("Lesson")
        st.warning("No lesson files found in the lessons/ folder.")
        return
    lesson = choose_lesson(lessons)
    presenter_css()
    index = current_index(lesson)
    st.title(lesson.title)
    prep = preparation(lesson)
    st.caption(f"{lesson.summary} The lesson runs on its own {len(prep.images)} images; the dataset in the sidebar "
               "is your session's and stays as it is.")
    preparation_status(prep)
    step_view(lesson, index, prep, current_device())
    navigation(lesson, index)
    step_list(lesson, index)


lesson_page()
