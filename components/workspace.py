"""Keep a tab's work across a reload: a workspace id in the URL (``?ws=…``), its state on the server.

:func:`open_workspace` runs first in every full run: a new tab gets a fresh id in its URL; a tab
opened on a link with a known id gets that workspace's dataset, recipe, chosen models and
settings back. :func:`save_workspace` runs after every full run and after every fragment run
(:func:`fragment`), so the snapshot is never older than the last thing the user did. It writes
only the values this tab changed since it last loaded or wrote them: two tabs on one link each
keep their own changes (the last change of a value wins), and a stale tab that only visits a page
undoes nothing of the other's. What is kept
each page declares (a :class:`Kept` beside its state, handed over with :func:`keep`); this module
names only its own keys.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import functools
import operator
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.cache import BoundedCache
from core.data.dataset import Dataset
from core.text import plural
from core.workspace import DEFAULT_MAX_BYTES, DEFAULT_TTL_S, Key, WorkspaceStore, approx_nbytes, new_workspace_id

PARAM = "ws"
ID_KEY = "workspace_id"
NOTICE_KEY = "workspace_notice"
TOO_LARGE_KEY = "workspace_too_large"
REDIRECTING_KEY = "workspace_redirecting"  # set by the root URL's run, which only redirects
_WIDGETS_KEY = "workspace_widgets"  # last value of every kept widget, also of pages not open now
_BASE_KEY = "workspace_base"  # Key -> fingerprint of the value this tab last loaded from or wrote to its workspace

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


class _Same:
    """An object in a fingerprint, equal only to itself; held, so its id is not reused meanwhile."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


_PLAIN = (type(None), bool, int, float, complex, str, bytes, np.generic, datetime.date, datetime.time,
          datetime.timedelta, enum.Enum)
_SCALARS = {type(None), bool, int, float, str}


def _fingerprint(value: Any, depth: int = 0) -> Any:
    """A cheap stand-in for ``value`` that differs once the value is changed, replaced or changed
    in place: plain values themselves; containers and dataclasses item by item; arrays, tables,
    images and results (never changed in place) by identity; other objects by identity and the
    identity of each attribute (an edit history replaces its current labels)."""
    if isinstance(value, _PLAIN):
        return value
    if depth > 8 or isinstance(value, np.ndarray | pd.DataFrame | pd.Series):
        return _Same(value)
    deeper = functools.partial(_fingerprint, depth=depth + 1)
    if isinstance(value, KeptResults):  # slot -> (key, result), changed in place
        return KeptResults, tuple((slot, deeper(key), _Same(result)) for slot, (key, result) in value.items())
    if isinstance(value, Dataset):  # changed in place (add, put, remove); its images never are
        return Dataset, tuple((name, _Same(image)) for name, image in value.images.items())
    if isinstance(value, Mapping):
        return type(value), tuple((deeper(k), deeper(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        if set(map(type, value)) <= _SCALARS:  # e.g. thousands of cell rows: at C speed
            return type(value), tuple(value)
        return type(value), tuple(map(deeper, value))
    if isinstance(value, set | frozenset):
        return type(value), frozenset(map(deeper, value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value), tuple(deeper(getattr(value, f.name)) for f in dataclasses.fields(value))
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return _Same(value), tuple((k, v if isinstance(v, _PLAIN) else _Same(v)) for k, v in vars(value).items())
    return _Same(value)


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
    base: dict[Key, Any] = {}
    for key, value in snapshot.items():
        ss[key] = _copied(value)
        if key in kept.state:
            base[key] = _fingerprint(ss[key])
    from components.state import image_names

    names = image_names()  # the dataset just restored
    for key, value in widgets.items():
        if key in kept.images and value not in names:
            continue
        if key in kept.filters:
            value = kept.filters[key](value)
        ss[key] = _copied(value)
    ss[_WIDGETS_KEY] = dict(widgets)
    # what the workspace holds, filtered or not here: a value this tab filters is a change it writes
    base.update({(_WIDGETS_KEY, key): _fingerprint(value) for key, value in widgets.items()})
    ss[_BASE_KEY] = base


def save_workspace() -> None:
    """Write what this tab changed into its workspace; all of its work when the workspace is not held.

    A value is changed when it differs from the one this tab last loaded from or wrote to the
    workspace (by :func:`_fingerprint`); a kept value deleted is a change too. Another tab's newer
    value of anything this tab did not change stays. A kept widget this tab sees for the first
    time holds its default: it is written only where the workspace has no value for it yet.
    """
    ss = st.session_state
    workspace_id = ss.get(ID_KEY)
    if workspace_id is None:
        return
    widgets = ss.setdefault(_WIDGETS_KEY, {})
    for key in list(ss.keys()):
        if _kept.keeps_widget(key):
            widgets[key] = ss[key]
    now: dict[Key, Any] = {key: ss[key] for key in _kept.state if key in ss}
    now.update({(_WIDGETS_KEY, key): value for key, value in widgets.items()})
    prints = {key: _fingerprint(value) for key, value in now.items()}
    from components.state import shared_array_ids

    store, skip, base = workspace_store(), shared_array_ids(), ss.get(_BASE_KEY)
    nbytes = None
    if base is not None:
        changes = {k: _copied(v) for k, v in now.items()
                   if (k in base and base[k] != prints[k]) or (k not in base and not isinstance(k, tuple))}
        defaults = {k: _copied(v) for k, v in now.items() if k not in base and isinstance(k, tuple)}
        removed = [k for k in base if k not in now]
        nbytes = store.update(workspace_id, changes, removed, defaults,
                              nbytes_of=functools.partial(approx_nbytes, skip=skip))
        kept = nbytes is not None and nbytes <= store.max_bytes
    if nbytes is None:  # a new workspace, or one the store dropped: all of this tab's work
        values = {key: _copied(value) for key, value in now.items() if isinstance(key, str)}
        values[_WIDGETS_KEY] = {key: _copied(value) for key, value in widgets.items()}
        nbytes = approx_nbytes(values, skip=skip)
        kept = store.save(workspace_id, values, nbytes)
    ss[_BASE_KEY] = prints
    if kept:
        ss.pop(TOO_LARGE_KEY, None)
    else:
        ss[TOO_LARGE_KEY] = nbytes


def forget_widgets(prefix: str) -> None:
    """Forget every kept widget value whose key starts with ``prefix`` (a reset): in this run and in
    the workspace, so a reload does not bring them back."""
    ss = st.session_state
    for key in [k for k in ss.keys() if isinstance(k, str) and k.startswith(prefix)]:
        del ss[key]
    widgets = ss.get(_WIDGETS_KEY)
    if widgets:
        ss[_WIDGETS_KEY] = {k: v for k, v in widgets.items() if not k.startswith(prefix)}


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
