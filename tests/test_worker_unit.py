"""The worker runtime fed messages by hand, its whole state asserted after each.

``WorkerRuntime.handle`` gets LAUNCH, BLOCKS, ABORT and DROP messages as the
driver and the other workers send them (protocol/_messages.py), ``run_ready``
runs what is ready, and a recording ``send`` shows what the worker said to
whom. The layout is that of a two-worker shuffle, seen from worker 0::

    source (2 partitions) --reduce_by_key(2)--> result
    worker 0: map partition 0, reduce partition 0      worker 1: the other two (not here)

Keys are ints (an int key's bucket is the key itself modulo R), so which
reduce partition a bucket is for is plain to see.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import cloudpickle
import pytest
from support import Lineage

from drizzle_core.lineage import SourceNode
from drizzle_core.protocol import MAP, RESULT, Program, Task
from drizzle_core.protocol import messages as M
from drizzle_core.transport import WorkerRuntime

pytestmark = pytest.mark.timeout(30)

ME, PEER = 0, 1
G = 5            # the group id on the wire
RUN = 0          # the shuffle's run within the group
JOB_FUNC = 1     # the job function's id in the program


def swap(kv):
    return (kv[1], kv[0])


DATA = [[(0, 1), (1, 2), (0, 5)], [(0, 10), (1, 20)]]
lin = Lineage()
SOURCE = lin.source(*DATA)
REDUCED = lin.reduce_by_key(SOURCE, 2)
CACHED = lin.map(SOURCE, swap)
SID = REDUCED.node.deps[0].shuffle_id
# As the driver ships it: the source without its data, which comes with each worker's launch
NODES = {SOURCE.id: SourceNode(SOURCE.id, [None, None], "source"), REDUCED.id: REDUCED.node, CACHED.id: CACHED.node}
PROGRAM_BYTES = cloudpickle.dumps(Program(NODES, {JOB_FUNC: list}))


def task(index: int, ds, partition: int, kind: int, out: tuple, *, inputs=(), shuffle_in=(), stores=()) -> tuple:
    return tuple(Task(index, 0, index, ds.id, partition, kind, out, inputs, shuffle_in, stores, 0))


MAP0 = task(0, SOURCE, 0, MAP, (REDUCED.id, 0, RUN, 2))
REDUCE0 = task(2, REDUCED, 0, RESULT, (JOB_FUNC,), shuffle_in=((SID, RUN, 2, None, 0),))


def bucket(group: int, m: int, r: int) -> tuple:
    return ("s", group, RUN, m, r)


def launch(group: int, tasks: list, *, routes=None, forwards=(), drops=(), program=True) -> tuple:
    routes = {RUN: ((ME,), (PEER,))} if routes is None else routes
    sources = {(SOURCE.id, t[4]): DATA[t[4]] for t in tasks if t[3] in (SOURCE.id, CACHED.id)}
    return (M.LAUNCH, group, 1, PROGRAM_BYTES if program else None, list(tasks), routes, list(forwards),
            list(drops), {}, False, sources, [], 0.0)


class Recorder:
    """The ``send`` a transport gives the runtime: records ``(dest, message)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Any]] = []

    def __call__(self, dest: int, msg: Any) -> None:
        self.sent.append((dest, msg))

    def take(self) -> list[tuple[int, Any]]:
        out, self.sent = self.sent, []
        return out


def runtime() -> tuple[WorkerRuntime, Recorder]:
    rec = Recorder()
    return WorkerRuntime(ME, rec, flush_interval=0.0), rec


def state(rt: WorkerRuntime) -> dict[str, Any]:
    """Every container of the runtime (its module docstring's list), in comparable form."""
    return {
        "blocks": dict(rt.blocks), "transient": dict(rt.transient),
        "waiting": {k: set(v) for k, v in rt.waiting.items()}, "waiters": {b: list(k) for b, k in rt.waiters.items()},
        "ready": [(gs.group, t.index) for gs, t in rt.ready], "timers": len(rt.timers),
        "pending_forwards": dict(rt.pending_forwards), "combine_left": dict(rt.combine_left),
        "combine_acc": dict(rt.combine_acc), "groups": sorted(rt.groups), "tasks": sorted(rt.tasks),
        "results": list(rt.results), "dead_below": rt.dead_below, "dead_groups": set(rt.dead_groups),
    }


def empty(*, blocks=None, dead_below=0, dead_groups=()) -> dict[str, Any]:
    """Nothing in flight: only cached blocks, and which groups are over."""
    return {"blocks": blocks or {}, "transient": {}, "waiting": {}, "waiters": {}, "ready": [], "timers": 0,
            "pending_forwards": {}, "combine_left": {}, "combine_acc": {}, "groups": [], "tasks": [], "results": [],
            "dead_below": dead_below, "dead_groups": set(dead_groups)}


def assert_nothing_left(rt: WorkerRuntime, cached: int = 0) -> None:
    """``bookkeeping()``: zero but cached blocks and the stage durations it remembers."""
    left = rt.bookkeeping()
    assert left.pop("cached_blocks") == cached
    left.pop("stage_durations")
    assert all(v == 0 for v in left.values()), left


def done(group: int, ran: int, results: list) -> tuple[int, tuple]:
    return (M.DRIVER, (M.DONE, group, ANY, ran, {"bytes_sent": 0, "spans": None}, results))


# ------------------------------------------------------------------- tests
def test_a_map_task_pushes_each_bucket_to_its_reducer_and_the_reducer_runs_when_all_are_in():
    rt, rec = runtime()
    rt.handle(M.DRIVER, launch(G, [MAP0, REDUCE0]))
    mine, theirs = bucket(G, 0, 0), bucket(G, 1, 0)
    # the reduce task is launched before its inputs exist: it waits for one bucket per map partition
    assert state(rt) == empty() | {
        "transient": {mine: 1, theirs: 1}, "waiting": {(G, 2): {mine, theirs}},
        "waiters": {mine: [(G, 2)], theirs: [(G, 2)]}, "ready": [(G, 0)], "groups": [G], "tasks": [(G, 0), (G, 2)],
        "dead_below": G}  # a new worker's first group: anything older is stale
    assert rec.take() == []

    assert rt.run_ready(budget=1.0) == 1
    # bucket 0 stays here (reduce partition 0 is here), bucket 1 goes straight to worker 1
    assert rec.take() == [(PEER, (M.BLOCKS, G, [(bucket(G, 0, 1), {1: 2})]))]
    assert state(rt) == empty() | {
        "blocks": {mine: {0: 6}}, "transient": {mine: 1, theirs: 1}, "waiting": {(G, 2): {theirs}},
        "waiters": {theirs: [(G, 2)]}, "groups": [G], "tasks": [(G, 2)], "dead_below": G}

    rt.handle(PEER, (M.BLOCKS, G, [(theirs, {0: 10})]))  # worker 1's map partition 1, bucket 0
    assert state(rt) == empty() | {
        "blocks": {mine: {0: 6}, theirs: {0: 10}}, "transient": {mine: 1, theirs: 1}, "ready": [(G, 2)],
        "groups": [G], "tasks": [(G, 2)], "dead_below": G}
    assert rt.run_ready(budget=1.0) == 1
    # the group's last result rides in its DONE
    assert rec.take() == [done(G, 2, [(2, 0, [(0, 16)])])]
    assert state(rt) == empty(dead_below=G + 1)
    assert_nothing_left(rt)
    # what the driver's bookkeeping() asks every worker
    rt.handle(M.DRIVER, (M.DESCRIBE, 7))
    assert rec.take() == [(M.DRIVER, (M.DESCRIBED, 7, rt.bookkeeping()))]


def test_blocks_that_arrive_before_their_launch_are_kept_for_it():
    rt, rec = runtime()
    mine, theirs = bucket(G, 0, 0), bucket(G, 1, 0)
    rt.handle(PEER, (M.BLOCKS, G, [(theirs, {0: 10})]))  # worker 1 was faster than the driver's launch
    assert state(rt) == empty() | {"blocks": {theirs: {0: 10}}, "transient": {theirs: 0}}
    rt.handle(M.DRIVER, launch(G, [MAP0, REDUCE0]))
    assert state(rt) == empty() | {
        "blocks": {theirs: {0: 10}}, "transient": {mine: 1, theirs: 1}, "waiting": {(G, 2): {mine}},
        "waiters": {mine: [(G, 2)]}, "ready": [(G, 0)], "groups": [G], "tasks": [(G, 0), (G, 2)],
        "dead_below": G}
    assert rt.run_ready(budget=1.0) == 2
    assert rec.take() == [(PEER, (M.BLOCKS, G, [(bucket(G, 0, 1), {1: 2})])), done(G, 2, [(2, 0, [(0, 16)])])]
    assert state(rt) == empty(dead_below=G + 1)
    assert_nothing_left(rt)


@pytest.mark.parametrize("keep", [False, True])
def test_an_aborted_group_frees_its_transient_blocks_and_keeps_only_the_cached_blocks_it_is_told_to(keep):
    rt, rec = runtime()
    made = ("c", CACHED.id, 0)
    cache0 = task(1, CACHED, 0, RESULT, (JOB_FUNC,), stores=((CACHED.id, 0),))
    rt.handle(M.DRIVER, launch(G, [MAP0, REDUCE0, cache0]))
    assert rt.run_ready(budget=1.0) == 2  # the map task and the cached job; the reduce task waits
    assert rec.take() == [(PEER, (M.BLOCKS, G, [(bucket(G, 0, 1), {1: 2})])),
                          (M.DRIVER, (M.RESULTS, G, [(1, 0, [(1, 0), (2, 1), (5, 0)])]))]
    assert state(rt) == empty() | {
        "blocks": {bucket(G, 0, 0): {0: 6}, made: [(1, 0), (2, 1), (5, 0)]},
        "transient": {bucket(G, 0, 0): 1, bucket(G, 1, 0): 1}, "waiting": {(G, 2): {bucket(G, 1, 0)}},
        "waiters": {bucket(G, 1, 0): [(G, 2)]}, "groups": [G], "tasks": [(G, 2)], "dead_below": G}

    rt.handle(M.DRIVER, (M.ABORT, G, [made] if keep else []))
    kept = {made: [(1, 0), (2, 1), (5, 0)]} if keep else {}
    assert state(rt) == empty(blocks=kept, dead_below=G + 1)
    # a late bucket of the aborted group is dropped, not stored
    rt.handle(PEER, (M.BLOCKS, G, [(bucket(G, 1, 0), {0: 10})]))
    assert state(rt) == empty(blocks=kept, dead_below=G + 1)
    assert rec.take() == []
    assert_nothing_left(rt, cached=len(kept))
    rt.handle(M.DRIVER, (M.DROP, [made]))
    assert state(rt) == empty(dead_below=G + 1)


def test_late_blocks_of_a_finished_group_are_dropped():
    rt, rec = runtime()
    rt.handle(PEER, (M.BLOCKS, G, [(bucket(G, 1, 0), {0: 10})]))
    rt.handle(M.DRIVER, launch(G, [MAP0, REDUCE0]))
    rt.run_ready(budget=1.0)
    assert rec.take()[-1] == done(G, 2, [(2, 0, [(0, 16)])])
    rt.handle(PEER, (M.BLOCKS, G, [(bucket(G, 1, 0), {0: 10})]))  # a duplicate, after the group ended
    rt.handle(PEER, (M.BLOCKS, G - 1, [(bucket(G - 1, 1, 0), {0: 10})]))  # an older group's
    assert state(rt) == empty(dead_below=G + 1)
    assert_nothing_left(rt)


def test_a_cached_block_is_forwarded_to_the_worker_that_reads_it_the_moment_it_exists():
    rt, rec = runtime()
    made = ("c", CACHED.id, 0)
    cache0 = task(0, CACHED, 0, RESULT, (JOB_FUNC,), stores=((CACHED.id, 0),))
    rt.handle(M.DRIVER, launch(G, [cache0], routes={}, forwards=[(made, PEER)]))
    assert state(rt)["pending_forwards"] == {made: [(PEER, G)]}
    rt.run_ready(budget=1.0)
    value = [(1, 0), (2, 1), (5, 0)]
    assert rec.take() == [(PEER, (M.BLOCKS, G, [(made, value)])), done(G, 1, [(0, 0, value)])]
    assert state(rt) == empty(blocks={made: value}, dead_below=G + 1)
    assert_nothing_left(rt, cached=1)


def test_two_groups_in_flight_run_independently():
    rt, rec = runtime()
    first, second = G, G + 1
    rt.handle(M.DRIVER, launch(first, [MAP0, REDUCE0]))
    narrow = task(0, SOURCE, 1, RESULT, (JOB_FUNC,))
    rt.handle(M.DRIVER, launch(second, [narrow], routes={}, program=False))  # the program is held
    assert state(rt)["ready"] == [(first, 0), (second, 0)]
    assert rt.run_ready(budget=1.0) == 2
    # the second group finishes while the first waits for worker 1's bucket
    assert rec.take() == [(PEER, (M.BLOCKS, first, [(bucket(first, 0, 1), {1: 2})])),
                          done(second, 1, [(0, 0, [(0, 10), (1, 20)])])]
    assert state(rt) == empty() | {
        "blocks": {bucket(first, 0, 0): {0: 6}}, "transient": {bucket(first, 0, 0): 1, bucket(first, 1, 0): 1},
        "waiting": {(first, 2): {bucket(first, 1, 0)}}, "waiters": {bucket(first, 1, 0): [(first, 2)]},
        "groups": [first], "tasks": [(first, 2)], "dead_below": first,
        "dead_groups": {second}}  # finished: a late message of it is dropped, though older groups run
    rt.handle(PEER, (M.BLOCKS, first, [(bucket(first, 1, 0), {0: 10})]))
    assert rt.run_ready(budget=1.0) == 1
    assert rec.take() == [done(first, 2, [(2, 0, [(0, 16)])])]
    assert state(rt) == empty(dead_below=second + 1)
    assert_nothing_left(rt)


def test_a_late_bucket_of_a_group_that_finished_while_an_older_one_runs_is_dropped():
    rt, rec = runtime()
    first, second = G, G + 1
    rt.handle(M.DRIVER, launch(first, [MAP0, REDUCE0]))
    rt.handle(PEER, (M.BLOCKS, second, [(bucket(second, 1, 0), {0: 10})]))
    rt.handle(M.DRIVER, launch(second, [MAP0, REDUCE0], program=False))
    rt.run_ready(budget=1.0)  # both map tasks, then the second group's reduce task
    assert rec.take()[-1] == done(second, 2, [(2, 0, [(0, 16)])])
    assert state(rt)["groups"] == [first]
    before = state(rt)
    rt.handle(PEER, (M.BLOCKS, second, [(bucket(second, 1, 0), {0: 10})]))  # a duplicate, too late
    assert state(rt) == before
