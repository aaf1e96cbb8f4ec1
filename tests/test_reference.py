"""The reference evaluator (tests/reference.py) is an oracle of its own.

It never runs the engine's kernels: with every kernel and node ``compute``
made to raise, it still evaluates every operation. And because it does not,
a wrong kernel makes the property check (engine == reference, on the inline
transport) fail: each mutant below is caught by hypothesis.
"""

from __future__ import annotations

import operator
import sys

import pytest
import reference
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pipelines import KEY_KINDS, ORDERED_KEY_KINDS, add, build, pipelines
from support import check_pipelines, context

import drizzle_core as dz
from drizzle_core import lineage
from drizzle_core.lineage import _move_ops, _nodes, _ops, _order_ops, _pair_ops, _position_ops, _text_ops

pytestmark = pytest.mark.timeout(120)


def _swap(kv):
    return (kv[1], kv[0])


def _zip_broadcast(ds, small, f):
    """What ``ds.zip_broadcast(small, f)`` builds: every partition zipped with the one partition of ``small``."""
    node = lineage.BroadcastZipNode(10**9 + ds.id, ds.node, small.node, _ops.ZipOp(f), "zip_broadcast")
    return type(ds)(ds.ctx, node, (ds, small))


def _every_operation(ctx):
    """One dataset per operation the reference knows, over a small source."""
    src = ctx.parallelize(list(range(12)), 3)
    pairs = src.map(lambda x: (x % 4, x))
    other = ctx.parallelize([(k, f"w{k}") for k in range(3)] + [(1, "again")], 2)
    small = ctx.parallelize([100], 1)
    return {
        "map": src.map(lambda x: x * 10),
        "filter": src.filter(lambda x: x % 3 == 0),
        "flat_map": src.flat_map(lambda x: [x] * (x % 3)),
        "map_partitions": src.map_partitions(lambda it: [sum(it)]),
        "map_partitions_with_index": src.map_partitions(lambda p, it: [(p, len(list(it)))], with_index=True),
        "key_by": src.key_by(lambda x: -x),
        "union": src.union(src.map(lambda x: -x)),
        "zip_partitions": src.zip_partitions(src.map(lambda x: 2 * x), lambda a, b: [sum(a) + sum(b)]),
        "zip_broadcast": _zip_broadcast(src, small, lambda part, s: [x + s[0] for x in part]),
        "reduce_by_key": pairs.reduce_by_key(operator.add, 3),
        "group_by_key": pairs.group_by_key(2),
        "join": pairs.join(other, 2),
        "chain": pairs.reduce_by_key(add, 2).map(_swap).group_by_key(3).cache(),
    }


def _h(k, r):
    return dz.portable_hash(k) % r


def test_each_operation_means_what_its_docstring_says():
    ctx = context("inline")
    got = {name: reference.partitions(ds) for name, ds in _every_operation(ctx).items()}
    parts = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert got["map"] == [[10 * x for x in p] for p in parts]
    assert got["filter"] == [[0, 3], [6], [9]]
    assert got["flat_map"] == [[1, 2, 2], [4, 5, 5, 7], [8, 8, 10, 11, 11]]
    assert got["map_partitions"] == [[6], [22], [38]]
    assert got["map_partitions_with_index"] == [[(0, 4)], [(1, 4)], [(2, 4)]]
    assert got["key_by"] == [[(-x, x) for x in p] for p in parts]
    assert got["union"] == parts + [[-x for x in p] for p in parts]
    assert got["zip_partitions"] == [[3 * sum(p)] for p in parts]
    assert got["zip_broadcast"] == [[x + 100 for x in p] for p in parts]
    # keys first seen in partition 0 (0, 1, 2, 3); each in reduce partition portable_hash(k) % R
    sums = {k: sum(x for x in range(12) if x % 4 == k) for k in range(4)}
    assert got["reduce_by_key"] == [[(k, sums[k]) for k in range(4) if _h(k, 3) == r] for r in range(3)]
    groups = {k: [x for x in range(12) if x % 4 == k] for k in range(4)}
    assert got["group_by_key"] == [[(k, groups[k]) for k in range(4) if _h(k, 2) == r] for r in range(2)]
    right = {0: ["w0"], 1: ["w1", "again"], 2: ["w2"]}
    assert got["join"] == [[(k, (v, w)) for k in range(3) if _h(k, 2) == r for v in groups[k] for w in right[k]]
                           for r in range(2)]
    swapped = [(v, k) for r in range(2) for k, v in sorted(sums.items()) if _h(k, 2) == r]
    order = list(dict.fromkeys(v for v, _ in swapped))
    assert got["chain"] == [[(v, [k for s, k in swapped if s == v]) for v in order if _h(v, 3) == r]
                            for r in range(3)]


def test_equal_keys_of_different_types_are_one_key_shown_as_first_seen():
    ctx = context("inline")
    ds = ctx.parallelize([(1.0, "a"), (True, "b"), (1, "c"), (2, "d")], 2).group_by_key(1)
    assert reference.partitions(ds) == [[(1.0, ["a", "b", "c"]), (2, ["d"])]]


def _every_new_operation(ctx, tmp):
    """One dataset per PySpark-style operation (issue 15 part 6)."""
    src = ctx.parallelize(list(range(12)), 3)
    pairs = src.map(lambda x: (x % 4, x))
    other = ctx.parallelize([(k, f"w{k}") for k in range(2, 6)], 2)
    path = tmp / "lines.txt"
    path.write_text("a\nbb\r\nccc\n\ndddd")
    return {
        "map_values": pairs.map_values(str), "flat_map_values": pairs.flat_map_values(lambda v: [v] * (v % 2)),
        "keys": pairs.keys(), "values": pairs.values(), "distinct": src.map(lambda x: x % 5).distinct(2),
        "repartition": src.repartition(4), "coalesce": src.coalesce(2), "cartesian": src.cartesian(other),
        "sort_by_key": pairs.sort_by_key(False, 3), "sort_by": src.sort_by(lambda x: -x, num_partitions=2),
        "combine_by_key": pairs.combine_by_key(lambda v: [v], lambda c, v: [*c, v], lambda a, b: a + b, 2),
        "aggregate_by_key": pairs.aggregate_by_key([], lambda a, v: [*a, v], lambda a, b: a + b),
        "fold_by_key": pairs.fold_by_key(0, add, 2), "cogroup": pairs.cogroup(other, 3),
        "left": pairs.left_outer_join(other, 2), "right": pairs.right_outer_join(other, 2),
        "full": pairs.full_outer_join(other, 2), "sample": src.sample(False, 0.5, 7),
        "sample_with_replacement": src.sample(True, 1.0, 7), "zip_with_index": src.zip_with_index(),
        "text_file": ctx.text_file(str(path), min_partitions=3),
    }


def test_each_new_operation_means_what_its_docstring_says(tmp_path):
    ctx = context("inline")
    got = {name: reference.partitions(ds) for name, ds in _every_new_operation(ctx, tmp_path).items()}
    xs = list(range(12))
    assert [x for p in got["keys"] for x in p] == [x % 4 for x in xs]
    assert got["repartition"] == [[0, 7, 10], [1, 4, 11], [2, 5, 8], [3, 6, 9]]  # (m + j) % 4, m = 0, 1, 2
    assert got["coalesce"] == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11]]  # partition m to m * 2 // 3
    assert [x for p in got["sort_by"] for x in p] == xs[::-1]
    assert [k for p in got["sort_by_key"] for k, _ in p] == sorted((x % 4 for x in xs), reverse=True)
    assert sorted(x for p in got["distinct"] for x in p) == [0, 1, 2, 3, 4]
    assert got["cartesian"][0] == [(a, (k, f"w{k}")) for a in range(4) for k in (2, 3)]
    assert sorted(kv for p in got["full"] for kv in p) == sorted(
        [(k, (v, None)) for v in xs for k in [v % 4] if k < 2] + [(k, (v, f"w{k}")) for v in xs for k in [v % 4]
                                                                  if k >= 2] + [(k, (None, f"w{k}")) for k in (4, 5)])
    assert [i for p in got["zip_with_index"] for _, i in p] == xs
    assert [x for p in got["text_file"] for x in p] == ["a", "bb", "ccc", "", "dddd"]


def test_it_runs_no_kernel_and_no_node_compute(monkeypatch, tmp_path):
    ctx = context("inline")
    datasets = {**_every_operation(ctx), **_every_new_operation(ctx, tmp_path)}
    before = {name: reference.partitions(ds) for name, ds in datasets.items()}

    def boom(*args, **kwargs):
        raise AssertionError("the reference evaluator ran an engine kernel")

    for cls in (_ops.MapOp, _ops.FilterOp, _ops.FlatMapOp, _ops.KeyByOp, _ops.MapPartitionsOp,
                _ops.MapPartitionsWithIndexOp, _ops.ZipOp, _ops.CombineSplit, _ops.CombineMerge):
        monkeypatch.setattr(cls, "__call__", boom)
    for name in ("bucket_dict", "merge_groups", "_check_pair"):
        monkeypatch.setattr(_ops, name, boom)
    for cls in (_pair_ops.MapValuesOp, _pair_ops.FlatMapValuesOp, _pair_ops.CombineByKeySplit, _pair_ops.ZeroThen,
                _pair_ops.OuterJoinMerge, _move_ops.CoalesceSplit, _move_ops.CartesianSplit, _order_ops.RangeSplit,
                _order_ops.SortMerge, _position_ops.SampleOp, _position_ops.ZipWithIndexOp, _text_ops.ReadTextOp):
        monkeypatch.setattr(cls, "__call__", boom)
    for name in ("read_split", "sample_draws"):
        monkeypatch.setattr(getattr(lineage, name), "__code__", boom.__code__)
    for f in (_ops.group_split, _ops.group_merge, _ops.join_merge, _pair_ops.pair_keys, _pair_ops.pair_values,
              _pair_ops.cogroup_merge, _move_ops.tag_partition, _move_ops.round_robin_split, _move_ops.chain_merge,
              _move_ops.cartesian_merge):
        monkeypatch.setattr(f, "__code__", boom.__code__)  # the very objects the nodes hold
    for cls in (_nodes.SourceNode, _nodes.NarrowNode, _nodes.UnionNode, _nodes.ZipNode, _nodes.BroadcastZipNode,
                _nodes.ShuffleReadNode):
        monkeypatch.setattr(cls, "compute", boom)
    assert {name: reference.partitions(ds) for name, ds in datasets.items()} == before


def test_an_operation_it_does_not_know_is_an_error_not_delegated_to_the_engine():
    ctx = context("inline")
    src = ctx.parallelize(range(4), 2)
    engine_op = lineage.NarrowNode(10**9, src.node, _ops.MapOp(abs), "an engine op under another name")
    engine_op.fn = _ops.CombineSplit(add)  # not a narrow operation the reference knows
    ds = type(src)(ctx, engine_op, (src,))
    with pytest.raises(TypeError, match="does not know the operation CombineSplit"):
        reference.partitions(ds)


def test_a_deep_lineage_does_not_recurse():
    ctx = context("inline")
    ds = ctx.parallelize(range(4), 2)
    for _ in range(10_000):
        ds = ds.map(abs)
    assert sys.getrecursionlimit() < 10_000
    assert reference.partitions(ds) == [[0, 1], [2, 3]]


# ------------------------------------------------------------------ mutants
def _drop_a_key(monkeypatch):
    """CombineMerge loses the last key of each reduce partition."""
    merge = _ops.CombineMerge.__call__
    monkeypatch.setattr(_ops.CombineMerge, "__call__", lambda self, p, deps: merge(self, p, deps)[:-1])


def _misroute(monkeypatch):
    """Map-side bucketing sends each key one reduce partition too far."""
    def bucket(d, R):
        buckets = [{} for _ in range(R)]
        for k, v in d.items():
            buckets[(dz.portable_hash(k) + 1) % R][k] = v
        return buckets
    monkeypatch.setattr(_ops, "bucket_dict", bucket)


def _merge_backwards(monkeypatch):
    """The reduce side of group_by_key and join merges map partitions last to first."""
    merge_one = _ops.merge_groups
    monkeypatch.setattr(_ops, "merge_groups", lambda blocks: merge_one(list(reversed(blocks))))


MUTANTS = {"reduce": (_drop_a_key, "reduce"), "misroute": (_misroute, "reduce"),
           "group": (_merge_backwards, "group"), "join": (_merge_backwards, "join")}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_the_property_check_fails_when_a_kernel_is_wrong(monkeypatch, mutant):
    ctx = context("inline", 2)
    mutate, how = MUTANTS[mutant]
    # the property holds before the kernel is broken ...
    check_pipelines(ctx, list(range(20)), 3, [([("key_by", 5, how, 3, "int")], "list")], 4)
    mutate(monkeypatch)
    shuffle = st.tuples(st.just("key_by"), st.integers(2, 6), st.just(how), st.integers(2, 4),
                        st.sampled_from(KEY_KINDS))

    @settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate],  # a failure, not its shrinking
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(items=st.lists(st.integers(-20, 20), min_size=1, max_size=30), partitions=st.integers(2, 4),
           before=pipelines(), step=shuffle, fn=st.sampled_from(["sum", "list"]), group_size=st.integers(1, 4))
    def engine_equals_reference(items, partitions, before, step, fn, group_size):
        check_pipelines(ctx, items, partitions, [([*before[:2], step], fn)], group_size)

    # ... and hypothesis finds an example where it does not, once it is
    with pytest.raises(AssertionError) as failure:
        engine_equals_reference()
    assert str(failure.value).startswith("assert [[")  # the results differ (not an error of the check)


def _unstable_sort(monkeypatch):
    """SortMerge reverses the order of equal keys."""
    call = _order_ops.SortMerge.__call__

    def merged(self, p, deps):
        return call(self, p, [[list(reversed(b)) for b in reversed(deps[0])]])
    monkeypatch.setattr(_order_ops.SortMerge, "__call__", merged)


def _outer_drops_unmatched(monkeypatch):
    """The outer joins forget the keys of one side only (an inner join)."""
    monkeypatch.setattr(_pair_ops.OuterJoinMerge, "__call__", lambda self, p, deps: _ops.join_merge(p, deps))


def _zero_shared(monkeypatch):
    """aggregate_by_key hands every key the same zero object (no copy)."""
    monkeypatch.setattr(_pair_ops.ZeroThen, "__call__", lambda self, v: self.seq_func(self.zero_value, v))


NEW_MUTANTS = {
    "sort": (_unstable_sort, st.tuples(st.just("sort_by_key"), st.integers(1, 3), st.booleans(), st.integers(1, 3),
                                       st.sampled_from(ORDERED_KEY_KINDS))),
    "outer": (_outer_drops_unmatched, st.tuples(st.just("key_by"), st.integers(2, 6),
                                                st.sampled_from(["left", "right", "full"]), st.integers(1, 3),
                                                st.sampled_from(KEY_KINDS))),
    "aggregate": (_zero_shared, st.tuples(st.just("key_by"), st.integers(1, 6), st.just("aggregate"),
                                          st.integers(1, 3), st.sampled_from(KEY_KINDS))),
}


@pytest.mark.parametrize("mutant", sorted(NEW_MUTANTS))
def test_the_property_check_fails_when_a_new_kernel_is_wrong(monkeypatch, mutant):
    ctx = context("inline", 2)
    mutate, step = NEW_MUTANTS[mutant]
    mutate(monkeypatch)

    @settings(max_examples=300, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(items=st.lists(st.integers(-20, 20), min_size=1, max_size=30), partitions=st.integers(2, 4),
           step=step, fn=st.sampled_from(["sum", "list"]))
    def engine_equals_reference(items, partitions, step, fn):
        check_pipelines(ctx, items, partitions, [([step], fn)], 2)

    with pytest.raises(AssertionError) as failure:
        engine_equals_reference()
    assert str(failure.value).startswith("assert [[")


def test_mutants_break_the_engine_only():
    """The mutated kernels change what the engine computes, never what the reference says."""
    ctx = context("inline", 2)
    ds = build(ctx, ctx.parallelize(list(range(20)), 3), [("key_by", 5, "group", 3, "int")])
    expected = reference.partitions(ds)
    with pytest.MonkeyPatch.context() as mp:
        _merge_backwards(mp)
        _misroute(mp)
        assert reference.partitions(ds) == expected
        assert ds.glom() != expected
    assert ds.glom() == expected
