"""Cached partitions spread onto a worker that joins (a replacement, an added worker).

After a loss the survivors recompute the lost partitions of a cached
dataset, and locality then keeps every later job of them there: without
rebalancing a replacement got no tasks and an iterative job ran 2x slower
for the rest of its life. Each block the default placement (q % W) gives
the newcomer moves there with the next job that reads it (forwarded, kept);
the old copy is dropped once nothing reads it, so the workers hold exactly
one copy of each block and the driver knows where.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from bookkeeping import assert_no_bookkeeping
from support import wait_all_live, worker_pids

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)


def _pid(it):
    return [os.getpid()]


def _where(ds: dz.Dataset) -> list[int]:
    """The pid of the worker that holds each cached partition (a job over it runs where each block is)."""
    return [p[0] for p in ds.map_partitions(_pid).glom()]


def _blocks_held(ctx: dz.Context) -> dict[str, int]:
    return {name: w["cached_blocks"] for name, w in ctx.bookkeeping()["workers"].items()}


def test_a_replacement_gets_its_share_of_the_cached_partitions_back(no_orphans):
    with dz.Context(transport="local", workers=2) as ctx:
        data = ctx.parallelize(np.arange(8000.0), 8).map_partitions(lambda a: [a * 2]).cache()
        expected = data.map_partitions(lambda it: [float(next(iter(it)).sum())]).collect()
        pids = worker_pids(ctx)
        assert _where(data) == [pids[q % 2] for q in range(8)]
        os.kill(pids[1], signal.SIGKILL)
        time.sleep(0.1)
        # recovered: the survivor recomputes the lost half
        assert data.map_partitions(lambda it: [float(next(iter(it)).sum())]).collect() == expected
        wait_all_live(ctx)
        new = worker_pids(ctx)
        assert new[0] == pids[0] and new[1] != pids[1]
        # the next job reading the data moves the newcomer's share to it; it stays there
        assert data.map_partitions(lambda it: [float(next(iter(it)).sum())]).collect() == expected
        assert _where(data) == [new[q % 2] for q in range(8)]
        assert _where(data) == [new[q % 2] for q in range(8)]
        assert sorted(_blocks_held(ctx).values()) == [4, 4]  # one copy of each block: the old ones dropped
        assert_no_bookkeeping(ctx)
        data.unpersist()
        assert_no_bookkeeping(ctx)


def test_an_added_worker_takes_its_share_and_results_stay_exact(no_orphans):
    with dz.Context(transport="local", workers=1) as ctx:
        data = ctx.parallelize(range(60), 6).map(lambda x: x * x).cache()
        assert data.sum() == sum(x * x for x in range(60))
        ctx.add_worker()
        pids = worker_pids(ctx)
        assert data.sum() == sum(x * x for x in range(60))
        assert _where(data) == [pids[q % 2] for q in range(6)]
        # a shuffle and a zip over the moved data give what they gave before
        assert sorted(data.map(lambda x: (x % 3, x)).reduce_by_key(lambda a, b: a + b).collect()) == [
            (k, sum(x * x for x in range(60) if (x * x) % 3 == k)) for k in range(3) if any(
                (x * x) % 3 == k for x in range(60))]
        assert sorted(_blocks_held(ctx).values()) == [3, 3]
        assert_no_bookkeeping(ctx)


def test_a_dataset_unpersisted_before_its_move_leaves_nothing_behind(no_orphans):
    with dz.Context(transport="local", workers=1) as ctx:
        data = ctx.parallelize(range(40), 4).cache()
        assert data.count() == 40
        ctx.add_worker()  # moves planned for the next read of data ...
        data.unpersist()  # ... which never comes
        assert_no_bookkeeping(ctx)
        assert ctx.parallelize(range(10), 2).sum() == 45


def test_iterate_after_a_recovery_runs_on_both_workers_again(no_orphans):
    """An iterate over cached data: after the replacement joins, both workers compute partials again."""
    with dz.Context(transport="local", workers=2) as ctx:
        data = ctx.parallelize(np.arange(4000.0).reshape(1000, 4), 4).cache()
        data.count()
        pids = worker_pids(ctx)
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.1)
        assert data.count() == 1000
        wait_all_live(ctx)
        data.count()  # the read that moves the blocks
        out = ctx.iterate(data, np.zeros(4), local=lambda part, s: part.sum(axis=0), combine=np.add,
                          update=lambda s, total: s + total, iterations=3)
        assert np.array_equal(out.state, 3 * np.arange(4000.0).reshape(1000, 4).sum(axis=0))
        assert set(_where(data)) == set(worker_pids(ctx))
        assert_no_bookkeeping(ctx)
