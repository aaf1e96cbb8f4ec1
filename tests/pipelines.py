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
              st.integers(1, 5), st.sampled_from(KEY_KINDS)),
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
            _, k, how, n, keys = step
            pairs = ds.key_by(lambda x, k=k, keys=keys: make_key(keys, x % k, x))
            if how == "reduce":
                pairs = pairs.reduce_by_key(operator.add, n)
            elif how == "group":
                pairs = pairs.group_by_key(n).map(sum_values)
            else:
                other = ds.map(lambda x, k=k, keys=keys: (make_key(keys, x % k, x + 1), 1))
                pairs = pairs.join(other.reduce_by_key(add, max(1, n - 1)), n).map(sum_pair)
            ds = pairs.map(value)
    return ds
