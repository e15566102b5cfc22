"""Download buttons that deliver their file or say why: the one way pages offer a download.

Two things went wrong with plain ``st.download_button``:

- A click reran the app (Streamlit's default ``on_click="rerun"``). A rerun gives every deferred
  download a new file id and drops the old ones, while the browser is fetching the old one: the
  file came from the previous choice, or never came (``MediaFileStorageError: Deferred file …
  not found`` in the server log, nothing on the page). Here a click never reruns the app.
- A file made on click (``data`` a function) that failed left the user with nothing. Here the
  failure is kept and said above the button on the page's next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import streamlit as st

FAILURES_KEY = "download_failures"  # label -> why its file could not be made (shown once, then forgotten)
_LOG = logging.getLogger(__name__)


def download_button(where: Any, label: str, data: bytes | str | Callable[[], bytes | str], *, file_name: str,
                    mime: str, help: str, key: str | None = None, **kwargs: Any) -> None:
    """``where.download_button`` (``where``: ``st``, a column or a container) with the two fixes above.
    ``data`` may be the content, or a function that makes it when the button is clicked (for files
    that cost time: zips, rendered figures)."""
    failures: dict[str, str] = st.session_state.setdefault(FAILURES_KEY, {})
    if why := failures.pop(label, None):
        where.error(why, icon=":material/error:")
    if callable(data):
        data = _reporting(data, label, file_name, failures)
    where.download_button(label, data, file_name=file_name, mime=mime, help=help, key=key, on_click="ignore",
                          **kwargs)


def _reporting(make: Callable[[], bytes | str], label: str, file_name: str,
               failures: dict[str, str]) -> Callable[[], bytes | str]:
    def made() -> bytes | str:
        try:
            return make()
        except Exception as exc:  # runs outside the script: Streamlit would only log it
            _LOG.exception("download %s (%s) failed", label, file_name)
            failures[label] = (f"**{label}**: {file_name} could not be made ({exc.__class__.__name__}: {exc}). "
                               "Nothing was downloaded; change what it depends on, or try again.")
            raise

    return made
