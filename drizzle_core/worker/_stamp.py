"""A worker's templates: its shares of the driver's execution templates, and stamping a group's instances.

See ``driver/_template.py`` for what a template is and when the driver
uses one. A worker gets its share (a *slice*: its tasks of the template's
job, under that job's ids, and the routes of the shuffles it maps for) once,
and keeps it in an LRU of ``TEMPLATE_CACHE`` that the driver mirrors, so a
LAUNCH names a template it holds by id. For each instance of a group it
stamps out the tasks (``protocol.stamp``, the driver's rule too) and, when
the instance has datasets of its own, renamed copies of the template's nodes
(``lineage.renamed``): the nodes are unpickled once per template, not once
per job.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from typing import Any

from ..lineage import renamed
from ..protocol import RESULT, Task, stamp, unpack_instances
from ..protocol import _messages as M


class Templates:
    """The slices this worker holds, by template id (least recently used first)."""

    __slots__ = ("slices",)

    def __init__(self) -> None:
        self.slices: OrderedDict[int, tuple[Any, ...]] = OrderedDict()

    def take(self, stamps: list[Any]) -> list[tuple[tuple[Any, ...] | None, Any]]:
        """Register the slices a LAUNCH carries and touch those it names, in the driver's order.

        Done first thing for every LAUNCH, even one whose program cannot be
        loaded, so this LRU stays the driver's mirror image. A slice not
        held is returned as None (the group then fails with a clear reason).
        """
        out = []
        slices = self.slices
        for tid, part, instances in stamps:
            if part is not None:
                slices[tid] = part
                slices.move_to_end(tid)
                if len(slices) > M.TEMPLATE_CACHE:
                    slices.popitem(last=False)
            else:
                part = slices.get(tid)
                if part is not None:
                    slices.move_to_end(tid)
            out.append((part, instances))
        return out


class Batch:
    """Instances of one slice with the template's very ids whose tasks all read a block this worker holds.

    A repeated query (the same cached dataset and function every job): each
    task is "apply the function to this cached block", so the worker runs a
    group's instances of it in one loop (``WorkerRuntime._run_batch``): no
    per-task entry in the task table or the ready queue, the blocks looked up
    once. ``same`` is the template's tasks as ``(relative index, fields after
    the job)``; ``runs`` the instances' ``(first task index, job)``; ``done``
    how many of the tasks have run (the loop may stop at its time budget).
    """

    __slots__ = ("done", "runs", "same")

    def __init__(self, same: list[tuple[int, tuple[Any, ...]]]) -> None:
        self.same = same
        self.runs: list[tuple[int, int]] = []
        self.done = 0

    @property
    def size(self) -> int:
        """Its tasks: every instance's copy of the template's."""
        return len(self.runs) * len(self.same)


def _direct(tasks_t: tuple[tuple[Any, ...], ...], blocks: dict[Any, Any], transient: dict[Any, int]) -> bool:
    """Whether every task of the slice is a result task over a cached block held here (see :class:`Batch`)."""
    for t in tasks_t:
        kind, inputs, shuffle_in, stores = t[5], t[7], t[8], t[9]
        nb = t[11] if len(t) > 11 else 0.0
        if kind != RESULT or shuffle_in or stores or nb:
            return False
        own = ("c", t[3], t[4])
        if own not in blocks or own in transient:
            return False
        for b in inputs:
            if b not in blocks or b in transient:
                return False
    return True


def expand(part: tuple[Any, ...], instances: Any, nodes: dict[int, Any], tasks: list[Task],
           routes: dict[int, Any], batches: list[Batch] | None = None, blocks: dict[Any, Any] | None = None,
           transient: dict[Any, int] | None = None) -> None:
    """Stamp ``instances`` (a pickle from the LAUNCH) of one slice into ``tasks``, ``routes`` and ``nodes``.

    ``nodes`` is the group's node table (the program's, copied by the
    caller): instances with datasets of their own get renamed copies of the
    template's nodes in it. An instance with the template's very ids (the
    same datasets, as a repeated query) only renumbers the tasks; given
    ``batches`` (and this worker's ``blocks`` and ``transient``), such
    instances of a slice that qualifies go into one :class:`Batch` instead.
    """
    ids_t, shuffles_t, runs_t, start_t, local_pos, tasks_t, routes_t = part
    same: list[tuple[int, tuple[Any, ...]]] | None = None  # the template's tasks, split once for renumbering
    batch: Batch | None = None
    direct: bool | None = None if batches is not None else False
    new = tuple.__new__
    for base, job, ids, shuffles, runs, start in unpack_instances(pickle.loads(instances)):
        if ids == ids_t and not runs_t:
            if same is None:
                pad = (0.0,) * (len(Task._fields) - len(tasks_t[0])) if tasks_t else ()  # not_before's default
                same = [(t[0], (*t[2:], *pad)) for t in tasks_t]
            if direct is None:
                direct = bool(tasks_t) and _direct(tasks_t, blocks, transient)  # type: ignore[arg-type]
                if direct:
                    batch = Batch(same)
                    batches.append(batch)  # type: ignore[union-attr]
            if batch is not None:
                batch.runs.append((base, job))
                continue
            # tuple.__new__: the NamedTuple's own __new__ is a Python function, ~3x slower per task
            tasks.extend([new(Task, (base + i, job, *rest)) for i, rest in same])
            continue
        idm = dict(zip(ids_t, ids))
        shm = dict(zip(shuffles_t, shuffles))
        rm = dict(zip(runs_t, runs))
        if ids != ids_t:
            for i in local_pos:
                nodes[ids[i]] = renamed(nodes[ids_t[i]], idm, shm)
        for run_t, dests in routes_t.items():
            routes[rm[run_t]] = dests
        for t in tasks_t:
            tasks.append(stamp(t, base, job, idm, shm, rm, start_t, start))
