"""Failures that name their cause and lose nothing."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest
from bookkeeping import assert_no_bookkeeping
from support import worker_pids

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("transport", ["local", "tcp"])
def test_a_function_from_a_module_only_the_driver_has(transport, tmp_path, no_orphans):
    with dz.Context(transport=transport, workers=2) as ctx:
        pids = worker_pids(ctx)
        (tmp_path / "driver_only_helpers.py").write_text(textwrap.dedent("""
            def triple(x):
                return 3 * x
        """))
        sys.path.insert(0, str(tmp_path))  # the workers started before: they cannot import it
        try:
            import driver_only_helpers

            with pytest.raises(dz.TaskError) as info:
                ctx.parallelize(range(4), 2).map(driver_only_helpers.triple).collect()
            msg = str(info.value)
            assert "driver_only_helpers" in msg and "'triple'" in msg and "driver_only_helpers.py:2" in msg
            assert "register_pickle_by_value" in msg
            # the workers are alive and the next job runs, on the same processes
            assert ctx.parallelize(range(4), 2).map(lambda x: x + 1).collect() == [1, 2, 3, 4]
            assert worker_pids(ctx) == pids
            # the same program again: sent again, failing again the same way (not a KeyError on the worker)
            with pytest.raises(dz.TaskError, match="driver_only_helpers"):
                ctx.parallelize(range(4), 2).map(driver_only_helpers.triple).collect()
            assert_no_bookkeeping(ctx)
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("driver_only_helpers", None)


def _slow_then_fail(x):
    if x == 0:
        time.sleep(0.15)
    if x == 1:
        raise ValueError("job 1 is bad")
    return x


@pytest.mark.parametrize("transport", ["inline", "local", "tcp"])
def test_jobs_finished_before_a_failure_are_delivered(transport):
    with dz.Context(transport=transport, workers=1) as ctx:
        for _ in range(3):
            jobs = [(ctx.parallelize([i], 1).map(_slow_then_fail), sum) for i in range(4)]
            got = []
            with pytest.raises(dz.TaskError, match="job 1 is bad") as info:
                for r in ctx.iter_jobs(jobs, group_size=4):
                    got.append(r)
            assert got == [[0]]
            assert info.value.job == 1
        assert ctx.parallelize(range(3), 1).collect() == [0, 1, 2]
        assert_no_bookkeeping(ctx)


def test_the_next_job_after_a_failure_reuses_nothing_stale(ctx_inline_local):
    ctx = ctx_inline_local
    ds = ctx.parallelize(range(10), 2).cache()
    with pytest.raises(dz.TaskError):
        ds.map(lambda x: 1 / (x - 5)).collect()
    assert ds.count() == 10
    ds.unpersist()
    assert_no_bookkeeping(ctx)


@pytest.fixture(params=["inline", "local"])
def ctx_inline_local(request):
    with dz.Context(transport=request.param, workers=2) as ctx:
        yield ctx
