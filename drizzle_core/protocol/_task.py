"""Tasks and block ids: what the driver ships to a worker, and how blocks are named on both sides.

Block ids (shared by the planner, the scheduler and the worker runtime):
    ("c", node_id, partition)                      a cached partition
    ("s", group, run, map_partition, reduce_part)  a shuffle bucket (map_partition = -1 - slot
                                                   for a combine slot pre-combined by its worker)
"""

from __future__ import annotations

from typing import Any, NamedTuple

MAP = 0
RESULT = 1

Block = tuple[Any, ...]


class Task(NamedTuple):
    """One task of a group, as shipped to its worker (a tuple: cheap to pickle)."""

    index: int  # type: ignore[assignment]  # position in the group's task list (shadows tuple.index)
    job: int                   # job number within the run_jobs call
    stage: int                 # stage id (unique per driver)
    node: int                  # the stage's final node
    partition: int
    kind: int                  # MAP or RESULT
    out: tuple[Any, ...]                 # MAP: (reader node, dep index, run, R); RESULT: (func id,)
    inputs: tuple[Any, ...]              # cached block ids to wait for (local or forwarded)
    # ((shuffle_id, run, map partitions, block map ids | None, reduce partition), ...)
    shuffle_in: tuple[Any, ...]
    stores: tuple[Any, ...]              # ((node id, partition), ...) cached blocks to create
    attempt: int
    not_before: float = 0.0    # epoch seconds: the worker starts the task no earlier


def shuffle_blocks(group: int, entry: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The blocks a task reads for one shuffle input, in combination order.

    ``entry`` is ``(shuffle_id, run, map partitions, block map ids | None,
    reduce partition)``: one block per map partition, or, when the shuffle is
    pre-combined (``ShuffleDep.local_combine``), the blocks the planner named:
    ``-1 - slot`` for a slot folded by its one worker, a map partition's own
    block for a slot split across workers (``lineage.combined_slots``).
    """
    _sid, run, nmaps, by, p = entry
    if by is None:
        return [("s", group, run, m, p) for m in range(nmaps)]
    return [("s", group, run, m, p) for m in by]
