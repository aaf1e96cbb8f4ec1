"""Execution templates: jobs that repeat a shape are stamped, not planned, and give the very same results.

Each test runs a program with templates and again without (``scheduler.templates
= False``) on the same context, and checks results equal (bit for bit for
floating point), that templates were used (``GroupMetrics.stamped``), and that
nothing is left behind. The driver's view of a stamped task (``plan.tasks``) is
checked against what planning would have given.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest
from bookkeeping import assert_no_bookkeeping
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import context

import drizzle_core as dz
from drizzle_core.cli._workloads import running_sum_jobs, running_sum_source
from drizzle_core.driver import GroupScheduler
from drizzle_core.driver._plan import Planner
from drizzle_core.driver._template import TEMPLATES_KEPT
from drizzle_core.protocol import pack_instances, unpack_instances

pytestmark = pytest.mark.timeout(120)

TRANSPORTS = ["inline", "local"]


def _scheduler(ctx: dz.Context) -> GroupScheduler:
    return ctx._scheduler


def _both(ctx: dz.Context, run):
    """``run()`` with templates, then without: (with, without, jobs stamped)."""
    s = _scheduler(ctx)
    before = len(s.metrics)
    s.templates = True
    try:
        with_t = run()
        stamped = sum(m.stamped for m in s.metrics[before:])
        s.templates = False
        without = run()
    finally:
        s.templates = True
    return with_t, without, stamped


def _local(part, w):
    x = np.asarray(part)
    return np.array([x.sum() * w[0], (x * x).sum() * w[1]])


def _update(w, g):
    return w - 1e-9 * g


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_iterate_is_stamped_and_bit_for_bit_the_same(transport):
    ctx = context(transport)
    data = ctx.parallelize(np.random.default_rng(1).random(6000), 6).cache()

    def run():
        r = ctx.iterate(data, np.array([1.0, 2.0]), local=_local, combine=np.add, update=_update,
                        iterations=60, group_size=10, keep_history=True)
        return r.history

    with_t, without, stamped = _both(ctx, run)
    assert len(with_t) == 60
    assert all(np.array_equal(a, b) for a, b in zip(with_t, without))
    assert stamped >= 45  # the first group plans its shape; the next ones are stamped from it
    data.unpersist()
    assert_no_bookkeeping(ctx)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_repeated_query_and_a_shuffled_running_state_are_stamped(transport):
    ctx = context(transport)
    data = ctx.parallelize(np.arange(8000.0), 4).cache()

    def repeated():
        return ctx.run_jobs([(data, np.sum)] * 40, group_size=10)

    a, b, stamped = _both(ctx, repeated)
    assert a == b and a[0] == [float(np.sum(np.arange(2000.0) + 2000 * p)) for p in range(4)]
    assert stamped >= 30

    def running():
        source, state = running_sum_source(ctx, partitions=4, reducers=2, keys=10, records=50)
        out = ctx.run_jobs(running_sum_jobs(source, state, 30, 2), group_size=7)
        source.unpersist()
        return out

    a, b, stamped = _both(ctx, running)
    assert a == b and a[-1] == [30 * 100, 30 * 100]  # 200 records, 10 keys: each reducer's 5 keys, 20 each
    assert stamped >= 20
    data.unpersist()
    assert_no_bookkeeping(ctx)


def _key_of(x):
    return (x % 3, x)


def _plus_one(kv):
    return (kv[0], kv[1] + 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_stamped_shuffle_read_by_a_later_job_of_the_group_reaches_its_reducers(transport):
    """Job 2k reads a new shuffle (stamped); job 2k+1 reads the same shuffle again (planned): the map tasks of
    the stamped job must send their buckets to the reducers of both jobs."""
    ctx = context(transport)
    src = ctx.parallelize(range(60), 4).map(_key_of).cache()

    def jobs():
        for _ in range(12):
            counts = src.reduce_by_key(operator.add, 3)
            yield counts, sorted
            yield counts.map(_plus_one), sorted

    def run():
        return ctx.run_jobs(jobs(), group_size=6)

    a, b, stamped = _both(ctx, run)
    assert a == b and len(a) == 24
    assert stamped > 0
    src.unpersist()
    assert_no_bookkeeping(ctx)


def _fresh(x):
    return x


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_jobs_that_only_look_alike_are_planned_not_stamped(transport):
    """A new lambda per job may close over other values: never the same code, never stamped."""
    ctx = context(transport)
    src = ctx.parallelize(range(40), 4).cache()
    s = _scheduler(ctx)
    before = len(s.metrics)
    jobs = [(src.map(lambda x, k=k: x * k), sum) for k in range(20)]
    out = ctx.run_jobs(jobs, group_size=5)
    assert out == [[sum(x * k for x in range(p * 10, p * 10 + 10)) for p in range(4)] for k in range(20)]
    assert sum(m.stamped for m in s.metrics[before:]) == 0
    # the same engine op over the same function: stamped
    before = len(s.metrics)
    out = ctx.run_jobs([(src.map(_fresh), sum) for _ in range(20)], group_size=5)
    assert out == [[sum(range(p * 10, p * 10 + 10)) for p in range(4)]] * 20
    assert sum(m.stamped for m in s.metrics[before:]) >= 15
    src.unpersist()
    assert_no_bookkeeping(ctx)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_more_shapes_than_the_template_cache_holds(transport):
    """Driver and workers evict the same templates: cycling through more shapes than either keeps works."""
    ctx = context(transport)
    src = ctx.parallelize(range(8), 2).cache()
    chains = []
    for n in range(TEMPLATES_KEPT + 6):
        ds = src
        for _ in range(n % 7 + 1):
            ds = ds.map(_fresh)
        chains.append(ds.filter(_fresh) if n % 2 else ds)
    jobs = [(chains[n % len(chains)], sum) for n in range(3 * len(chains))]
    out = ctx.run_jobs(jobs, group_size=8)
    assert out == [[sum(range(0, 4)), sum(range(4, 8))]] * len(jobs)
    assert len(_scheduler(ctx).planner.templates.by_key) <= TEMPLATES_KEPT
    src.unpersist()
    assert_no_bookkeeping(ctx)


def _batch(p, b, bt):
    return [b * 10 + p, b * 10 + p + 5]


def _double(x):
    return 2 * x


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_stream_is_stamped_and_every_batch_starts_at_its_own_time(transport):
    ctx = context(transport)
    s = _scheduler(ctx)
    seen = []
    before = len(s.metrics)
    stream = ctx.stream(dz.GeneratorSource(_batch, 2), batch_interval=0.02, group_size=6)
    stream.map(_double).foreach_batch(lambda records, m: seen.append((m.batch, sorted(records), m)))
    out = stream.run(batches=24)
    assert [(b, r) for b, r, _ in seen] == [(b, sorted(2 * x for p in (0, 1) for x in _batch(p, b, None)))
                                            for b in range(24)]
    # a stamped batch's source tasks wait for that batch's end, not the template's
    assert all(m.arrived >= m.end for m in out)
    assert sum(m.stamped for m in s.metrics[before:]) >= 12
    assert_no_bookkeeping(ctx)


def test_instances_travel_as_arithmetic_runs():
    loop = [(10 * k, k, (100 + 3 * k, 5, 99 + 3 * k), (7 + k,), (k,), 1.5 + 0.25 * k) for k in range(100)]
    assert len(pack_instances(loop)) == 1 and unpack_instances(pack_instances(loop)) == loop
    broken = [*loop[:5], (1, 2, (3,), (), (), 0.0), *loop[5:]]
    assert len(pack_instances(broken)) == 3 and unpack_instances(pack_instances(broken)) == broken
    inexact = [(k, k, (), (), (), 0.1 * k) for k in range(30)]  # 0.1 * k is not 0.1 added k times
    assert unpack_instances(pack_instances(inexact)) == inexact


_instance = st.tuples(st.integers(-50, 50), st.integers(0, 9),
                      st.lists(st.integers(-5, 5), max_size=3).map(tuple),
                      st.sampled_from([0.0, 0.1, 0.25, 1.7e9, 1.7e9 + 0.1, float("nan")]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_instance, st.tuples(st.integers(-3, 3), st.integers(0, 2), st.just(()),
                                              st.sampled_from([0.0, 0.1, 0.3])), st.integers(1, 40)), max_size=6))
def test_packed_instances_unpack_to_exactly_the_same_values(pieces):
    """Whatever the instances (runs long or short, float times that add up or not), unpacking gives them back."""
    instances = []
    for (base, job, ids, start), (db, dj, _, ds), count in pieces:
        cur = (base, job, ids, (), start)
        for _ in range(count):
            instances.append(cur)
            cur = (cur[0] + db, cur[1] + dj, tuple(i + db for i in cur[2]), (), cur[4] + ds)
    packed = pack_instances(instances)
    back = unpack_instances(packed)
    assert len(back) == len(instances)
    for a, b in zip(back, instances):  # NaN != NaN: a NaN time must not make a run, and comes back as it went
        assert repr(a) == repr(b)
    assert sum(count for _, _, count in packed) == len(instances)
    if instances and all(p[2] for p in pieces) and len(pieces) == 1 and pieces[0][0][3] == 0.0:
        assert len(packed) == 1  # one arithmetic run: the launch does not grow with G


def test_launch_bytes_per_group_do_not_grow_with_the_group_size():
    ctx = context("inline")
    data = ctx.parallelize(np.random.default_rng(2).random(400), 4).cache()
    s = _scheduler(ctx)
    sizes = {}
    for g in (10, 100, 1000):
        before = len(s.metrics)
        ctx.iterate(data, np.array([1.0, 1.0]), local=_local, combine=np.add, update=_update, iterations=2 * g,
                    group_size=g)
        last = s.metrics[before:][-1]  # a group stamped whole from the template the first one made
        assert last.stamped == last.jobs == g
        sizes[g] = last.bytes_sent
    assert sizes[1000] <= 1.2 * sizes[10], sizes
    data.unpersist()
    assert_no_bookkeeping(ctx)


def test_the_driver_view_of_a_stamped_task_is_what_planning_gives():
    """``plan.tasks`` stamps a task on demand; it must equal the planner's own task, field by field."""
    ctx = context("inline")
    source, state = running_sum_source(ctx, partitions=4, reducers=2, keys=10, records=20)
    jobs = list(running_sum_jobs(source, state, 1, 2))  # one job, to build the next ones by hand
    new = jobs[0][0]
    chain = [(new, jobs[0][1])]
    for _ in range(4):
        counts = source.reduce_by_key(operator.add, 2)
        new = chain[-1][0].zip_partitions(counts, _zip_state).cache()
        chain.append((new, jobs[0][1]))
    located = dict(_scheduler(ctx).cache_locations)
    planned = Planner()
    planned.templates.enabled = False
    stamped = Planner()
    a = planned.plan([(i, ds, f) for i, (ds, f) in enumerate(chain)], [0, 1], located)
    b = stamped.plan([(i, ds, f) for i, (ds, f) in enumerate(chain)], [0, 1], located)
    assert len(b.instances) >= 2
    assert [a.tasks.worker(i) for i in range(len(a.tasks))] == [b.tasks.worker(i) for i in range(len(b.tasks))]
    # stage and run numbers are the planner's own counters; everything else must be identical
    def strip(t):
        return (t.index, t.job, t.node, t.partition, t.kind, t.out[:2] if t.kind == 0 else t.out, t.inputs,
                tuple((e[0], e[2], e[3], e[4]) for e in t.shuffle_in), t.stores, t.not_before)
    assert [strip(t) for t in a.tasks] == [strip(t) for t in b.tasks]
    assert a.new_cache == b.new_cache
    assert {w: sorted(f) for w, f in a.forwards.items()} == {w: sorted(f) for w, f in b.forwards.items()}
    source.unpersist()
    state.unpersist()


def _zip_state(old, counts):
    state = dict(old[0]) if old else {}
    for k, c in counts:
        state[k] = state.get(k, 0) + c
    return [state]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.integers(1, 12), iterations=st.integers(1, 30), partitions=st.integers(1, 7),
       workers=st.sampled_from([1, 2, 3]))
def test_stamped_iterations_equal_planned_ones_for_any_group_size(groups, iterations, partitions, workers):
    ctx = context("inline", workers)
    data = ctx.parallelize(np.random.default_rng(partitions).random(50 * partitions), partitions).cache()

    def run():
        return ctx.iterate(data, np.array([1.0, 2.0]), local=_local, combine=np.add, update=_update,
                           iterations=iterations, group_size=groups, keep_history=True).history

    a, b, _ = _both(ctx, run)
    assert len(a) == iterations and all(np.array_equal(x, y) for x, y in zip(a, b))
    data.unpersist()
    assert_no_bookkeeping(ctx)
