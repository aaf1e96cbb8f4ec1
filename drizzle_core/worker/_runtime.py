"""Worker runtime: the local scheduler and block store (shared by every transport).

A transport delivers messages to :meth:`WorkerRuntime.handle` and gives the
runtime a ``send(dest, message)`` function; the runtime decides what runs.

State (all keyed by group, so a late message of an aborted group is
recognised and dropped):

``blocks: {block: value}``
    The block store: cached partitions, shuffle buckets, forwarded copies.
``transient: {block: local consumers left}``
    Blocks that are freed when their last local consumer has run (shuffle
    buckets, copies of another worker's cached block). Cached partitions made
    here are not transient; ``DROP`` frees them.
``waiting: {(group, task index): {missing blocks}}`` and
``waiters: {block: [(group, task index)]}``
    Dependency counting. A task is launched with its inputs possibly missing
    (pre-scheduling); each arriving block removes itself from the sets of its
    waiters, and a task whose set empties becomes ready.
``ready: deque[(GroupState, Task)]``
``pending_forwards: {block: [dest]}``
    Blocks other workers will need; sent the moment they exist.

When a map task finishes, its buckets go straight to the workers of the
reduce tasks (``routes`` from the launch): no driver between stages. Results
are batched to the driver and flushed whenever the ready queue runs dry or
the oldest has waited ``flush_interval`` seconds, so the first job of a
group reaches the driver while the rest still run.
"""

from __future__ import annotations

import heapq
import logging
import pickle
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle
import numpy as np

from .._errors import TaskTimeout
from ..lineage import ShuffleReadNode, SourceNode, fold_slots
from ..protocol import MAP, RESULT, Program, Task, _wire, shuffle_blocks
from ..protocol import _messages as M
from ._heartbeat import Liveness
from ._stamp import Batch, Templates, expand

log = logging.getLogger("drizzle.worker")

# Materialize a narrow pipeline every this many nodes, so that generator chains
# (each next() recursing through every level in C) stay shallow.
_MATERIALIZE_EVERY = 200
# Stages whose task durations are remembered (insertion order: the oldest is forgotten first).
_DURATIONS_KEPT = 256


class GroupState:
    __slots__ = ("busy", "bytes0", "failed", "group", "hold", "nodes", "program", "ran", "remaining", "routes",
                 "sources", "spans", "stored")

    def __init__(self, group: int, program: Program, routes: dict[Any, Any], remaining: int) -> None:
        self.spans: list[tuple[Any, ...]] | None = None  # (task index, wall start, seconds) when tracing
        self.bytes0 = 0
        self.group = group
        self.program = program
        self.nodes: dict[int, Any] = program.nodes  # the program's, or a copy with stamped jobs' nodes added
        self.routes = routes
        self.remaining = remaining
        self.busy = 0.0
        self.hold = 0.0   # seconds its results may wait here before they are sent (batched for the driver)
        self.ran = 0
        self.stored: list[tuple[Any, ...]] = []
        self.failed = False
        self.sources: dict[tuple[int, int], Any] = {}  # (source node, partition) -> its data, from the launch


def _picklable(e: BaseException) -> bytes | None:
    """The exception pickled, if it survives the trip (the traceback text always goes)."""
    try:
        data: bytes = cloudpickle.dumps(e)
        pickle.loads(data)
        return data
    except Exception:
        return None


def _aligned(v: Any, depth: int = 2) -> Any:
    """An ndarray source partition at a 64-byte aligned address (a copy only when it is not).

    Arrays arrive wherever the frame put them in the receive buffer; BLAS and
    numpy's SIMD reductions handle an unaligned head differently, so the same
    data at another offset can give results that differ in the last bits. Fits
    must be bit for bit the same whatever the group size (tests/test_ml_linear.py).
    """
    t = type(v)
    if t is list or t is tuple:  # blocks holding arrays (drizzle_ml's (X, y) blocks), two levels at most
        if not depth or not v or type(v[0]) not in (np.ndarray, list, tuple):
            return v  # plain records: nothing to align, and no per-record work
        parts = [_aligned(x, depth - 1) for x in v]
        return parts if t is list else tuple(parts)
    if t is not np.ndarray or v.ctypes.data % 64 == 0 or v.nbytes == 0:
        return v
    v = np.ascontiguousarray(v)
    buf = np.empty(v.nbytes + 64, dtype=np.uint8)
    start = -buf.ctypes.data % 64
    out = buf[start:start + v.nbytes].view(v.dtype).reshape(v.shape)
    out[...] = v
    return out


def _type_name(v: Any) -> str:
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _unpicklable_part(value: Any) -> str:
    """Say what in ``value`` cannot be pickled: the outer type, and the first element that fails inside it."""
    path = [_type_name(value)]
    current = value
    for _ in range(4):  # a few levels of containers; explicit loop, no recursion
        items = current.values() if isinstance(current, dict) else current if isinstance(
            current, (list, tuple, set, frozenset)) else None
        if items is None:
            break
        for item in items:
            try:
                _wire.encode(item)
            except Exception:
                path.append(_type_name(item))
                current = item
                break
        else:
            break
    return "the result is a " + " holding a ".join(path)


def _materialize(v: Any) -> Any:
    t = type(v)
    if t is list or t is tuple or t is np.ndarray:
        return v
    return list(v)


class WorkerRuntime:
    """Executes launched groups; see the module docstring for its state."""

    def __init__(self, index: int, send: Callable[[int, Any], Any], *, flush_interval: float = 0.002,
                 expect_peer: Callable[[int, int], None] | None = None,
                 bytes_sent: Callable[[], int] | None = None,
                 on_stuck: Callable[[], None] | None = None) -> None:
        self.index = index
        self._send = send
        self.expect_peer = expect_peer
        self._bytes_sent = bytes_sent or (lambda: 0)
        self.flush_interval = flush_interval
        self.blocks: dict[tuple[Any, ...], Any] = {}
        self.transient: dict[tuple[Any, ...], int] = {}
        self.waiting: dict[tuple[int, int], set[tuple[Any, ...]]] = {}
        self.waiters: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        self.ready: deque[tuple[GroupState, Task | Batch]] = deque()  # a Batch stands for its tasks
        self.timers: list[tuple[Any, ...]] = []  # heap of (not_before, group, index, GroupState, Task)
        self.pending_forwards: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        # Pre-combined shuffles (ShuffleDep.combine_slots), for the slots whose every map task runs here:
        self.combine_left: dict[tuple[int, int, int], int] = {}  # (group, run, slot) -> its map tasks still to run
        self.combine_acc: dict[tuple[int, int, int], dict[int, list[Any]]] = {}  # same -> {map partition: buckets}
        self.groups: dict[int, GroupState] = {}
        self.tasks: dict[tuple[int, int], Task] = {}
        self.programs: OrderedDict[int, Program] = OrderedDict()
        self.templates = Templates()  # this worker's shares of the driver's execution templates
        self.dead_below = 0           # groups below this id are finished or aborted
        self.dead_groups: set[int] = set()
        self.max_closed = -1          # highest group id finished or aborted here
        self.results: list[tuple[int, int, Any]] = []
        self.results_group = -1
        self.results_since = 0.0
        self.results_hold = 0.0        # the hold of results_group (GroupState.hold)
        self._durations: dict[tuple[int, int], float] = {}  # (stage node, kind) -> EMA of task seconds
        self.stopped = False
        #: (GroupState, Task, perf_counter at its start) of the task running now, for the liveness thread
        self.running: tuple[GroupState, Task, float] | None = None
        #: heartbeats and the task timeout (a thread, started by the driver's CONFIG; see _heartbeat)
        self.liveness = Liveness(self, send, on_stuck)

    def describe(self) -> str:
        """A one-line summary of the scheduler state, for debugging a stuck group."""
        return (f"groups={sorted(self.groups)} ready={len(self.ready)} timed={len(self.timers)} "
                f"waiting={ {k: sorted(v) for k, v in self.waiting.items()} } "
                f"blocks={len(self.blocks)} transient={len(self.transient)} "
                f"pending_forwards={sorted(self.pending_forwards)} buffered_results={len(self.results)}")

    def bookkeeping(self) -> dict[str, int]:
        """Sizes of every container that must be empty when no group is in flight.

        Cached partitions (``c`` blocks) are the only thing that may stay, and
        are counted apart; tests assert the rest is zero after every job, stream
        and iterate, the way Spark's scheduler suite asserts its maps empty.
        """
        cached = sum(1 for b in self.blocks if b[0] == "c" and b not in self.transient)
        return {
            "groups": len(self.groups), "tasks": len(self.tasks), "waiting": len(self.waiting),
            "waiters": len(self.waiters), "ready": len(self.ready), "timers": len(self.timers),
            "pending_forwards": len(self.pending_forwards), "combine_left": len(self.combine_left),
            "combine_acc": len(self.combine_acc), "transient": len(self.transient),
            "shuffle_blocks": sum(1 for b in self.blocks if b[0] == "s"), "results": len(self.results),
            "cached_blocks": cached, "stage_durations": len(self._durations),
        }

    # ------------------------------------------------------------- messages
    def handle(self, src: int, msg: tuple[Any, ...]) -> None:
        tag = msg[0]
        if tag == M.BLOCKS:
            _, group, items = msg
            self._on_blocks(group, items)
        elif tag == M.LAUNCH:
            _, group, program_id, body, tasks, routes, forwards, drops, epochs, trace, sources, stamps, hold = msg
            self._on_launch(group, program_id, body, tasks, routes, forwards, drops, epochs, trace, sources, stamps,
                            hold)
        elif tag == M.ABORT:
            _, group, keep = msg
            self._abort(group, keep)
        elif tag == M.DROP:
            self._drop(msg[1])
        elif tag == M.STOP:
            self.stopped = True
            self.liveness.stop()
        elif tag == M.CONFIG:
            config = msg[1]
            self.liveness.configure(config.get("heartbeat"), config.get("task_timeout"))
        elif tag == M.DESCRIBE:
            self.flush_results()
            if len(msg) > 2 and msg[2]:  # the driver has not heard of a group in a while: what is it waiting for
                self._send(M.DRIVER, (M.DESCRIBED, msg[1], self.bookkeeping(), self.describe()))
            else:
                self._send(M.DRIVER, (M.DESCRIBED, msg[1], self.bookkeeping()))
        else:
            log.warning("worker %d: unknown message %r from %r", self.index, tag, src)

    def send_failure(self, group: int, index: int, attempt: int, tb: str, exc: BaseException) -> None:
        """Tell the driver that task ``index`` of ``group`` failed (safe from the liveness thread too)."""
        self._send(M.DRIVER, (M.FAILED, group, index, attempt, tb, _picklable(exc)))

    def _is_dead(self, group: int) -> bool:
        return group < self.dead_below or group in self.dead_groups

    def _on_launch(self, group: int, program_id: int, program_bytes: bytes | None, tasks: list[Task],
                   routes: dict[Any, Any], forwards: list[Any], drops: list[Any], epochs: dict[Any, Any],
                   trace: bool, sources: dict[tuple[int, int], Any], stamps: list[Any] | None = None,
                   hold: float = 0.0) -> None:
        held = self.templates.take(stamps) if stamps else ()
        if epochs and self.expect_peer is not None:
            for peer, epoch in epochs.items():
                # a replaced peer: never write into the connection to its dead predecessor
                if peer != self.index:
                    self.expect_peer(peer, epoch)
        if self.max_closed < 0 and not self.groups:
            # A new (or replacement) worker: anything older than its first group is stale.
            self.dead_below = max(self.dead_below, group)
            for b in [b for b in self.blocks if b[0] == "s" and b[1] < group]:
                del self.blocks[b]
                self.transient.pop(b, None)
        if drops:
            self._drop(drops)
        program = self.programs.get(program_id) if program_bytes is None else None
        if program is None:
            try:
                if program_bytes is None:
                    raise LookupError(f"program {program_id} is not held here (the driver must send it again)")
                program = pickle.loads(program_bytes)
            except Exception as e:
                # e.g. a function from a module this worker cannot import: the
                # group fails with the reason; the worker keeps serving.
                first = Task._make(tasks[0]) if tasks else None
                self.send_failure(group, first.index if first else -1, first.attempt if first else 0,
                                  f"{M.PROGRAM_LOAD_FAILED}:\n" + traceback.format_exc(), e)
                self.dead_groups.add(group)
                return
            self.programs[program_id] = program
            if len(self.programs) > M.PROGRAM_CACHE:
                self.programs.popitem(last=False)
        self.programs.move_to_end(program_id)
        tasks = [Task._make(t) for t in tasks]  # plain tuples on the wire: they pickle ~4x faster
        nodes = program.nodes
        batches: list[Batch] | None = [] if not trace else None  # traced groups keep one span per task
        if held:
            nodes = dict(nodes)
            explicit, routes = routes, dict(routes)  # routes the LAUNCH names win over a template's
            for part, instances in held:
                if part is None:
                    first = Task._make(tasks[0]) if tasks else None
                    self.send_failure(group, first.index if first else -1, 0,
                                      "a template this worker does not hold was named (driver and worker disagree "
                                      "about the worker's templates)\n", RuntimeError("template not held"))
                    self.dead_groups.add(group)
                    return
                expand(part, instances, nodes, tasks, routes, batches, self.blocks, self.transient)
            routes.update(explicit)
        gs = GroupState(group, program, routes, len(tasks) + sum(b.size for b in batches or ()))
        gs.nodes = nodes
        gs.hold = hold
        gs.sources = {k: _aligned(v) for k, v in sources.items()} if sources else sources
        gs.bytes0 = self._bytes_sent()
        if trace:
            gs.spans = []
        self.groups[group] = gs
        blocks = self.blocks
        transient = self.transient
        combined: dict[tuple[int, int, int], int] | None = None  # slots mapped here: their slot sizes
        ready = self.ready
        for task in tasks:
            need: Any = task.inputs
            if task.shuffle_in:
                need = list(need)
                for entry in task.shuffle_in:
                    need.extend(shuffle_blocks(group, entry))
            if task.kind == MAP:
                dep = nodes[task.out[0]].deps[task.out[1]]
                if dep.local_combine is not None:
                    slot = dep.slot_of(task.partition)
                    ck = (group, task.out[2], slot)
                    self.combine_left[ck] = self.combine_left.get(ck, 0) + 1
                    if combined is None:
                        combined = {}
                    combined[ck] = dep.slot_size(slot)
            key = (group, task.index)
            self.tasks[key] = task
            missing = None
            for b in need:
                # a block counted for its consumers here: a shuffle bucket, a forwarded copy, one still to come
                if b[0] == "s" or b in transient or b not in blocks:
                    transient[b] = transient.get(b, 0) + 1
                    if b not in blocks:
                        if missing is None:
                            missing = set()
                        missing.add(b)
                        self.waiters.setdefault(b, []).append(key)
            if missing:
                self.waiting[key] = missing
            elif task.not_before:
                self._make_ready(gs, task)
            else:
                ready.append((gs, task))
        if combined:
            for ck, size in combined.items():
                if self.combine_left[ck] != size:
                    # part of the slot maps elsewhere (a recovery moved it): its buckets go one by one,
                    # the reducer folds them in the slot's order (lineage.combined_slots, as the planner)
                    del self.combine_left[ck]
        for batch in batches or ():
            ready.append((gs, batch))
        for block, dest in forwards:
            if block in blocks:
                self._send(dest, (M.BLOCKS, group, [(block, blocks[block])]))
            else:
                self.pending_forwards.setdefault(block, []).append((dest, group))
        if not gs.remaining:
            self._group_finished(gs)

    def _on_blocks(self, group: int, items: list[Any]) -> None:
        if self._is_dead(group):
            return
        for block, value in items:
            self._add_block(block, value, transient=True)

    def _add_block(self, block: tuple[Any, ...], value: Any, *, transient: bool) -> None:
        self.blocks[block] = value
        if transient:
            self.transient.setdefault(block, 0)
        else:
            self.transient.pop(block, None)
        dests = self.pending_forwards.pop(block, None)
        if dests:
            for d, group in dests:
                self._send(d, (M.BLOCKS, group, [(block, value)]))
        keys = self.waiters.pop(block, None)
        if keys:
            for key in keys:
                missing = self.waiting.get(key)
                if missing is None:
                    continue
                missing.discard(block)
                if not missing:
                    del self.waiting[key]
                    self._make_ready(self.groups[key[0]], self.tasks[key])

    def _make_ready(self, gs: GroupState, task: Task) -> None:
        if task.not_before and task.not_before > time.time():
            heapq.heappush(self.timers, (task.not_before, gs.group, task.index, gs, task))
        else:
            self.ready.append((gs, task))

    def due_timers(self) -> float | None:
        """Move tasks whose time has come to the ready queue; seconds until the next one."""
        timers = self.timers
        if not timers:
            return None
        now = time.time()
        while timers and timers[0][0] <= now:
            _t, group, _i, gs, task = heapq.heappop(timers)
            if group in self.groups:
                self.ready.append((gs, task))
        return timers[0][0] - now if timers else None

    def _release(self, block: tuple[Any, ...]) -> None:
        left = self.transient.get(block)
        if left is None:
            return
        if left <= 1:
            del self.transient[block]
            self.blocks.pop(block, None)
        else:
            self.transient[block] = left - 1

    def _drop(self, blocks: list[Any]) -> None:
        for b in blocks:
            if b not in self.transient:
                self.blocks.pop(b, None)

    def _abort(self, group: int, keep: Iterable[tuple[Any, ...]] = ()) -> None:
        self.dead_groups.add(group)
        gs = self.groups.pop(group, None)
        for key in [k for k in self.tasks if k[0] == group]:
            task = self.tasks.pop(key)
            self.waiting.pop(key, None)
            for b in task.inputs:
                self._release(b)  # a forwarded copy only this task would have read goes too
        self.ready = deque(item for item in self.ready if item[0].group != group)
        self.timers = [t for t in self.timers if t[1] != group]
        heapq.heapify(self.timers)
        for k in [k for k in self.combine_left if k[0] == group]:
            del self.combine_left[k]
            self.combine_acc.pop(k, None)
        for b in [b for b in self.blocks if b[0] == "s" and b[1] == group]:
            del self.blocks[b]
            self.transient.pop(b, None)
        for b in [b for b in self.transient if b[0] == "s" and b[1] == group]:
            del self.transient[b]  # counted for a consumer here, never arrived
        for b in [b for b, keys in self.waiters.items() if all(k[0] == group for k in keys)]:
            del self.waiters[b]
        if gs is not None:
            kept = set(keep)
            for b in gs.stored:
                if b not in kept:
                    self.blocks.pop(b, None)
        forwards = {b: [d for d in ds if d[1] != group] for b, ds in self.pending_forwards.items()}
        self.pending_forwards = {b: ds for b, ds in forwards.items() if ds}
        if self.results_group == group:
            self.results = []
        self._closed(group)

    def _closed(self, group: int) -> None:
        """``group`` is over here: late messages for it (or older ones) are dropped."""
        self.max_closed = max(self.max_closed, group)
        low = min(self.groups) if self.groups else self.max_closed + 1
        self.dead_below = max(self.dead_below, low)
        self.dead_groups = {g for g in self.dead_groups if g >= self.dead_below}

    # ------------------------------------------------------------- running
    def run_ready(self, budget: float = 0.001) -> int:
        """Run ready tasks for about ``budget`` seconds; returns how many ran."""
        ran = 0
        now = time.perf_counter()
        deadline = now + budget
        ready = self.ready
        durations = self._durations
        while ready:
            gs, task = ready.popleft()
            if isinstance(task, Batch):
                n = self._run_batch(gs, task, deadline)
                ran += n
                now = time.perf_counter()
                if now > deadline:
                    break
                continue
            # (_holding() inline, on the clock read after the last task: this loop runs per task)
            if self.results and (not self.results_hold or now - self.results_since >= self.results_hold):
                # Results wait for the next flush only behind tasks known to be
                # short: a task of a stage not seen yet, or a slow one, could
                # hold a finished job back.
                expected = durations.get((task.node, task.kind))
                if expected is None or expected > self.flush_interval / 4:
                    self.flush_results()
            self._run(gs, task)
            ran += 1
            now = time.perf_counter()
            if now > deadline:
                break
        if self.results and (not ready or time.perf_counter() - self.results_since > self.flush_interval) \
                and not self._holding():
            self.flush_results()
        return ran

    def _run_batch(self, gs: GroupState, batch: Batch, deadline: float) -> int:
        """Run a :class:`Batch`'s tasks until it is done or ``deadline`` passes (then it goes back first in line).

        Each task is what ``_run`` makes of a result task over a cached block
        (the same results, failures, durations, liveness record and results
        flushing), in one loop: each template task's function, block id and
        stage key are found once per call, not once per task. Returns the
        tasks run.
        """
        if gs.failed:
            return 0
        group = gs.group
        if self.results_group != group:
            self.flush_results()
            self.results_group = group
            self.results_hold = gs.hold
        funcs, blocks, durations = gs.program.funcs, self.blocks, self._durations
        # per template task: (relative index, fields after the job, its block, its function, its stage key)
        plan = [(i, rest, ("c", rest[1], rest[2]), funcs[rest[4][0]], (rest[1], RESULT)) for i, rest in batch.same]
        per, size = len(plan), batch.size
        quarter = self.flush_interval / 4
        new = tuple.__new__
        perf = time.perf_counter
        ran = 0
        done = batch.done
        now = perf()
        while done < size:
            base, job = batch.runs[done // per]
            i, rest, block, func, key = plan[done % per]
            task = new(Task, (base + i, job, *rest))
            value = blocks.get(block)
            if value is None:  # dropped since the launch (not expected): the general path recomputes it
                self.tasks[(group, task.index)] = task
                self._run(gs, task)
                done += 1
                ran += 1
                if gs.failed or group not in self.groups:
                    break
                now = perf()
                continue
            if self.results and (not self.results_hold or now - self.results_since >= self.results_hold):
                expected = durations.get(key)  # as run_ready: results wait only behind tasks known to be short
                if expected is None or expected > quarter:
                    self.flush_results()
            t0 = perf()
            self.running = (gs, task, t0)
            try:
                out = func(value)
            except (Exception, SystemExit, TaskTimeout) as e:  # as _run: the task fails, not the worker
                self.running = None
                gs.busy += perf() - t0
                gs.failed = True
                self.flush_results()
                from ._failure import task_traceback

                self.send_failure(group, task.index, task.attempt, task_traceback(e, gs.nodes, task), e)
                batch.done = done + 1
                return ran + 1
            self.running = None
            now = perf()
            took = now - t0
            gs.busy += took
            self._note_duration(key, took)
            if not self.results:
                self.results_since = t0
            self.results.append((task.index, task.attempt, out))
            done += 1
            ran += 1
            gs.ran += 1
            gs.remaining -= 1
            if gs.remaining == 0:
                batch.done = done
                self._group_finished(gs)
                return ran
            if now > deadline and done < size:
                break
        batch.done = done
        if done < size and not gs.failed and group in self.groups:
            self.ready.appendleft((gs, batch))
        return ran

    def _note_duration(self, key: tuple[int, int], took: float) -> None:
        """Fold a task's seconds into its stage's moving average (the flush heuristic of ``run_ready``)."""
        durations = self._durations
        old = durations.get(key)
        if old is None:
            if len(durations) >= _DURATIONS_KEPT:  # every stream batch has new stages: keep the recent
                del durations[next(iter(durations))]
            durations[key] = took
        else:
            durations[key] = 0.8 * old + 0.2 * took

    def _holding(self) -> bool:
        """Whether the buffered results may wait longer: their group holds them, and not for long enough yet."""
        return bool(self.results_hold) and time.perf_counter() - self.results_since < self.results_hold

    def _results_wait(self) -> float | None:
        """Seconds the serve loop may sleep with results buffered (None: none are)."""
        if not self.results:
            return None
        if self.results_hold:
            return max(0.0, self.results_hold - (time.perf_counter() - self.results_since))
        return self.flush_interval

    def flush_results(self) -> None:
        if self.results:
            results, self.results = self.results, []
            self._send_results(M.RESULTS, self.results_group, results, ())

    def _send_results(self, tag: str, group: int, results: list[Any], rest: tuple[Any, ...]) -> None:
        """Send ``(tag, group, *rest, results)``-shaped messages; a result that cannot be pickled fails its task.

        Pickling happens in the transport's send (once, on the hot path); only
        when it fails are the results encoded one by one to find the culprit,
        which is reported as that task's failure (naming the value's type),
        and the rest still go. The worker keeps serving.
        """
        msg = (tag, group, results) if tag == M.RESULTS else (tag, group, *rest, results)
        try:
            self._send(M.DRIVER, msg)
            return
        except Exception:
            good, bad = [], []
            for item in results:
                try:
                    _wire.encode(item)
                    good.append(item)
                except Exception as e:
                    bad.append((item, e))
            if not bad:
                raise  # not a pickling problem: the transport's own
        (index, attempt, value), why = bad[0]
        text = (f"the task's result cannot be sent to the driver: {type(why).__name__}: {why} "
                f"({_unpicklable_part(value)}; return picklable values, e.g. plain data)")
        self.send_failure(group, index, attempt, text + "\n", TypeError(text))
        gs = self.groups.get(group)
        if gs is not None:
            gs.failed = True
        good_msg = (tag, group, good) if tag == M.RESULTS else (tag, group, *rest, good)
        self._send(M.DRIVER, good_msg)

    def _run(self, gs: GroupState, task: Task) -> None:
        if gs.failed:
            return
        t0 = time.perf_counter()
        group = gs.group
        self.running = (gs, task, t0)
        try:
            value = self._evaluate(gs, task)
            if task.kind == MAP:
                self._shuffle_write(gs, task, value)
            else:
                out = gs.program.funcs[task.out[0]](value)
                if self.results_group != group:
                    self.flush_results()
                    self.results_group = group
                    self.results_hold = gs.hold
                if not self.results:
                    self.results_since = t0
                self.results.append((task.index, task.attempt, out))
        except (Exception, SystemExit, TaskTimeout) as e:  # sys.exit() in a task fails the task, not the worker
            self.running = None
            gs.failed = True
            self.flush_results()
            from ._failure import task_traceback  # on failure only: a worker starts without it

            tb = task_traceback(e, gs.nodes, task)  # the user's file and line, not "<dynamic-code>"
            self.send_failure(group, task.index, task.attempt, tb, e)
            return
        finally:
            self.running = None  # first: an interrupt arriving now must find no task to interrupt
            took = time.perf_counter() - t0
            gs.busy += took
            if gs.spans is not None:
                gs.spans.append((task.index, time.time() - took, took))
            self._note_duration((task.node, task.kind), took)
        transient = self.transient
        for b in task.inputs:
            if b in transient:  # a cached block made here is not transient: nothing to release
                self._release(b)
        if task.shuffle_in:
            for entry in task.shuffle_in:
                for b in shuffle_blocks(group, entry):
                    self._release(b)
        del self.tasks[(group, task.index)]
        gs.ran += 1
        gs.remaining -= 1
        if gs.remaining == 0:
            self._group_finished(gs)

    def _group_finished(self, gs: GroupState) -> None:
        stats = {"bytes_sent": self._bytes_sent() - gs.bytes0, "spans": gs.spans}
        # The group's last results ride in the DONE message: one wake-up of the driver, not two.
        last: list[Any] = []
        if self.results and self.results_group == gs.group:
            last, self.results = self.results, []
        self.flush_results()
        self._send_results(M.DONE, gs.group, last, (gs.busy, gs.ran, stats))
        del self.groups[gs.group]
        self.dead_groups.add(gs.group)  # finished while an older group runs: its late blocks are dropped too
        self._closed(gs.group)

    def _shuffle_write(self, gs: GroupState, task: Task, value: Any) -> None:
        reader_id, dep_index, run, R = task.out
        dep = gs.nodes[reader_id].deps[dep_index]
        buckets = dep.split(value, R)
        dests = gs.routes[run]
        group = gs.group
        m = task.partition
        if dep.local_combine is not None:
            slot = dep.slot_of(m)
            key = (group, run, slot)
            left = self.combine_left.get(key)
            if left is not None:  # every map task of the slot runs here: fold them, send one block
                acc = self.combine_acc.setdefault(key, {})
                acc[m] = buckets
                if left > 1:
                    self.combine_left[key] = left - 1
                    return
                del self.combine_left[key]
                del self.combine_acc[key]
                # fold in partition order: the tree is the lineage's, not this worker's or the timing's
                parts = [acc[k] for k in sorted(acc)]
                buckets = []
                for r in range(R):
                    if r and all(p[r] is p[0] for p in parts):  # the same partials for every copy (iterate's
                        buckets.append(buckets[0])             # split): folded once, not once per copy
                        continue
                    total = parts[0][r]
                    for other in parts[1:]:
                        total = dep.local_combine(total, other[r])
                    buckets.append(total)
                m = -1 - slot
        by_dest: dict[int, list[Any]] = {}
        for r in range(R):
            for d in dests[r]:
                by_dest.setdefault(d, []).append((("s", group, run, m, r), buckets[r]))
        for d, items in by_dest.items():
            if d == self.index:
                for block, bucket in items:
                    self._add_block(block, bucket, transient=True)
            else:
                self._send(d, (M.BLOCKS, group, items))

    def _evaluate(self, gs: GroupState, task: Task) -> Any:
        """The partition of the stage's final node (explicit-stack post-order walk)."""
        nodes = gs.nodes
        blocks = self.blocks
        root = (task.node, task.partition)
        if not task.stores:
            b = blocks.get(("c", task.node, task.partition))
            if b is not None:
                return b  # a stage over one cached block: no walk
            node = nodes[task.node]
            if not node.narrow_inputs(task.partition):
                return self._compute(gs, task, node, task.partition, [])  # one source or shuffle read
        order: list[tuple[int, int]] = []
        uses: dict[tuple[int, int], int] = {}
        stack: list[tuple[tuple[int, int], bool]] = [(root, False)]
        while stack:
            key, done = stack.pop()
            if done:
                order.append(key)
                continue
            if key in uses:
                uses[key] += 1
                continue
            uses[key] = 1
            stack.append((key, True))
            if ("c", *key) in blocks:
                continue
            for pk in nodes[key[0]].narrow_inputs(key[1]):
                stack.append((pk, False))
        stores = set(task.stores)
        values: dict[tuple[int, int], Any] = {}
        for i, key in enumerate(order):
            nid, q = key
            block = ("c", nid, q)
            v = blocks.get(block)
            if v is not None:
                if key in stores and block in self.transient:
                    # a cached block moved here (forwarded for this task): this worker keeps it now
                    self._add_block(block, v, transient=False)
                    gs.stored.append(block)
            else:
                node = nodes[nid]
                v = self._compute(gs, task, node, q, [values[pk] for pk in node.narrow_inputs(q)])
                if key in stores:
                    v = _materialize(v)
                    self._add_block(block, v, transient=False)
                    gs.stored.append(block)
                elif uses[key] > 1 or i % _MATERIALIZE_EVERY == _MATERIALIZE_EVERY - 1:
                    v = _materialize(v)
            values[key] = v
        return values[root]

    def _compute(self, gs: GroupState, task: Task, node: Any, q: int, parents: list[Any]) -> Any:
        if type(node) is ShuffleReadNode:
            entries = {(entry[0], entry[4]): entry for entry in task.shuffle_in}
            blocks = self.blocks
            parents = []
            for dep in node.deps:
                entry = entries[(dep.shuffle_id, q)]
                values = [blocks[b] for b in shuffle_blocks(gs.group, entry)]
                # pre-combined: a slot split across workers is folded here, in the slot's order
                parents.append(values if entry[3] is None else fold_slots(dep, entry[3], values))
        elif type(node) is SourceNode:
            return gs.sources[(node.id, q)]
        return node.compute(q, parents)

    # ---------------------------------------------------------------- serve
    def serve(self, poll: Callable[[float | None], list[Any]],
              on_event: Callable[[Any, Any], bool] | None = None) -> None:
        """The worker loop for process transports: poll messages, run tasks, repeat.

        ``poll(timeout)`` returns ``(src, message)`` pairs; ``on_event`` sees
        each first and returns True when it consumed it (transport events such
        as a peer list or a disconnection).
        """
        try:
            self._serve(poll, on_event)
        finally:
            self.stopped = True  # however serving ended, the liveness thread ends with it
            self.liveness.stop()

    def _serve(self, poll: Callable[[float | None], list[Any]], on_event: Callable[[Any, Any], bool] | None) -> None:
        while not self.stopped:
            next_timer = self.due_timers()
            timeout = 0.0 if self.ready else self._results_wait()
            if next_timer is not None and (timeout is None or next_timer < timeout):
                timeout = max(0.0, next_timer)
            for src, msg in poll(timeout):
                if on_event is not None and on_event(src, msg):
                    continue
                self.handle(src, msg)
            if self.ready:
                self.run_ready()
            elif self.results and not self._holding():
                self.flush_results()
