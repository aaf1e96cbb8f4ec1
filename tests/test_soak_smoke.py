"""benchmarks/soak.py's three parts at a tiny size: nothing is left behind, the bookkeeping is empty.

The soak itself (100,000 jobs, 1,000 context cycles, 10,000 batches) is a
script that prints figures; this runs the same functions small, so a change
that leaks a file descriptor, a thread, a worker process or a socket
directory per session, or leaves bookkeeping behind after a loop, fails
here and not only in a soak someone has to remember to run. RSS is checked
against the soak's budget only (a tiny run grows a few MB), never timed.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks"))
import soak  # (benchmarks/ is not a package; the workers import it from the same path)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """What a process sets up once (the worker spawner thread) is there before the first baseline."""
    soak.warm_up("local", 2)


def _check(res: soak.PartResult, workers: int) -> None:
    assert res.wrong == [], f"wrong results: {res.wrong}"
    # the soak measured what it says it did: its samples cover the run, it saw the workers
    assert res.samples[-1].progress == res.total
    assert res.start is not None and len(res.start.workers) == workers, "the soak did not find the worker processes"
    assert res.end is not None and all(len(s.workers) == workers for s in res.samples[1:])
    # nothing left: fds, threads, children, shm, socket dirs, worker fds/threads, bookkeeping
    assert res.left() == [], f"left behind: {res.left()}"
    driver = {k: v for k, v in res.bookkeeping["driver"].items() if k != "cached_blocks"}
    assert set(driver.values()) == {0}, f"driver bookkeeping left: {driver}"
    assert len(res.bookkeeping["workers"]) == workers
    assert all(g < soak.BUDGET_MB for _, g in res.rss_growth()), res.rss_growth()


def test_many_tiny_jobs_leave_nothing() -> None:
    res = soak.soak_jobs("local", jobs=2000, workers=2, action_every=500)
    _check(res, 2)
    assert res.metrics["ctx.metrics (per group)"][0] >= 4  # the loop's groups and the nested count() actions


def test_context_cycles_leave_nothing() -> None:
    res = soak.soak_cycles("local", cycles=4, workers=2, samples=2)
    _check(res, 2)
    assert res.per_cycle_left == []


def test_stateful_stream_leaves_only_its_state() -> None:
    res = soak.soak_stream("local", batches=200, workers=2, state_mb=0.05)  # RSS is the full soak's business
    _check(res, 2)
    assert res.bookkeeping["driver"]["cached_blocks"] > 0  # the stream's state stays cached on the workers
    assert res.metrics["Stream.metrics (per batch)"][0] == 200
