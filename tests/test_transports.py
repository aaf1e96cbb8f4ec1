"""The built-in transports against the conformance suite."""

from __future__ import annotations

import pytest
from conformance import ProcessConformance, TransportConformance

pytestmark = pytest.mark.timeout(120)


class TestInline(TransportConformance):
    transport = "inline"

    def test_iter_jobs_yields_first_job_before_the_group_ends(self, ctx):
        # inline is synchronous (no timing to check), but still yields job by job, in order
        ds = ctx.parallelize(range(4), 2)
        it = ctx.iter_jobs([(ds.map(lambda x, i=i: x + i), sum) for i in range(3)], group_size=3)
        assert next(it) == [1, 5]
        assert list(it) == [[3, 7], [5, 9]]


class TestLocal(TransportConformance, ProcessConformance):
    transport = "local"


def test_without_replacements_losing_the_last_worker_is_a_clear_error(no_orphans):
    import os
    import signal

    import drizzle_core as dz

    with dz.Context(transport="local", workers=1, replace_lost=False) as ctx:
        with pytest.raises(dz.WorkerLostError, match=r"local worker 0 \(pid \d+\).*no worker is left"):
            ctx.parallelize(range(4), 2).map(lambda x: os.kill(os.getpid(), signal.SIGKILL)).collect()
        with pytest.raises(dz.WorkerLostError, match="no live worker"):
            ctx.parallelize(range(4), 2).collect()


def test_an_added_local_worker_takes_tasks_from_the_next_group(no_orphans):
    import os

    import drizzle_core as dz

    with dz.Context(transport="local", workers=1) as ctx:
        assert ctx.add_worker().startswith("local worker 1 (pid ")
        assert len(ctx.live_workers) == 2
        pids = {p[0] for p in ctx.parallelize(range(4), 4).map_partitions(lambda it: [os.getpid()]).glom()}
        assert len(pids) == 2
        assert ctx.parallelize(range(100), 5).map(lambda x: (x % 4, x)).reduce_by_key(lambda a, b: a + b, 3) \
            .count() == 4
