"""Kernels of sort_by_key: a range partitioner (the map side) and a sort within each partition (the reduce side).

As in Spark: a job first samples the keys and picks R - 1 bounds (the
driver does it, in ``drizzle_core.api``); the map side sends a record whose
key ``k`` falls at ``bisect_left(bounds, keyfunc(k))`` to that reducer
(counted from the other end when descending), so every key of reducer r
orders before every key of reducer r + 1; each reducer concatenates its
buckets in map-partition order and sorts them by ``keyfunc(k)`` with a
stable sort, so records of equal keys keep their lineage order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

from ._ops import _check_pair


class RangeSplit:
    """Map side of sort_by_key: each (key, value) record to the reducer whose range holds ``keyfunc(key)``."""

    __slots__ = ("ascending", "bounds", "keyfunc")

    def __init__(self, bounds: list[Any], ascending: bool, keyfunc: Callable[[Any], Any] | None) -> None:
        self.bounds = bounds
        self.ascending = ascending
        self.keyfunc = keyfunc

    def reducer_of(self, key: Any, R: int) -> int:
        """The reduce partition of ``key`` among ``R``."""
        r = bisect.bisect_left(self.bounds, key if self.keyfunc is None else self.keyfunc(key))
        return min(r, R - 1) if self.ascending else max(R - 1 - r, 0)

    def __call__(self, it: Iterable[Any], R: int) -> list[list[Any]]:
        records = it if type(it) is list else list(it)
        if records:
            _check_pair(records[0], "sort_by_key")
        buckets: list[list[Any]] = [[] for _ in range(R)]
        if R == 1:
            buckets[0] = records
            return buckets
        where = self.reducer_of
        for rec in records:
            buckets[where(rec[0], R)].append(rec)
        return buckets

    def user_functions(self) -> list[Any]:
        return [] if self.keyfunc is None else [self.keyfunc]

    def __reduce__(self) -> tuple[Any, ...]:
        return (RangeSplit, (self.bounds, self.ascending, self.keyfunc))


class SortMerge:
    """Reduce side of sort_by_key: the buckets in map order, stable-sorted by ``keyfunc(key)``."""

    __slots__ = ("ascending", "keyfunc")

    def __init__(self, ascending: bool, keyfunc: Callable[[Any], Any] | None) -> None:
        self.ascending = ascending
        self.keyfunc = keyfunc

    def __call__(self, p: int, deps: list[list[list[Any]]]) -> list[Any]:
        out = [rec for bucket in deps[0] for rec in bucket]
        f = self.keyfunc
        if f is None:
            out.sort(key=_first, reverse=not self.ascending)
        else:
            out.sort(key=lambda rec: f(rec[0]), reverse=not self.ascending)
        return out

    def user_functions(self) -> list[Any]:
        return [] if self.keyfunc is None else [self.keyfunc]

    def __reduce__(self) -> tuple[Any, ...]:
        return (SortMerge, (self.ascending, self.keyfunc))


def _first(rec: Any) -> Any:
    return rec[0]
