"""The PySpark-style actions (issue 15 part 6): each equals plain Python over the reference evaluator's elements.

Random pipelines (tests/pipelines.py) make the datasets; the expected value
is computed from ``reference.collect`` with the standard library. Also:
``collect`` of an ndarray dataset is an ndarray (fast: its buffers cross as
they are; the timing is in benchmarks, not here), and other datasets still
collect to lists.
"""

from __future__ import annotations

import heapq
import math
import operator
import statistics
from collections import Counter

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipelines import build, pipelines
from support import context

import drizzle_core as dz

pytestmark = pytest.mark.timeout(180)

def pairs_of(ds):
    return ds.map(lambda x: (x % 4, x))


_SETTINGS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(items=st.lists(st.integers(-30, 30), max_size=30), partitions=st.integers(1, 4), steps=pipelines(eager=True),
       num=st.integers(0, 6))
def test_actions_equal_python_over_the_reference(items, partitions, steps, num):
    ctx = context("inline", 3)
    ds = build(ctx, ctx.parallelize(items, partitions), steps)
    parts = reference.partitions(ds)
    xs = [x for part in parts for x in part]
    assert ds.count_by_value() == Counter(xs)
    assert ds.fold(0, operator.add) == sum(xs)
    # As Spark's: the zero enters once per partition and once more (1 is not +'s identity)
    assert ds.fold(1, operator.add) == sum(xs) + len(parts) + 1
    assert ds.map(lambda x: [x]).fold([], operator.add) == xs  # in partition order
    assert ds.aggregate((0, 0), lambda acc, x: (acc[0] + x, acc[1] + 1),
                        lambda a, b: (a[0] + b[0], a[1] + b[1])) == (sum(xs), len(xs))
    for depth in (1, 2, 3):
        assert ds.tree_aggregate(0, operator.add, operator.add, depth) == sum(xs)
        # as PySpark's: the zero enters once per partition (not at the end)
        assert ds.tree_aggregate(1, operator.add, operator.add, depth) == sum(xs) + len(parts)
        if xs:
            assert ds.tree_reduce(operator.add, depth) == sum(xs)
        else:
            with pytest.raises(ValueError, match=r"tree_reduce\(\) of an empty dataset"):
                ds.tree_reduce(operator.add, depth)
    assert ds.is_empty() == (not xs)
    assert pairs_of(ds).collect_as_map() == {x % 4: x for x in xs}  # a repeated key: its last value
    for k in range(5):
        assert pairs_of(ds).lookup(k) == [x for x in xs if x % 4 == k]
    pairs = ds.map(lambda x: (x % 4, x))
    assert pairs.count_by_key() == Counter(x % 4 for x in xs)
    assert ds.top(num) == heapq.nlargest(num, xs) == sorted(xs, reverse=True)[:num]
    assert ds.take_ordered(num) == sorted(xs)[:num]
    assert ds.top(num, key=lambda x: -abs(x)) == heapq.nlargest(num, xs, key=lambda x: -abs(x))
    assert ds.take_ordered(num, key=abs) == sorted(xs, key=abs)[:num]  # ties in element order: stable
    if xs:
        assert ds.first() == xs[0]
        assert ds.max() == max(xs) and ds.min() == min(xs)
        assert ds.max(key=lambda x: (x % 5, x)) == max(xs, key=lambda x: (x % 5, x))
        st_ = ds.stats()
        assert st_.count() == len(xs) and st_.max() == max(xs) and st_.min() == min(xs)
        assert math.isclose(st_.mean(), statistics.fmean(xs), abs_tol=1e-9)
        assert math.isclose(st_.variance(), statistics.pvariance(xs), abs_tol=1e-9)
        assert math.isclose(ds.mean(), statistics.fmean(xs), abs_tol=1e-9)
        if len(xs) > 1:
            assert math.isclose(ds.sample_stdev(), statistics.stdev(xs), abs_tol=1e-9)
    else:
        for action in (ds.first, ds.max, ds.min):
            with pytest.raises(ValueError, match="of an empty dataset"):
                action()
        assert math.isnan(ds.mean()) and ds.stats().count() == 0


@pytest.mark.parametrize("transport", ["inline", "local"])
def test_fold_and_aggregate_may_update_their_accumulator_in_place(transport):
    # What Spark allows (and numpy code does, to allocate nothing per element): op(acc, x) changes acc and
    # returns it. Each partition, and the final fold, start from their own copy of the zero.
    ctx = context(transport, 2)
    rows = [np.full(3, float(i)) for i in range(10)]
    ds = ctx.parallelize(rows, 4).cache()

    def add_into(acc, x):
        acc += x
        return acc

    def add_row(acc, x):
        acc[0] += x
        acc[1] += 1
        return acc

    zero = np.zeros(3)
    assert np.array_equal(ds.fold(zero, add_into), sum(rows))
    total, n = ds.aggregate([np.zeros(3), 0], add_row, lambda a, b: [add_into(a[0], b[0]), a[1] + b[1]])
    assert np.array_equal(total, sum(rows)) and n == 10
    assert np.array_equal(ds.fold(zero, add_into), sum(rows))  # again: the cached rows were not changed
    assert np.array_equal(zero, np.zeros(3))  # nor the caller's zero
    assert all(np.array_equal(r, np.full(3, float(i))) for i, r in enumerate(rows))
    empty = ds.filter(lambda r: False)
    assert empty.fold(7, operator.add) == 7 + 4 * 7  # four empty partitions and the final fold
    assert empty.aggregate([], lambda a, x: [*a, x], operator.add) == []
    ds.unpersist()


class _Append:
    """Appends each element it sees to a file named after the worker's pid: a side effect foreach must have."""

    def __init__(self, directory):
        self.directory = directory

    def __call__(self, x):
        import os

        with open(os.path.join(self.directory, f"{os.getpid()}.txt"), "a") as f:
            f.write(f"{x}\n")


class _AppendPartition(_Append):
    def __call__(self, it):
        assert iter(it) is it  # an iterator, as PySpark passes
        super().__call__(sum(1 for _ in it))


@pytest.mark.parametrize("transport", ["inline", "local"])
def test_foreach_and_foreach_partition_run_on_the_workers_for_their_side_effects(transport, tmp_path):
    ctx = context(transport, 2)
    ds = ctx.parallelize(range(10), 3)
    assert ds.foreach(_Append(str(tmp_path))) is None
    files = list(tmp_path.iterdir())
    seen = [int(line) for f in files for line in f.read_text().split()]
    assert sorted(seen) == list(range(10))
    if transport == "local":
        assert len(files) == 2  # both workers wrote: each element where it lives
    for f in files:
        f.unlink()
    ds.foreach_partition(_AppendPartition(str(tmp_path)))
    assert sorted(int(line) for f in tmp_path.iterdir() for line in f.read_text().split()) == [3, 3, 4]
    with pytest.raises(dz.TaskError, match="ZeroDivisionError"):
        ds.foreach(lambda x: 1 / (x - 5))
    assert ctx.parallelize([], 2).is_empty() and not ds.is_empty()


_driver_folds = []


def _counted_add(a, b):
    _driver_folds.append(1)  # on a local context, only the driver's own calls land in this list
    return a + b


@pytest.mark.parametrize("depth, folds", [(1, 15), (2, 3), (3, 0), (4, 3)])
def test_tree_aggregate_leaves_the_driver_a_few_values_to_fold_not_one_per_partition(depth, folds):
    ctx = context("local", 2)
    ds = ctx.parallelize(np.arange(160.0), 16).map(lambda x: np.array([x, 1.0]))
    _driver_folds.clear()
    total = ds.tree_aggregate(np.zeros(2), operator.add, _counted_add, depth)
    assert np.array_equal(total, [np.arange(160.0).sum(), 160.0])
    # 16 partitions: levels of 16 // scale partitions combined on the workers (PySpark's tree), then the rest
    assert len(_driver_folds) == folds
    _driver_folds.clear()
    ds.aggregate(np.zeros(2), operator.add, _counted_add)
    assert len(_driver_folds) == 16  # every partition's accumulator, folded on the driver


def test_collect_of_an_ndarray_dataset_is_an_ndarray():
    ctx = context("local", 2)
    a = np.random.default_rng(0).random(100_003)
    got = ctx.parallelize(a, 4).collect()
    assert type(got) is np.ndarray and got.dtype == a.dtype and np.array_equal(got, a)
    m = np.arange(12).reshape(6, 2)
    rows = ctx.parallelize(m, 4).collect()
    assert type(rows) is np.ndarray and np.array_equal(rows, m)
    assert type(ctx.parallelize(m, 4).map_partitions(lambda p: p * 2).collect()) is np.ndarray
    empty = ctx.parallelize(np.zeros((0, 3)), 2).collect()
    assert type(empty) is np.ndarray and empty.shape == (0, 3)


def test_collect_of_other_datasets_is_still_a_list():
    ctx = context("local", 2)
    assert ctx.parallelize(range(5), 2).collect() == [0, 1, 2, 3, 4]
    mapped = ctx.parallelize(np.arange(4.0), 2).map(lambda x: x + 1).collect()
    assert type(mapped) is list and mapped == [1.0, 2.0, 3.0, 4.0]
    mixed = ctx.parallelize(np.arange(3), 1).union(ctx.parallelize([7], 1)).collect()
    assert type(mixed) is list and mixed == [0, 1, 2, 7]
    import scipy.sparse

    sparse = ctx.parallelize(scipy.sparse.identity(3, format="csr"), 2).collect()
    assert type(sparse) is list and len(sparse) == 3


def test_stats_of_ndarray_rows_are_per_column():
    ctx = context("local", 2)
    m = np.random.default_rng(1).normal(size=(1001, 3))
    s = ctx.parallelize(m, 4).stats()
    assert s.count() == 1001
    np.testing.assert_allclose(s.mean(), m.mean(axis=0))
    np.testing.assert_allclose(s.stdev(), m.std(axis=0))
    np.testing.assert_allclose(s.sample_variance(), m.var(axis=0, ddof=1))
    np.testing.assert_array_equal(s.max(), m.max(axis=0))
    one = ctx.parallelize(m[:, 0], 3)
    assert math.isclose(one.stats().variance(), float(m[:, 0].var())) and one.max() == m[:, 0].max()


def test_stat_counter_merges_like_pyspark():
    a, b = dz.StatCounter([1, 2, 3]), dz.StatCounter([10.0])
    a.merge_stats(b).merge(4)
    assert a.count() == 5 and a.sum() == 20 and a.min() == 1 and a.max() == 10.0
    assert math.isclose(a.variance(), statistics.pvariance([1, 2, 3, 10, 4]))
    assert a.as_dict(sample=True)["variance"] == pytest.approx(statistics.variance([1, 2, 3, 10, 4]))
    with pytest.raises(TypeError, match="merge_stats needs a StatCounter"):
        a.merge_stats([1])


@pytest.mark.parametrize("call, error, words", [
    (lambda ds: ds.top(-1), ValueError, "top: num must be a non-negative int, got -1"),
    (lambda ds: ds.take_ordered("3"), ValueError, "take_ordered: num must be a non-negative int"),
    (lambda ds: ds.top(2, key=5), TypeError, "Dataset.top needs a callable"),
    (lambda ds: ds.max(key="x"), TypeError, "Dataset.max needs a callable"),
    (lambda ds: ds.fold(0, "+"), TypeError, "Dataset.fold needs a callable"),
    (lambda ds: ds.aggregate(0, operator.add, None), TypeError, "Dataset.aggregate needs a callable"),
    (lambda ds: ds.foreach(3), TypeError, "Dataset.foreach needs a callable"),
    (lambda ds: ds.tree_aggregate(0, operator.add, operator.add, 0), ValueError, "depth must be an int >= 1, got 0"),
    (lambda ds: ds.tree_reduce(operator.add, depth=True), ValueError, "depth must be an int >= 1, got True"),
    (lambda ds: ds.tree_reduce("+"), TypeError, "Dataset.tree_reduce needs a callable"),
    (lambda ds: ds.subtract([1]), TypeError, "Dataset.subtract needs a Dataset, got list"),
    (lambda ds: ds.subtract_by_key(None), TypeError, "Dataset.subtract_by_key needs a Dataset, got NoneType"),
    (lambda ds: ds.intersection(ds.ctx.parallelize([1], 1), 0), ValueError, "num_partitions"),
    (lambda ds: ds.foreach_partition(None), TypeError, "Dataset.foreach_partition needs a callable"),
])
def test_bad_arguments_are_named(call, error, words):
    with pytest.raises(error, match=words):
        call(context("inline", 3).parallelize([3, 1, 2], 2))
