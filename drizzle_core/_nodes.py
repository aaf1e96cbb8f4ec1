"""Nodes: the flat, picklable description of how one dataset is computed.

A driver-side :class:`~drizzle_core.Dataset` owns one node. Nodes refer to
their parents by *id*, never by object, so a group's program is a flat
``{node_id: node}`` table: pickling it does not recurse down the lineage (a
10,000-step lineage would blow the pickler's recursion limit otherwise), and a
worker can evaluate it with an explicit stack.

Kinds of node and what a partition ``p`` of them needs:

* ``SourceNode`` — the data itself (``parallelize``); needs nothing.
* ``NarrowNode`` — ``fn(p, parent_partition)``; needs parent partition ``p``.
* ``UnionNode`` — partition ``p`` is one partition of one parent.
* ``ZipNode`` — ``fn(p, a, b)`` over partition ``p`` of two parents.
* ``ShuffleReadNode`` — the reduce side of one or more shuffle dependencies;
  needs bucket ``p`` of every map partition of each dependency.

A partition's value is any iterable: a list, or, for numpy input, the row
slice itself, so ``map_partitions`` and job functions get the array as is.
"""

from __future__ import annotations

import itertools
import reprlib
from collections.abc import Callable, Iterable, Mapping, Set
from typing import Any

from ._partitioner import portable_hash


class Node:
    """Base class: identity, partition count and a human label for errors."""

    __slots__ = ("id", "label", "num_partitions")

    def __init__(self, id: int, num_partitions: int, label: str) -> None:
        self.id = id
        self.num_partitions = num_partitions
        self.label = label

    #: indexes into narrow_inputs() of small inputs every partition reads (they
    #: follow the data to its worker, never the other way round)
    broadcast_inputs: tuple[int, ...] = ()

    def narrow_inputs(self, p: int) -> tuple[tuple[int, int], ...]:
        """(parent node id, parent partition) pairs partition ``p`` reads."""
        return ()

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        raise NotImplementedError

    def user_functions(self) -> list[Any]:
        """User callables inside this node (to name one that fails to pickle)."""
        return []

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, s) for c in type(self).__mro__ for s in getattr(c, "__slots__", ()))

    def __setstate__(self, state: tuple) -> None:
        names = [s for c in type(self).__mro__ for s in getattr(c, "__slots__", ())]
        for name, value in zip(names, state):
            setattr(self, name, value)


class SourceNode(Node):
    """The data itself. ``start_at`` (epoch seconds): tasks reading it start no
    earlier — a micro-batch's source tasks are launched ahead of time and wait
    on their worker for the batch's time to come, not on the driver."""

    __slots__ = ("partitions", "start_at")

    def __init__(self, id: int, partitions: list[Any], label: str, start_at: float | None = None) -> None:
        super().__init__(id, len(partitions), label)
        self.partitions = partitions
        self.start_at = start_at

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        return self.partitions[p]


class NarrowNode(Node):
    """One-to-one: partition ``p`` is ``fn(p, parent partition p)``."""

    __slots__ = ("fn", "parent")

    def __init__(self, id: int, parent: Node, fn: Callable[[int, Any], Iterable[Any]], label: str) -> None:
        super().__init__(id, parent.num_partitions, label)
        self.parent = parent.id
        self.fn = fn

    def narrow_inputs(self, p: int) -> tuple[tuple[int, int], ...]:
        return ((self.parent, p),)

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        return self.fn(p, parents[0])

    def user_functions(self) -> list[Any]:
        # An engine op may name the user callables it wraps (a stream source's
        # reader names the user's generator), so an error names those.
        inner = getattr(self.fn, "user_functions", None)
        return list(inner()) if callable(inner) else [self.fn]


class UnionNode(Node):
    __slots__ = ("counts", "parents")

    def __init__(self, id: int, parents: list[Node], label: str) -> None:
        counts = tuple(n.num_partitions for n in parents)
        super().__init__(id, sum(counts), label)
        self.parents = tuple(n.id for n in parents)
        self.counts = counts

    def narrow_inputs(self, p: int) -> tuple[tuple[int, int], ...]:
        for parent, count in zip(self.parents, self.counts):
            if p < count:
                return ((parent, p),)
            p -= count
        raise IndexError(p)

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        return parents[0]


class ZipNode(Node):
    """Partition ``p`` is ``fn(p, a_p, b_p)``: co-partitioned state updates."""

    __slots__ = ("fn", "parents")

    def __init__(self, id: int, a: Node, b: Node, fn: Callable[..., Iterable[Any]], label: str) -> None:
        super().__init__(id, a.num_partitions, label)
        self.parents = (a.id, b.id)
        self.fn = fn

    def narrow_inputs(self, p: int) -> tuple[tuple[int, int], ...]:
        return ((self.parents[0], p), (self.parents[1], p))

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        return self.fn(p, parents[0], parents[1])

    def user_functions(self) -> list[Any]:
        return [self.fn]


class BroadcastZipNode(Node):
    """Partition ``p`` is ``fn(p, data_p, state_0)``: every partition reads one small
    single-partition dataset (a model, a state), which the planner forwards to
    each worker once per iteration."""

    __slots__ = ("fn", "parents")
    broadcast_inputs = (1,)

    def __init__(self, id: int, data: Node, state: Node, fn: Callable[..., Iterable[Any]], label: str) -> None:
        super().__init__(id, data.num_partitions, label)
        self.parents = (data.id, state.id)
        self.fn = fn

    def narrow_inputs(self, p: int) -> tuple[tuple[int, int], ...]:
        return ((self.parents[0], p), (self.parents[1], 0))

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        return self.fn(p, parents[0], parents[1])

    def user_functions(self) -> list[Any]:
        return [self.fn]


class ShuffleDep:
    """A shuffle dependency: the map side splits each parent partition.

    ``split(partition, R)`` returns R buckets, bucket r for reduce partition r.
    ``shuffle_id`` identifies the dependency for the life of the driver.
    With ``local_combine(a, b)``, each worker first folds the buckets of all
    its map tasks (in partition order) and sends one block per reduce
    partition instead of one per map task: a per-worker tree reduction.
    """

    __slots__ = ("local_combine", "num_map_partitions", "parent", "shuffle_id", "split")

    def __init__(self, shuffle_id: int, parent: Node, split: Callable[[Any, int], list[Any]],
                 local_combine: Callable[[Any, Any], Any] | None = None) -> None:
        self.shuffle_id = shuffle_id
        self.parent = parent.id
        self.num_map_partitions = parent.num_partitions
        self.split = split
        self.local_combine = local_combine

    def __getstate__(self) -> tuple:
        return (self.shuffle_id, self.parent, self.num_map_partitions, self.split, self.local_combine)

    def __setstate__(self, state: tuple) -> None:
        self.shuffle_id, self.parent, self.num_map_partitions, self.split, self.local_combine = state


class ShuffleReadNode(Node):
    """Reduce side: ``merge(p, [[bucket per map partition] per dependency])``."""

    __slots__ = ("deps", "merge")

    def __init__(self, id: int, deps: tuple[ShuffleDep, ...], merge: Callable[..., Iterable[Any]],
                 num_partitions: int, label: str) -> None:
        super().__init__(id, num_partitions, label)
        self.deps = deps
        self.merge = merge

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        return self.merge(p, parents)

    def user_functions(self) -> list[Any]:
        return [self.merge] + [d.split for d in self.deps]


# ---------------------------------------------------------------- narrow ops
# Module-level callables (pickled by reference, not by value) wrapping the
# user's function, so a group's program carries only the user's code.


class MapOp:
    __slots__ = ("f",)

    def __init__(self, f: Callable[[Any], Any]) -> None:
        self.f = f

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return map(self.f, it)

    def __reduce__(self):
        return (type(self), (self.f,))


class FilterOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return filter(self.f, it)


class FlatMapOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return itertools.chain.from_iterable(map(self.f, it))


class KeyByOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        f = self.f
        return ((f(x), x) for x in it)


class MapPartitionsOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return self.f(it)


class MapPartitionsWithIndexOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return self.f(p, it)


class ZipOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, a: Iterable[Any], b: Iterable[Any]) -> Iterable[Any]:
        return self.f(a, b)


# -------------------------------------------------------------- shuffle ops
# The map side of a shuffle unpacks every record as ``k, v``. A record that is
# not a (key, value) pair must fail with an error naming it and what to do,
# yet records that are pairs must pay nothing for the check. So the first
# record of each partition is checked once (``_check_pair``: a dict with two
# keys, or a two-character str, would unpack without complaint into garbage),
# and a later bad record is caught as the error its unpacking raises
# (``_bad_record``), never pre-checked. Measured (python 3.11): the bytecodes
# executed grow by a constant 31 (CombineSplit) and 27 (group_split) per
# partition, the same for 10, 1,000 and 100,000 records; wall clock for 1,000
# records over 100 keys, paired runs, median new/old 1.000 and 1.004; for a
# 10-record partition about +0.15 us (+5%).


class CombineSplit(MapOp):
    """Map side of reduce_by_key: combine values per key, then bucket the keys.

    Combining first means each distinct key is hashed once, not each record
    (measured: 97 -> 69 us for 1,000 records over 100 keys).
    """

    __slots__ = ()

    def __call__(self, it: Iterable[Any], R: int) -> list[dict]:
        f = self.f
        d: dict = {}
        it = iter(it)
        k: Any = _NO_KEY
        try:
            for first in it:  # at most once: the first record is checked, the others are not
                _check_pair(first, "reduce_by_key")
                k, v = first
                d[k] = v
                break
            for k, v in it:
                d[k] = f(d[k], v) if k in d else v
        except (TypeError, ValueError) as e:
            _bad_record(e, "reduce_by_key", k)
            raise
        return _bucket(d, R)


class CombineMerge(MapOp):
    """Reduce side of reduce_by_key: merge the map-side dicts in map order."""

    __slots__ = ()

    def __call__(self, p: int, deps: list[list[dict]]) -> list[tuple[Any, Any]]:
        f = self.f
        blocks = deps[0]
        out = dict(blocks[0]) if blocks else {}
        for d in blocks[1:]:
            for k, v in d.items():
                out[k] = f(out[k], v) if k in out else v
        return list(out.items())


def group_split(it: Iterable[Any], R: int) -> list[dict]:
    """Map side of group_by_key / join: values listed per key, keys bucketed."""
    d: dict = {}
    it = iter(it)
    k: Any = _NO_KEY
    try:
        for first in it:  # at most once, as in CombineSplit
            _check_pair(first, "group_by_key/join")
            k, v = first
            d[k] = [v]
            break
        for k, v in it:
            lst = d.get(k)
            if lst is None:
                d[k] = [v]
            else:
                lst.append(v)
    except (TypeError, ValueError) as e:
        _bad_record(e, "group_by_key/join", k)
        raise
    return _bucket(d, R)


_NO_KEY = object()  # no record unpacked yet
_repr = reprlib.Repr()  # a record in an error message: its shape, not all of it
_repr.maxstring = _repr.maxother = 40
_repr.maxdict, _repr.maxlist, _repr.maxtuple = 3, 4, 4
_short = _repr.repr


def _check_pair(rec: Any, op: str) -> None:
    """Raise TypeError unless ``rec`` looks like a (key, value) pair; called once per partition."""
    if type(rec) is tuple and len(rec) == 2:
        return
    if isinstance(rec, (Mapping, str, bytes, bytearray, Set)):
        ok = False  # these unpack, but into keys, characters or an arbitrary order
    else:
        try:
            ok = len(rec) == 2  # a list or an ndarray row of two is a pair
        except TypeError:  # no length: an iterator may still unpack into two, anything else cannot
            ok = hasattr(type(rec), "__iter__")
    if not ok:
        raise TypeError(_not_a_pair(rec, op))


def _not_a_pair(rec: Any, op: str) -> str:
    if isinstance(rec, Mapping) and rec:
        hint = f".key_by(lambda d: d[{next(iter(rec))!r}])"
    elif isinstance(rec, (str, bytes)):
        hint = ".map(lambda s: (s, 1)) to count them, or .key_by(f)"
    elif isinstance(rec, tuple):
        hint = ".map(lambda t: (t[0], t[1:]))"
    else:
        hint = ".key_by(f) (pairs (f(x), x)) or .map(lambda x: (key, value))"
    return f"{op} needs (key, value) pairs; got {_a(rec)} {_short(rec)}: use {hint} first"


def _a(x: Any) -> str:
    """The type of ``x`` with its article, for a message: "a dict", "an int"."""
    name = type(x).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _bad_record(e: BaseException, op: str, key: Any) -> None:
    """If ``e`` was raised by the shuffle's own unpacking or hashing of a record (not by a user
    function, not by ``_check_pair``), raise a TypeError that says so; otherwise return.

    Only an error raised in the split function's own frame can be ours (a user
    function's has its frame further down the traceback), and only these two
    kinds: unpacking says "unpack", hashing "unhashable".
    """
    tb = e.__traceback__
    if tb is None or tb.tb_next is not None:
        return
    msg = str(e)
    if "unpack" in msg:
        raise TypeError(f"{op} needs (key, value) pairs, but a record is not one ({msg}): make pairs with "
                        f".key_by(f) or .map(lambda x: (key, value)) first") from None
    if "unhashable" in msg and key is not _NO_KEY:
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"{op}: a key must be hashable; got {_a(key)} {_short(key)} "
                            f"(use a tuple for a list key)") from None


def _bucket(d: dict, R: int) -> list[dict]:
    """Split a per-key dict into R dicts by the portable hash of the key (insertion order kept)."""
    if R == 1:
        return [d]
    buckets: list[dict] = [{} for _ in range(R)]
    for k, v in d.items():
        # ints hash to themselves in every process: skip the function call
        buckets[(hash(k) if type(k) is int else portable_hash(k)) % R][k] = v
    return buckets


def _group_merge_one(blocks: list[dict]) -> dict:
    out: dict = {}
    for d in blocks:
        for k, vs in d.items():
            lst = out.get(k)
            if lst is None:
                out[k] = list(vs)
            else:
                lst.extend(vs)
    return out


def group_merge(p: int, deps: list[list[dict]]) -> list[tuple[Any, list]]:
    return list(_group_merge_one(deps[0]).items())


def join_merge(p: int, deps: list[list[dict]]) -> list[tuple[Any, tuple]]:
    left = _group_merge_one(deps[0])
    right = _group_merge_one(deps[1])
    out = []
    for k, vs in left.items():
        ws = right.get(k)
        if ws:
            for v in vs:
                for w in ws:
                    out.append((k, (v, w)))
    return out
