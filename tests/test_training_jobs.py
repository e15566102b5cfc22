"""The background training queue: one job at a time in submission order, stop, progress, failures.

Trainings here are plain functions that block on events, so every test steers the worker
thread step by step instead of sleeping."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import asdict, dataclass

import pytest
from conftest import ROOT

from core.training.jobs import JobContext, JobQueue, error_line

TIMEOUT = 5.0  # only reached when the queue is broken


@pytest.fixture
def queue():
    q = JobQueue()
    yield q
    q.shutdown(wait=True, timeout=TIMEOUT)


class Gate:
    """A training that says when it has started and runs until released (or stopped)."""

    def __init__(self, result: dict | None = None) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.result = {"checkpoint": "w/best.pt"} if result is None else result
        self.calls = 0
        self.saw_stop = False

    def __call__(self, ctx: JobContext) -> dict:
        self.calls += 1
        self.started.set()
        while not self.release.wait(0.005):
            if ctx.stop_requested():
                self.saw_stop = True
                break
        return self.result


def test_jobs_run_one_at_a_time_in_submission_order(queue):
    order, running, overlaps = [], [0], []
    lock = threading.Lock()

    def make(i):
        def run(ctx):
            with lock:
                running[0] += 1
                overlaps.append(running[0])
            order.append(i)
            with lock:
                running[0] -= 1
            return {"i": i}
        return run

    first = Gate()
    head = queue.submit("unet", "head", {}, first)
    assert first.started.wait(TIMEOUT)
    ids = [queue.submit("unet", f"job {i}", {"epochs": i}, make(i)) for i in range(5)]
    assert [queue.snapshot(i).position for i in ids] == [1, 2, 3, 4, 5]
    assert order == []  # all wait behind the running one
    first.release.set()
    finished = [queue.wait(i, TIMEOUT) for i in ids]
    assert order == [0, 1, 2, 3, 4]
    assert max(overlaps) == 1
    assert [j.state for j in finished] == ["done"] * 5
    assert [j.result for j in finished] == [{"i": i} for i in range(5)]
    assert queue.snapshot(head).state == "done"
    assert all(j.started >= queue.snapshot(head).finished for j in finished)


def test_a_second_submit_while_one_runs_is_queued_at_position_1(queue):
    gate = Gate()
    a = queue.submit("unet", "a", {}, gate)
    assert gate.started.wait(TIMEOUT)
    b = queue.submit("rcnn", "b", {}, Gate())
    running, waiting = queue.snapshot(a), queue.snapshot(b)
    assert (running.state, running.position) == ("running", None)
    assert (waiting.state, waiting.position, waiting.started) == ("queued", 1, None)
    assert [j.id for j in queue.active()] == [a, b]
    gate.release.set()
    assert queue.wait(a, TIMEOUT).state == "done"


def test_stopping_a_queued_job_cancels_it_without_running_it(queue):
    gate, never = Gate(), Gate()
    queue.submit("unet", "a", {}, gate)
    assert gate.started.wait(TIMEOUT)
    b = queue.submit("unet", "b", {}, never)
    c = queue.submit("unet", "c", {}, lambda ctx: {"c": 1})
    assert queue.snapshot(c).position == 2
    assert queue.stop(b) is True
    cancelled = queue.snapshot(b)
    assert (cancelled.state, cancelled.started, cancelled.position) == ("stopped", None, None)
    assert cancelled.finished is not None
    assert queue.snapshot(c).position == 1  # moved up
    assert queue.stop(b) is False  # already finished
    gate.release.set()
    assert queue.wait(c, TIMEOUT).result == {"c": 1}  # the queue went on past the cancelled job
    assert never.calls == 0


def test_stopping_a_running_job_ends_it_stopped_with_the_result_it_returned(queue):
    gate = Gate(result={"checkpoint": "weights/cells.unet.pt", "metrics": {"f1": 0.8}, "best_epoch": 3})
    a = queue.submit("unet", "a", {"epochs": 30}, gate)
    assert gate.started.wait(TIMEOUT)
    assert queue.stop(a) is True
    assert queue.snapshot(a).state in ("stopping", "stopped")
    job = queue.wait(a, TIMEOUT)
    assert gate.saw_stop
    assert job.state == "stopped"
    assert job.checkpoint == "weights/cells.unet.pt"
    assert job.result["metrics"] == {"f1": 0.8}
    assert job.best_epoch == 3
    assert job.error is None


def test_progress_and_epoch_records_are_visible_while_running(queue):
    step, shown = threading.Event(), threading.Event()

    @dataclass(frozen=True)
    class EpochRecord:  # the trainers' record: on_epoch=ctx.epoch takes it as it is
        epoch: int
        loss: float
        val_loss: float
        f1: float
        precision: float
        recall: float
        seconds: float

        def to_dict(self):
            return asdict(self)

    def run(ctx):
        ctx.progress(0.25, "epoch 1/4")
        ctx.epoch(EpochRecord(1, 0.9, 0.8, 0.40, 0.5, 0.33, 1.5))
        ctx.epoch({"epoch": 2, "loss": 0.7, "val_loss": 0.6, "f1": 0.70, "precision": 0.7, "recall": 0.7,
                   "seconds": 3.0})
        ctx.epoch({"epoch": 3, "loss": 0.6, "val_loss": 0.7, "f1": 0.55, "precision": 0.6, "recall": 0.5,
                   "seconds": 4.5})
        ctx.progress(0.75, "epoch 3/4")
        step.set()
        assert shown.wait(TIMEOUT)
        return {"checkpoint": None}

    a = queue.submit("unet", "a", {}, run)
    assert step.wait(TIMEOUT)
    live = queue.snapshot(a)
    assert live.state == "running"
    assert (live.fraction, live.message) == (0.75, "epoch 3/4")
    assert [r["epoch"] for r in live.epochs] == [1, 2, 3]
    assert live.epochs[0] == {"epoch": 1, "loss": 0.9, "val_loss": 0.8, "f1": 0.40, "precision": 0.5,
                              "recall": 0.33, "seconds": 1.5}
    assert live.best_epoch == 2  # highest validation F1 so far
    shown.set()
    done = queue.wait(a, TIMEOUT)
    assert (done.state, done.fraction, len(done.epochs)) == ("done", 1.0, 3)


def test_best_epoch_ties_go_to_the_lower_validation_loss(queue):
    def run(ctx):
        for epoch, val_loss in ((1, 0.9), (2, 0.5), (3, 0.7)):
            ctx.epoch({"epoch": epoch, "loss": 1.0, "val_loss": val_loss, "f1": 0.0, "precision": 0.0,
                       "recall": 0.0, "seconds": float(epoch)})
        return {}

    assert queue.wait(queue.submit("unet", "a", {}, run), TIMEOUT).best_epoch == 2


def test_an_exception_fails_the_job_with_one_line_and_the_next_job_still_runs(queue):
    def broken(ctx):
        ctx.progress(0.1, "epoch 1/3")
        raise ValueError("no image has ground truth for the validation split\n(check the Data page)")

    a = queue.submit("unet", "a", {}, broken)
    b = queue.submit("unet", "b", {}, lambda ctx: {"checkpoint": "ok.pt"})
    failed, after = queue.wait(a, TIMEOUT), queue.wait(b, TIMEOUT)
    assert failed.state == "failed"
    assert failed.error == "no image has ground truth for the validation split"
    assert "Traceback" in failed.traceback and "broken" in failed.traceback
    assert "Traceback" not in failed.error and "\n" not in failed.error
    assert after.state == "done" and after.checkpoint == "ok.pt"


@pytest.mark.parametrize("raised", [RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"),
                                    KeyError("lr"), SystemExit(3)])
def test_any_error_in_a_training_leaves_the_worker_alive(queue, raised):
    def broken(ctx):
        raise raised

    failed = queue.wait(queue.submit("yolo", "a", {}, broken), TIMEOUT)
    assert failed.state == "failed"
    assert failed.error == error_line(raised)
    assert "\n" not in failed.error
    assert queue.wait(queue.submit("yolo", "b", {}, lambda ctx: None), TIMEOUT).state == "done"


def test_error_line_is_short_and_names_unexpected_errors():
    assert error_line(RuntimeError("CUDA out of memory.\nmore")) == "RuntimeError: CUDA out of memory."
    assert error_line(ValueError("batch size must be at least 1")) == "batch size must be at least 1"
    assert error_line(ZeroDivisionError()) == "ZeroDivisionError"
    long = error_line(ValueError("x" * 1000))
    assert len(long) == 300 and long.endswith("…")


def test_a_training_that_returns_no_dict_fails(queue):
    job = queue.wait(queue.submit("unet", "a", {}, lambda ctx: object()), TIMEOUT)
    assert job.state == "failed"
    assert job.error == "TypeError: the training returned object, not a dict summary"


def test_snapshots_are_copies(queue):
    params = {"epochs": 5, "augment": {"flips": True}}
    a = queue.submit("unet", "a", params, lambda ctx: ctx.epoch({"epoch": 1, "f1": 0.5}) or {"metrics": {"f1": 0.5}})
    params["augment"]["flips"] = False  # the caller's dict is not the job's
    job = queue.wait(a, TIMEOUT)
    job.params["augment"]["flips"] = "changed"
    job.result["metrics"]["f1"] = 1.0
    job.epochs[0]["f1"] = 1.0
    with pytest.raises(AttributeError):
        job.state = "running"
    again = queue.snapshot(a)
    assert again.params == {"epochs": 5, "augment": {"flips": True}}
    assert again.result == {"metrics": {"f1": 0.5}}
    assert again.epochs == ({"epoch": 1, "f1": 0.5},)
    assert again.state == "done"


def test_jobs_filters_by_owner_newest_first(queue):
    ids = [queue.submit("unet", f"job {i}", {}, lambda ctx: {}, owner=owner)
           for i, owner in enumerate(["tab-a", "tab-b", "tab-a", None])]
    for i in ids:
        queue.wait(i, TIMEOUT)
    assert [j.id for j in queue.jobs()] == ids[::-1]
    assert [j.id for j in queue.jobs("tab-a")] == [ids[2], ids[0]]
    assert [j.name for j in queue.jobs("tab-b")] == ["job 1"]
    assert queue.jobs("gone") == []
    assert queue.snapshot("no-such-id") is None
    assert queue.stop("no-such-id") is False


def test_max_finished_drops_the_oldest_finished_never_running_or_queued():
    queue = JobQueue(max_finished=2)
    try:
        done = [queue.submit("unet", f"done {i}", {}, lambda ctx: {}) for i in range(3)]
        for i in done:
            queue.wait(i, TIMEOUT)
        gate = Gate()
        running = queue.submit("unet", "running", {}, gate)
        assert gate.started.wait(TIMEOUT)
        waiting = [queue.submit("unet", f"queued {i}", {}, lambda ctx: {}) for i in range(3)]
        kept = {j.id for j in queue.jobs()}
        assert queue.snapshot(done[0]) is None
        assert kept == {done[1], done[2], running, *waiting}
        queue.stop(waiting[0])  # a cancelled job is a finished one: done[1] goes
        assert {j.id for j in queue.jobs()} == {done[2], waiting[0], running, waiting[1], waiting[2]}
        gate.release.set()
        for i in waiting[1:]:
            queue.wait(i, TIMEOUT)
        assert {j.id for j in queue.jobs()} == {waiting[1], waiting[2]}
        assert len(queue.jobs()) == queue.max_finished
    finally:
        queue.shutdown(wait=True, timeout=TIMEOUT)


def test_a_stalled_wait_times_out_and_shutdown_stops_everything():
    queue = JobQueue()
    gate = Gate()
    a = queue.submit("unet", "a", {}, gate)
    b = queue.submit("unet", "b", {}, Gate())
    assert gate.started.wait(TIMEOUT)
    assert queue.wait(a, timeout=0.01).state == "running"
    queue.shutdown(wait=True, timeout=TIMEOUT)
    assert queue.snapshot(a).state == "stopped" and gate.saw_stop
    assert queue.snapshot(b).state == "stopped" and queue.snapshot(b).started is None
    assert not queue._worker.is_alive()
    with pytest.raises(RuntimeError, match="shut down"):
        queue.submit("unet", "c", {}, Gate())


def test_the_worker_is_a_daemon_and_the_module_imports_no_torch_or_streamlit(queue):
    assert queue._worker.daemon
    code = "import sys, core.training.jobs; print('torch' in sys.modules, 'streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.stdout.strip() == "False False", out.stderr
