"""The PySpark-style transformations (issue 15 part 6) against the reference evaluator, and against plain Python.

Each new pipeline step (tests/pipelines.py) is forced into random pipelines
and the engine's partitions must equal the reference's, on the inline
transport (many examples) and on local worker processes (fewer). The
reference re-implements each operation from its documented meaning; the
checks after that compare with what a user would compute by hand (a
sorted list is sorted, a cartesian product is itertools.product), so a
meaning written wrong in both places is caught too.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipelines import ORDERED_KEY_KINDS, PAIR_OPS, all_steps, build, pipelines
from support import check_pipelines, context

import drizzle_core as dz

pytestmark = pytest.mark.timeout(180)

NEW_STEPS = {
    "distinct": st.tuples(st.just("distinct"), st.integers(1, 4)),
    "repartition": st.tuples(st.just("repartition"), st.integers(1, 5)),
    "coalesce": st.tuples(st.just("coalesce"), st.integers(1, 4)),
    "sort_by_key": st.tuples(st.just("sort_by_key"), st.integers(1, 6), st.booleans(), st.integers(1, 4),
                             st.sampled_from(ORDERED_KEY_KINDS)),
    "sort_by": st.tuples(st.just("sort_by"), st.booleans(), st.integers(1, 4)),
    "sample": st.tuples(st.just("sample"), st.booleans(), st.sampled_from([0.0, 0.3, 0.7, 1.0]),
                        st.integers(0, 2**40)),
    "zip_with_index": st.tuples(st.just("zip_with_index")),
    "cartesian": st.tuples(st.just("cartesian"), st.integers(1, 3)),
    **{f"key_by-{how}": st.tuples(st.just("key_by"), st.integers(1, 6), st.just(how), st.integers(1, 5),
                                  st.sampled_from(["int", "str", "numbers", "tuple", "frozenset", "none"]))
       for how in PAIR_OPS if how not in ("reduce", "group", "join")},
}
_FAST = settings(max_examples=40, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", sorted(NEW_STEPS))
def test_each_new_step_in_random_pipelines_equals_the_reference(name):
    ctx = context("inline", 3)

    @_FAST
    @given(items=st.lists(st.integers(-20, 20), max_size=30), partitions=st.integers(1, 4),
           before=st.lists(all_steps, max_size=2), after=st.lists(all_steps, max_size=1), step=NEW_STEPS[name],
           fn=st.sampled_from(["sum", "list", "len"]), group_size=st.integers(1, 3))
    def engine_equals_reference(items, partitions, before, after, step, fn, group_size):
        check_pipelines(ctx, items, partitions, [([*before, step, *after], fn)], group_size)

    engine_equals_reference()


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.integers(-20, 20), max_size=30), partitions=st.integers(1, 4),
       jobs=st.lists(st.tuples(pipelines(eager=True), st.sampled_from(["sum", "list"])), min_size=1, max_size=3),
       step=st.sampled_from(sorted(NEW_STEPS)).flatmap(NEW_STEPS.get), group_size=st.integers(1, 4))
def test_on_worker_processes_too(items, partitions, jobs, step, group_size):
    check_pipelines(context("local", 2), items, partitions, [([*steps, step], fn) for steps, fn in jobs], group_size)


# ------------------------------------------------------- against plain Python
ITEMS = st.lists(st.integers(-50, 50), max_size=40)


@settings(max_examples=30, deadline=None, database=None)
@given(items=ITEMS, partitions=st.integers(1, 5), n=st.integers(1, 5), ascending=st.booleans())
def test_sort_by_key_and_sort_by_sort_globally_and_stably(items, partitions, n, ascending):
    ctx = context("inline", 3)
    pairs = [(x % 7, i) for i, x in enumerate(items)]
    ds = ctx.parallelize(pairs, partitions).sort_by_key(ascending, n)
    assert ds.num_partitions == n
    assert ds.collect() == sorted(pairs, key=lambda kv: kv[0], reverse=not ascending)  # stable: sorted() is
    by = ctx.parallelize(items, partitions).sort_by(lambda x: (abs(x), x), ascending, n).collect()
    assert by == sorted(items, key=lambda x: (abs(x), x), reverse=not ascending)


def test_sort_by_key_balances_its_ranges_and_takes_a_keyfunc():
    ctx = context("local", 2)
    pairs = [(f"k{x:05d}", x) for x in np.random.default_rng(3).permutation(20_000).tolist()]
    ds = ctx.parallelize(pairs, 4).sort_by_key(num_partitions=5)
    sizes = [len(p) for p in ds.glom()]
    assert sum(sizes) == 20_000 and max(sizes) < 2 * 20_000 / 5, sizes  # sampled bounds, not one range
    assert ds.collect() == sorted(pairs)
    down = ctx.parallelize(pairs, 4).sort_by_key(False, 3, keyfunc=lambda k: int(k[1:]) % 1000).collect()
    assert down == sorted(pairs, key=lambda kv: int(kv[0][1:]) % 1000, reverse=True)


@settings(max_examples=30, deadline=None, database=None)
@given(items=ITEMS, partitions=st.integers(1, 5), n=st.integers(1, 6))
def test_distinct_repartition_coalesce_are_what_they_say(items, partitions, n):
    ctx = context("inline", 3)
    ds = ctx.parallelize(items, partitions)
    assert sorted(ds.distinct(n).collect()) == sorted(set(items)) and ds.distinct(n).num_partitions == n
    rep = ds.repartition(n)
    assert rep.num_partitions == n and Counter(rep.collect()) == Counter(items)
    if len(items) >= n:
        assert max(map(len, rep.glom())) - min(map(len, rep.glom())) <= partitions  # round robin: balanced
    co = ds.coalesce(n)
    assert co.num_partitions == min(n, partitions) and co.collect() == items  # runs of partitions, in order
    assert ds.coalesce(n, shuffle=True).num_partitions == n


def test_repartition_and_coalesce_keep_ndarray_partitions():
    ctx = context("local", 2)
    a = np.arange(30.0).reshape(15, 2)
    for ds in (ctx.parallelize(a, 4).repartition(3), ctx.parallelize(a, 4).coalesce(2)):
        parts = ds.glom()
        assert all(isinstance(p, np.ndarray) and p.shape[1] == 2 for p in parts)
        assert sorted(map(tuple, np.concatenate(parts).tolist())) == sorted(map(tuple, a.tolist()))
    assert np.array_equal(ctx.parallelize(a, 4).coalesce(2).collect(), a)


@settings(max_examples=30, deadline=None, database=None)
@given(left=st.lists(st.tuples(st.integers(0, 6), st.integers()), max_size=15),
       right=st.lists(st.tuples(st.integers(3, 9), st.text(max_size=2)), max_size=15),
       partitions=st.integers(1, 3), n=st.integers(1, 4))
def test_cogroup_and_outer_joins_match_a_nested_loop(left, right, partitions, n):
    ctx = context("inline", 3)
    a, b = ctx.parallelize(left, partitions), ctx.parallelize(right, partitions + 1)
    keys_l, keys_r = {k for k, _ in left}, {k for k, _ in right}
    inner = [(k, (v, w)) for k, v in left for k2, w in right if k == k2]
    only_l = [(k, (v, None)) for k, v in left if k not in keys_r]
    only_r = [(k, (None, w)) for k, w in right if k not in keys_l]
    assert Counter(a.left_outer_join(b, n).collect()) == Counter(inner + only_l)
    assert Counter(a.right_outer_join(b, n).collect()) == Counter(inner + only_r)
    assert Counter(a.full_outer_join(b, n).collect()) == Counter(inner + only_l + only_r)
    assert Counter(a.subtract_by_key(b, n).collect()) == Counter((k, v) for k, v in left if k not in keys_r)
    ka, kb = a.keys(), b.keys()
    assert Counter(ka.subtract(kb, n).collect()) == Counter(k for k, _ in left if k not in keys_r)  # duplicates kept
    assert sorted(ka.intersection(kb, n).collect()) == sorted(keys_l & keys_r)  # each once
    cg = dict(a.cogroup(b, n).collect())
    assert set(cg) == keys_l | keys_r
    for k, (vs, ws) in cg.items():
        assert vs == [v for k2, v in left if k2 == k] and ws == [w for k2, w in right if k2 == k]


@settings(max_examples=30, deadline=None, database=None)
@given(pairs=st.lists(st.tuples(st.sampled_from("abcd"), st.integers(-9, 9)), max_size=30),
       partitions=st.integers(1, 4))
def test_by_key_aggregations_match_a_dict(pairs, partitions):
    ctx = context("inline", 3)
    ds = ctx.parallelize(pairs, partitions)
    groups: dict = {}
    for k, v in pairs:
        groups.setdefault(k, []).append(v)
    assert dict(ds.fold_by_key(0, lambda a, b: a + b).collect()) == {k: sum(vs) for k, vs in groups.items()}
    agg = ds.aggregate_by_key((0, 0), lambda acc, v: (acc[0] + v, acc[1] + 1), lambda x, y: (x[0] + y[0], x[1] + y[1]))
    assert dict(agg.collect()) == {k: (sum(vs), len(vs)) for k, vs in groups.items()}
    sets = ds.aggregate_by_key(set(), lambda s, v: (s.add(v), s)[1], lambda s, t: s | t)  # a mutable zero
    assert dict(sets.collect()) == {k: set(vs) for k, vs in groups.items()}
    comb = ds.combine_by_key(lambda v: [v], lambda c, v: [*c, v], lambda c, d: c + d, 2)
    assert {k: sorted(c) for k, c in comb.collect()} == {k: sorted(vs) for k, vs in groups.items()}
    assert ds.map_values(abs).collect() == [(k, abs(v)) for k, v in pairs]
    assert ds.flat_map_values(lambda v: range(v % 3)).collect() == [(k, w) for k, v in pairs for w in range(v % 3)]
    assert ds.keys().collect() == [k for k, _ in pairs] and ds.values().collect() == [v for _, v in pairs]


@settings(max_examples=20, deadline=None, database=None)
@given(a=st.lists(st.integers(), max_size=8), b=st.lists(st.text(max_size=2), max_size=6),
       m=st.integers(1, 3), n=st.integers(1, 3))
def test_cartesian_is_the_product_partition_by_partition(a, b, m, n):
    ctx = context("inline", 3)
    left, right = ctx.parallelize(a, m), ctx.parallelize(b, n)
    ds = left.cartesian(right)
    assert ds.num_partitions == m * n
    la, rb = left.glom(), right.glom()
    assert ds.glom() == [list(itertools.product(la[i], rb[j])) for i in range(m) for j in range(n)]
    assert Counter(ds.collect()) == Counter(itertools.product(a, b))


def test_sample_is_deterministic_per_seed_and_partition_and_has_the_right_size():
    ctx = context("local", 2)
    ds = ctx.parallelize(range(20_000), 4)
    once = ds.sample(False, 0.25, seed=11).collect()
    assert once == ds.sample(False, 0.25, seed=11).collect() != ds.sample(False, 0.25, seed=12).collect()
    assert abs(len(once) - 5_000) < 300 and len(set(once)) == len(once) and once == sorted(once)
    again = ds.sample(True, 1.5, seed=5).collect()
    assert abs(len(again) - 30_000) < 1_000 and max(Counter(again).values()) > 1
    assert ds.sample(False, 0.0, 1).count() == 0 and ds.sample(False, 1.0, 1).collect() == list(range(20_000))
    nd = ctx.parallelize(np.arange(1000.0), 3).sample(False, 0.5, seed=2)
    assert all(isinstance(p, np.ndarray) for p in nd.glom())
    lst = ctx.parallelize(list(np.arange(1000.0)), 3).sample(False, 0.5, seed=2)
    assert nd.collect().tolist() == lst.collect()  # the same draws for an array and a list
    seeded = ds.sample(False, 0.1)  # seed=None: chosen once, at the call
    assert seeded.collect() == seeded.collect()


def test_zip_with_index_numbers_across_partitions():
    ctx = context("local", 2)
    ds = ctx.parallelize([f"x{i}" for i in range(23)], 5).filter(lambda s: s != "x3")
    got = ds.zip_with_index().collect()
    assert [i for _, i in got] == list(range(22)) and [s for s, _ in got] == ds.collect()
    assert ctx.parallelize([], 3).zip_with_index().collect() == []


def test_keys_of_every_hashable_kind_through_the_new_shuffles():
    from test_keys import KINDS, by_key, distinct, records

    for transport in ("inline", "local"):
        ctx = context(transport)
        for kind in KINDS:
            recs, canon = records(kind, copies=2)
            ds = ctx.parallelize(recs, 5)
            expected: Counter = Counter()
            for k, v in recs:
                expected[k] += v
            assert by_key(ds.fold_by_key(0, lambda a, b: a + b, 3).collect()) == dict(expected), kind
            assert by_key(ds.combine_by_key(int, int.__add__, int.__add__, 2).collect()) == dict(expected), kind
            assert len(ds.keys().distinct(3).collect()) == len(distinct(canon)), kind
            assert dict(ds.count_by_key()) == dict(expected), kind
            cg = by_key(ds.cogroup(ctx.parallelize(recs[::-1], 3), 4).collect())
            assert {k: (len(a), len(b)) for k, (a, b) in cg.items()} == {k: (n, n) for k, n in expected.items()}
            full = ds.full_outer_join(ctx.parallelize(recs[:3], 2), 3).collect()
            assert Counter(k for k, _ in full) == Counter(
                {k: n * max(1, sum(1 for k2, _ in recs[:3] if k2 == k)) for k, n in expected.items()}), kind


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("call, error, words", [
    (lambda ds: ds.repartition(0), ValueError, "repartition: num_partitions must be a positive int, got 0"),
    (lambda ds: ds.coalesce(2.5), ValueError, "coalesce: num_partitions"),
    (lambda ds: ds.coalesce(2, shuffle="yes"), TypeError, "coalesce: shuffle must be a bool"),
    (lambda ds: ds.distinct(-1), ValueError, "distinct: num_partitions"),
    (lambda ds: ds.sample(1, 0.5), TypeError, "sample: with_replacement must be a bool"),
    (lambda ds: ds.sample(False, 1.5), ValueError, r"sample: fraction must be in \[0, 1\] without replacement"),
    (lambda ds: ds.sample(True, -1), ValueError, "sample: fraction must be a finite number >= 0"),
    (lambda ds: ds.sample(False, 0.5, seed="x"), TypeError, "sample: seed must be an int"),
    (lambda ds: ds.map_values(3), TypeError, "Dataset.map_values needs a callable"),
    (lambda ds: ds.combine_by_key(list, None, list), TypeError, "Dataset.combine_by_key needs a callable"),
    (lambda ds: ds.sort_by_key(ascending="no"), TypeError, "sort_by_key: ascending must be a bool"),
    (lambda ds: ds.sort_by_key(num_partitions=0), ValueError, "sort_by_key: num_partitions"),
    (lambda ds: ds.cogroup([1]), TypeError, "Dataset.cogroup needs a Dataset, got list"),
    (lambda ds: ds.cartesian(None), TypeError, "Dataset.cartesian needs a Dataset"),
    (lambda ds: ds.left_outer_join(ds, num_partitions=0), ValueError, "left_outer_join: num_partitions"),
])
def test_bad_arguments_are_named(call, error, words):
    ds = context("inline", 3).parallelize([(1, 2), (3, 4)], 2)
    with pytest.raises(error, match=words):
        call(ds)


def test_records_that_are_not_pairs_or_keys_that_do_not_order_say_so():
    ctx = context("inline", 3)
    with pytest.raises(dz.TaskError) as e:
        ctx.parallelize([1, 2, 3], 2).map_values(abs).collect()
    assert "map_values needs (key, value) pairs; got an int" in str(e.value.__cause__) + str(e.value)
    with pytest.raises(TypeError, match="sort_by_key: the keys must be orderable"):
        ctx.parallelize([(None, 1), (2, 1), (frozenset(), 3)], 2).sort_by_key(num_partitions=2)
    with pytest.raises(dz.TaskError):
        ctx.parallelize([1, 2], 2).sort_by_key(num_partitions=2)


def test_the_reference_knows_each_new_operation():
    ctx = context("inline", 3)
    src = ctx.parallelize(list(range(12)), 3)
    for steps in ([s] for s in [("distinct", 2), ("repartition", 3), ("coalesce", 2), ("sort_by", True, 2),
                                ("sort_by_key", 4, False, 3, "str"), ("sample", True, 0.7, 3),
                                ("zip_with_index",), ("cartesian", 2)]):
        ds = build(ctx, src, steps)
        assert reference.partitions(ds) == ds.glom(), steps
