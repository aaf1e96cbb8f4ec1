"""Job functions of the PySpark-style actions: what each partition sends back, and how the driver combines it.

Each action runs one job whose function summarizes a partition where it
lives (a count per value, its ``num`` largest elements, its statistics), so
only the summaries cross to the driver, which combines them in partition
order. Module-level classes and functions: they pickle by reference.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._stats import StatCounter


def collect_part(it: Iterable[Any]) -> Any:
    """A partition for ``collect``: a list, or an ndarray as it is (its buffer crosses as is, not element by element).

    Why: ``list(ndarray)`` makes one numpy scalar per element, and pickling
    each (its dtype with it) was the whole cost of collecting an array:
    1.25M floats, 3.5 s to pickle as scalars against 2 ms as one array.
    """
    if type(it) is list:
        return it
    if isinstance(it, np.ndarray) and it.ndim >= 1:
        return it
    return list(it)


def concatenated(parts: list[Any]) -> Any:
    """The ``collect`` of ``parts``: one ndarray if every partition is one (and their rows agree), else a list."""
    if parts and all(isinstance(p, np.ndarray) for p in parts):
        try:
            return np.concatenate(parts)
        except ValueError:  # rows of different shapes or dimensions: a list of rows
            pass
    out: list[Any] = []
    for part in parts:
        out.extend(part)
    return out


def count_values(it: Iterable[Any]) -> dict[Any, int]:
    """How many times each element occurs in the partition (equal elements are one, shown as first seen)."""
    counts: dict[Any, int] = {}
    get = counts.get
    for x in it:
        counts[x] = get(x, 0) + 1
    return counts


def merge_counts(parts: list[dict[Any, int]]) -> defaultdict[Any, int]:
    out: defaultdict[Any, int] = defaultdict(int)
    for counts in parts:
        for x, n in counts.items():
            out[x] += n
    return out


class ForEach:
    """``f(element)`` for each element of a partition where it lives (``foreach``), or ``f(iterator)`` once
    for the partition (``foreach_partition``); only ``None`` comes back."""

    __slots__ = ("f", "whole")

    def __init__(self, f: Callable[[Any], Any], whole: bool) -> None:
        self.f = f
        self.whole = whole

    def __call__(self, it: Iterable[Any]) -> None:
        f = self.f
        if self.whole:
            f(iter(it))
            return
        for x in it:
            f(x)

    def user_functions(self) -> list[Any]:
        return [self.f]

    def __reduce__(self) -> tuple[Any, ...]:
        return (ForEach, (self.f, self.whole))


class KeyIs:
    """A pair whose key is ``key`` (``lookup``'s filter)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __call__(self, kv: Any) -> bool:
        return bool(kv[0] == self.key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyIs, (self.key,))


class FoldPartition:
    """A partition folded into a fresh copy of ``zero_value`` with ``op`` (``fold``'s and ``aggregate``'s).

    A deep copy per call, as PySpark's zero arrives anew with each
    partition's task: ``op`` may update its first argument in place and
    return it (a mutable accumulator, no allocation per element) without two
    partitions of one worker sharing it. The elements are only ever ``op``'s
    second argument: a cached partition is never changed.
    """

    __slots__ = ("op", "zero_value")

    def __init__(self, zero_value: Any, op: Callable[[Any, Any], Any]) -> None:
        self.zero_value = zero_value
        self.op = op

    def __call__(self, it: Iterable[Any]) -> Any:
        acc = copy.deepcopy(self.zero_value)
        op = self.op
        for x in it:
            acc = op(acc, x)
        return acc

    def user_functions(self) -> list[Any]:
        return [self.op]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FoldPartition, (self.zero_value, self.op))


class FoldEach(FoldPartition):
    """:class:`FoldPartition` as a partition of one element (``tree_aggregate``'s first level)."""

    __slots__ = ()

    def __call__(self, it: Iterable[Any]) -> list[Any]:
        return [super().__call__(it)]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FoldEach, (self.zero_value, self.op))


class ByIndex:
    """Partition p's elements keyed ``p % n``: ``tree_aggregate``'s fan-in from one level to the next."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, p: int, part: Iterable[Any]) -> list[tuple[int, Any]]:
        k = p % self.n
        return [(k, x) for x in part]

    def __reduce__(self) -> tuple[Any, ...]:
        return (ByIndex, (self.n,))


class Defined:
    """``tree_reduce``'s combination of ``(value, is_dummy)`` pairs: a dummy (an empty partition's) is nothing."""

    __slots__ = ("f",)

    def __init__(self, f: Callable[[Any, Any], Any]) -> None:
        self.f = f

    def __call__(self, a: tuple[Any, bool], b: tuple[Any, bool]) -> tuple[Any, bool]:
        if a[1]:
            return b
        if b[1]:
            return a
        return self.f(a[0], b[0]), False

    def user_functions(self) -> list[Any]:
        return [self.f]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Defined, (self.f,))


def undummied(x: Any) -> tuple[Any, bool]:
    """An element as ``tree_reduce`` carries it: a real value, not an empty partition's dummy."""
    return (x, False)


class Extreme:
    """A partition's ``(True, max)`` (or min), by ``key``; ``(False, None)`` for an empty one."""

    __slots__ = ("key", "largest")

    def __init__(self, largest: bool, key: Callable[[Any], Any] | None) -> None:
        self.largest = largest
        self.key = key

    def __call__(self, it: Iterable[Any]) -> tuple[bool, Any]:
        if self.key is None and isinstance(it, np.ndarray) and it.ndim == 1:
            if len(it) == 0:
                return False, None
            return True, it.max() if self.largest else it.min()
        sentinel = object()
        pick = max if self.largest else min
        value = pick(it, key=self.key, default=sentinel) if self.key is not None else pick(it, default=sentinel)
        return (False, None) if value is sentinel else (True, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Extreme, (self.largest, self.key))


class Ordered:
    """A partition's ``num`` largest (``top``) or smallest (``take_ordered``) elements, by ``key``, in that order."""

    __slots__ = ("key", "largest", "num")

    def __init__(self, num: int, largest: bool, key: Callable[[Any], Any] | None) -> None:
        self.num = num
        self.largest = largest
        self.key = key

    def __call__(self, it: Iterable[Any]) -> list[Any]:
        pick = heapq.nlargest if self.largest else heapq.nsmallest
        return pick(self.num, it, key=self.key)

    def merged(self, parts: list[list[Any]]) -> list[Any]:
        """The ``num`` first of every partition's, as one sorted list (ties: the earlier partition first)."""
        pick = heapq.nlargest if self.largest else heapq.nsmallest
        return pick(self.num, itertools.chain.from_iterable(parts), key=self.key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ordered, (self.num, self.largest, self.key))


def partition_stats(it: Iterable[Any]) -> StatCounter:
    return StatCounter(it)


class KeySample:
    """For sort_by_key's range bounds: a partition's record count and up to ``size`` of its keys (``keyfunc``'d),
    evenly spaced through it (deterministic: no random draw, so a recomputation picks the same)."""

    __slots__ = ("keyfunc", "size")

    def __init__(self, size: int, keyfunc: Callable[[Any], Any] | None) -> None:
        self.size = size
        self.keyfunc = keyfunc

    def __call__(self, it: Iterable[Any]) -> tuple[int, list[Any]]:
        records = it if type(it) is list else list(it)
        n = len(records)
        if n <= self.size:
            picked = records
        else:
            step = n / self.size
            picked = [records[int((i + 0.5) * step)] for i in range(self.size)]
        f = self.keyfunc
        try:
            keys = [rec[0] for rec in picked]
        except (TypeError, IndexError, KeyError):
            raise TypeError(f"sort_by_key needs (key, value) pairs; got a {type(picked[0]).__name__} "
                            f"{picked[0]!r:.60}: use .key_by(f) or sort_by(f) first") from None
        return n, keys if f is None else [f(k) for k in keys]

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeySample, (self.size, self.keyfunc))


def range_bounds(samples: list[tuple[int, list[Any]]], R: int) -> list[Any]:
    """R - 1 bounds splitting the sampled keys into R ranges of about equal weight (Spark's determineBounds).

    A key sampled from a partition of n records of which s were sampled
    stands for n / s records; bound i is the first key at which the
    cumulative weight passes (i + 1) / R of the total.
    """
    weighted = [(k, n / len(keys)) for n, keys in samples if keys for k in keys]
    if not weighted or R == 1:
        return []
    try:
        weighted.sort(key=_first)
    except TypeError as e:
        raise TypeError(f"sort_by_key: the keys must be orderable with <, but {e}") from None
    total = math.fsum(w for _, w in weighted)
    bounds: list[Any] = []
    cumulative, step = 0.0, total / R
    target = step
    for k, w in weighted:
        cumulative += w
        if cumulative >= target and len(bounds) < R - 1:
            if not bounds or bounds[-1] < k:  # equal bounds would leave a reducer empty
                bounds.append(k)
            target += step
    return bounds


def _first(kw: tuple[Any, float]) -> Any:
    return kw[0]
