"""Lineage: how a dataset is computed, as flat picklable nodes, the op kernels they run, and key hashing.

The lowest layer: it knows nothing of a Context, a scheduler or a process.
The driver walks nodes to plan; workers evaluate them.
"""

import importlib
from typing import TYPE_CHECKING, Any

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
    bucket_dict,
    group_merge,
    group_split,
    join_merge,
    merge_groups,
)
from ._rename import RENAMEABLE, op_key, renamed

if TYPE_CHECKING:
    from ._move_ops import (
        CartesianSplit,
        CoalesceSplit,
        cartesian_merge,
        chain_merge,
        round_robin_split,
        tag_partition,
    )
    from ._order_ops import RangeSplit, SortMerge
    from ._pair_ops import (
        CombineByKeySplit,
        FlatMapValuesOp,
        MapValuesOp,
        OuterJoinMerge,
        ZeroThen,
        cogroup_merge,
        pair_keys,
        pair_values,
    )
    from ._position_ops import SampleOp, ZipWithIndexOp, sample_draws
    from ._text_ops import CODECS, ReadTextOp, WriteTextOp, part_name, read_split

# The kernels of the PySpark-style operations load on first use (PEP 562): a worker imports a module of
# them only when a program it runs holds one of its kernels (unpickling imports it), so a worker's
# start-up stays the runtime alone.
_LAZY = {
    **dict.fromkeys(["CartesianSplit", "CoalesceSplit", "cartesian_merge", "chain_merge", "round_robin_split",
                     "tag_partition"], "_move_ops"),
    **dict.fromkeys(["RangeSplit", "SortMerge"], "_order_ops"),
    **dict.fromkeys(["CombineByKeySplit", "FlatMapValuesOp", "MapValuesOp", "OuterJoinMerge", "ZeroThen",
                     "cogroup_merge", "pair_keys", "pair_values"], "_pair_ops"),
    **dict.fromkeys(["SampleOp", "ZipWithIndexOp", "sample_draws"], "_position_ops"),
    **dict.fromkeys(["CODECS", "ReadTextOp", "WriteTextOp", "part_name", "read_split"], "_text_ops"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'drizzle_core.lineage' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CODECS", "RENAMEABLE", "BroadcastZipNode", "CartesianSplit", "CoalesceSplit", "CombineByKeySplit", "CombineMerge",
    "CombineSplit", "FilterOp", "FlatMapOp", "FlatMapValuesOp", "KeyByOp", "MapOp", "MapPartitionsOp",
    "MapPartitionsWithIndexOp", "MapValuesOp", "NarrowNode", "Node", "OuterJoinMerge", "RangeSplit",
    "ReadTextOp", "SampleOp", "ShuffleDep", "ShuffleReadNode", "SortMerge", "SourceNode", "UnionNode", "Wraps",
    "WriteTextOp", "ZeroThen", "ZipNode", "ZipOp", "ZipWithIndexOp", "bucket_dict", "bucket_of", "cartesian_merge",
    "chain_merge", "cogroup_merge", "combined_slots", "fold_slots", "group_merge", "group_split", "join_merge",
    "merge_groups", "op_key", "pair_keys", "pair_values", "part_name", "portable_hash", "read_split", "renamed",
    "round_robin_split", "sample_draws", "tag_partition",
]
