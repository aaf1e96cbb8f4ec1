"""A tiny sequential evaluator of Dataset lineage: the correctness oracle.

It recomputes a dataset's partitions in plain Python, with no scheduler,
no workers, no caching and no group scheduling — and none of the engine's
kernels. It reads the lineage's *structure* only: node types, parents, the
number of partitions, and the user's function each operation holds (the
op's ``f``); what an operation does with them is written here again, per
operation, from its documented meaning. So a bug in a kernel of
``drizzle_core.lineage._ops`` (a key dropped in a merge, a key routed to the
wrong reducer, values out of order) makes the engine disagree with this
file, instead of being repeated by it (tests/test_reference.py shows it
does).

The one piece of the engine it uses is the documented contract of where a
key goes: reduce partition ``portable_hash(key) % R``.

Semantics, per operation (partitions are lists; order is part of the result):

* ``map`` / ``filter`` / ``flat_map`` / ``key_by``: element by element, in order.
* ``map_partitions(f)``: ``f(partition)``; with ``with_index``: ``f(p, partition)``.
* ``union``: the partitions of each parent, in order. ``zip_partitions(f)``:
  ``f(a_p, b_p)``; ``zip_broadcast(f)``: ``f(a_p, small_0)``.
* shuffles — records of every map partition in order (partition, then
  record): keys that are equal (``==``) are one key, shown as first seen,
  and go to reduce partition ``portable_hash(key) % R``, which lists its keys
  in the order they were first seen:

  - ``reduce_by_key(f)``: each map partition's values of a key folded in
    record order, then those partials folded in map-partition order;
  - ``group_by_key``: ``(key, [values in record order])``;
  - ``join``: ``(k, (v, w))`` for every value ``v`` of the left side and
    ``w`` of the right, in that order (keys in the left side's order).

Evaluation is iterative (an explicit stack): a lineage 10,000 deep is fine.
An operation this file does not know is an error, never delegated to the engine.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from drizzle_core import Dataset, portable_hash
from drizzle_core.lineage import (
    BroadcastZipNode,
    CombineMerge,
    CombineSplit,
    FilterOp,
    FlatMapOp,
    KeyByOp,
    MapOp,
    MapPartitionsOp,
    MapPartitionsWithIndexOp,
    NarrowNode,
    ShuffleReadNode,
    SourceNode,
    UnionNode,
    ZipNode,
    ZipOp,
    group_merge,
    group_split,
    join_merge,
)

Partitions = list[list[Any]]


def partitions(ds: Dataset) -> Partitions:
    """Every partition of ``ds`` as a list, computed sequentially (explicit stack, parents first)."""
    memo: dict[int, Partitions] = {}
    stack: list[tuple[Dataset, bool]] = [(ds, False)]
    while stack:
        d, expanded = stack.pop()
        if d.id in memo:
            continue
        if not expanded:
            stack.append((d, True))
            stack.extend((p, False) for p in d.parents if p.id not in memo)
            continue
        memo[d.id] = _evaluate(d, [memo[p.id] for p in d.parents])
    return memo[ds.id]


def collect(ds: Dataset) -> list[Any]:
    return [x for part in partitions(ds) for x in part]


# ------------------------------------------------------------- one dataset
def _evaluate(d: Dataset, parents: list[Partitions]) -> Partitions:
    node = d.node
    kind = type(node)
    if kind is SourceNode:
        return [list(part) for part in node.partitions]
    if kind is NarrowNode:
        return [_narrow(node.fn, p, part) for p, part in enumerate(parents[0])]
    if kind is UnionNode:
        return [list(part) for parent in parents for part in parent]
    if kind is ZipNode:
        f = _user_function(node.fn, ZipOp, node)
        return [list(f(list(a), list(b))) for a, b in zip(parents[0], parents[1], strict=True)]
    if kind is BroadcastZipNode:
        f = _user_function(node.fn, ZipOp, node)
        (small,) = parents[1]
        return [list(f(list(a), list(small))) for a in parents[0]]
    if kind is ShuffleReadNode:
        return _shuffle(node, parents)
    raise TypeError(f"the reference evaluator does not know {kind.__name__} ({node.label})")


def _narrow(fn: Any, p: int, part: list[Any]) -> list[Any]:
    op = type(fn)
    if op is MapOp:
        f = fn.f
        return [f(x) for x in part]
    if op is FilterOp:
        f = fn.f
        return [x for x in part if f(x)]
    if op is FlatMapOp:
        f = fn.f
        return [y for x in part for y in f(x)]
    if op is KeyByOp:
        f = fn.f
        return [(f(x), x) for x in part]
    if op is MapPartitionsOp:
        return list(fn.f(list(part)))
    if op is MapPartitionsWithIndexOp:
        return list(fn.f(p, list(part)))
    if _is_engine_code(fn):
        raise TypeError(f"the reference evaluator does not know the operation {op.__qualname__}")
    # map_partitions(f, with_index=True) keeps the user's f itself as the node's function
    return list(fn(p, list(part)))


def _user_function(fn: Any, op: type, node: Any) -> Callable[..., Any]:
    if type(fn) is not op:
        raise TypeError(f"the reference evaluator does not know {type(fn).__qualname__} in {node.label}")
    return fn.f


def _is_engine_code(fn: Any) -> bool:
    """Whether ``fn`` (a function, or an object of a class) is drizzle_core's own: an op to re-implement."""
    module = (fn.__module__ if isinstance(fn, types.FunctionType) else type(fn).__module__) or ""
    return module == "drizzle_core" or module.startswith("drizzle_core.")


# ----------------------------------------------------------------- shuffles
def _shuffle(node: ShuffleReadNode, parents: list[Partitions]) -> Partitions:
    for dep in node.deps:
        if dep.local_combine is not None:
            raise TypeError(f"the reference evaluator does not know pre-combined shuffles ({node.label})")
    splits = [dep.split for dep in node.deps]
    merge = node.merge
    R = node.num_partitions
    if type(merge) is CombineMerge and len(splits) == 1 and type(splits[0]) is CombineSplit:
        by_key = _reduce_by_key(parents[0], merge.f)
        return _by_reducer(by_key, R)
    if merge is group_merge and splits == [group_split]:
        return _by_reducer(_group_by_key(parents[0]), R)
    if merge is join_merge and splits == [group_split, group_split]:
        left, right = _group_by_key(parents[0]), _group_by_key(parents[1])
        joined = {k: [(v, w) for v in vs for w in right[k]] for k, vs in left.items() if k in right}
        return [[(k, pair) for k, pairs in part for pair in pairs] for part in _by_reducer(joined, R)]
    raise TypeError(f"the reference evaluator does not know the shuffle {node.label}")


def _reduce_by_key(parent: Partitions, f: Callable[[Any, Any], Any]) -> dict[Any, Any]:
    """Per map partition, each key's values folded in record order; then the partials, in partition order."""
    out: dict[Any, Any] = {}
    for part in parent:
        partial: dict[Any, Any] = {}
        for k, v in part:
            partial[k] = f(partial[k], v) if k in partial else v
        for k, v in partial.items():
            out[k] = f(out[k], v) if k in out else v
    return out


def _group_by_key(parent: Partitions) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for part in parent:
        for k, v in part:
            out.setdefault(k, []).append(v)
    return out


def _by_reducer(by_key: dict[Any, Any], R: int) -> Partitions:
    """``(key, value)`` pairs of reduce partition r = those whose key hashes to r, in first-seen order."""
    out: Partitions = [[] for _ in range(R)]
    for k, v in by_key.items():
        out[portable_hash(k) % R].append((k, v))
    return out
