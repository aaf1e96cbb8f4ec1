"""The Dataset and Context API: bad input, lineage depth, caching, iterate."""

from __future__ import annotations

import gc
import operator

import numpy as np
import pytest
import scipy.sparse

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ctx():
    with dz.Context(transport="local", workers=2) as ctx:
        yield ctx


@pytest.fixture(scope="module")
def inline():
    with dz.Context(transport="inline", workers=3) as ctx:
        yield ctx


# ------------------------------------------------------------------ bad input
def test_zero_partitions_is_a_value_error(inline):
    with pytest.raises(ValueError, match="num_partitions must be a positive int, got 0"):
        inline.parallelize([1, 2, 3], 0)
    with pytest.raises(ValueError, match="num_partitions"):
        inline.parallelize([1, 2, 3], 2).reduce_by_key(operator.add, 0)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "ten", True])
def test_bad_group_size_is_a_value_error(inline, bad):
    ds = inline.parallelize([1], 1)
    with pytest.raises(ValueError, match="group_size must be a positive int or 'auto'"):
        inline.run_jobs([(ds, sum)], group_size=bad)
    with pytest.raises(ValueError, match="group_size"):
        dz.Context(transport="inline", group_size=bad)


def test_unknown_transport_lists_the_installed_ones():
    with pytest.raises(ValueError, match=r"unknown transport 'carrier-pigeon'; installed transports: .*inline.*local"):
        dz.Context(transport="carrier-pigeon")


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers must be a positive int"):
        dz.Context(transport="inline", workers=0)


def test_bad_jobs_name_the_job(inline):
    ds = inline.parallelize([1], 1)
    with pytest.raises(TypeError, match="job 1: the second item must be callable"):
        inline.run_jobs([(ds, sum), (ds, 3)])
    with pytest.raises(TypeError, match="job 0 must be a"):
        inline.run_jobs([ds])
    with pytest.raises(TypeError, match=r"Dataset\.map needs a callable"):
        ds.map(5)


def test_datasets_of_two_contexts_do_not_mix(inline):
    with dz.Context(transport="inline") as other, pytest.raises(ValueError, match="another Context"):
        inline.parallelize([1], 1).union(other.parallelize([2], 1))


def test_stopped_context_refuses_work():
    c = dz.Context(transport="inline")
    ds = c.parallelize([1, 2], 1)
    c.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        ds.collect()


def test_zip_needs_equal_partitions(inline):
    with pytest.raises(ValueError, match="equal partition counts"):
        inline.parallelize([1], 1).zip_partitions(inline.parallelize([1, 2], 2), lambda a, b: a)


# --------------------------------------------------------------- structure
def test_lineage_ten_thousand_deep(ctx):
    ds = ctx.parallelize(range(10), 2)
    for _ in range(10_000):
        ds = ds.map(lambda x: x + 1)
    assert ds.collect() == list(range(10_000, 10_010))
    assert ds.count() == 10


def test_ten_thousand_iterations_of_cached_state(inline):
    state = inline.parallelize([0, 0], 2).cache()
    one = inline.parallelize([1, 1], 2)

    def jobs():
        nonlocal state
        for _ in range(10_000):
            new = state.zip_partitions(one, lambda a, b: [a[0] + b[0]]).cache()
            yield new, list
            state.unpersist()
            state = new

    out = inline.run_jobs(jobs(), group_size=500)
    assert out[-1] == [[10_000], [10_000]]
    assert inline._scheduler.cache_locations.keys() <= {("c", state.id, 0), ("c", state.id, 1)} | {
        b for b in inline._scheduler.cache_locations if b[1] != state.id and b[1] < state.id - 40_000}


def test_parallelize_numpy_and_sparse_split_by_rows(inline):
    arr = np.arange(30).reshape(10, 3)
    parts = inline.parallelize(arr, 3).glom()
    assert [p.shape for p in parts] == [(4, 3), (3, 3), (3, 3)]
    sp = scipy.sparse.random(10, 4, density=0.5, format="coo", random_state=0)
    sparts = inline.parallelize(sp, 3).map_partitions(lambda m: [(m.format, m.shape)]).collect()
    assert sparts == [("csr", (4, 4)), ("csr", (3, 4)), ("csr", (3, 4))]
    total = inline.parallelize(sp, 3).map_partitions(lambda m: [m.sum(axis=0)]).reduce(operator.add)
    np.testing.assert_allclose(total, sp.sum(axis=0))


def test_cache_computes_once_and_unpersist_frees(ctx, tmp_path):
    log = tmp_path / "calls"

    def record(x):
        with open(log, "a") as f:
            f.write("x")
        return x

    ds = ctx.parallelize(range(8), 4).map(record).cache()
    assert ds.sum() == 28
    assert ctx.run_jobs([(ds, sum)] * 20, group_size=5)[-1] == [1, 5, 9, 13]
    assert len(log.read_text()) == 8
    before = dict(ctx._scheduler.cache_locations)
    assert sum(1 for b in before if b[1] == ds.id) == 4
    ds.unpersist()
    assert not any(b[1] == ds.id for b in ctx._scheduler.cache_locations)
    assert ds.sum() == 28
    assert len(log.read_text()) == 16


def test_garbage_collected_cached_dataset_is_dropped(inline):
    ds = inline.parallelize(range(8), 4).cache()
    ds.count()
    node_id = ds.id
    del ds
    gc.collect()
    assert not any(b[1] == node_id for b in inline._scheduler.cache_locations)
    inline.parallelize([1], 1).count()  # the next launch carries the drop
    for rt in inline._transport._runtimes:
        assert not any(b[0] == "c" and b[1] == node_id for b in rt.blocks)


def test_metrics_report_each_group(ctx):
    ds = ctx.parallelize(range(100), 4).cache()
    n = len(ctx.metrics)
    ctx.run_jobs([(ds, sum)] * 30, group_size=10)
    groups = ctx.metrics[n:]
    assert [m.jobs for m in groups] == [10, 10, 10]
    assert all(m.tasks == 40 and 0 <= m.coordination <= 1 and m.wall_s > 0 for m in groups)


def test_auto_group_size_grows_when_coordination_dominates(ctx):
    ds = ctx.parallelize(range(4), 2).cache()
    n = len(ctx.metrics)
    ctx.run_jobs([(ds, sum)] * 300, group_size="auto")
    sizes = [m.jobs for m in ctx.metrics[n:]]
    assert sum(sizes) == 300
    assert max(sizes) >= 16 and sizes[0] < max(sizes)


# ----------------------------------------------------------------- iterate
def _grad(part, w):
    X, y = part[:, :-1], part[:, -1]
    return X.T @ (X @ w - y)


def test_iterate_matches_a_sequential_loop_for_every_group_size(ctx):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3))
    data = np.column_stack([X, X @ np.array([1.0, -2.0, 0.5])])
    ds = ctx.parallelize(data, 4)
    w = np.zeros(3)
    expected = []
    for _ in range(25):
        w = w - 0.1 * sum(_grad(p, w) for p in np.array_split(data, 4)) / 400
        expected.append(w)
    for g in (1, 7, 25, 100):
        seen: list[int] = []
        r = ctx.iterate(ds, np.zeros(3), local=_grad, combine=operator.add,
                        update=lambda w, g: w - 0.1 * g / 400, iterations=25, group_size=g,
                        on_iteration=lambda i, s, seen=seen: seen.append(i), keep_history=True)
        assert r.iterations == 25 and seen == list(range(1, 26)) and not r.converged
        np.testing.assert_allclose(np.array(r.history), np.array(expected), rtol=1e-12, atol=1e-14)


def test_iterate_until_stops_inside_the_group(ctx):
    """Repeated converging fits must not inflate the automatic group size either."""
    ds = ctx.parallelize(np.ones((10, 1)), 2)
    n = len(ctx.metrics)
    r = ctx.iterate(ds, 0.0, local=lambda part, s: float(part.sum()), combine=operator.add,
                    update=lambda s, total: s + total, iterations=1000, group_size=50,
                    until=lambda s: s >= 75, keep_history=True)
    assert r.converged and r.iterations == 8 and r.state == 80.0
    assert r.history == [10.0 * i for i in range(1, 9)]
    assert len(ctx.metrics) == n  # the group was cut short at convergence; no second group started
    assert ctx.parallelize(range(4), 2).sum() == 6  # and the workers are free for the next job
    size = ctx._adaptive.next_size()
    for _ in range(5):
        ctx.iterate(ds, 0.0, local=lambda part, s: float(part.sum()), combine=operator.add,
                    update=lambda s, total: s + total, iterations=1000, until=lambda s: s >= 75)
    assert ctx._adaptive.next_size() <= max(size, 16)


def test_iterate_data_goes_to_workers_once(ctx):
    big = ctx.parallelize(np.ones((200_000, 4)), 4)
    n = len(ctx.metrics)
    ctx.iterate(big, 0.0, local=lambda p, s: 1.0, combine=operator.add, update=lambda s, t: s + t,
                iterations=40, group_size=10)
    sent = [m.bytes_sent for m in ctx.metrics[n:]]
    assert sent[0] > 6_000_000          # the first group ships the data (6.4 MB)
    assert max(sent[1:]) < 200_000      # later groups ship only small programs


# ------------------------------------------------------------- observability
def test_trace_file_shows_tasks_per_worker_and_driver_phases(tmp_path, no_orphans):
    import json

    path = tmp_path / "trace.json"
    with dz.Context(transport="local", workers=2, trace=path) as c:
        ds = c.parallelize(range(40), 4).cache()
        c.run_jobs([(ds, sum)] * 6, group_size=3)
        c.parallelize(range(40), 4).map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 2).collect()
    events = json.loads(path.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "driver" in names and any("local worker 1" in n for n in names)
    tasks = [e for e in events if e.get("cat") == "task"]
    assert {e["pid"] for e in tasks} == {1, 2}
    assert sum(1 for e in tasks if e["name"].startswith("result")) == 6 * 4 + 2
    assert sum(1 for e in tasks if e["name"].startswith("map")) == 4
    phases = [e["name"] for e in events if e.get("cat") == "driver"]
    assert phases.count("plan") == 3 and phases.count("launch") == 3
    assert all(e["dur"] >= 0 and e["ts"] > 1e15 for e in events if e["ph"] == "X")


def test_metrics_count_bytes_workers_move(ctx):
    n = len(ctx.metrics)
    big = ctx.parallelize(range(4), 4).map(lambda i: ((i + 1) % 2, np.ones(100_000)))  # every bucket crosses
    big.reduce_by_key(operator.add, 2).count()
    m = ctx.metrics[n]
    assert m.worker_bytes_sent > 4 * 800_000


def test_iterate_spreads_uncached_data_over_the_workers(ctx):
    """The broadcast state must not pull every partition to the worker that holds it."""
    import os

    ds = ctx.parallelize(np.arange(8.0).reshape(8, 1), 4)  # not cached yet: iterate caches it
    r = ctx.iterate(ds, frozenset(), local=lambda part, s: frozenset([os.getpid()]),
                    combine=operator.or_, update=lambda s, pids: pids, iterations=3, group_size=3,
                    keep_history=True)
    assert all(len(pids) == 2 for pids in r.history)
