"""What several test modules need, written once.

* **Contexts kept for a module** (``context(transport, workers)``): property
  tests run hundreds of examples, and starting workers for each would dwarf
  them. A context made here is stopped when the module that made it ends
  (the ``_stop_module_contexts`` fixture in conftest.py).
* **Worker processes** (``worker_pids``, ``alive``, ``wait_dead``): which pid
  runs which worker, and waiting for them to be gone.
* **Killing a worker from inside a task, once** (``count_call``, ``once``,
  ``kill_self_once``): the task functions of the recovery tests run in the
  workers, so what happened is kept in files of a directory the test owns:
  a call counter, and a marker created atomically, so that of two workers
  reaching the kill point together exactly one dies.
* **A minimal lineage** (``FakeDataset``, ``Lineage``): what the planner
  reads of a dataset (the ``Dataset`` Protocol in driver/_plan.py) and
  nothing else, for tests that drive the scheduler or the worker runtime
  without a Context.

Functions and classes here are module-level, so they pickle by reference:
workers import this module, as they import pipelines.py.
"""

from __future__ import annotations

import itertools
import operator
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import reference
from pipelines import build

import drizzle_core as dz
from drizzle_core import lineage as N

# ------------------------------------------------------------------ contexts
# (transport, workers) -> the context; stopped by conftest.py when the module ends
_contexts: dict[tuple[str, int], dz.Context] = {}


def context(transport: str, workers: int = 2) -> dz.Context:
    """A context on ``transport`` with ``workers`` workers, shared by the tests of the calling module."""
    key = (transport, workers)
    if key not in _contexts:
        _contexts[key] = dz.Context(transport=transport, workers=workers)
    return _contexts[key]


def stop_contexts() -> None:
    """Stop every context ``context`` made (and forget them)."""
    try:
        for ctx in _contexts.values():
            ctx.stop()
    finally:
        _contexts.clear()


# ------------------------------------------------- checks against the reference
def _length(it):
    return len(list(it))


#: the job functions the property tests name
FUNCS: dict[str, Callable[[Any], Any]] = {"sum": sum, "list": list, "len": _length}


def check_pipelines(ctx: dz.Context, items: list, partitions: int, jobs: list, group_size: int) -> None:
    """Run ``jobs`` ((pipeline steps, job function name) pairs over ``items``) as one ``run_jobs``: the
    results equal the reference evaluator's, and again on a second run (cached blocks and programs reused)."""
    source = ctx.parallelize(items, partitions)
    built = [(build(ctx, source, steps), FUNCS[fn]) for steps, fn in jobs]
    expected = [[FUNCS[fn](part) for part in reference.partitions(ds)] for (ds, _), (_, fn) in zip(built, jobs)]
    assert ctx.run_jobs(built, group_size=group_size) == expected
    assert ctx.run_jobs(built, group_size=group_size) == expected


def recovered(metrics) -> int:
    """How many recoveries a stretch of groups needed: the most any one group went through. One lost worker
    recovers every group in flight at that moment, once each: with pipelining, the running group and the
    next one launched behind it, so a sum would count one loss twice."""
    return max((m.recoveries for m in metrics), default=0)


# ----------------------------------------------------------- worker processes
def _pid_partition(it):
    return [os.getpid()]


def worker_pids(ctx: dz.Context) -> list[int]:
    """The pid of each worker (partition p runs on worker p % W when nothing is cached)."""
    n = ctx.num_workers
    return [p[0] for p in ctx.parallelize(range(n), n).map_partitions(_pid_partition).glom()]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_dead(pids, timeout: float = 10.0) -> list[int]:
    """Wait up to ``timeout`` seconds for every pid to end; return those still alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def wait_all_live(ctx: dz.Context, timeout: float = 15.0) -> None:
    """A killed worker's replacement joins in the background: wait for it, running tiny jobs meanwhile
    (a job's polls are what read the WorkerJoined), so the next test or round starts on W workers."""
    deadline = time.monotonic() + timeout
    while len(ctx.live_workers) < ctx.num_workers and time.monotonic() < deadline:
        ctx.run_jobs([(ctx.parallelize([0], 1), len)], group_size=1)
        time.sleep(0.02)
    assert len(ctx.live_workers) == ctx.num_workers


def kill_alive(pids) -> None:
    """SIGKILL each of ``pids`` still running (a test's cleanup after a failure)."""
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)


# --------------------------------------------------- killing a worker, once
def count_call(directory: str) -> int:
    """Count one call in ``directory`` (across processes: one byte appended per call); the count so far."""
    path = os.path.join(directory, "count")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    return os.path.getsize(path)


def once(marker: str) -> bool:
    """True for the first caller only, in any process: the one that creates the file ``marker``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def kill_self_once(directory: str) -> None:
    """SIGKILL the calling process, unless a process has been killed this way for ``directory`` already.

    The kill is marked by the file ``directory/killed`` (tests read it to
    know whether the kill happened).
    """
    if once(os.path.join(directory, "killed")):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------- minimal lineage
class FakeDataset:
    """The planner's ``Dataset`` Protocol (driver/_plan.py) and nothing more: a node, parents, a cached flag."""

    __slots__ = ("is_cached", "node", "parents")

    def __init__(self, node: N.Node, parents: tuple[FakeDataset, ...] = (), cached: bool = False) -> None:
        self.node = node
        self.parents = parents
        self.is_cached = cached

    @property
    def id(self) -> int:
        return self.node.id

    @property
    def num_partitions(self) -> int:
        return self.node.num_partitions

    def uncache(self) -> None:
        self.is_cached = False

    def __repr__(self) -> str:
        return f"<FakeDataset #{self.id} {self.node.label}>"


class Lineage:
    """Builds FakeDatasets with node and shuffle ids numbered from 1 (a fresh driver's numbering)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._shuffle_ids = itertools.count(1)

    def source(self, *partitions: list, cached: bool = False) -> FakeDataset:
        return FakeDataset(N.SourceNode(next(self._ids), list(partitions), "source"), cached=cached)

    def map(self, parent: FakeDataset, f: Callable[[Any], Any], cached: bool = False) -> FakeDataset:
        node = N.NarrowNode(next(self._ids), parent.node, N.MapOp(f), "map")
        return FakeDataset(node, (parent,), cached)

    def reduce_by_key(self, parent: FakeDataset, num_partitions: int,
                      f: Callable[[Any, Any], Any] = operator.add) -> FakeDataset:
        dep = N.ShuffleDep(next(self._shuffle_ids), parent.node, N.CombineSplit(f))
        node = N.ShuffleReadNode(next(self._ids), (dep,), N.CombineMerge(f), num_partitions, "reduce_by_key")
        return FakeDataset(node, (parent,))
