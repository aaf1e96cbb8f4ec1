"""Actions inside actions: a collect inside an ``iter_jobs`` loop, a stream sink, an ``iterate``
callback or a job generator runs as a group of its own, with exact results, on every transport."""

from __future__ import annotations

import operator
import time

import numpy as np
import pytest
import reference
from bookkeeping import assert_no_bookkeeping
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipelines import build, pipelines

import drizzle_core as dz

pytestmark = pytest.mark.timeout(180)

TRANSPORTS = ["inline", "local", "tcp"]


@pytest.fixture(scope="module", params=TRANSPORTS)
def ctx(request):
    with dz.Context(transport=request.param, workers=2) as ctx:
        yield ctx


def _slow(x):
    time.sleep(0.01)
    return x


def test_an_action_inside_an_iter_jobs_loop(ctx):
    ds = ctx.parallelize(range(8), 2)
    slow = ds.map(_slow)
    out = []
    for i, res in enumerate(ctx.iter_jobs([(ds, sum)] + [(slow, sum)] * 3, group_size=4)):
        out.append(res)
        if i in (0, 2):
            out.append(("nested", ctx.parallelize(range(4), 2).map(lambda x: x * 10).collect()))
    assert out == [[6, 22], ("nested", [0, 10, 20, 30]), [6, 22], [6, 22], ("nested", [0, 10, 20, 30]), [6, 22]]
    assert_no_bookkeeping(ctx)


def test_nested_action_reads_a_dataset_the_outer_group_is_caching(ctx):
    base = ctx.parallelize(range(20), 4).map(lambda x: x * 2).cache()
    seen = []
    for res in ctx.iter_jobs([(base, sum), (base.map(_slow), sum), (base, len)], group_size=3):
        seen.append((res, base.count(), sorted(base.collect())[-1]))
    assert seen == [([20, 70, 120, 170], 20, 38), ([20, 70, 120, 170], 20, 38), ([5, 5, 5, 5], 20, 38)]
    base.unpersist()
    assert_no_bookkeeping(ctx)


def test_three_levels_of_nesting(ctx):
    ds = ctx.parallelize(range(6), 3)
    got = []
    for a in ctx.iter_jobs([(ds, sum)] * 2, group_size=2):
        for b in ctx.iter_jobs([(ds.map(lambda x: x + 1), sum)] * 2, group_size=2):
            got.append((a, b, ds.map(lambda x: -x).collect()))
    assert got == [([1, 5, 9], [3, 7, 11], [0, -1, -2, -3, -4, -5])] * 4
    assert_no_bookkeeping(ctx)


def test_an_action_inside_the_job_generator(ctx):
    ds = ctx.parallelize(range(10), 2)

    def jobs():
        for i in range(5):
            n = ds.filter(lambda x, i=i: x >= i).count()  # runs while the previous group is in flight
            yield ds.map(lambda x, n=n: x * n), sum

    got = ctx.run_jobs(jobs(), group_size=2)
    assert got == [[sum(range(5)) * (10 - i), sum(range(5, 10)) * (10 - i)] for i in range(5)]
    assert_no_bookkeeping(ctx)


def test_an_action_inside_an_iterate_callback(ctx):
    data = ctx.parallelize(np.ones((8, 1)), 2).cache()
    seen = []

    def on_iteration(i, state):
        seen.append((i, state, data.map_partitions(lambda p: [float(p.sum())]).collect()))

    r = ctx.iterate(data, 0.0, local=lambda part, s: float(part.sum()), combine=operator.add,
                    update=lambda s, total: s + total, iterations=6, group_size=3, on_iteration=on_iteration)
    assert r.state == 48.0
    assert seen == [(i, 8.0 * i, [4.0, 4.0]) for i in range(1, 7)]
    data.unpersist()
    assert_no_bookkeeping(ctx)


def test_an_action_inside_a_stream_sink_reading_a_cached_dataset(ctx):
    lookup = ctx.parallelize([("a", 1), ("b", 2)], 2).cache()
    lookup.count()
    src = dz.GeneratorSource(lambda p, b, t: [("a", b), ("b", b)], 1)
    s = ctx.stream(src, batch_interval=0.01, group_size=3)
    rows = []
    s.reduce_by_key(operator.add).foreach_batch(
        lambda records, m: rows.append((m.batch, sorted(records), dict(lookup.collect()))))
    s.run(batches=7)
    assert rows == [(b, [("a", b), ("b", b)], {"a": 1, "b": 2}) for b in range(7)]
    lookup.unpersist()
    assert_no_bookkeeping(ctx)


def test_a_failing_nested_action_leaves_the_outer_loop_exact(ctx):
    ds = ctx.parallelize(range(4), 2)
    out = []
    for res in ctx.iter_jobs([(ds.map(_slow), sum)] * 3, group_size=3):
        with pytest.raises(dz.TaskError, match="nested failure"):
            ds.map(lambda x: (_ for _ in ()).throw(ValueError("nested failure"))).collect()
        out.append(res)
    assert out == [[1, 5]] * 3
    assert_no_bookkeeping(ctx)


_FUNCS = {"sum": sum, "list": list}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.integers(-20, 20), max_size=20), partitions=st.integers(1, 4),
       outer=st.lists(st.tuples(pipelines(), st.sampled_from(["sum", "list"])), min_size=1, max_size=4),
       inner=st.lists(pipelines(), min_size=1, max_size=3), group_size=st.integers(1, 5),
       where=st.lists(st.integers(0, 3), max_size=3))
def test_random_nesting_points_inside_random_pipelines(ctx, items, partitions, outer, inner, group_size, where):
    """At random jobs of a random outer run, random inner pipelines are collected: all exact."""
    source = ctx.parallelize(items, partitions)
    built = [(build(ctx, source, steps), _FUNCS[fn]) for steps, fn in outer]
    expected = [[_FUNCS[fn](part) for part in reference.partitions(ds)] for (ds, _), (_, fn) in zip(built, outer)]
    inner_ds = [build(ctx, source, steps) for steps in inner]
    inner_expected = [[x for part in reference.partitions(ds) for x in part] for ds in inner_ds]
    got, nested = [], []
    for i, res in enumerate(ctx.iter_jobs(built, group_size=group_size)):
        got.append(res)
        for w in where:
            if w == i:
                nested.append(inner_ds[w % len(inner_ds)].collect())
    assert got == expected
    assert nested == [inner_expected[w % len(inner_ds)] for i in range(len(outer)) for w in where if w == i]
