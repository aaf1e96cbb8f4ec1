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
from ..protocol import Task, stamp, unpack_instances
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


def expand(part: tuple[Any, ...], instances: Any, nodes: dict[int, Any], tasks: list[Task],
           routes: dict[int, Any]) -> None:
    """Stamp ``instances`` (a pickle from the LAUNCH) of one slice into ``tasks``, ``routes`` and ``nodes``.

    ``nodes`` is the group's node table (the program's, copied by the
    caller): instances with datasets of their own get renamed copies of the
    template's nodes in it. An instance with the template's very ids (the
    same datasets, as a repeated query) only renumbers the tasks.
    """
    ids_t, shuffles_t, runs_t, start_t, local_pos, tasks_t, routes_t = part
    same: list[tuple[int, tuple[Any, ...]]] | None = None  # the template's tasks, split once for renumbering
    new = tuple.__new__
    for base, job, ids, shuffles, runs, start in unpack_instances(pickle.loads(instances)):
        if ids == ids_t and not runs_t:
            if same is None:
                pad = (0.0,) * (len(Task._fields) - len(tasks_t[0])) if tasks_t else ()  # not_before's default
                same = [(t[0], (*t[2:], *pad)) for t in tasks_t]
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
