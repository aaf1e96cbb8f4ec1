"""The transport conformance suite: every transport's test module subclasses it.

A subclass sets ``transport`` (and optionally ``options``); it gets a
class-scoped two-worker context and must pass every test here. Transports
with worker processes also inherit :class:`ProcessConformance` (kill -9,
orphans).
"""

from __future__ import annotations

import operator
import os
import signal
import threading
import time

import numpy as np
import pytest
from bookkeeping import assert_no_bookkeeping
from support import alive, worker_pids

import drizzle_core as dz


def _boom(x):
    if x == 7:
        raise KeyError(f"bad record {x}")
    return x


def _merge(old, new):
    state = dict(old[0]) if old else {}
    for k, v in new:
        state[k] = state.get(k, 0) + v
    return [state]


def _with_pid(old, new):
    return [(os.getpid(), old, list(new))]


class TransportConformance:
    transport: str = ""
    options: dict = {}
    workers = 2

    @pytest.fixture(scope="class")
    @classmethod
    def ctx(cls):
        with dz.Context(transport=cls.transport, workers=cls.workers, **cls.options) as ctx:
            yield ctx

    @pytest.fixture(autouse=True)
    def _nothing_left_behind(self, ctx):
        """After every test: no open plan, deferred drop or transient block; workers hold what the driver knows."""
        yield
        assert_no_bookkeeping(ctx)

    def test_empty_array_partitions_and_results(self, ctx):
        """More partitions than rows: zero-row slices travel (an empty buffer once hung the hub's writer)."""
        parts = ctx.parallelize(np.ones((2, 3)), 5).glom()
        assert [p.shape for p in parts] == [(1, 3), (1, 3), (0, 3), (0, 3), (0, 3)]
        assert ctx.parallelize(np.arange(3.0), 6).map_partitions(lambda p: [p * 2]).collect()[3].shape == (0,)
        assert ctx.parallelize(np.ones((2, 3)), 5).sum().tolist() == [2.0, 2.0, 2.0]

    def test_narrow_pipeline_keeps_partition_order(self, ctx):
        ds = ctx.parallelize(range(100), 7)
        out = ds.map(lambda x: x * 3).filter(lambda x: x % 2 == 0).flat_map(lambda x: [x, -x]).collect()
        expected = [y for x in range(100) if (x * 3) % 2 == 0 for y in (x * 3, -(x * 3))]
        assert out == expected

    def test_actions(self, ctx):
        ds = ctx.parallelize(range(1, 101), 5)
        assert ds.count() == 100
        assert ds.sum() == 5050
        assert ds.reduce(operator.mul) == np.prod(np.arange(1, 101, dtype=object))
        assert ds.take(7) == [1, 2, 3, 4, 5, 6, 7]
        assert ds.take(1000) == list(range(1, 101))
        with pytest.raises(ValueError, match="empty"):
            ds.filter(lambda x: False).reduce(operator.add)

    def test_shuffles(self, ctx):
        words = ["a", "b", "c", "a", "b", "a"] * 50
        ds = ctx.parallelize(words, 4)
        counts = dict(ds.map(lambda w: (w, 1)).reduce_by_key(operator.add, 3).collect())
        assert counts == {"a": 150, "b": 100, "c": 50}
        groups = dict(ds.key_by(lambda w: w).group_by_key(2).collect())
        assert {k: len(v) for k, v in groups.items()} == counts
        left = ctx.parallelize([(i % 5, i) for i in range(20)], 3)
        right = ctx.parallelize([(k, str(k)) for k in range(3)], 2)
        joined = sorted(left.join(right, 4).collect())
        assert joined == sorted((i % 5, (i, str(i % 5))) for i in range(20) if i % 5 < 3)

    def test_union_and_zip(self, ctx):
        a = ctx.parallelize(range(10), 2)
        b = ctx.parallelize(range(10, 15), 3)
        assert a.union(b).collect() == list(range(15))
        assert a.union(b).num_partitions == 5
        z = a.zip_partitions(ctx.parallelize(range(100, 110), 2), lambda x, y: [sum(x) + sum(y)])
        assert z.collect() == [sum(range(5)) + sum(range(100, 105)), sum(range(5, 10)) + sum(range(105, 110))]

    def test_numpy_partitions_are_row_slices(self, ctx):
        arr = np.arange(60.0).reshape(20, 3)
        ds = ctx.parallelize(arr, 4)
        shapes = ds.map_partitions(lambda a: [(type(a).__name__, a.shape)]).collect()
        assert shapes == [("ndarray", (5, 3))] * 4
        np.testing.assert_array_equal(ds.sum(), arr.sum(axis=0))

    def test_large_numpy_blocks_cross_a_shuffle(self, ctx):
        big = ctx.parallelize(range(4), 4).map(lambda i: (i % 2, np.full(500_000, float(i))))
        out = dict(big.reduce_by_key(operator.add, 2).collect())
        np.testing.assert_array_equal(out[0], np.full(500_000, 2.0))
        np.testing.assert_array_equal(out[1], np.full(500_000, 4.0))

    def test_run_jobs_returns_results_in_job_order(self, ctx):
        ds = ctx.parallelize(range(40), 4).cache()
        jobs = [(ds.map(lambda x, i=i: x * i), sum) for i in range(25)]
        for g in (1, 4, 25, 100):
            out = ctx.run_jobs(jobs, group_size=g)
            assert out == [[sum(x * i for x in range(p * 10, p * 10 + 10)) for p in range(4)] for i in range(25)]

    def test_iter_jobs_yields_first_job_before_the_group_ends(self, ctx):
        ds = ctx.parallelize(range(4), 2)
        slow = ds.map(lambda x: time.sleep(0.3) or x)
        it = ctx.iter_jobs([(ds, sum)] + [(slow, sum)] * 3, group_size=4)
        t = time.perf_counter()
        first = next(it)
        assert first == [1, 5]
        assert time.perf_counter() - t < 0.6  # the slow jobs take >= 0.9 s on 2 workers
        assert list(it) == [[1, 5]] * 3

    def test_cached_state_stays_on_its_worker(self, ctx):
        state = ctx.parallelize([{} for _ in range(2)], 2).cache()
        data = ctx.parallelize([(k, 1) for k in range(10)], 2).cache()
        jobs, states = [], []
        for _ in range(6):
            state = state.zip_partitions(data.reduce_by_key(operator.add, 2), _merge).cache()
            states.append(state)
            jobs.append((state.zip_partitions(state, _with_pid), list))
        out = ctx.run_jobs(jobs, group_size=3)
        pids = {p: {job[p][0][0] for job in out} for p in range(2)}
        assert all(len(v) == 1 for v in pids.values()), pids
        final = {k: v for part in states[-1].glom() for k, v in part[0].items()}
        assert final == {k: 6 for k in range(10)}

    def test_task_error_names_job_stage_partition_and_context_survives(self, ctx):
        ds = ctx.parallelize(range(20), 4).map(_boom)
        with pytest.raises(dz.TaskError) as info:
            ctx.run_jobs([(ctx.parallelize(range(4), 2), sum), (ds, sum)], group_size=2)
        err = info.value
        assert (err.job, err.partition) == (1, 1)
        assert "job 1" in str(err) and "partition 1" in str(err) and "map(_boom)" in str(err)
        assert "KeyError" in str(err) and "bad record 7" in err.remote_traceback
        assert isinstance(err.exception, KeyError)
        assert isinstance(err.__cause__, dz.RemoteTraceback)
        assert ctx.parallelize(range(10), 3).sum() == 45

    def test_unpicklable_function_is_named_before_any_task_runs(self, ctx, tmp_path):
        marker = tmp_path / "ran"
        lock = threading.Lock()

        def uses_a_lock(x):
            with lock:
                return x

        def touch(it):
            marker.write_text("x")
            return 0

        src = ctx.parallelize(range(4), 2)
        with pytest.raises(dz.SerializationError, match="uses_a_lock") as info:
            ctx.run_jobs([(src, touch), (src.map(uses_a_lock), sum)], group_size=2)
        assert "map(" in str(info.value)
        assert not marker.exists()
        assert src.count() == 4

    def test_many_groups_reuse_the_program(self, ctx):
        ds = ctx.parallelize(np.arange(1000.0), 4).cache()
        out = ctx.run_jobs([(ds, np.sum)] * 300, group_size=50)
        assert out == [[float(np.arange(p * 250, p * 250 + 250).sum()) for p in range(4)]] * 300
        last = ctx.metrics[-6:]
        assert all(m.jobs == 50 for m in last)
        # one launch message per worker per group, and no closure re-sent
        assert all(m.messages_sent <= ctx.num_workers for m in last)


class ProcessConformance:
    """For transports whose workers are processes: kill -9, and cleanup."""

    transport: str = ""
    options: dict = {}

    def test_worker_killed_mid_group_is_recovered_exactly_once(self, no_orphans):
        with dz.Context(transport=self.transport, workers=2, **self.options) as ctx:
            pids = worker_pids(ctx)
            state = ctx.parallelize([0, 0], 2).cache()
            one = ctx.parallelize([1, 1], 2)
            jobs = []
            for _ in range(6):
                state = state.zip_partitions(one.map(lambda x: time.sleep(0.15) or x),
                                             lambda a, b: [a[0] + next(iter(b))]).cache()
                jobs.append((state, list))
            timer = threading.Timer(0.4, os.kill, (pids[1], signal.SIGKILL))
            timer.start()
            t = time.perf_counter()
            out = ctx.run_jobs(jobs, group_size=6)
            assert out == [[[i], [i]] for i in range(1, 7)]
            assert time.perf_counter() - t < 15
            assert ctx.metrics[-1].recoveries == 1
            # capacity is back (a replacement), or the survivor carries on
            assert ctx.parallelize(range(10), 4).sum() == 45
            assert pids[1] not in worker_pids(ctx)
            state.unpersist()
            assert_no_bookkeeping(ctx)

    def test_a_function_that_kills_its_worker_is_retried_a_bounded_number_of_times(self, no_orphans):
        with dz.Context(transport=self.transport, workers=2, **self.options) as ctx:
            doomed = ctx.parallelize(range(4), 4).map(lambda x: os.kill(os.getpid(), signal.SIGKILL) if x == 0 else x)
            t = time.perf_counter()
            with pytest.raises(dz.WorkerLostError, match=r"gave up after 3 recoveries|no worker is left") as info:
                doomed.collect()
            assert time.perf_counter() - t < 30
            assert "SIGKILL" in str(info.value) or "connection" in str(info.value)

    def test_leaving_the_with_block_ends_every_worker(self, no_orphans):
        with dz.Context(transport=self.transport, workers=2, **self.options) as ctx:
            pids = worker_pids(ctx)
        for pid in pids:
            assert not alive(pid)

    def test_exception_in_driver_ends_every_worker(self, no_orphans):
        with pytest.raises(RuntimeError), dz.Context(transport=self.transport, workers=2, **self.options) as ctx:
            pids = worker_pids(ctx)
            raise RuntimeError("driver bug")
        for pid in pids:
            assert not alive(pid)
