"""Lineage: how a dataset is computed, as flat picklable nodes, the op kernels they run, and key hashing.

The lowest layer: it knows nothing of a Context, a scheduler or a process.
The driver walks nodes to plan; workers evaluate them.
"""

from ._hash import bucket_of, portable_hash
from ._nodes import (
    BroadcastZipNode,
    NarrowNode,
    Node,
    ShuffleDep,
    ShuffleReadNode,
    SourceNode,
    UnionNode,
    ZipNode,
    combined_slots,
    fold_slots,
)
from ._ops import (
    CombineMerge,
    CombineSplit,
    FilterOp,
    FlatMapOp,
    KeyByOp,
    MapOp,
    MapPartitionsOp,
    MapPartitionsWithIndexOp,
    Wraps,
    ZipOp,
    group_merge,
    group_split,
    join_merge,
)
from ._rename import RENAMEABLE, op_key, renamed

__all__ = [
    "RENAMEABLE",
    "BroadcastZipNode",
    "CombineMerge",
    "CombineSplit",
    "FilterOp",
    "FlatMapOp",
    "KeyByOp",
    "MapOp",
    "MapPartitionsOp",
    "MapPartitionsWithIndexOp",
    "NarrowNode",
    "Node",
    "ShuffleDep",
    "ShuffleReadNode",
    "SourceNode",
    "UnionNode",
    "Wraps",
    "ZipNode",
    "ZipOp",
    "bucket_of",
    "combined_slots",
    "fold_slots",
    "group_merge",
    "group_split",
    "join_merge",
    "op_key",
    "portable_hash",
    "renamed",
]
