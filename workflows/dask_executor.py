"""Running the one image loop's units on Dask: a local cluster of worker processes on this machine,
or an existing cluster joined by its scheduler's address (``dask scheduler`` / ``dask worker``,
dask-jobqueue on SLURM).

:class:`DaskExecutor` is an :class:`~workflows.image_loop.Executor` (``map``: results in the
items' order) and also gives results as they finish (:meth:`DaskExecutor.as_completed`), with at
most a few tasks per worker in flight, so that the scheduler and this process hold a bounded
number of tasks whatever the screen's size. A worker that dies has its tasks run again on
another (Dask's own retry, :data:`ALLOWED_FAILURES` times), and a task that kills every worker it
lands on comes back as an error naming the item, not the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT_PER_WORKER = 4  # tasks queued per worker: enough to keep it busy, few enough to stay small
ALLOWED_FAILURES = 3  # a task that was on this many workers when they died is given up (distributed's default)


class WorkerLost(RuntimeError):
    """An item whose task was on :data:`ALLOWED_FAILURES` workers when they died (out of memory?)."""


class DaskExecutor:
    """Units run on a Dask cluster: a :class:`distributed.LocalCluster` of ``workers`` processes
    (one thread each: the units use their own threads) when ``scheduler`` is None, else the
    cluster at ``scheduler`` (``tcp://HOST:8786``). Use as a context manager: the local cluster is
    closed on exit, a joined one left running."""

    def __init__(self, *, scheduler: str | None = None, workers: int = 2, memory_limit: str | None = None,
                 timeout: float | None = None) -> None:
        self.scheduler, self.workers, self.memory_limit, self.timeout = scheduler, workers, memory_limit, timeout
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> DaskExecutor:
        import dask
        from distributed import Client, LocalCluster

        dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                         "distributed.worker.daemon": False,  # a unit may start processes of its own (torch)
                         # The workers' statistical profiler samples the running task's stack every 10 ms: it
                         # cost our Python-heavy units 10% (measured, benchmarks/bench_batch.py).
                         "distributed.worker.profile.enabled": False,
                         # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's mmap
                         # threshold at 128 KiB: every image-sized temporary is then mapped, faulted in zeroed and
                         # unmapped again. It made a worker 25% slower than the same loop outside Dask, with the
                         # same peak memory (benchmarks/bench_batch.py); unset, glibc's own adaptive default holds.
                         "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
        if self.scheduler is None:
            if self.workers < 1:
                raise ValueError(f"--workers must be 1 or more; got {self.workers}")
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                        memory_limit=self.memory_limit or "auto", dashboard_address=":0",
                                        silence_logs=40)
            self.client = Client(self.cluster)
            # Each worker's libraries get its share of the cores (Dask sets OMP_NUM_THREADS=1 only, which
            # OpenCV and torch do not read): N workers x all cores each would fight over them.
            self.client.run(limit_threads, max(1, (os.cpu_count() or 1) // self.workers))
        else:
            try:
                # timeout None: Dask's distributed.comm.timeouts.connect (30 s; DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)
                self.client = Client(self.scheduler, **({} if self.timeout is None else {"timeout": self.timeout}))
            except (OSError, TimeoutError) as exc:
                raise ValueError(f"--scheduler {self.scheduler}: no Dask scheduler answered ({exc}); start one "
                                 "with `dask scheduler` and workers with `dask worker ADDRESS`") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def dashboard(self) -> str:
        """The Dask dashboard's address (task stream, workers' memory), or '' where there is none."""
        try:
            return self.client.dashboard_link or ""
        except (AttributeError, KeyError):
            return ""

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def check_workers(self, folder: str) -> None:
        """The scheduler and every worker can import CellScope (they unpickle its tasks), and every
        worker can write into ``folder`` (a shared file system): said in one line before any image is
        sent, not as a thousand failures."""
        start = ("start it from the CellScope folder with PYTHONPATH set to that folder (`PYTHONPATH=. "
                 ".venv/bin/dask scheduler`), in the same environment")
        try:
            self.client.run_on_scheduler(_imports_cellscope)
        except Exception as exc:  # noqa: BLE001  whatever the scheduler says back: it cannot run our tasks
            raise ValueError(f"the Dask scheduler cannot read CellScope's tasks ({type(exc).__name__}): {start}") \
                from None
        try:
            answers = self.client.run(_can_write, folder)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"a Dask worker cannot run CellScope's code ({type(exc).__name__}): "
                             f"{start.replace('scheduler', 'worker ADDRESS')}") from None
        if not all(answers.values()):
            bad = [w for w, ok in answers.items() if not ok]
            raise ValueError(f"worker {bad[0]} cannot write into {folder}: the output folder must be on a file "
                             "system every worker sees (a shared disk), and writable by them")

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """Results in the items' order (the one image loop's contract)."""
        done: dict[int, R] = {}
        next_out = 0
        for i, result in self.as_completed(fn, items):
            done[i] = result
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1

    def as_completed(self, fn: Callable[[T], R], items: Sequence[T], *,
                     on_lost: Callable[[T, str], R] | None = None) -> Iterator[tuple[int, R]]:
        """``(index, fn(item))`` as each finishes, at most :data:`IN_FLIGHT_PER_WORKER` per worker
        in flight. A task given up after its workers died gives ``on_lost(item, why)`` (or raises
        :class:`WorkerLost` without it)."""
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        window = max(1, IN_FLIGHT_PER_WORKER * max(self.n_workers, 1))
        pending = iter(enumerate(items))
        index_of: dict[str, int] = {}
        futures = as_completed()

        def submit() -> bool:
            try:
                i, item = next(pending)
            except StopIteration:
                return False
            future = self.client.submit(fn, item, pure=False, key=f"image-{i}-{os.urandom(4).hex()}")
            index_of[future.key] = i
            futures.add(future)
            return True

        for _ in range(window):
            if not submit():
                break
        for future in futures:
            i = index_of.pop(future.key)
            try:
                result = future.result()
            except KilledWorker as exc:
                why = (f"its worker died {ALLOWED_FAILURES} times while running it (out of memory? try fewer "
                       f"--workers or a smaller --block): {exc}")
                if on_lost is None:
                    raise WorkerLost(why) from exc
                result = on_lost(items[i], why)
            finally:
                future.release()
            submit()
            yield i, result


def limit_threads(n: int) -> None:
    """This process's numeric libraries on ``n`` threads: OpenCV, the BLAS and OpenMP pools, torch."""
    import sys

    import cv2

    cv2.setNumThreads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)  # torch imported later reads it


def _imports_cellscope() -> bool:
    import workflows.batch  # noqa: F401

    return True


def _can_write(folder: str) -> bool:
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            import workflows.batch  # noqa: F401  (the worker has CellScope's code)
        return True
    except (OSError, ImportError):
        return False
