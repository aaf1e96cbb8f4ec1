"""Random Dataset pipelines for property tests (hypothesis strategies).

A pipeline is a list of steps applied to a source; each step is a small
tuple of parameters, so hypothesis can shrink it. ``build`` applies it to a
real Dataset; the reference evaluator runs the very same lineage.

Shuffles key by one of ``KEY_KINDS`` (``make_key``): the kinds whose hash
Python salts per process (str, bytes, dates, enums, frozensets, frozen
dataclasses), and equal keys of different types or representations in one
shuffle (1, 1.0, True, Decimal(1); one instant in two time zones; a tuple
and a namedtuple). Not here: classes with their own ``__hash__`` over str
fields, which ``portable_hash`` leaves to Python's ``hash`` — the workers
share one PYTHONHASHSEED, but the reference evaluator buckets on the
driver, whose seed may differ (tests/test_keys.py covers those keys).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
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


def sum_lists(kv):
    return (kv[0], sum(kv[1]))


def single(v):
    return [v]


def appended(acc, v):
    acc.append(v)  # in place: aggregate_by_key hands each key a fresh copy of the zero
    return acc


def concat(a, b):
    return a + b


def cogrouped(kv):
    return (kv[0], sum(kv[1][0]) - 7 * len(kv[1][1]))


def outer_sum(kv):
    v, w = kv[1]
    return (kv[0], (100 if v is None else v) - (1000 if w is None else w))


def doubled(v):
    return 2 * v


def plus_minus(v):
    return [v, -v]


def plus_index(xi):
    return xi[0] * 3 + xi[1]


def pair_sum(ab):
    return ab[0] * 10 + ab[1]


def negated(x):
    return -x


def swap_mod2(kv):
    return (kv[1] % 2, kv[0])


def sum_both(x, y):
    return [sum(v for _, v in x) + sum(v for _, v in y)]


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Name:
    first: str
    n: int


Pair = collections.namedtuple("Pair", "name n")

_UTC = datetime.UTC
_EAST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
_NUMBER_TYPES = (int, float, decimal.Decimal, fractions.Fraction)


def make_key(kind: str, i: int, x: int):
    """Key number ``i`` (>= 0) of ``kind``; ``x``, the record, picks among equal representations."""
    if kind == "int":
        return i
    if kind == "numbers":  # 1 == 1.0 == Decimal(1) == Fraction(1), and True for 1, False for 0
        return bool(i) if i < 2 and x % 5 == 4 else _NUMBER_TYPES[x % 4](i)
    if kind == "str":
        return f"ключ-{i}"
    if kind == "bytes":
        return b"k%d" % i
    if kind == "none":
        return None if i == 0 else (i, None)
    if kind == "tuple":  # a namedtuple equals the plain tuple of its fields
        return (f"k{i}", i, ("x", float(i))) if x % 2 else (f"k{i}", float(i), Pair("x", i))
    if kind == "frozenset":
        return frozenset({f"a{i}", f"b{i % 3}", i})
    if kind == "enum":
        return (list(Colour)[i % 3], i // 3)
    if kind == "dataclass":
        return Name(f"n{i}", i)
    if kind == "date":
        return datetime.date(2024, 1, 1) + datetime.timedelta(days=i)
    if kind == "datetime":  # the same instant in two time zones
        t = datetime.datetime(2024, 3, 31, tzinfo=_UTC) + datetime.timedelta(hours=7 * i)
        return t.astimezone(_EAST) if x % 2 else t
    if kind == "decimal":
        return decimal.Decimal(i) / 4 if x % 2 else decimal.Decimal(f"{i / 4:.2f}0")
    raise ValueError(kind)


KEY_KINDS = ["int", "numbers", "str", "bytes", "none", "tuple", "frozenset", "enum", "dataclass", "date",
             "datetime", "decimal"]
#: the kinds whose keys are totally ordered by < (sort_by_key's): not None, enums, dataclasses, frozensets (subsets)
ORDERED_KEY_KINDS = ["int", "numbers", "str", "bytes", "tuple", "date", "datetime", "decimal"]
#: what the pairs of a key_by step go through
PAIR_OPS = ["reduce", "group", "join", "combine", "aggregate", "fold", "cogroup", "left", "right", "full",
            "map_values", "flat_map_values"]


int_steps = st.one_of(
    st.tuples(st.just("map"), st.integers(-3, 3), st.integers(-5, 5)),
    st.tuples(st.just("filter"), st.integers(2, 4), st.integers(0, 3)),
    st.tuples(st.just("flat_map"), st.integers(0, 2)),
    st.tuples(st.just("map_partitions"), st.sampled_from(["rev", "prefix"])),
    st.tuples(st.just("union"), st.integers(1, 3)),
    st.tuples(st.just("cache")),
    # a shuffle read by the final stage and by another shuffle's map side
    st.tuples(st.just("diamond"), st.integers(1, 4)),
    st.tuples(st.just("key_by"), st.integers(1, 6), st.sampled_from(PAIR_OPS),
              st.integers(1, 5), st.sampled_from(KEY_KINDS)),
    st.tuples(st.just("distinct"), st.integers(1, 4)),
    st.tuples(st.just("repartition"), st.integers(1, 5)),
    st.tuples(st.just("coalesce"), st.integers(1, 4)),
    st.tuples(st.just("sample"), st.booleans(), st.sampled_from([0.0, 0.3, 0.7, 1.0]), st.integers(0, 2**40)),
    st.tuples(st.just("cartesian"), st.integers(1, 3)),
)


# Steps that run a job when they are built, as in Spark: sort_by_key samples its keys, zip_with_index counts
# each partition. Opt-in (``pipelines(eager=True)``): a test that counts the recoveries of its run, from the
# metrics after building, would miss a worker killed by a job run while building.
eager_steps = st.one_of(
    st.tuples(st.just("sort_by_key"), st.integers(1, 6), st.booleans(), st.integers(1, 4),
              st.sampled_from(ORDERED_KEY_KINDS)),
    st.tuples(st.just("sort_by"), st.booleans(), st.integers(1, 4)),
    st.tuples(st.just("zip_with_index")),
)
all_steps = st.one_of(int_steps, eager_steps)


def pipelines(eager: bool = False):
    return st.lists(all_steps if eager else int_steps, min_size=0, max_size=6)


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
            _, k, how, n, keys = step
            pairs = ds.key_by(lambda x, k=k, keys=keys: make_key(keys, x % k, x))
            if how == "reduce":
                pairs = pairs.reduce_by_key(operator.add, n)
            elif how == "group":
                pairs = pairs.group_by_key(n).map(sum_values)
            elif how == "join":
                other = ds.map(lambda x, k=k, keys=keys: (make_key(keys, x % k, x + 1), 1))
                pairs = pairs.join(other.reduce_by_key(add, max(1, n - 1)), n).map(sum_pair)
            elif how == "combine":
                pairs = pairs.combine_by_key(single, appended, concat, n).map(sum_lists)
            elif how == "aggregate":
                pairs = pairs.aggregate_by_key([], appended, concat, n).map(sum_lists)
            elif how == "fold":
                pairs = pairs.fold_by_key(0, add, n)
            elif how in ("cogroup", "left", "right", "full"):
                # the other side has keys this one lacks (x // 2 reaches further than x % k)
                other = ds.filter(lambda x: x % 3 != 1).map(
                    lambda x, k=k, keys=keys: (make_key(keys, abs(x) // 2 % (k + 2), x + 1), x))
                if how == "cogroup":
                    pairs = pairs.cogroup(other, n).map(cogrouped)
                else:
                    join = {"left": pairs.left_outer_join, "right": pairs.right_outer_join,
                            "full": pairs.full_outer_join}[how]
                    pairs = join(other, n).map(outer_sum)
            elif how == "map_values":
                pairs = pairs.map_values(doubled)
            else:
                pairs = pairs.flat_map_values(plus_minus)
            ds = pairs.map(value) if how in ("reduce", "group", "join") else pairs.values()
        elif kind == "distinct":
            ds = ds.distinct(step[1])
        elif kind == "repartition":
            ds = ds.repartition(step[1])
        elif kind == "coalesce":
            ds = ds.coalesce(step[1])
        elif kind == "sort_by_key":
            _, k, ascending, n, keys = step
            ds = ds.key_by(lambda x, k=k, keys=keys: make_key(keys, x % k, x)).sort_by_key(ascending, n).values()
        elif kind == "sort_by":
            _, ascending, n = step
            ds = ds.sort_by(negated, ascending, n)
        elif kind == "sample":
            _, with_replacement, fraction, seed = step
            ds = ds.sample(with_replacement, fraction, seed)
        elif kind == "zip_with_index":
            ds = ds.zip_with_index().map(plus_index)
        elif kind == "cartesian":
            ds = ds.cartesian(ctx.parallelize(list(range(step[1])), 1)).map(pair_sum)
    return ds
