"""A tiny sequential evaluator of Dataset lineage: the correctness oracle.

It recomputes a dataset's partitions in plain Python from the driver-side
lineage (nodes and their functions), with no scheduler, no workers, no
caching and no group scheduling. Deliberately separate code from the
worker's evaluator: shuffles are re-implemented here with ``sorted``-free
dict semantics in map-partition order, which is the order the engine
promises.
"""

from __future__ import annotations

from typing import Any

from drizzle_core import Dataset
from drizzle_core.lineage import NarrowNode, ShuffleReadNode, SourceNode, UnionNode, ZipNode


def partitions(ds: Dataset) -> list[list[Any]]:
    """Every partition of ``ds`` as a list, computed sequentially (explicit stack)."""
    memo: dict[int, list[list[Any]]] = {}
    stack: list[tuple[Dataset, bool]] = [(ds, False)]
    while stack:
        d, expanded = stack.pop()
        if d.id in memo:
            continue
        if not expanded:
            stack.append((d, True))
            stack.extend((p, False) for p in d.parents if p.id not in memo)
            continue
        memo[d.id] = _compute(d, memo)
    return memo[ds.id]


def _compute(d: Dataset, memo: dict[int, list[list[Any]]]) -> list[list[Any]]:
    node = d.node
    if isinstance(node, SourceNode):
        return [list(p) for p in node.partitions]
    if isinstance(node, NarrowNode):
        parent = memo[d.parents[0].id]
        return [list(node.fn(p, list(part))) for p, part in enumerate(parent)]
    if isinstance(node, UnionNode):
        return [list(part) for parent in d.parents for part in memo[parent.id]]
    if isinstance(node, ZipNode):
        a, b = memo[d.parents[0].id], memo[d.parents[1].id]
        return [list(node.fn(p, list(x), list(y))) for p, (x, y) in enumerate(zip(a, b))]
    if isinstance(node, ShuffleReadNode):
        R = node.num_partitions
        per_dep = []
        for dep, parent in zip(node.deps, d.parents):
            buckets = [dep.split(list(part), R) for part in memo[parent.id]]  # per map partition
            per_dep.append(buckets)
        return [list(node.merge(r, [[b[r] for b in buckets] for buckets in per_dep])) for r in range(R)]
    raise TypeError(f"unknown node {node!r}")


def collect(ds: Dataset) -> list[Any]:
    return [x for part in partitions(ds) for x in part]
