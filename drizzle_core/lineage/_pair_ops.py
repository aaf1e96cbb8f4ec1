"""Kernels of the key-value operations PySpark users know: values mapped in place, combiners, cogroups, outer joins.

Narrow ops keep each record's key (``map_values``, ``flat_map_values``) or
take one side of it (``keys``, ``values``). Shuffle kernels follow the
shape of ``reduce_by_key``'s and ``group_by_key``'s (``_ops``): the map
side makes one dict per key, bucketed by ``portable_hash``; the reduce side
merges the buckets in map-partition order, so the result is a function of
the lineage alone (which worker ran what never changes it).

Order of a reduce partition's records, which the tests' reference evaluator
checks: keys in the order first seen (the left side's map partitions in
order, then the right side's), values in record order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from ._ops import _NO_KEY, MapOp, _bad_record, _check_pair, bucket_dict, merge_groups


# ---------------------------------------------------------------- narrow ops
class MapValuesOp(MapOp):
    """``(k, f(v))`` for every ``(k, v)``: the key, and so the partitioning, is kept."""

    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        f = self.f
        return [(k, f(v)) for k, v in _pairs(it, "map_values")]


class FlatMapValuesOp(MapOp):
    """``(k, w)`` for every ``w`` in ``f(v)``, for every ``(k, v)``."""

    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        f = self.f
        return [(k, w) for k, v in _pairs(it, "flat_map_values") for w in f(v)]


def pair_keys(p: int, it: Iterable[Any]) -> list[Any]:
    """The key of every (key, value) record (``Dataset.keys``)."""
    return [k for k, _ in _pairs(it, "keys")]


def pair_values(p: int, it: Iterable[Any]) -> list[Any]:
    """The value of every (key, value) record (``Dataset.values``)."""
    return [v for _, v in _pairs(it, "values")]


def _pairs(it: Iterable[Any], op: str) -> Iterable[Any]:
    """``it`` as a list of records, its first checked to be a (key, value) pair (as the shuffles check it)."""
    records = it if type(it) is list else list(it)
    if records:
        _check_pair(records[0], op)
    return records


# -------------------------------------------------------------- combine_by_key
class CombineByKeySplit:
    """Map side of combine_by_key: per key, ``create_combiner`` of its first value, ``merge_value`` of the others.

    The reduce side is :class:`~drizzle_core.lineage.CombineMerge` of ``merge_combiners``
    (the combiners of each map partition merged in map order).
    """

    __slots__ = ("create_combiner", "merge_value")

    def __init__(self, create_combiner: Callable[[Any], Any], merge_value: Callable[[Any, Any], Any]) -> None:
        self.create_combiner = create_combiner
        self.merge_value = merge_value

    def __call__(self, it: Iterable[Any], R: int) -> list[dict[Any, Any]]:
        create, merge = self.create_combiner, self.merge_value
        d: dict[Any, Any] = {}
        it = iter(it)
        k: Any = _NO_KEY
        try:
            for first in it:  # at most once: the first record is checked, the others are not
                _check_pair(first, "combine_by_key")
                k, v = first
                d[k] = create(v)
                break
            for k, v in it:
                d[k] = merge(d[k], v) if k in d else create(v)
        except (TypeError, ValueError) as e:
            _bad_record(e, "combine_by_key", k)
            raise
        return bucket_dict(d, R)

    def user_functions(self) -> list[Any]:
        return [self.create_combiner, self.merge_value]

    def __reduce__(self) -> tuple[Any, ...]:
        return (CombineByKeySplit, (self.create_combiner, self.merge_value))


class ZeroThen:
    """``seq_func(deepcopy(zero_value), v)``: aggregate_by_key's and fold_by_key's ``create_combiner``.

    A fresh copy of the zero per key per map partition, as PySpark does, so a
    mutable zero (a list, a dict) updated in place is never shared by two keys.
    """

    __slots__ = ("seq_func", "zero_value")

    def __init__(self, zero_value: Any, seq_func: Callable[[Any, Any], Any]) -> None:
        self.zero_value = zero_value
        self.seq_func = seq_func

    def __call__(self, v: Any) -> Any:
        return self.seq_func(copy.deepcopy(self.zero_value), v)

    def user_functions(self) -> list[Any]:
        return [self.seq_func]

    def __reduce__(self) -> tuple[Any, ...]:
        return (ZeroThen, (self.zero_value, self.seq_func))


# ------------------------------------------------------------ cogroup, outer joins
def _cogrouped(deps: list[list[dict[Any, Any]]]) -> dict[Any, list[list[Any]]]:
    """Per key (first seen: side 0's map partitions in order, then side 1's ...), its values on each side."""
    sides = [merge_groups(blocks) for blocks in deps]
    n = len(sides)
    out: dict[Any, list[list[Any]]] = {}
    for i, side in enumerate(sides):
        for k, vs in side.items():
            groups = out.get(k)
            if groups is None:
                groups = out[k] = [[] for _ in range(n)]
            groups[i] = vs
    return out


def cogroup_merge(p: int, deps: list[list[dict[Any, Any]]]) -> list[tuple[Any, tuple[list[Any], ...]]]:
    """Reduce side of cogroup: ``(k, ([values of side 0], [values of side 1]))`` for every key of either side."""
    return [(k, tuple(groups)) for k, groups in _cogrouped(deps).items()]


class OuterJoinMerge:
    """Reduce side of the outer joins: ``(k, (v, w))`` per pair, None for the side a key is missing from.

    ``how`` is ``"left"`` (every key of the left side), ``"right"`` (of the
    right side) or ``"full"`` (of either). Keys in cogroup order, then the
    pairs of a key ``v`` by ``w``, in record order.
    """

    __slots__ = ("how",)

    def __init__(self, how: str) -> None:
        if how not in ("left", "right", "full"):
            raise ValueError(f"how must be 'left', 'right' or 'full', got {how!r}")
        self.how = how

    def __call__(self, p: int, deps: list[list[dict[Any, Any]]]) -> list[tuple[Any, tuple[Any, Any]]]:
        keep_left, keep_right = self.how in ("left", "full"), self.how in ("right", "full")
        out: list[tuple[Any, tuple[Any, Any]]] = []
        for k, (vs, ws) in _cogrouped(deps).items():
            if vs and ws:
                out.extend((k, (v, w)) for v in vs for w in ws)
            elif vs:
                if keep_left:
                    out.extend((k, (v, None)) for v in vs)
            elif keep_right:
                out.extend((k, (None, w)) for w in ws)
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (OuterJoinMerge, (self.how,))
