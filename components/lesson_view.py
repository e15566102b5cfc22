"""The Lesson page's parts: which lesson, the background preparation, one step on screen (why,
the live action, what to look at, the checkpoint, try this, the full page), the step list and
presenter mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from components.lesson_actions import STEP_KEY_PREFIX, StepContext
from components.lesson_all_actions import known_actions
from components.lesson_state import PRESENT_KEY, go_to, progress, record_check, reset
from components.state import example_images, holds_own_images, load_lesson_images, shared_read_only
from core.lesson.all_checks import known_checkpoints, run_checkpoint
from core.lesson.checkpoints import Check
from core.lesson.spec import Lesson, LessonError, lesson_files, load_lesson
from workflows.lesson import lesson_images
from workflows.lesson_preparation import Preparation

PAGE_FILES = {"data": "pages/data.py", "preprocess": "pages/preprocess.py", "compare": "pages/compare.py",
              "cellmap": "pages/cellmap.py", "explain": "pages/explain.py", "train": "pages/train.py",
              "results": "pages/results.py"}
CONFIRM_KEY = "lesson.confirm_replace"  # the step whose "open on the lesson's images" waits for a yes
PAGE_TITLES = {"data": "Data", "preprocess": "Preprocess", "compare": "Compare models", "cellmap": "Cell map",
               "explain": "Explain", "train": "Train", "results": "Results"}
# Presenter mode: the main area zoomed (text, charts, tables and pictures alike) for the back row.
PRESENTER_CSS = """<style>
[data-testid="stMainBlockContainer"] {zoom: 1.3; max-width: 100%; padding-top: 1rem;}
[data-testid="stSidebar"] [data-testid="stRadio"] label p {font-size: 0.95rem;}
</style>"""


def _stamp(paths: list[Path]) -> tuple[tuple[str, float], ...]:
    return tuple((str(p), p.stat().st_mtime) for p in paths)


@st.cache_resource(show_spinner=False, max_entries=4)
def _catalog(stamp: tuple[tuple[str, float], ...]) -> tuple[dict[str, Lesson], tuple[str, ...]]:
    """Every lesson file read and checked (again when one is edited): lessons by id, and one
    message per file that cannot be taught."""
    names = {"actions": set(known_actions()), "checkpoints": set(known_checkpoints())}
    lessons, problems = {}, []
    for path, _ in stamp:
        try:
            lesson = load_lesson(path, **names)
        except LessonError as exc:
            problems.append(str(exc))
            continue
        lessons[lesson.id] = lesson
    return lessons, tuple(problems)


def catalog() -> tuple[dict[str, Lesson], tuple[str, ...]]:
    return _catalog(_stamp(lesson_files()))


@st.cache_resource(show_spinner="Generating the lesson's images…")
def shared_images(dataset: str) -> tuple:
    """The lesson's images, shared read-only by every student (the example: the app's own copy)."""
    return example_images() if dataset == "example" else shared_read_only(lesson_images(dataset))


@st.cache_resource(show_spinner=False, max_entries=4)
def preparation(lesson: Lesson) -> Preparation:
    """The lesson's slow steps, started once per server process when the lesson first opens and
    shared by every student (same images, same defaults)."""
    return Preparation(lesson, shared_images(lesson.dataset)).start()


def choose_lesson(lessons: dict[str, Lesson]) -> Lesson:
    asked = st.query_params.get("lesson")
    ids = list(lessons)
    if asked in lessons:
        st.session_state["lesson.choice"] = asked
    elif asked is not None:
        st.warning(f"There is no lesson {asked!r}; the lessons here: {', '.join(ids)}.")
    elif st.session_state.get("lesson.choice") not in lessons:
        st.session_state["lesson.choice"] = ids[0]
    chosen = st.sidebar.selectbox("Lesson", ids, key="lesson.choice", format_func=lambda i: lessons[i].title,
                                  help="The lesson to follow. Lessons are YAML files in the lessons/ folder.")
    return lessons[chosen]


def current_index(lesson: Lesson) -> int:
    """The step shown: the URL's (a link to step 5), else where this student was, else the first."""
    asked = st.query_params.get("step")
    mine = progress(lesson.id)
    found = lesson.find(asked) if asked is not None else None
    index = found if found is not None else lesson.index(mine.get("at"))
    if asked is not None and found is None:
        st.warning(f"This lesson has no step {asked!r} (steps 1 to {len(lesson.steps)}, or "
                   f"{', '.join(s.id for s in lesson.steps)}): showing step {index + 1}.")
    step_id = lesson.steps[index].id
    if mine.get("at") != step_id:
        go_to(lesson.id, step_id)
    st.query_params["lesson"], st.query_params["step"] = lesson.id, step_id
    return index


def _move(lesson: Lesson, index: int) -> None:
    step_id = lesson.steps[index].id
    go_to(lesson.id, step_id)
    st.query_params["step"] = step_id


def step_list(lesson: Lesson, index: int) -> None:
    """The sidebar's list of steps (drawn after the step, so a checkpoint just passed shows) to jump
    to, and which checkpoints passed. The list's labels never change: a radio whose labels change is
    a new widget to Streamlit, and its change callback then fired with a value of the old one."""
    checks = progress(lesson.id)["checks"]
    ids = [s.id for s in lesson.steps]
    titles = {s.id: f"{i + 1}. {s.title}" for i, s in enumerate(lesson.steps)}
    with st.sidebar:
        # A key per step shown: the radio starts at that step, whichever way the student got there;
        # a choice moves before the next run draws anything (a callback).
        key = f"lesson.steps.{lesson.id}.{index}"

        def jump() -> None:
            chosen = st.session_state.get(key)
            if chosen in ids:
                _move(lesson, ids.index(chosen))

        st.radio("Steps", ids, index=index, format_func=titles.get, key=key, on_change=jump,
                 help="Jump to a step.")
        marks = [f"{i + 1} :green[:material/check_circle:]" if (checks.get(sid) or {}).get("passed") else
                 f"{i + 1} :orange[:material/error:]" for i, sid in enumerate(ids)
                 if (checks.get(sid) or {}).get("passed") is not None]
        if marks:
            st.caption("Checkpoints: " + " · ".join(marks))
        done = sum(bool((checks.get(s.id) or {}).get("passed")) for s in lesson.steps)
        st.caption(f"{done} of {len(lesson.steps)} checkpoints passed.")
        st.toggle("Presenter mode", key=PRESENT_KEY,
                  help="Larger text and pictures for a projector. ← and → (or the Back and Next buttons) move "
                       "between steps.")
        students_link(lesson, index)
        st.button("Reset to the start", key="lesson.reset", icon=":material/restart_alt:",
                  on_click=lambda: (reset(lesson.id), _move(lesson, 0)),
                  help="Forget this lesson's checkpoints and your settings of its steps; back to step 1.")


def students_link(lesson: Lesson, index: int) -> None:
    """The link to hand the class: this lesson and step, without this tab's workspace id, so each
    student who opens it gets a fresh copy of their own (kept across their reloads)."""
    base = (st.context.url or "").rstrip("/")  # this page's address, without its query
    if not base:
        return
    st.caption("Link for the class (each student gets a fresh copy; their progress survives a reload):")
    st.code(f"{base}?{urlencode({'lesson': lesson.id, 'step': lesson.steps[index].id})}", language=None,
            wrap_lines=True)


def presenter_css() -> None:
    if st.session_state.get(PRESENT_KEY):
        st.html(PRESENTER_CSS)


def preparation_status(prep: Preparation) -> None:
    """One line on the lesson's background preparation, redrawn every 2 s while it runs; the page
    once it is done (then the line is gone and nothing is redrawn any more)."""
    if prep.done:
        return

    @st.fragment(run_every=2.0)
    def line() -> None:
        if prep.done:
            st.rerun(scope="app")
        running = [(sid, s) for sid, s in prep.steps.items() if s.state == "running"]
        ready = sum(s.state == "done" for s in prep.steps.values())
        total = sum(s.state != "none" for s in prep.steps.values())
        what = f" — now: {running[0][0]} ({running[0][1].message or 'starting'})" if running else ""
        st.caption(f":material/hourglass_top: Preparing the slow steps in the background: {ready} of {total} "
                   f"ready{what}. Steps that are ready work now.")

    line()


def _checkpoint_box(check: Check) -> None:
    if check.passed:
        st.success(f"**Checkpoint passed.** {check.text}", icon=":material/check_circle:")
    elif check.passed is False:
        st.warning(f"**Checkpoint not passed.** {check.text}", icon=":material/error:")
    else:
        st.info(f"**Checkpoint.** {check.text}", icon=":material/pending:")


def _waiting(prep: Preparation, step_id: str) -> None:
    """While a step's preparation runs: its progress, refreshed until it is done (then the page)."""
    @st.fragment(run_every=1.5)
    def watch() -> None:
        state = prep.steps[step_id]
        if state.state in ("done", "failed"):
            st.rerun(scope="app")
        queued = state.state == "waiting"
        st.progress(state.fraction, text="Waiting for the steps before it…" if queued else
                    f"Preparing this step in the background: {state.message or 'starting'}")

    watch()


def step_view(lesson: Lesson, index: int, prep: Preparation, device: str) -> None:
    step = lesson.steps[index]
    st.subheader(f"Step {index + 1} of {len(lesson.steps)}: {step.title}")
    st.markdown(step.why)
    state = prep.steps[step.id]
    others = {s.action: prep.result(s.id) for s in lesson.steps if s.id != step.id and prep.result(s.id) is not None}
    ctx = StepContext(lesson, step, prep.images, prep.result(step.id), state.state,
                      f"{STEP_KEY_PREFIX}{lesson.id}.{step.id}.", device, others)
    if state.state in ("waiting", "running"):
        _waiting(prep, step.id)
    elif state.state == "failed":
        st.error(f"The background preparation of this step failed ({state.message}); its live part below may still "
                 "work.")
    result: Any = None
    with st.container(border=True):
        try:
            result = known_actions()[step.action](ctx)
        except (ValueError, RuntimeError, MemoryError, OSError) as exc:
            st.error(f"This step could not run: {exc}")
    st.markdown(f":material/visibility: **What to look at.** {step.look_at}")
    check = run_checkpoint(step.checkpoint, result, step.params)
    if result is None and state.state in ("waiting", "running"):
        check = Check(None, None, "This step is being prepared in the background; its checkpoint reads the result "
                                  "as soon as it is ready.")
    if check.passed is not None:
        record_check(lesson.id, step.id, check.to_json())
    _checkpoint_box(check)
    st.markdown(f":material/lightbulb: **Try this.** {step.try_this}")
    if step.page:
        full_page(lesson, step, prep.images)


def _open_with_lesson_images(step, images) -> None:
    """The step's page on the lesson's images, with the settings that make it show what the step did."""
    load_lesson_images(images)
    st.session_state.pop(CONFIRM_KEY, None)
    for key, value in step.page_settings.items():
        st.session_state[key] = value
    st.switch_page(PAGE_FILES[step.page])


def full_page(lesson: Lesson, step, images) -> None:
    """The step's full page: on the lesson's images (what the step showed), or on the session's own."""
    title = PAGE_TITLES[step.page]
    c1, c2 = st.columns(2, vertical_alignment="center")
    c2.page_link(PAGE_FILES[step.page], label=f"The {title} page on your images", icon=":material/open_in_new:")
    if c1.button(f"Open the {title} page on the lesson's images", key=f"lesson.open.{step.id}",
                 icon=":material/open_in_new:", help="Loads the lesson's images into your session, then opens the "
                 "page: what this step showed, with every control of the full page."):
        if holds_own_images():
            st.session_state[CONFIRM_KEY] = step.id
        else:
            _open_with_lesson_images(step, images)
    if st.session_state.get(CONFIRM_KEY) == step.id:
        n = len(st.session_state.dataset)
        st.warning(f"This replaces the {n} images you loaded (and their settings) with the lesson's {len(images)}. "
                   "Download or save what you need first (Data page).")
        a, b = st.columns(2)
        if a.button("Replace them and open", key=f"lesson.replace.{step.id}", type="primary"):
            _open_with_lesson_images(step, images)
        if b.button("Keep my images", key=f"lesson.keep.{step.id}"):
            st.session_state.pop(CONFIRM_KEY, None)
            st.rerun()


def navigation(lesson: Lesson, index: int) -> None:
    """Back and Next (also the ← and → keys), moving before the next run draws anything."""
    back, _, nxt = st.columns([1, 3, 1])
    back.button("Back", key="lesson.back", icon=":material/arrow_back:", disabled=index == 0, shortcut="Left",
                width="stretch", on_click=_move, args=(lesson, index - 1), help="The previous step (← key).")
    nxt.button("Next", key="lesson.next", icon=":material/arrow_forward:", icon_position="right",
               disabled=index == len(lesson.steps) - 1, type="primary", shortcut="Right", width="stretch",
               on_click=_move, args=(lesson, index + 1), help="The next step (→ key).")
