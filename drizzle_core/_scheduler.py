"""Group scheduler (driver side): plan a group, launch it, gather results.

Policy. Jobs are taken from the caller's iterable G at a time (G fixed, or
tuned per group by :class:`~drizzle_core._adaptive.AIMD`). For each group the
:class:`~drizzle_core._plan.Planner` plans every stage of every job; the
group's program (nodes and job functions) is cloudpickled ONCE and each
worker gets ONE launch message with all of its tasks. From then on the
driver only listens: map outputs travel worker to worker, and each job's
results are yielded, in job order, as soon as that job's last result
arrives. The next group is planned when every worker has reported the
current one done.

State kept between groups (shapes in comments):

    live: [worker index]                   workers that can take tasks
    cache_locations: {block: worker}        cached partitions that exist
    worker_programs: [OrderedDict[program id]]  mirror of each worker's program LRU
    programs: OrderedDict[key -> (program id, bytes, Program)]  serialized programs
    pending_drops: {worker: [block]}        unpersisted blocks to drop at next launch
    metrics: [GroupMetrics]

State of the group in flight (``_Run``): the plan, ``results: {job:
[value per partition]}``, ``remaining: {job: results missing}``,
``finished: {task index}`` (a second result for a task is a duplicate and is
ignored), ``awaiting_done: {worker}``.

Events and their transitions (one small method each): ``RESULTS`` →
``_on_results``; ``FAILED`` → ``_on_failed`` (abort the group everywhere,
raise TaskError); ``DONE`` → ``_on_done``; ``WorkerLost`` →
``_on_worker_lost`` (forget its blocks, abort, raise WorkerLostError).
"""

from __future__ import annotations

import itertools
import logging
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from . import _messages as M
from ._errors import RemoteTraceback, SerializationError, TaskError, WorkerLostError
from ._plan import GroupPlan, Planner
from ._transport import Transport, WorkerLost
from ._worker import Program

log = logging.getLogger("drizzle.scheduler")


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """What one group cost. ``coordination`` is the share of worker time not spent in tasks."""

    group: int
    jobs: int
    tasks: int
    workers: int
    wall_s: float
    plan_s: float
    serialize_s: float
    launch_s: float
    busy_s: float
    coordination: float
    messages_sent: int
    bytes_sent: int


@dataclass
class _Run:
    plan: GroupPlan
    results: dict[int, list[Any]]
    remaining: dict[int, int]
    awaiting_done: set[int]
    finished: set[int] = field(default_factory=set)
    busy: float = 0.0


class GroupScheduler:
    """Runs groups of jobs on a transport (see the module docstring)."""

    def __init__(self, transport: Transport, num_workers: int) -> None:
        self.transport = transport
        self.planner = Planner()
        self.live: list[int] = list(range(num_workers))
        self.cache_locations: dict[tuple, int] = {}
        self.worker_programs: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(num_workers)]
        self.programs: OrderedDict[tuple, tuple[int, bytes, Program]] = OrderedDict()
        self._program_ids = itertools.count(1)
        self.pending_drops: dict[int, list[tuple]] = {}
        self._dropped_nodes: set[int] = set()  # unpersisted during the group in flight
        self._deferred_drops: dict[int, list[tuple]] = {}  # worker -> blocks to drop after it
        self._in_group = False
        self.metrics: list[GroupMetrics] = []
        self._run: _Run | None = None

    # ------------------------------------------------------------- caching
    def drop_cached(self, node_id: int) -> None:
        """Forget a dataset's cached blocks; workers drop them with a later launch.

        Called while a group is planned or running (a job generator may
        unpersist the state the job it just yielded reads), the drop waits for
        the group's end: its tasks were planned against those blocks.
        """
        self._dropped_nodes.add(node_id)
        drops = self._deferred_drops if self._in_group else self.pending_drops
        for block in [b for b in self.cache_locations if b[1] == node_id]:
            w = self.cache_locations.pop(block)
            drops.setdefault(w, []).append(block)

    def _end_group(self, plan: GroupPlan | None) -> None:
        """Commit the cached blocks the group made (unless dropped meanwhile), release deferred drops."""
        if plan is not None:
            for block, w in plan.new_cache.items():
                if block[1] in self._dropped_nodes:
                    self.pending_drops.setdefault(w, []).append(block)
                else:
                    self.cache_locations[block] = w
        for w, blocks in self._deferred_drops.items():
            self.pending_drops.setdefault(w, []).extend(blocks)
        self._deferred_drops.clear()
        self._dropped_nodes.clear()
        self._in_group = False

    # ---------------------------------------------------------------- run
    def run(self, jobs: Iterable[tuple[Any, Callable[[Any], Any]]],
            next_group_size: Callable[[], int],
            on_group: Callable[[GroupMetrics], None] | None = None) -> Iterator[list[Any]]:
        """Yield each job's results (one per partition), in job order."""
        it = iter(jobs)
        job_numbers = itertools.count()
        while True:
            g = next_group_size()
            # Lazy: the planner pulls (and plans) one job at a time, so a job
            # generator may unpersist what the job it yielded last has read.
            pulled = ((next(job_numbers), ds, f) for ds, f in itertools.islice(it, g))
            t0 = time.perf_counter()
            self._in_group = True
            try:
                plan = self.planner.plan(pulled, self.live, self.cache_locations)
            except BaseException:
                self._end_group(None)
                raise
            if not plan.jobs:
                self._end_group(None)
                return
            yield from self._run_group(plan, t0, on_group)

    def _run_group(self, plan: GroupPlan, t0: float,
                   on_group: Callable[[GroupMetrics], None] | None) -> Iterator[list[Any]]:
        batch = plan.jobs
        t1 = time.perf_counter()
        program_id, program_bytes = self._serialize(plan, batch)
        t2 = time.perf_counter()
        msgs0, bytes0 = self.transport.messages_sent, self.transport.bytes_sent
        launched = self._launch(plan, program_id, program_bytes)
        t3 = time.perf_counter()
        run = _Run(
            plan=plan,
            results={job: [None] * n for job, n in plan.job_partitions.items()},
            remaining=dict(plan.job_partitions),
            awaiting_done=set(launched),
        )
        self._run = run
        next_job = batch[0][0]
        last_job = batch[-1][0]
        try:
            while run.remaining or run.awaiting_done:
                for worker, msg in self.transport.poll(None):
                    self._dispatch(run, worker, msg)
                while next_job <= last_job and next_job not in run.remaining:
                    yield run.results.pop(next_job)
                    next_job += 1
        except BaseException:
            if run.remaining or run.awaiting_done:
                self._abort(run)
            self._run = None
            self._end_group(None)
            raise
        self._run = None
        self._end_group(plan)
        wall = time.perf_counter() - t0
        nw = max(1, len(launched))
        m = GroupMetrics(
            group=plan.group, jobs=len(batch), tasks=len(plan.tasks), workers=len(launched),
            wall_s=wall, plan_s=t1 - t0, serialize_s=t2 - t1, launch_s=t3 - t2, busy_s=run.busy,
            coordination=min(1.0, max(0.0, 1.0 - run.busy / (wall * nw))),
            messages_sent=self.transport.messages_sent - msgs0, bytes_sent=self.transport.bytes_sent - bytes0,
        )
        self.metrics.append(m)
        if on_group is not None:
            on_group(m)

    # ------------------------------------------------------------ launching
    def _serialize(self, plan: GroupPlan, batch: list) -> tuple[int, bytes]:
        """The group's program, pickled once (and reused while it repeats)."""
        key = (tuple(sorted(plan.nodes)), tuple(sorted(plan.funcs)))
        hit = self.programs.get(key)
        if hit is not None:
            self.programs.move_to_end(key)
            return hit[0], hit[1]
        program = Program(plan.nodes, plan.funcs)
        try:
            data = cloudpickle.dumps(program, protocol=5)
        except Exception as e:
            raise _culprit(plan, batch, e) from e
        # The entry keeps the program alive: the key holds id()s, which must
        # not be reused by new objects while the entry exists.
        pid = next(self._program_ids)
        self.programs[key] = (pid, data, program)
        if len(self.programs) > 8:
            self.programs.popitem(last=False)
        return pid, data

    def _launch(self, plan: GroupPlan, program_id: int, program_bytes: bytes) -> list[int]:
        per_worker: dict[int, list] = {}
        for task, w in zip(plan.tasks, plan.worker_of):
            per_worker.setdefault(w, []).append(task)
        for w in plan.forwards:
            per_worker.setdefault(w, [])
        shared = pickle.PickleBuffer(program_bytes)
        workers = sorted(per_worker)
        messages = []
        for w in workers:
            lru = self.worker_programs[w]
            if program_id in lru:
                lru.move_to_end(program_id)
                body = None
            else:
                lru[program_id] = None
                if len(lru) > M.PROGRAM_CACHE:
                    lru.popitem(last=False)
                body = shared
            runs = plan.run_of_worker.get(w, ())
            routes = {run: tuple(tuple(sorted(d)) for d in plan.routes[run]) for run in runs}
            messages.append((M.LAUNCH, plan.group, program_id, body, per_worker[w], routes,
                             plan.forwards.get(w, []), self.pending_drops.pop(w, [])))
        for w in [w for w in self.pending_drops if w not in per_worker]:
            self.transport.send(w, (M.DROP, self.pending_drops.pop(w)))
        self.transport.send_shared(workers, messages)
        return workers

    # --------------------------------------------------------------- events
    def _dispatch(self, run: _Run, worker: int, msg: Any) -> None:
        if isinstance(msg, WorkerLost):
            self._on_worker_lost(run, worker, msg.reason)
            return
        tag, group = msg[0], msg[1]
        if group != run.plan.group:
            return  # a late message of an aborted group
        if tag == M.RESULTS:
            self._on_results(run, msg[2])
        elif tag == M.DONE:
            self._on_done(run, worker, msg[2])
        elif tag == M.FAILED:
            self._on_failed(run, worker, *msg[2:])
        else:
            log.warning("unexpected message %r from worker %d", tag, worker)

    def _on_results(self, run: _Run, items: list) -> None:
        tasks = run.plan.tasks
        result_tasks = run.plan.result_tasks
        for index, attempt, value in items:
            if index in run.finished or tasks[index].attempt != attempt:
                continue  # duplicate, or an attempt that was superseded
            run.finished.add(index)
            job, p = result_tasks[index]
            run.results[job][p] = value
            left = run.remaining[job] - 1
            if left:
                run.remaining[job] = left
            else:
                del run.remaining[job]

    def _on_done(self, run: _Run, worker: int, busy: float) -> None:
        run.awaiting_done.discard(worker)
        run.busy += busy

    def _on_failed(self, run: _Run, worker: int, index: int, attempt: int, tb: str,
                   exc_bytes: bytes | None) -> None:
        if index < 0:  # a launch with no task failed (program load); blame the group
            index = 0
        task = run.plan.tasks[index]
        exc = None
        if exc_bytes is not None:
            try:
                exc = pickle.loads(exc_bytes)
            except Exception:
                exc = None
        self._abort(run)
        name = self.transport.worker_names[worker]
        label = run.plan.stage_labels[task.stage]
        what = f"{type(exc).__name__}: {exc}" if exc is not None else tb.strip().splitlines()[-1]
        err = TaskError(
            f"job {task.job}, stage {task.stage} ({label}), partition {task.partition} failed on {name}: {what}",
            job=task.job, stage=task.stage, partition=task.partition, worker=name,
            remote_traceback=tb, exception=exc,
        )
        raise err from RemoteTraceback(tb)

    def _on_worker_lost(self, run: _Run | None, worker: int, reason: str) -> None:
        name = self.transport.worker_names[worker]
        if worker in self.live:
            self.live.remove(worker)
        for block in [b for b, w in self.cache_locations.items() if w == worker]:
            del self.cache_locations[block]
        self.pending_drops.pop(worker, None)
        if run is not None:
            self._abort(run)
            raise WorkerLostError(f"lost {name} while running group {run.plan.group}: {reason}", worker=name)
        log.warning("lost %s between jobs: %s", name, reason)

    def _abort(self, run: _Run) -> None:
        run.remaining.clear()
        run.awaiting_done.clear()
        for w in self.live:
            try:
                self.transport.send(w, (M.ABORT, run.plan.group))
            except Exception as e:  # the worker may be the one that just died
                log.debug("could not send abort to worker %d: %s", w, e)

    def check_workers(self) -> None:
        """Notice workers lost while idle (so the next plan avoids them)."""
        for worker, msg in self.transport.poll(0):
            if isinstance(msg, WorkerLost):
                self._on_worker_lost(None, worker, msg.reason)


def _culprit(plan: GroupPlan, batch: list, error: Exception) -> SerializationError:
    """Find which user function (or data) could not be pickled, and say where it was used."""
    for node in plan.nodes.values():
        for f in node.user_functions():
            try:
                cloudpickle.dumps(f)
            except Exception as e:
                return SerializationError(f"cannot serialize the function {_name(f)} used by {node.label}: {e}")
        data = getattr(node, "partitions", None)
        if data is not None:
            try:
                cloudpickle.dumps(data)
            except Exception as e:
                return SerializationError(f"cannot serialize the data of {node.label}: {e}")
    for job, _ds, f in batch:
        try:
            cloudpickle.dumps(f)
        except Exception as e:
            return SerializationError(f"cannot serialize the function {_name(f)} of job {job}: {e}")
    return SerializationError(f"cannot serialize the group's program: {error}")


def _name(f: Any) -> str:
    inner = getattr(f, "f", None)  # the engine's op wrappers hold the user function as .f
    g = inner if inner is not None else f
    name = getattr(g, "__qualname__", None) or getattr(g, "__name__", None) or repr(g)
    code = getattr(g, "__code__", None)
    where = f" (defined at {code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"{name!r}{where}"
