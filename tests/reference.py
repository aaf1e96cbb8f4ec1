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
    ``w`` of the right, in that order (keys in the left side's order);
  - ``combine_by_key(create, merge_value, merge_combiners)`` (and
    ``aggregate_by_key``/``fold_by_key``, whose ``create`` is
    ``seq(deepcopy(zero), v)``): per map partition ``create`` of a key's first
    value, ``merge_value`` of the others; the partials merged in map order;
  - ``cogroup``: ``(k, ([left values], [right values]))``, keys first seen on
    the left, then those only on the right; the outer joins: the cogroup's
    keys, ``(k, (v, w))`` per pair, None for a missing side (left: keys
    with left values, right: with right values, full: all);

* shuffles by position (``repartition``, ``coalesce``, ``cartesian``): record
  j of map partition m goes to ``(m + j) % R``; partition m to ``m * R // M``;
  reducer ``i * N + j`` is every ``(a, b)`` of left partition i, right j.
* ``sort_by_key``: a record goes to ``bisect_left(bounds, keyfunc(k))``
  (``R - 1 -`` that when descending), the bounds read from the lineage (the
  driver sampled them); each reducer stably sorts its records (map order)
  by ``keyfunc(k)``.
* ``sample``: partition p's generator is ``numpy.random.default_rng([seed
  mod 2**64, p])``; record j kept when draw j of ``random(n)`` is below the
  fraction, or repeated ``poisson(fraction, n)[j]`` times with replacement.
* ``zip_with_index``: ``(x, i)``, i counted over all partitions in order (from
  this file's own partitions, not the engine's counts).
* ``text_file``: the lines (without ``\n``, ``\r\n``) whose first byte lies in
  each split, read here from the file.

Evaluation is iterative (an explicit stack): a lineage 10,000 deep is fine.
An operation this file does not know is an error, never delegated to the engine.
"""

from __future__ import annotations

import bisect
import copy
import gzip
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from drizzle_core import Dataset, portable_hash
from drizzle_core.lineage import (
    BroadcastZipNode,
    CartesianSplit,
    CoalesceSplit,
    CombineByKeySplit,
    CombineMerge,
    CombineSplit,
    FilterOp,
    FlatMapOp,
    FlatMapValuesOp,
    KeyByOp,
    MapOp,
    MapPartitionsOp,
    MapPartitionsWithIndexOp,
    MapValuesOp,
    NarrowNode,
    OuterJoinMerge,
    RangeSplit,
    ReadTextOp,
    SampleOp,
    ShuffleReadNode,
    SortMerge,
    SourceNode,
    UnionNode,
    ZeroThen,
    ZipNode,
    ZipOp,
    ZipWithIndexOp,
    cartesian_merge,
    chain_merge,
    cogroup_merge,
    group_merge,
    group_split,
    join_merge,
    pair_keys,
    pair_values,
    round_robin_split,
    tag_partition,
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
    if kind is NarrowNode and type(node.fn) is ZipWithIndexOp:  # indexes from this file's own counts
        starts = [sum(len(part) for part in parents[0][:p]) for p in range(len(parents[0]))]
        return [[(x, start + j) for j, x in enumerate(part)] for start, part in zip(starts, parents[0])]
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
    if op is MapValuesOp:
        f = fn.f
        return [(k, f(v)) for k, v in part]
    if op is FlatMapValuesOp:
        f = fn.f
        return [(k, w) for k, v in part for w in f(v)]
    if fn is pair_keys:
        return [k for k, _ in part]
    if fn is pair_values:
        return [v for _, v in part]
    if fn is tag_partition:
        return [(p, list(part))]
    if op is SampleOp:
        return _sample(fn, p, list(part))
    if op is ReadTextOp:
        return [line for split in part for line in _read_split(*split, fn.use_unicode)]
    if _is_engine_code(fn):
        raise TypeError(f"the reference evaluator does not know the operation {op.__qualname__}")
    # map_partitions(f, with_index=True) keeps the user's f itself as the node's function
    return list(fn(p, list(part)))


def _sample(op: SampleOp, p: int, part: list[Any]) -> list[Any]:
    rng = np.random.default_rng([op.seed % 2**64, p])
    if op.with_replacement:
        counts = rng.poisson(op.fraction, len(part))
        return [x for x, c in zip(part, counts) for _ in range(int(c))]
    draws = rng.random(len(part))
    return [x for x, u in zip(part, draws) if u < op.fraction]


def _read_split(path: str, start: int, end: int, whole: bool, use_unicode: bool) -> list[Any]:
    """The lines whose first byte is in [start, end) (all when ``whole``): the file read whole, here."""
    if whole:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
        start, end = 0, len(data)
    else:
        with open(path, "rb") as f:
            data = f.read()
    # cut at \n only (bytes.splitlines would cut at a lone \r, \x0b ... too)
    lines, offset = [], 0
    for piece in data.split(b"\n"):
        if offset >= len(data):
            break
        ended = offset + len(piece) < len(data)  # by a \n: a \r before it goes too
        lines.append((offset, piece[:-1] if ended and piece.endswith(b"\r") else piece))
        offset += len(piece) + 1
    out = []
    for first_byte, piece in lines:
        if start <= first_byte < end:
            out.append(piece.decode("utf-8") if use_unicode else piece)
    return out


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
    if type(merge) is CombineMerge and len(splits) == 1 and type(splits[0]) is CombineByKeySplit:
        return _by_reducer(_combine_by_key(parents[0], splits[0], merge.f), R)
    if splits == [group_split, group_split] and (merge is cogroup_merge or type(merge) is OuterJoinMerge):
        groups = _cogroup(parents[0], parents[1])
        if merge is cogroup_merge:
            return _by_reducer({k: (vs, ws) for k, (vs, ws) in groups.items()}, R)
        return [[(k, pair) for k, pairs in part for pair in pairs]
                for part in _by_reducer(_outer(groups, merge.how), R)]
    if merge is chain_merge and splits == [round_robin_split]:
        out: Partitions = [[] for _ in range(R)]
        for (m, records), in parents[0]:
            for j, x in enumerate(records):
                out[(m + j) % R].append(x)
        return out
    if merge is chain_merge and len(splits) == 1 and type(splits[0]) is CoalesceSplit:
        out = [[] for _ in range(R)]
        M = len(parents[0])
        for (m, records), in parents[0]:
            out[m * R // M].extend(records)
        return out
    if merge is cartesian_merge and [type(s) for s in splits] == [CartesianSplit, CartesianSplit]:
        left = [records for (_, records), in parents[0]]
        right = [records for (_, records), in parents[1]]
        return [[(a, b) for a in left[i] for b in right[j]] for i in range(len(left)) for j in range(len(right))]
    if type(merge) is SortMerge and len(splits) == 1 and type(splits[0]) is RangeSplit:
        return _sort_by_key(parents[0], splits[0].bounds, merge.ascending, merge.keyfunc, R)
    raise TypeError(f"the reference evaluator does not know the shuffle {node.label}")


def _combine_by_key(parent: Partitions, split: Any, merge_combiners: Callable[[Any, Any], Any]) -> dict[Any, Any]:
    create, merge_value = split.create_combiner, split.merge_value
    if type(create) is ZeroThen:  # aggregate_by_key / fold_by_key: a fresh copy of the zero per key
        zero, seq = create.zero_value, create.seq_func

        def create(v):
            return seq(copy.deepcopy(zero), v)
    out: dict[Any, Any] = {}
    for part in parent:
        partial: dict[Any, Any] = {}
        for k, v in part:
            partial[k] = merge_value(partial[k], v) if k in partial else create(v)
        for k, c in partial.items():
            out[k] = merge_combiners(out[k], c) if k in out else c
    return out


def _cogroup(left: Partitions, right: Partitions) -> dict[Any, tuple[list[Any], list[Any]]]:
    lg, rg = _group_by_key(left), _group_by_key(right)
    keys = list(lg) + [k for k in rg if k not in lg]
    return {k: (lg.get(k, []), rg.get(k, [])) for k in keys}


def _outer(groups: dict[Any, tuple[list[Any], list[Any]]], how: str) -> dict[Any, list[tuple[Any, Any]]]:
    out: dict[Any, list[tuple[Any, Any]]] = {}
    for k, (vs, ws) in groups.items():
        if (how == "left" and not vs) or (how == "right" and not ws):
            continue
        out[k] = [(v, w) for v in (vs or [None]) for w in (ws or [None])]
    return out


def _sort_by_key(parent: Partitions, bounds: list[Any], ascending: bool, keyfunc: Any, R: int) -> Partitions:
    def key(k):
        return k if keyfunc is None else keyfunc(k)
    out: Partitions = [[] for _ in range(R)]
    for part in parent:
        for rec in part:
            r = bisect.bisect_left(bounds, key(rec[0]))
            out[min(r, R - 1) if ascending else max(R - 1 - r, 0)].append(rec)
    for records in out:
        records.sort(key=lambda rec: key(rec[0]), reverse=not ascending)
    return out


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
