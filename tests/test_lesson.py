"""The lesson engine: lesson files read and refused with the file and step named, a step found by
its number or id, the background preparation (one failure recorded, the others go on), and every
lesson file valid against the registered actions and checkpoints."""

from __future__ import annotations

import threading

import pytest
from conftest import ROOT

from components.lesson_all_actions import known_actions
from core.lesson.all_checks import known_checkpoints, run_checkpoint
from core.lesson.checkpoints import Check
from core.lesson.spec import LessonError, lesson_files, load_lesson, parse_lesson
from workflows import lesson as lesson_registry
from workflows.lesson_preparation import Preparation, known_preparations

STEP = """
  - id: {id}
    title: A step
    why: Because.
    action: {action}
    look_at: This.
    checkpoint: {checkpoint}
    try_this: That.
"""


def lesson_text(*steps: dict, head: str = "title: T\nsummary: S\ndataset: lesson\n") -> str:
    return head + "steps:" + "".join(STEP.format(**{"action": "a", "checkpoint": "c", **s}) for s in steps)


def test_every_lesson_file_loads_against_the_registered_actions_and_checkpoints():
    files = lesson_files()
    assert {f.stem for f in files} >= {"cnn-microscopy", "segmentation-quality"}
    names = {"actions": set(known_actions()), "checkpoints": set(known_checkpoints())}
    for path in files:
        lesson = load_lesson(path, **names)
        assert lesson.steps and lesson.title and lesson.summary
    cnn = load_lesson(ROOT / "lessons" / "cnn-microscopy.yaml", **names)
    assert [s.id for s in cnn.steps] == ["images", "opencv", "find-cells", "detectors", "cell-map", "grad-cam",
                                         "the-fix", "u-net"]
    # every checkpoint's params are ones its function takes
    import inspect

    for step in cnn.steps:
        accepted = inspect.signature(known_checkpoints()[step.checkpoint]).parameters
        assert set(step.params) <= set(accepted), (step.id, step.params)


def test_a_step_is_found_by_its_number_or_its_id():
    lesson = parse_lesson(lesson_text({"id": "one"}, {"id": "two"}, {"id": "three"}), "t")
    assert [lesson.index(x) for x in (None, "1", "3", "9", "0", "two", "nope")] == [0, 0, 2, 2, 0, 1, 0]


@pytest.mark.parametrize(("text", "message"), [
    ("title: [unclosed", "t.yaml: not valid YAML"),
    ("just text", "a lesson is a mapping"),
    (lesson_text(head="summary: S\n"), "'title' is missing"),
    (lesson_text({"id": "a"}, {"id": "a"}), "step id(s) a used twice"),
    (lesson_text({"id": "Bad Id"}), "t.yaml, step 1: id 'Bad Id' must be lower-case"),
    (lesson_text({"id": "a", "action": "nope"}), "t.yaml, step 1: unknown action 'nope'; known: a"),
    (lesson_text({"id": "a"}, {"id": "b", "checkpoint": "nope"}), "t.yaml, step 2: unknown checkpoint 'nope'"),
    (lesson_text({"id": "a"}).replace("try_this: That.", "try_this: That.\n    colour: red"), "unknown key(s) colour"),
    (lesson_text({"id": "a"}).replace("try_this: That.", "try_this: That.\n    page: nowhere"), "page 'nowhere'"),
    (lesson_text({"id": "a"}).replace("dataset: lesson", "dataset: mine"), "dataset 'mine'"),
    ("title: T\nsummary: S\nsteps: []\n", "'steps' must be a list of at least one step"),
])
def test_a_lesson_file_that_cannot_be_taught_is_refused_naming_the_file_and_step(text, message):
    with pytest.raises(LessonError) as caught:
        parse_lesson(text, "t", source="t.yaml", actions={"a"}, checkpoints={"c"})
    assert message in str(caught.value)


def test_a_checkpoint_without_a_result_waits_and_a_missing_number_is_not_a_failure():
    assert run_checkpoint("plates_separate", None) == Check(None, None, "Not done yet: run the step above.")
    missing = run_checkpoint("plates_separate", {"chance": 0.5})
    assert missing.passed is None and "batch_accuracy" in missing.text
    with pytest.raises(ValueError, match="unknown checkpoint 'nope'"):
        run_checkpoint("nope", {})


def test_the_preparation_runs_each_step_in_order_records_a_failure_and_goes_on(monkeypatch):
    known = dict(known_preparations())
    order: list[str] = []
    gate = threading.Event()

    def slow(images, params, progress):
        progress(0.5, "half way")
        gate.wait(10)
        order.append("slow")
        return {"n": params["n"]}

    def broken(images, params, progress):
        order.append("broken")
        raise RuntimeError("out of memory")

    def fine(images, params, progress):
        order.append("fine")
        return len(images)

    monkeypatch.setattr(lesson_registry, "PREPARATIONS", {**known, "slow": slow, "broken": broken, "fine": fine})
    monkeypatch.setattr("workflows.lesson_preparation.PREPARATIONS", lesson_registry.PREPARATIONS)
    text = lesson_text({"id": "s1", "action": "slow"}, {"id": "s2", "action": "broken"},
                       {"id": "s3", "action": "none-needed"}, {"id": "s4", "action": "fine"})
    lesson = parse_lesson(text.replace("    try_this: That.\n", "    try_this: That.\n    params: {n: 3}\n", 1), "t")
    prep = Preparation(lesson, images=[1, 2]).start()
    for _ in range(200):
        if prep.steps["s1"].state == "running" and prep.steps["s1"].message:
            break
        threading.Event().wait(0.01)
    assert prep.steps["s1"].fraction == 0.5 and prep.steps["s1"].message == "half way"
    assert not prep.done and prep.result("s1") is None
    gate.set()
    assert prep.wait(10)
    assert order == ["slow", "broken", "fine"]
    assert prep.result("s1") == {"n": 3} and prep.result("s4") == 2
    assert prep.steps["s2"].state == "failed" and prep.steps["s2"].message == "RuntimeError: out of memory"
    assert prep.steps["s3"].state == "none" and prep.result("s3") is None
    assert prep.seconds is not None and prep.steps["s1"].seconds is not None


# ------------------------------------------------------------------------------- the Lesson page


@pytest.fixture
def quality_page():
    from conftest import open_page

    return open_page("pages/lesson.py", lesson="segmentation-quality", step="2")


def test_the_address_opens_a_step_by_number_and_next_back_and_the_list_move_it(quality_page):
    at = quality_page
    assert at.query_params["step"] == "matching" and at.subheader[0].value.startswith("Step 2 of 4")
    at.button(key="lesson.next").click().run()
    assert at.query_params["step"] == "ap" and at.subheader[0].value.startswith("Step 3 of 4")
    at.button(key="lesson.back").click().run()
    at.button(key="lesson.back").click().run()
    assert at.query_params["step"] == "iou" and at.button(key="lesson.back").disabled
    at.radio(key="lesson.steps.segmentation-quality.0").set_value("which-is-better").run()
    assert at.query_params["step"] == "which-is-better" and at.button(key="lesson.next").disabled
    assert not at.exception and not at.error


def test_reset_forgets_the_checkpoints_and_the_students_settings_and_goes_back_to_step_1(quality_page):
    at = quality_page
    at.query_params["step"] = "ap"
    at.run()
    at.slider(key="ls.segmentation-quality.ap.shrink").set_value(1).run()
    assert any(s.value.startswith("**Checkpoint passed.**") for s in at.success)
    assert any("1 of 4 checkpoints passed" in c.value for c in at.sidebar.caption)
    at.button(key="lesson.reset").click().run()
    assert at.query_params["step"] == "iou" and any("0 of 4 checkpoints passed" in c.value for c in at.sidebar.caption)
    at.query_params["step"] = "ap"
    at.run()
    assert at.slider(key="ls.segmentation-quality.ap.shrink").value == 0  # the student's setting forgotten


def test_a_broken_lesson_file_is_named_on_the_page_and_the_others_stay_offered(tmp_path, monkeypatch):
    from conftest import open_page

    import components.lesson_view as view

    broken = tmp_path / "broken.yaml"
    broken.write_text(lesson_text({"id": "a", "action": "no_such_action"}), encoding="utf-8")
    good = ROOT / "lessons" / "segmentation-quality.yaml"
    monkeypatch.setattr(view, "lesson_files", lambda: [broken, good])
    at = open_page("pages/lesson.py")
    assert [e.value for e in at.error] == ["A lesson file cannot be used: broken.yaml, step 1: unknown action "
                                           f"'no_such_action'; known: {', '.join(sorted(known_actions()))}"]
    assert at.title[0].value == "Is my segmentation good? F1, IoU, AP" and not at.exception


def test_the_full_page_opens_on_the_lessons_images_and_asks_before_replacing_the_users_own(quality_page):
    at = quality_page
    at.button(key="lesson.open.matching").click().run()  # the example loaded: replaced without asking
    assert at.session_state["dataset_origin"] == "lesson" and not at.exception
    assert [h.value for h in at.title] == ["Compare models"]
    at.session_state["dataset_origin"] = "user"  # now the user's own images
    at.switch_page("pages/lesson.py")
    at.query_params["lesson"], at.query_params["step"] = "segmentation-quality", "matching"
    at.run()
    at.button(key="lesson.open.matching").click().run()
    assert any("This replaces the 12 images you loaded" in w.value for w in at.warning)
    at.button(key="lesson.keep.matching").click().run()
    assert at.session_state["dataset_origin"] == "user" and not any("replaces" in w.value for w in at.warning)
    at.button(key="lesson.open.matching").click().run()
    at.button(key="lesson.replace.matching").click().run()
    assert at.session_state["dataset_origin"] == "lesson" and [h.value for h in at.title] == ["Compare models"]
