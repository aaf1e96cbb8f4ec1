"""A repeated query's stamped jobs run as one loop per worker (``worker/_stamp.Batch``), task for task the same.

A loop of identical jobs over a cached dataset (the same dataset and
function every job, W1) is stamped with the template's very ids, and a
worker that holds every block the slice reads runs a group's instances in
one loop instead of queuing each task. What a user checks is that nothing
else changes: every job's result, in order, at any group size (one more
than the worker's time budget holds, so the loop is cut and resumed); a
function that raises in a later job fails that job with its own error and
partition; ``task_timeout`` interrupts a task of the loop; a loop the caller
stops in the middle leaves nothing behind. A white-box check on the inline
transport shows the loop is what runs them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from bookkeeping import assert_no_bookkeeping
from support import worker_pids

import drizzle_core as dz
from drizzle_core.worker import _runtime

pytestmark = pytest.mark.timeout(120)

DATA = np.arange(40_000, dtype=np.float64)


def _total(part: np.ndarray) -> float:
    return float(part.sum())


class _FailOnCall:
    """Raises on its ``n``-th call in a worker (the program, and so this object, is unpickled once per worker)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self, part: np.ndarray) -> float:
        self.calls += 1
        if self.calls == self.n:
            raise ValueError(f"call {self.calls} of partition starting at {part[0]:.0f}")
        return float(part.sum())


class _HangOnCall(_FailOnCall):
    def __call__(self, part: np.ndarray) -> float:
        self.calls += 1
        if self.calls == self.n:
            while True:
                time.sleep(0.01)
        return float(part.sum())


def _cached(ctx: dz.Context) -> tuple[dz.Dataset, list[float]]:
    ds = ctx.parallelize(DATA, 4).cache()
    expected = [float(np.asarray(p).sum()) for p in ds.glom()]
    assert len(expected) == 4
    return ds, expected


@pytest.mark.parametrize("group_size", [2, 50, 1500])
def test_every_job_of_a_repeated_query_gets_its_partitions_results_in_order(group_size):
    with dz.Context(transport="local", workers=2) as ctx:
        ds, expected = _cached(ctx)
        n = 3000 if group_size == 1500 else 200  # 1500 jobs x 2 tasks a worker: longer than one 1 ms budget
        assert ctx.run_jobs([(ds, _total)] * n, group_size=group_size) == [expected] * n
        assert_no_bookkeeping(ctx)


def test_the_loop_is_what_runs_the_stamped_jobs(monkeypatch):
    ran = []
    real = _runtime.WorkerRuntime._run_batch

    def spy(self, gs, batch, deadline):
        n = real(self, gs, batch, deadline)
        ran.append(n)
        return n

    monkeypatch.setattr(_runtime.WorkerRuntime, "_run_batch", spy)
    with dz.Context(transport="inline", workers=2) as ctx:
        ds, expected = _cached(ctx)
        assert ctx.run_jobs([(ds, _total)] * 100, group_size=50) == [expected] * 100
        # the first job of the shape is planned (it becomes the template); the 99 stamped ones, 4 tasks each, loop
        assert sum(ran) == 99 * 4
        assert_no_bookkeeping(ctx)


def test_a_function_that_raises_in_a_later_job_fails_that_job_and_the_worker_goes_on():
    with dz.Context(transport="local", workers=2) as ctx:
        ds, expected = _cached(ctx)
        pids = worker_pids(ctx)
        with pytest.raises(dz.TaskError) as info:
            ctx.run_jobs([(ds, _FailOnCall(37))] * 100, group_size=100)
        err = info.value
        assert isinstance(err.exception, ValueError) and "call 37 of partition" in str(err)
        assert err.partition in range(4)
        assert ctx.run_jobs([(ds, _total)] * 50, group_size=25) == [expected] * 50
        assert worker_pids(ctx) == pids
        assert_no_bookkeeping(ctx)


def test_task_timeout_interrupts_a_task_of_the_loop():
    with dz.Context(transport="local", workers=2, task_timeout=0.5) as ctx:
        ds, expected = _cached(ctx)
        pids = worker_pids(ctx)
        with pytest.raises(dz.TaskTimeoutError) as info:
            ctx.run_jobs([(ds, _HangOnCall(20))] * 100, group_size=100)
        assert "task_timeout=0.5 s" in str(info.value)
        assert ctx.run_jobs([(ds, _total)] * 50, group_size=25) == [expected] * 50
        assert worker_pids(ctx) == pids  # interrupted, not restarted
        assert_no_bookkeeping(ctx)


def test_a_loop_stopped_in_the_middle_leaves_nothing_behind():
    with dz.Context(transport="local", workers=2) as ctx:
        ds, expected = _cached(ctx)
        it = ctx.iter_jobs(((ds, _total) for _ in range(100_000)), group_size=2000)
        got = [next(it) for _ in range(300)]
        it.close()
        assert got == [expected] * 300
        assert ctx.run_jobs([(ds, _total)] * 10, group_size=5) == [expected] * 10
        assert_no_bookkeeping(ctx)
