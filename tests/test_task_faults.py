"""What a task returns or does cannot take its worker down: unpicklable results, sys.exit()."""

from __future__ import annotations

import threading

import pytest
from bookkeeping import assert_no_bookkeeping
from support import worker_pids

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["inline", "local", "tcp"])
def ctx(request):
    with dz.Context(transport=request.param, workers=2) as ctx:
        yield ctx


def test_an_unpicklable_result_names_job_partition_and_type(ctx):
    pids = worker_pids(ctx)
    with pytest.raises(dz.TaskError) as info:
        ctx.parallelize(range(4), 2).map(lambda x: threading.Lock()).collect()
    err = info.value
    assert err.job == 0 and err.partition in (0, 1)
    assert "cannot be sent to the driver" in str(err) and "_thread.lock" in str(err)
    assert ctx.parallelize(range(4), 2).collect() == [0, 1, 2, 3]
    assert worker_pids(ctx) == pids  # the same processes
    assert_no_bookkeeping(ctx)


def test_a_generator_returned_by_a_job_function(ctx):
    with pytest.raises(dz.TaskError, match="generator"):
        ctx.run_jobs([(ctx.parallelize(range(4), 2), lambda it: (x for x in it))])
    assert ctx.parallelize(range(3), 1).count() == 3
    assert_no_bookkeeping(ctx)


def test_an_unpicklable_shuffle_bucket_fails_its_map_task(ctx):
    pairs = ctx.parallelize(range(4), 2).map(lambda x: (x % 2, threading.Lock()))
    with pytest.raises(dz.TaskError, match="lock"):
        pairs.group_by_key(2).map(lambda kv: kv[0]).collect()
    assert sorted(ctx.parallelize(range(4), 2).map(lambda x: (x % 2, x)).reduce_by_key(int.__add__).collect()) \
        == [(0, 2), (1, 4)]
    assert_no_bookkeeping(ctx)


def test_sys_exit_inside_a_task_fails_the_task_not_the_worker(ctx):
    import sys

    pids = worker_pids(ctx)
    with pytest.raises(dz.TaskError, match="SystemExit"):
        ctx.parallelize(range(4), 2).map(lambda x: sys.exit(3)).collect()
    assert worker_pids(ctx) == pids
    assert_no_bookkeeping(ctx)
