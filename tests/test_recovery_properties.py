"""Recovery: a worker killed at a random moment changes nothing in the results.

Hypothesis chooses the pipeline, the group size and after how many records
(counted across all workers) one worker kills itself with SIGKILL; the run
must equal the sequential reference, on the local and the tcp transport.
"""

from __future__ import annotations

import os
import time

import pytest
import reference
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pipelines import build, pipelines
from support import context, count_call, kill_self_once, recovered

import drizzle_core as dz

pytestmark = pytest.mark.timeout(300)


class Killer:
    """Identity map that SIGKILLs its own worker at the n-th record seen by any worker, once."""

    def __init__(self, directory: str, n: int) -> None:
        self.directory = directory
        self.n = n

    def __call__(self, x):
        if count_call(self.directory) >= self.n:
            kill_self_once(self.directory)
        return x


_FUNCS = {"sum": sum, "list": list}


def _run(ctx, tmp, items, partitions, jobs, group_size, kill_at):
    src = ctx.parallelize(items, partitions)
    killer = Killer(str(tmp), kill_at)
    built = [(build(ctx, src.map(killer), steps), _FUNCS[fn]) for steps, fn in jobs]
    expected = [[_FUNCS[fn](part) for part in reference.partitions(build(ctx, src, steps))] for steps, fn in jobs]
    n0 = len(ctx.metrics)
    assert ctx.run_jobs(built, group_size=group_size) == expected
    killed = os.path.exists(os.path.join(tmp, "killed"))
    assert recovered(ctx.metrics[n0:]) == (1 if killed else 0)
    event("a worker was killed" if killed else "the run ended before the kill")
    return killed


examples = dict(
    items=st.lists(st.integers(-20, 20), min_size=5, max_size=30),
    partitions=st.integers(2, 6),
    jobs=st.lists(st.tuples(pipelines(), st.sampled_from(["sum", "list"])), min_size=1, max_size=4),
    group_size=st.integers(1, 20),
    kill_at=st.integers(1, 25),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(**examples)
def test_local_worker_killed_mid_group_gives_the_reference_result(tmp_path_factory, items, partitions, jobs,
                                                                    group_size, kill_at):
    ctx = context("local", 2)
    _run(ctx, tmp_path_factory.mktemp("kill"), items, partitions, jobs, group_size, kill_at)
    deadline = time.monotonic() + 10
    while ctx._scheduler.live != [0, 1] and time.monotonic() < deadline:  # a replacement joins
        ctx._scheduler.check_workers()
        time.sleep(0.01)
    assert len(ctx.workers) == 2 and ctx._scheduler.live == [0, 1]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(**examples)
def test_tcp_worker_killed_mid_group_gives_the_reference_result(tmp_path_factory, items, partitions, jobs,
                                                                  group_size, kill_at):
    with dz.Context(transport="tcp", workers=2) as ctx:
        _run(ctx, tmp_path_factory.mktemp("kill"), items, partitions, jobs, group_size, kill_at)
