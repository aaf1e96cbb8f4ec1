"""What users hand the engine first: ``parallelize`` inputs, and the records a shuffle is given.

``parallelize`` splits a DataFrame by rows into records and refuses a dict
(``drizzle_core.api._inputs``); ``reduce_by_key``/``group_by_key``/``join`` name a
record that is not a (key, value) pair instead of unpacking it into garbage
(``drizzle_core.lineage._ops``). Both on the inline and the local transport: the
errors must survive the trip back from a worker process.
"""

from __future__ import annotations

import operator
import subprocess
import sys

import numpy as np
import pytest

import drizzle_core as dz
from drizzle_core.api._inputs import split_input

pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["inline", "local"])
def ctx(request):
    with dz.Context(transport=request.param, workers=2) as ctx:
        yield ctx


def _partitions(ds: dz.Dataset) -> list[list]:
    return ds.ctx.run_jobs([(ds, list)])[0]


# ---------------------------------------------------------------- parallelize
def test_a_dataframe_is_split_by_rows_into_tuples(ctx):
    df = pd.DataFrame({"user": ["a", "b", "a", "c", "b"], "n": [1, 2, 3, 4, 5], "x": [0.5] * 5})
    ds = ctx.parallelize(df, 2)
    assert ds.collect() == [("a", 1, 0.5), ("b", 2, 0.5), ("a", 3, 0.5), ("c", 4, 0.5), ("b", 5, 0.5)]
    assert _partitions(ds) == [[("a", 1, 0.5), ("b", 2, 0.5), ("a", 3, 0.5)], [("c", 4, 0.5), ("b", 5, 0.5)]]
    assert ds.count() == 5
    assert type(ds.take(1)[0][1]) is int  # plain Python values, not numpy scalars


def test_a_two_column_dataframe_is_a_key_value_dataset(ctx):
    df = pd.DataFrame({"k": ["a", "b", "a"], "v": [1, 2, 3]}, index=[10, 20, 30])  # the index is dropped
    assert sorted(ctx.parallelize(df, 2).reduce_by_key(operator.add).collect()) == [("a", 4), ("b", 2)]


def test_an_empty_dataframe_and_a_series(ctx):
    assert ctx.parallelize(pd.DataFrame({"a": []}), 2).collect() == []
    s = pd.Series([3, 1, 2], index=["x", "y", "z"])
    assert ctx.parallelize(s, 2).collect() == [3, 1, 2]


def test_a_dataframe_subclass_is_recognised():
    class Frame(pd.DataFrame):
        pass

    assert split_input(Frame({"a": [1, 2]}), 1) == [[(1,), (2,)]]


def test_a_dict_is_refused_with_what_to_pass(ctx):
    d = {"a": 1, "b": 2}
    with pytest.raises(TypeError, match=r"dict.*only its keys.*d\.items\(\)"):
        ctx.parallelize(d, 2)
    assert ctx.parallelize(d.items(), 2).collect() == [("a", 1), ("b", 2)]


def test_other_inputs_keep_their_meaning():
    parts = split_input(np.arange(10).reshape(5, 2), 2)
    assert [p.shape for p in parts] == [(3, 2), (2, 2)] and all(isinstance(p, np.ndarray) for p in parts)
    assert split_input(range(5), 2) == [[0, 1, 2], [3, 4]]
    with pytest.raises(TypeError, match="got str"):
        split_input("abc", 2)
    with pytest.raises(ValueError, match="num_partitions must be a positive int"):
        split_input([1], 0)


def test_the_library_does_not_import_pandas():
    code = ("import sys, drizzle_core as dz\n"
            "with dz.Context(transport='inline') as ctx:\n"
            "    assert ctx.parallelize([(1, 2)], 1).reduce_by_key(max).collect() == [(1, 2)]\n"
            "assert 'pandas' not in sys.modules, 'pandas was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------- records of a shuffle
def _fails(ds: dz.Dataset, *needles: str) -> str:
    with pytest.raises(dz.TaskError) as info:
        ds.collect()
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_dict_records_are_named_even_when_they_would_unpack(ctx):
    # a dict with two keys unpacks without complaint into its keys: the first record is checked
    records = ctx.parallelize([{"k": i % 2, "v": i} for i in range(6)], 2)
    _fails(records.reduce_by_key(operator.add),
           "reduce_by_key needs (key, value) pairs; got a dict {'k': ", ".key_by(lambda d: d['k'])")
    _fails(records.group_by_key(), "group_by_key/join needs (key, value) pairs; got a dict")
    pairs = ctx.parallelize([(0, "x")], 1)
    _fails(pairs.join(records), "group_by_key/join needs (key, value) pairs; got a dict")


def test_other_records_that_are_not_pairs(ctx):
    _fails(ctx.parallelize([1, 2, 3], 1).reduce_by_key(operator.add), "got an int 1")
    _fails(ctx.parallelize(["ab", "cd"], 1).group_by_key(), "got a str 'ab'", ".map(lambda s: (s, 1))")
    _fails(ctx.parallelize([(1, 2, 3)], 1).reduce_by_key(operator.add), "got a tuple (1, 2, 3)")


def test_a_bad_record_after_the_first_is_caught_without_a_per_record_check(ctx):
    ds = ctx.parallelize([(1, 2), (1, 2, 3)], 1)
    _fails(ds.reduce_by_key(operator.add), "needs (key, value) pairs, but a record is not one",
           "too many values to unpack")
    _fails(ctx.parallelize([(1, 2), 7], 1).group_by_key(), "cannot unpack non-iterable int object")


def test_an_unhashable_key_is_named(ctx):
    _fails(ctx.parallelize([([1], 2)], 1).reduce_by_key(operator.add), "a key must be hashable; got a list [1]")
    _fails(ctx.parallelize([((1,), 2), ([1], 2)], 1).group_by_key(), "a key must be hashable; got a list [1]")


def test_pairs_of_any_sequence_type_still_work(ctx):
    assert sorted(ctx.parallelize([[1, 2], [1, 3]], 1).reduce_by_key(operator.add).collect()) == [(1, 5)]
    rows = ctx.parallelize(np.array([[1, 2], [1, 3], [2, 4]]), 2)  # ndarray rows of two
    assert sorted(rows.reduce_by_key(operator.add).collect()) == [(1, 5), (2, 4)]
    assert ctx.parallelize([], 2).group_by_key().collect() == []


def test_errors_of_user_functions_are_not_mistaken_for_bad_records(ctx):
    message = _fails(ctx.parallelize([(1, 1), (1, "a")], 1).reduce_by_key(operator.add), "unsupported operand")
    assert "pairs" not in message  # a builtin reducer raising TypeError in the split's own frame

    def bad_reducer(a, b):
        x, _y = a  # a user's own unpacking error
        return x

    message = _fails(ctx.parallelize([(1, 1), (1, 2)], 1).reduce_by_key(bad_reducer), "cannot unpack")
    assert "pairs" not in message
    message = _fails(ctx.parallelize(["1", "x"], 1).map(int).map(lambda x: (x, x)).group_by_key(),
                     "invalid literal for int()")
    assert "pairs" not in message
