""""Save as run": one row (a name and a button) that saves a page's result, its analysis records,
as a named run on disk (:func:`core.runs.save_run`), for the Results page and the ``runs`` commands.

Nothing is saved before the button is pressed. A name that is not file-safe or is taken is refused
with :func:`core.runs.save_run`'s message and nothing else changes; a run is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import streamlit as st
from streamlit.errors import StreamlitAPIException

from components.auth import current_user
from core.analysis import Analysis
from core.data.images import CellImage
from core.runs import runs_dir, save_run

Analyses = Callable[[], Sequence[Analysis]] | Sequence[Analysis]
Images = Callable[[], Sequence[CellImage]] | Sequence[CellImage]
RESULTS_PAGE = "pages/results.py"  # the Results page (url_path "results"): ?run=NAME opens a run there


class HeldRecord:
    """An analysis record kept in session state beside a page's result. Opaque on purpose: the
    workspace reads containers and dataclasses item by item (to size them and see changes), and
    reading a record's lazy files would make them (a zip of every result) on every rerun."""

    __slots__ = ("record",)

    def __init__(self, record: Analysis) -> None:
        self.record = record


def held(value: object) -> Analysis | None:
    """The record a :class:`HeldRecord` holds (None for anything else, e.g. nothing yet)."""
    return value.record if isinstance(value, HeldRecord) else None


def default_run_name(prefix: str, now: datetime | None = None) -> str:
    """``prefix`` and the minute, e.g. ``cellmap-20261207-1342``."""
    return f"{prefix}-{(now or datetime.now()):%Y%m%d-%H%M}"


def free_name(name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... if a run has it already (a default that saves)."""
    root, candidate, n = runs_dir(), name, 1
    while (root / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _said_key(key: str) -> str:
    return f"{key}.said"


def images_read(records: Sequence[Analysis], images: Sequence[CellImage]) -> list[CellImage]:
    """The ``images`` the records read, by name and pixels: an image changed or added since the
    result was made is not saved beside it."""
    read = {(f.name, f.pixels_hash) for record in records for f in record.inputs}
    return [img for img in images if (img.name, img.hash) in read]


def _offered_key(key: str) -> str:
    return f"{key}.offered"


def _offer(key: str, default_name: str) -> None:
    """Put a free default name in the box, remembering it was ours, not the user's."""
    st.session_state[key] = st.session_state[_offered_key(key)] = free_name(default_name)


def _save(key: str, analyses: Analyses, default_name: str, images: Images) -> None:
    """The button's callback (before the page is drawn again, so the name box may be reset)."""
    name = (st.session_state.get(key) or "").strip()
    if name == st.session_state.get(_offered_key(key)) and (runs_dir() / name).exists():
        name = free_name(name)  # our default, taken meanwhile by another user: the next free one, not a refusal
    try:
        records = list(analyses() if callable(analyses) else analyses)
        shown = images_read(records, list(images() if callable(images) else images))
        info = save_run(name, records, images=shown, owner=current_user())  # owner: None unless sign-in is on
    except ValueError as exc:  # a bad or taken name, or nothing to save: said, nothing else changes
        st.session_state[_said_key(key)] = ("error", str(exc))
        return
    st.session_state[_said_key(key)] = ("saved", info.name, str(info.path.parent))
    _offer(key, default_name)  # the name just saved is taken now


def _results_link(name: str) -> None:
    """A link to the run on the Results page, where the app has one (nothing otherwise)."""
    try:
        st.page_link(RESULTS_PAGE, label=f"Open {name} on the Results page", icon=":material/open_in_new:",
                     query_params={"run": name})
    except StreamlitAPIException:  # no Results page registered in this app
        pass


def save_run_control(key: str, analyses: Analyses, *, default_name: str, images: Images = ()) -> None:
    """A "Run name" box and a "Save as run" button saving ``analyses`` (records, or a function
    returning them, called only on a click) as a run, with the display pictures of those of
    ``images`` (or a function returning them) that the records read; what happened, below them."""
    if key not in st.session_state:
        _offer(key, default_name)
    where = runs_dir()
    row = st.container(horizontal=True, vertical_alignment="bottom")
    row.text_input("Run name", key=key, max_chars=64, width=320,
                   help="A run is this result saved on disk under a name: the images' names and content hashes, "
                        "the settings, the tables and files, and the versions that made them. Runs are kept in "
                        f"`{where}`, shared with everyone on this server, and outlive the server, unlike the "
                        "workspace. A run is never overwritten: a name taken is refused. Letters, digits, '.', "
                        "'_' and '-'.")
    row.button("Save as run", key=f"{key}.save", icon=":material/save:", on_click=_save,
               args=(key, analyses, default_name, images),
               help=f"Save this result as the run named on the left, in {where}, with each image's picture and "
                    "each model's label images (for the Results page's image browser). Nothing is saved before you "
                    "press it.")
    said = st.session_state.pop(_said_key(key), None)
    if said is None:
        return
    if said[0] == "error":
        st.error(said[1])
        return
    _, name, folder = said
    st.success(f"Saved as the run **{name}** in `{folder}`. Everyone on this server can open it; "
               f"`python -m core runs show {name}` prints it.", icon=":material/check:")
    _results_link(name)
