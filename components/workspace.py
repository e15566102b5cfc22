"""Keep a tab's work across a reload: a workspace id in the URL (``?ws=…``), its state on the server.

:func:`open_workspace` runs first in every full run: a new tab gets a fresh id in its URL; a tab
opened on a link with a known id gets that workspace's dataset, recipe, chosen models and
settings back. :func:`save_workspace` runs after every full run and after every fragment run
(:func:`fragment`), so the snapshot is never older than the last thing the user did. What is kept
each page declares (a :class:`Kept` beside its state, handed over with :func:`keep`); this module
names only its own keys.
"""

from __future__ import annotations

import copy
import functools
import operator
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from core.cache import BoundedCache
from core.data.dataset import Dataset
from core.text import plural
from core.workspace import DEFAULT_MAX_BYTES, DEFAULT_TTL_S, WorkspaceStore, approx_nbytes, new_workspace_id

PARAM = "ws"
ID_KEY = "workspace_id"
NOTICE_KEY = "workspace_notice"
TOO_LARGE_KEY = "workspace_too_large"
REDIRECTING_KEY = "workspace_redirecting"  # set by the root URL's run, which only redirects
_WIDGETS_KEY = "workspace_widgets"  # last value of every kept widget, also of pages not open now

RESULTS_KEY = "workspace_results"  # the last result of each pipeline step: see kept_result


@dataclass(frozen=True)
class Kept:
    """The session keys one page keeps across a reload, declared by the page's own components
    module (its ``KEPT``) and handed to :func:`keep` by the router before :func:`open_workspace`.

    ``state``: values kept exactly as they are at the end of a run (absent ones stay absent).
    ``widgets`` and widgets whose key starts with one of ``prefixes``: Streamlit forgets a widget's
    value when its page is left, so the last value seen is kept and given back before the widget is
    drawn again; only widgets whose value may be set through Session State, never buttons, uploaders
    or charts (keys containing ".dl.", a model's Download buttons, are never kept).
    ``images``: those widgets whose value names an image, dropped once that image is gone.
    ``filters``: key -> what makes a restored value valid again (e.g. drops models no longer known).
    """

    state: tuple[str, ...] = ()
    widgets: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    filters: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in (*self.images, *self.filters):
            if not self.keeps_widget(key):
                raise ValueError(f"{key!r} is not among the kept widgets")

    def keeps_widget(self, key: str) -> bool:
        # ".dl." keys are the Download buttons drawn among a model's settings: buttons can't be set
        return (key in self.widgets or key.startswith(self.prefixes)) and ".dl." not in key

    def __or__(self, other: Kept) -> Kept:
        def both(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys((*a, *b)))

        return Kept(both(self.state, other.state), both(self.widgets, other.widgets),
                    both(self.prefixes, other.prefixes), both(self.images, other.images),
                    {**self.filters, **other.filters})


_OWN = Kept(state=(RESULTS_KEY,))
_pages: dict[str, Kept] = {}
_kept = _OWN  # the union of every page's declaration: what every run keeps, whatever page it shows
_pages_lock = threading.Lock()  # sessions run in threads of one process


def keep(page: str, kept: Kept) -> None:
    """Keep what ``page`` declares across a reload, in every run from now on, whatever page it shows
    (a Train page setting is kept while the user is on the Data page)."""
    global _kept
    if _pages.get(page) == kept:
        return
    with _pages_lock:
        _pages[page] = kept
        _kept = functools.reduce(operator.or_, _pages.values(), _OWN)


def kept_keys() -> Kept:
    """What is kept: every page's declaration handed to :func:`keep`, and the workspace's own keys."""
    return _kept


@st.cache_resource(show_spinner=False)
def workspace_store() -> WorkspaceStore:
    """One per server process, shared by every session."""
    ttl_h = float(os.environ.get("CELLSCOPE_WORKSPACE_HOURS", DEFAULT_TTL_S / 3600))
    max_gb = float(os.environ.get("CELLSCOPE_WORKSPACE_GB", DEFAULT_MAX_BYTES / 2**30))
    return WorkspaceStore(ttl_s=ttl_h * 3600, max_bytes=int(max_gb * 2**30))


class KeptResults(dict):
    """Slot -> (key, result). Results are shared read-only between tabs: copied shallowly."""


def _copied(value: Any) -> Any:
    """A value two tabs on one link may hold at once without changing each other's."""
    if isinstance(value, KeptResults):
        return KeptResults(value)
    if isinstance(value, Dataset):
        return Dataset(dict(value.images))  # images are immutable; the mapping is not
    if isinstance(value, list | dict):
        return copy.deepcopy(value)
    return value


def open_workspace() -> None:
    """Give this tab its workspace: the one its URL names, restored, or a new one."""
    ss = st.session_state
    if ID_KEY in ss:
        if st.query_params.get(PARAM) != ss[ID_KEY]:
            st.query_params[PARAM] = ss[ID_KEY]  # page links drop the query string
        _return_to_page()
        return
    asked = st.query_params.get(PARAM)
    snapshot = workspace_store().load(asked) if asked else None
    if snapshot is None:
        if asked:
            ss[NOTICE_KEY] = ("expired", "This link's workspace is gone (kept for "
                              f"{workspace_store().ttl_s / 3600:.0f} h after its last use, and not across a server "
                              "restart): you start fresh with the example dataset.")
        ss[ID_KEY] = new_workspace_id()
        st.query_params[PARAM] = ss[ID_KEY]
        return
    _restore(snapshot)
    ss[ID_KEY] = asked
    from components.state import image_names

    ss[NOTICE_KEY] = ("restored", f"Restored your work: {plural(len(image_names()), 'image')}, recipe and settings.")


def _return_to_page() -> None:
    """Keep every kept widget's value while its page is not drawn, on every page.

    Streamlit forgets a widget's value at the end of a run that does not draw it, so without this
    a visit to another page reset the Cell map's, Compare's and Train's choices, and the reset
    was then saved into the workspace. Streamlit's documented remedy: set the value again at the
    start of every run, before any widget (a value put back only after Streamlit dropped it
    reached the server but not the browser's form, which then sent its defaults back). A value
    that is no longer among a widget's options (an image removed, a model gone) is reset to the
    widget's default by Streamlit when the widget is drawn.
    """
    from components.state import image_names

    ss, kept, names = st.session_state, _kept, image_names()
    for key in [k for k in ss.keys() if kept.keeps_widget(k)]:
        if key in kept.images and ss[key] not in names:
            # An image removed on the Data page meanwhile is no choice any more. The first image is
            # set, not the key deleted: a deleted key left the browser's box naming the old image
            # while the page showed the first one.
            if names:
                ss[key] = names[0]
            else:
                del ss[key]
        else:
            ss[key] = ss[key]


def _restore(snapshot: dict[str, Any]) -> None:
    ss, kept = st.session_state, _kept
    widgets = snapshot.pop(_WIDGETS_KEY, {})
    for key, value in snapshot.items():
        ss[key] = _copied(value)
    from components.state import image_names

    names = image_names()  # the dataset just restored
    for key, value in widgets.items():
        if key in kept.images and value not in names:
            continue
        if key in kept.filters:
            value = kept.filters[key](value)
        ss[key] = _copied(value)
    ss[_WIDGETS_KEY] = dict(widgets)


def save_workspace() -> None:
    """Snapshot this tab's work into its workspace."""
    ss = st.session_state
    workspace_id = ss.get(ID_KEY)
    if workspace_id is None:
        return
    widgets = ss.setdefault(_WIDGETS_KEY, {})
    for key in list(ss.keys()):
        if _kept.keeps_widget(key):
            widgets[key] = _copied(ss[key])
    values = {key: _copied(ss[key]) for key in _kept.state if key in ss}
    values[_WIDGETS_KEY] = dict(widgets)
    from components.state import shared_array_ids

    nbytes = approx_nbytes(values, skip=shared_array_ids())
    kept = workspace_store().save(workspace_id, values, nbytes)
    if kept:
        ss.pop(TOO_LARGE_KEY, None)
    else:
        ss[TOO_LARGE_KEY] = nbytes


def kept_result(slot: str, key: Hashable, store: BoundedCache, compute: Callable[[], Any] | None = None) -> Any:
    """The result of ``key``: the workspace's own, the server's shared cache's, or computed now
    (None when it is in neither and ``compute`` is None).

    The workspace keeps the last result of each ``slot`` (a pipeline step such as the Cell map's
    features), so a reload, or the link opened in another browser, shows what was computed
    without computing it again, even after the server-wide cache dropped it. Its size counts
    against the workspace's memory limit; over it, the sidebar says the work is not kept.
    """
    results = st.session_state.setdefault(RESULTS_KEY, KeptResults())
    held = results.get(slot)
    if held is not None and held[0] == key:
        return held[1]
    value = store.get(key) if compute is None else store.get_or_compute(key, compute)
    if value is not None:
        results[slot] = (key, value)
    return value


def fragment(key: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """``st.fragment(key=...)`` whose every run ends by saving the workspace: a fragment rerun
    does not reach the end of the app script, where full runs save."""
    def wrap(draw: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(draw)
        def body() -> None:
            try:
                draw()
            finally:
                save_workspace()

        return st.fragment(key=key)(body)

    return wrap


def workspace_notes() -> None:
    """The sidebar's few lines on the workspace: restored or expired, how long it is kept."""
    ss = st.session_state
    # The root URL's run only redirects to the Data page: what it draws is never seen, so the
    # notice waits for the page the user lands on.
    notice = None if ss.pop(REDIRECTING_KEY, False) else ss.pop(NOTICE_KEY, None)
    if notice:
        kind, text = notice
        if kind == "restored":
            st.toast(text, icon=":material/restore:")
        else:  # work lost: a message that stays until the next click, not a toast that fades
            st.warning(text, icon=":material/history_toggle_off:")
    hours = workspace_store().ttl_s / 3600
    if (size := ss.get(TOO_LARGE_KEY)) is not None:
        st.warning(f"This work ({size / 2**30:.1f} GB) is larger than the server keeps for a reload; download the "
                   "dataset from the Data page to keep it.")
    else:
        st.caption(f"Your work is kept on this server for {hours:.0f} h after your last visit: reload, or bookmark "
                   "this page's address, to come back to it. Anyone you give the address to sees the same work.")
