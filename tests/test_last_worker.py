"""Losing the last live worker while its replacement starts: the group waits for it, results stay exact."""

from __future__ import annotations

import operator
import os
import signal
import threading
import time

import pytest
from bookkeeping import assert_no_bookkeeping
from support import worker_pids

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)


def _slow(x):
    time.sleep(0.004)
    return x


@pytest.mark.parametrize("transport", ["local", "tcp"])
def test_the_last_worker_killed_mid_job_is_replaced_and_the_job_finishes(transport, no_orphans):
    with dz.Context(transport=transport, workers=1) as ctx:
        pid = worker_pids(ctx)[0]
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
        ds = ctx.parallelize(range(400), 4).map(_slow).map(lambda x: (x % 5, x))
        assert sorted(ds.reduce_by_key(operator.add, 2).collect()) == [
            (k, sum(x for x in range(400) if x % 5 == k)) for k in range(5)]
        assert ctx.metrics[-1].recoveries == 1
        new_pid = worker_pids(ctx)[0]
        assert new_pid != pid
        assert ctx.parallelize(range(10), 2).sum() == 45
        assert_no_bookkeeping(ctx)


def test_the_last_worker_killed_between_jobs_is_waited_for(no_orphans):
    with dz.Context(transport="local", workers=1) as ctx:
        pid = worker_pids(ctx)[0]
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert ctx.parallelize(range(10), 2).sum() == 45
        assert_no_bookkeeping(ctx)
