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

from collections.abc import Callable, Iterable
from typing import Any


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

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for c in type(self).__mro__ for s in getattr(c, "__slots__", ()))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
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
        part: Iterable[Any] = self.partitions[p]
        return part


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
        part: Iterable[Any] = parents[0]
        return part


class _TwoParentNode(Node):
    """Partition ``p`` is ``fn(p, a_part, b_part)``; which partitions of ``a`` and ``b`` is the subclass's
    ``narrow_inputs``. The one place the two zips' state and compute are written: a subclass adds no slot, so it
    pickles as before (``Node.__getstate__`` walks the MRO: ``(fn, parents, id, label, num_partitions)``). Not
    ``BroadcastZipNode(ZipNode)``: code that asks ``isinstance(node, ZipNode)`` (the tests' reference evaluator)
    means co-partitioned, and must not take a broadcast zip for one."""

    __slots__ = ("fn", "parents")

    def __init__(self, id: int, a: Node, b: Node, fn: Callable[..., Iterable[Any]], label: str) -> None:
        super().__init__(id, a.num_partitions, label)
        self.parents = (a.id, b.id)
        self.fn = fn

    def compute(self, p: int, parents: list[Any]) -> Iterable[Any]:
        return self.fn(p, parents[0], parents[1])

    def user_functions(self) -> list[Any]:
        return [self.fn]


class ZipNode(_TwoParentNode):
    """Partition ``p`` is ``fn(p, a_p, b_p)``: co-partitioned state updates."""

    __slots__ = ()

    def narrow_inputs(self, p: int) -> tuple[tuple[int, int], ...]:
        return ((self.parents[0], p), (self.parents[1], p))


class BroadcastZipNode(_TwoParentNode):
    """Partition ``p`` is ``fn(p, data_p, state_0)`` (``BroadcastZipNode(id, data, state, fn, label)``): every
    partition reads one small single-partition dataset (a model, a state), which the planner forwards to each
    worker once per iteration."""

    __slots__ = ()
    broadcast_inputs = (1,)

    def narrow_inputs(self, p: int) -> tuple[tuple[int, int], ...]:
        return ((self.parents[0], p), (self.parents[1], 0))


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

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.shuffle_id, self.parent, self.num_map_partitions, self.split, self.local_combine)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
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
