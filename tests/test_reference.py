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
from pipelines import KEY_KINDS, add, build, pipelines
from support import check_pipelines, context

import drizzle_core as dz
from drizzle_core import lineage
from drizzle_core.lineage import _nodes, _ops

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


def test_it_runs_no_kernel_and_no_node_compute(monkeypatch):
    ctx = context("inline")
    datasets = _every_operation(ctx)
    before = {name: reference.partitions(ds) for name, ds in datasets.items()}

    def boom(*args, **kwargs):
        raise AssertionError("the reference evaluator ran an engine kernel")

    for cls in (_ops.MapOp, _ops.FilterOp, _ops.FlatMapOp, _ops.KeyByOp, _ops.MapPartitionsOp,
                _ops.MapPartitionsWithIndexOp, _ops.ZipOp, _ops.CombineSplit, _ops.CombineMerge):
        monkeypatch.setattr(cls, "__call__", boom)
    for name in ("_bucket", "_group_merge_one", "_check_pair"):
        monkeypatch.setattr(_ops, name, boom)
    for f in (_ops.group_split, _ops.group_merge, _ops.join_merge):
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
    monkeypatch.setattr(_ops, "_bucket", bucket)


def _merge_backwards(monkeypatch):
    """The reduce side of group_by_key and join merges map partitions last to first."""
    merge_one = _ops._group_merge_one
    monkeypatch.setattr(_ops, "_group_merge_one", lambda blocks: merge_one(list(reversed(blocks))))


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
