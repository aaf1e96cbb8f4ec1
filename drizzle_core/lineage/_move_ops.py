"""Kernels that move whole partitions or records by position, not by key: coalesce, repartition, cartesian.

A shuffle's split sees a partition and the number of reduce partitions,
not which map partition it is. These operations route by that index, so
the map side first wraps each partition into one record, ``(p, partition)``
(:func:`tag_partition`, a narrow op, which does know ``p``), and the split
reads the index from it.

* coalesce: map partition m goes whole to reducer ``m * R // M``, so each
  reducer concatenates a contiguous run of partitions, in order (the
  elements keep their global order, as with Spark's coalesce).
* repartition: record j of map partition m goes to reducer ``(m + j) % R``
  (round robin, each map partition starting one reducer further on than the
  one before, so many small partitions spread evenly too).
* cartesian: partition i of the left side (M partitions) is sent to the
  reducers ``i * N + j`` for every j < N, and partition j of the right side
  (N partitions) to ``i * N + j`` for every i < M; reducer ``i * N + j`` pairs
  every element of left partition i with every element of right partition j.

ndarray partitions stay ndarrays through coalesce and repartition (row
slices, concatenated on the reduce side), so vectorized code after them
keeps its speed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def tag_partition(p: int, it: Iterable[Any]) -> list[tuple[int, Any]]:
    """Partition ``p`` as one record ``(p, partition)`` (a list, or the ndarray it is)."""
    return [(p, it if type(it) is list or isinstance(it, np.ndarray) else list(it))]


def _tagged(it: Iterable[Any]) -> tuple[int, Any]:
    (record,) = it  # what tag_partition made: one record
    m, part = record
    return int(m), part


class CoalesceSplit:
    """Map partition m of ``num_map`` goes whole to reduce partition ``m * R // num_map``."""

    __slots__ = ("num_map",)

    def __init__(self, num_map: int) -> None:
        self.num_map = num_map

    def __call__(self, it: Iterable[Any], R: int) -> list[list[Any]]:
        m, part = _tagged(it)
        buckets: list[list[Any]] = [[] for _ in range(R)]
        buckets[m * R // self.num_map].append(part)
        return buckets

    def __reduce__(self) -> tuple[Any, ...]:
        return (CoalesceSplit, (self.num_map,))


def round_robin_split(it: Iterable[Any], R: int) -> list[list[Any]]:
    """Record j of map partition m to reduce partition ``(m + j) % R``; each bucket is ``[its records]``."""
    m, part = _tagged(it)
    if not isinstance(part, np.ndarray):
        part = list(part)
    # reducer r gets records j = (r - m) mod R, (r - m) mod R + R, ...: a strided slice, in order
    return [[part[(r - m) % R::R]] for r in range(R)]


def chain_merge(p: int, deps: list[list[list[Any]]]) -> Any:
    """Reduce side of coalesce and repartition: the parts of every bucket, in map order, concatenated.

    All ndarrays: one ndarray (rows concatenated); else a list.
    """
    parts = [part for bucket in deps[0] for part in bucket]
    if parts and all(isinstance(part, np.ndarray) for part in parts):
        try:
            return np.concatenate(parts)
        except ValueError:  # rows of different shapes: a list of rows, like any other dataset
            pass
    out: list[Any] = []
    for part in parts:
        out.extend(part)
    return out


class CartesianSplit:
    """One side of cartesian: left partition i to reducers ``i * N + j``, right partition j to ``i * N + j``.

    ``side`` is 0 (left) or 1 (right); ``left``/``right`` are the two partition counts, M and N.
    """

    __slots__ = ("left", "right", "side")

    def __init__(self, side: int, left: int, right: int) -> None:
        self.side = side
        self.left = left
        self.right = right

    def __call__(self, it: Iterable[Any], R: int) -> list[list[Any]]:
        m, part = _tagged(it)
        part = list(part)
        buckets: list[list[Any]] = [[] for _ in range(R)]
        targets = (range(m * self.right, (m + 1) * self.right) if self.side == 0
                   else range(m, self.left * self.right, self.right))
        for r in targets:
            buckets[r] = part  # the same list for every reducer: it is only read
        return buckets

    def __reduce__(self) -> tuple[Any, ...]:
        return (CartesianSplit, (self.side, self.left, self.right))


def cartesian_merge(p: int, deps: list[list[list[Any]]]) -> list[tuple[Any, Any]]:
    """Reducer ``i * N + j``: ``(a, b)`` for every a of left partition i, then every b of right partition j."""
    left = [a for bucket in deps[0] for a in bucket]
    right = [b for bucket in deps[1] for b in bucket]
    return [(a, b) for a in left for b in right]
