"""The one download button: a click never reruns the app; a file that cannot be made says why."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from components.downloads import FAILURES_KEY, _reporting


def _page() -> None:
    import streamlit as st

    from components.downloads import download_button

    download_button(st, "Cells (CSV)", lambda: "a,b\n", file_name="cells.csv", mime="text/csv", help="cells")
    download_button(st, "Recipe", "{}", file_name="recipe.json", mime="application/json", help="recipe")


def test_a_click_does_not_rerun_the_app():
    at = AppTest.from_function(_page).run()
    buttons = at.get("download_button")
    assert [b.proto.label for b in buttons] == ["Cells (CSV)", "Recipe"]
    assert all(b.proto.ignore_rerun for b in buttons)


def test_a_file_that_cannot_be_made_says_why_on_the_next_run():
    failures: dict[str, str] = {}

    def broken() -> bytes:
        raise ValueError("the map is gone")

    with pytest.raises(ValueError):
        _reporting(broken, "Cells (CSV)", "cells.csv", failures)()
    assert failures == {"Cells (CSV)": "**Cells (CSV)**: cells.csv could not be made (ValueError: the map is gone). "
                                       "Nothing was downloaded; change what it depends on, or try again."}
    assert _reporting(lambda: b"ok", "Recipe", "recipe.json", failures)() == b"ok"

    at = AppTest.from_function(_page)
    at.session_state[FAILURES_KEY] = dict(failures)
    at.run()
    assert [e.value for e in at.error] == [failures["Cells (CSV)"]]
    at.run()  # said once
    assert not at.error
