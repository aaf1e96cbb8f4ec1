"""Random Dataset pipelines for property tests (hypothesis strategies).

A pipeline is a list of steps applied to a source; each step is a small
tuple of parameters, so hypothesis can shrink it. ``build`` applies it to a
real Dataset; the reference evaluator runs the very same lineage.
"""

from __future__ import annotations

import operator

from hypothesis import strategies as st

# Module-level functions pickle by reference (the workers import this module).


def add(a, b):
    return a + b


def as_int_pairs(kv):
    return (kv[0], kv[1])


def sum_values(kv):
    return (kv[0], sum(kv[1]))


def sum_pair(kv):
    return (kv[0], kv[1][0] + kv[1][1])


def value(kv):
    return kv[1]


def rev(it):
    return list(it)[::-1]


def prefix_sums(it):
    total, out = 0, []
    for x in it:
        total += x
        out.append(total)
    return out


def swap_mod2(kv):
    return (kv[1] % 2, kv[0])


def sum_both(x, y):
    return [sum(v for _, v in x) + sum(v for _, v in y)]


int_steps = st.one_of(
    st.tuples(st.just("map"), st.integers(-3, 3), st.integers(-5, 5)),
    st.tuples(st.just("filter"), st.integers(2, 4), st.integers(0, 3)),
    st.tuples(st.just("flat_map"), st.integers(0, 2)),
    st.tuples(st.just("map_partitions"), st.sampled_from(["rev", "prefix"])),
    st.tuples(st.just("union"), st.integers(1, 3)),
    st.tuples(st.just("cache")),
    # a shuffle read by the final stage and by another shuffle's map side
    st.tuples(st.just("diamond"), st.integers(1, 4)),
    st.tuples(st.just("key_by"), st.integers(1, 6), st.sampled_from(["reduce", "group", "join"]),
              st.integers(1, 5)),
)


def pipelines():
    return st.lists(int_steps, min_size=0, max_size=6)


def build(ctx, source, steps):
    """Apply ``steps`` to ``source`` (a dataset of ints); the result is a dataset of ints."""
    ds = source
    for step in steps:
        kind = step[0]
        if kind == "map":
            _, a, b = step
            ds = ds.map(lambda x, a=a, b=b: a * x + b)
        elif kind == "filter":
            _, m, r = step
            ds = ds.filter(lambda x, m=m, r=r: x % m != r % m)
        elif kind == "flat_map":
            _, n = step
            ds = ds.flat_map(lambda x, n=n: [x] * n)
        elif kind == "map_partitions":
            ds = ds.map_partitions(rev if step[1] == "rev" else prefix_sums)
        elif kind == "union":
            ds = ds.union(ds.map(lambda x, k=step[1]: x * k))
        elif kind == "cache":
            ds = ds.cache()
        elif kind == "diamond":
            n = step[1]
            a = ds.key_by(lambda x: x % 3).reduce_by_key(add, n)
            b = a.map(swap_mod2).reduce_by_key(add, n)
            ds = b.zip_partitions(a, sum_both)
        elif kind == "key_by":
            _, k, how, n = step
            pairs = ds.key_by(lambda x, k=k: x % k)
            if how == "reduce":
                pairs = pairs.reduce_by_key(operator.add, n)
            elif how == "group":
                pairs = pairs.group_by_key(n).map(sum_values)
            else:
                other = ds.map(lambda x, k=k: (x % k, 1)).reduce_by_key(add, max(1, n - 1))
                pairs = pairs.join(other, n).map(sum_pair)
            ds = pairs.map(value)
    return ds
