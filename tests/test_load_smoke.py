"""Two users at once on one server (benchmarks/bench_load.py's driver, 2 sessions, 4 page changes
each): no error, no cross-talk, each shared model loaded once, each user's run saved and shown."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from browser import require_chromium
from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_load", ROOT / "benchmarks" / "bench_load.py")
bench_load = sys.modules["bench_load"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(bench_load)


def test_the_cross_talk_check_names_what_one_user_sees_of_another(tmp_path):
    """The check the browser test relies on: another user's image name anywhere on a page, an image
    chooser offering other images, or a run figure showing them is cross-talk; the user's own is not."""
    one, two = (bench_load.Session(i, tmp_path / f"user{i + 1:02d}") for i in range(2))
    one.names, two.names = ["user01_plateA_field1", "user01_plateB_field1"], ["user02_plateA_field1"]
    one.others = two.names
    one.check("Data", "Images (2) user01_plateA_field1 user01_plateB_field1", list(reversed(one.names)),
              plotted=one.names * 3)
    assert one.crosstalk == []
    one.check("Compare", "classical: 80 objects on user02_plateA_field1", one.names)
    one.check("Preprocess", "", ["user01_plateA_field1"])
    one.check("Results", "", plotted=[*one.names, "user02_plateA_field1"])
    assert [c.split(":")[0] for c in one.crosstalk] == ["user01 on Compare", "user01 on Preprocess", "user01 on Results"]
    assert "['user02_plateA_field1']" in one.crosstalk[0]


@pytest.mark.e2e
def test_two_users_at_once_see_only_their_own_images_and_runs():
    require_chromium()
    result = bench_load.run_benchmark(sessions=2, reruns=4)
    assert result["errors"] == [], result["errors"]
    assert result["crosstalk"] == [], result["crosstalk"]
    assert result["model loads"] == {"classical": 1, result["yolo"]: 1}
    assert result["runs saved"] == ["user01-run", "user02-run"]
    steps = result["steps"]
    assert steps["Results: the run's link in another browser"]["n"] == 2  # every step of both walks was timed
    assert {steps[f"rerun: {title}"]["n"] for title in bench_load.PAGES} == {2}
