"""Trainings in the background: one server-wide queue that runs one training at a time, in the
order they were submitted, while pages poll snapshots of it.

A page submits a ``run(context)`` callable (which calls a trainer such as ``train_unet`` with
``stop=context.stop_requested, progress=context.progress, on_epoch=context.epoch``) and keeps only
the job's id: a reload of the page, or another tab of the same workspace, finds the job again by
id or by owner. A job does not belong to the page that started it, so it keeps running when the
page goes away. The queue lives in the server's memory (the page holds it in
``st.cache_resource``): a server restart forgets it, though checkpoints already written stay.

This module knows nothing about torch or Streamlit; the trainer arrives inside ``run``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import secrets
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

JobState = Literal["queued", "running", "stopping", "done", "stopped", "failed"]
FINISHED_STATES: frozenset[str] = frozenset({"done", "stopped", "failed"})
MAX_ERROR_CHARS = 300  # a user reads the message under a button; the traceback goes to the log field


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """One training as it stood when the snapshot was taken: a copy, safe to keep and read anywhere.

    ``result`` is what ``run`` returned, by convention ``{"checkpoint": path or None, "metrics":
    {...}, "best_epoch": n}``; a stopped job keeps it too (the best checkpoint written before the
    stop). ``error`` is one line for the user, ``traceback`` the full text for the log.
    """

    id: str
    family: str
    name: str
    owner: str | None
    params: dict[str, Any]
    state: JobState
    submitted: float  # wall-clock seconds (time.time)
    started: float | None
    finished: float | None
    fraction: float  # progress in [0, 1]
    message: str
    epochs: tuple[dict[str, Any], ...]  # epoch, loss, val_loss, f1, precision, recall, seconds
    best_epoch: int | None
    result: dict[str, Any]
    error: str | None
    traceback: str | None
    position: int | None  # 1 = runs next; None once running or finished

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def checkpoint(self) -> Any | None:
        """Where the best checkpoint was written, when ``run`` said so."""
        return self.result.get("checkpoint")


class JobContext:
    """What ``run`` gets: a stop flag to poll and two callbacks that publish how training goes.
    Its methods match the trainers' ``stop``, ``progress`` and ``on_epoch`` arguments."""

    def __init__(self, queue: JobQueue, job: _Job) -> None:
        self._queue, self._job = queue, job
        self.job_id = job.id

    def stop_requested(self) -> bool:
        return self._job.stop_event.is_set()

    def progress(self, fraction: float, message: str) -> None:
        self._queue._update(self._job, fraction=fraction, message=message)

    def epoch(self, record: Mapping[str, Any] | Any) -> None:
        """One finished epoch: a mapping, or a record with ``to_dict()`` (the trainers' EpochRecord)."""
        self._queue._update(self._job, record=_record_dict(record))


@dataclasses.dataclass(eq=False)
class _Job:
    """The queue's own, mutable state of a job; only touched with the queue's lock held."""

    id: str
    family: str
    name: str
    owner: str | None
    params: dict[str, Any]
    run: Callable[[JobContext], Mapping[str, Any] | None] | None
    submitted: float
    state: JobState = "queued"
    started: float | None = None
    finished: float | None = None
    fraction: float = 0.0
    message: str = "waiting for the trainings before it"
    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    stop_event: threading.Event = dataclasses.field(default_factory=threading.Event)


class JobQueue:
    """Trainings by id, run one at a time (first submitted, first run) by one daemon worker thread.

    Every page of the server shares one queue, so every method is thread-safe. Finished jobs are
    kept for the pages to show, at most ``max_finished`` of them (the oldest finished goes first);
    queued and running jobs are never dropped.
    """

    def __init__(self, max_finished: int = 50, *, clock: Callable[[], float] = time.time) -> None:
        if max_finished < 1:
            raise ValueError(f"max_finished must be at least 1, got {max_finished}")
        self.max_finished, self._clock = max_finished, clock
        self._jobs: OrderedDict[str, _Job] = OrderedDict()  # submission order
        self._pending: deque[str] = deque()
        self._finished: deque[str] = deque()  # finishing order, for dropping the oldest
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="cellscope-training", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------- public API

    def submit(self, family: str, name: str, params: Mapping[str, Any],
               run: Callable[[JobContext], Mapping[str, Any] | None], owner: str | None = None) -> str:
        """Queue a training; returns its id (unguessable: it may sit in a page's URL)."""
        job = _Job(secrets.token_urlsafe(12), family, name, owner, copy.deepcopy(dict(params)), run, self._clock())
        with self._cond:
            if self._closed:
                raise RuntimeError("the training queue is shut down")
            self._jobs[job.id] = job
            self._pending.append(job.id)
            self._cond.notify_all()
        return job.id

    def stop(self, job_id: str) -> bool:
        """Cancel a queued job at once, or ask a running one to stop (it ends "stopped" when its
        ``run`` returns). False when the job is unknown or already finished."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINISHED_STATES:
                return False
            job.stop_event.set()
            if job.state == "queued":
                self._pending.remove(job_id)
                self._finish(job, "stopped", message="cancelled before it started")
            elif job.state == "running":
                job.state = "stopping"
                job.message = "stopping after the current step"
            return True

    def snapshot(self, job_id: str) -> TrainingJob | None:
        """A copy of the job as it stands, or None when unknown (or dropped as an old finished job)."""
        with self._cond:
            job = self._jobs.get(job_id)
            return None if job is None else self._snapshot(job)

    def jobs(self, owner: str | None = None) -> list[TrainingJob]:
        """Every kept job, newest first; only ``owner``'s when given."""
        with self._cond:
            return [self._snapshot(j) for j in reversed(self._jobs.values()) if owner is None or j.owner == owner]

    def active(self) -> list[TrainingJob]:
        """Jobs not finished yet, in the order they will run: the running one first, then the queue."""
        with self._cond:
            running = [j for j in self._jobs.values() if j.state in ("running", "stopping")]
            return [self._snapshot(j) for j in running + [self._jobs[i] for i in self._pending]]

    def wait(self, job_id: str, timeout: float | None = None) -> TrainingJob | None:
        """Block until the job finishes (or ``timeout`` passes); its snapshot then, None if unknown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (job := self._jobs.get(job_id)) is not None and job.state not in FINISHED_STATES:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            return None if job is None else self._snapshot(job)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new jobs, cancel the queued ones, ask the running one to stop; with ``wait``, join
        the worker (it ends once the running job's ``run`` returns)."""
        with self._cond:
            self._closed = True
            for job_id in list(self._pending):
                self.stop(job_id)
            for job in self._jobs.values():
                if job.state == "running":
                    self.stop(job.id)
            self._cond.notify_all()
        if wait:
            self._worker.join(timeout)

    # --------------------------------------------------------------------------------- internals

    def _snapshot(self, job: _Job) -> TrainingJob:
        position = self._pending.index(job.id) + 1 if job.state == "queued" else None
        best = job.result.get("best_epoch") if job.state in FINISHED_STATES else None
        return TrainingJob(
            id=job.id, family=job.family, name=job.name, owner=job.owner, params=copy.deepcopy(job.params),
            state=job.state, submitted=job.submitted, started=job.started, finished=job.finished,
            fraction=job.fraction, message=job.message, epochs=tuple(dict(r) for r in job.epochs),
            best_epoch=best if isinstance(best, int) else _best_epoch(job.epochs),
            result=copy.deepcopy(job.result), error=job.error, traceback=job.traceback, position=position)

    def _update(self, job: _Job, *, fraction: float | None = None, message: str | None = None,
                record: dict[str, Any] | None = None) -> None:
        with self._cond:
            if job.state not in ("running", "stopping"):  # a trainer's late callback after the end
                return
            if fraction is not None and math.isfinite(fraction):
                job.fraction = min(max(float(fraction), 0.0), 1.0)
            if message is not None and job.state == "running":  # keep "stopping ..." visible
                job.message = str(message)
            if record is not None:
                job.epochs.append(record)

    def _finish(self, job: _Job, state: JobState, *, message: str, result: dict[str, Any] | None = None,
                error: str | None = None, trace: str | None = None) -> None:
        """Called with the lock held."""
        job.state, job.finished, job.message = state, self._clock(), message
        job.result, job.error, job.traceback = result or {}, error, trace
        job.run = None  # the closure may hold images and models: let them go
        if state == "done":
            job.fraction = 1.0
        self._finished.append(job.id)
        while len(self._finished) > self.max_finished:
            self._jobs.pop(self._finished.popleft(), None)
        self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                job = self._jobs[self._pending.popleft()]
                job.state, job.started, job.message = "running", self._clock(), "starting"
                run = job.run
            self._run(job, run)

    def _run(self, job: _Job, run: Callable[[JobContext], Mapping[str, Any] | None] | None) -> None:
        # Everything is caught: a failed training must never end the worker, or every later job waits forever.
        try:
            assert run is not None
            returned = run(JobContext(self, job))
            if returned is not None and not isinstance(returned, Mapping):
                raise TypeError(f"the training returned {type(returned).__name__}, not a dict summary")
            result = copy.deepcopy(dict(returned or {}))
        except BaseException as exc:  # SystemExit from a trainer must not end the worker either
            with self._cond:
                self._finish(job, "failed", message="failed", error=error_line(exc), trace=traceback.format_exc())
            return
        with self._cond:
            if job.stop_event.is_set():
                self._finish(job, "stopped", message="stopped; the best epoch so far is kept", result=result)
            else:
                self._finish(job, "done", message="finished", result=result)


def error_line(exc: BaseException) -> str:
    """One line a user can read: the exception's first line, without a traceback. Deliberate errors
    (ValueError: a bad setting, data the trainer cannot use) read as they are; others keep their type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if not isinstance(exc, ValueError) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _record_dict(record: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(record, Mapping):
        return copy.deepcopy(dict(record))
    if hasattr(record, "to_dict"):
        return copy.deepcopy(dict(record.to_dict()))
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    raise TypeError(f"an epoch record must be a mapping or have to_dict(), got {type(record).__name__}")


def _best_epoch(records: list[dict[str, Any]]) -> int | None:
    """The trainers' rule: highest validation F1, ties to the lower validation loss."""
    scored = [r for r in records if isinstance(r.get("f1"), int | float) and not math.isnan(r["f1"])]
    if not scored:
        return None

    def key(r: dict[str, Any]) -> tuple[float, float]:
        val_loss = r.get("val_loss")
        ok = isinstance(val_loss, int | float) and not math.isnan(val_loss)
        return float(r["f1"]), -float(val_loss) if ok else -math.inf

    return max(scored, key=key).get("epoch")
