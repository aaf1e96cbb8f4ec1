"""Group scheduler (driver side): plan a group, launch it, gather results.

Policy. Jobs are taken from the caller's iterable G at a time (G fixed, or
tuned per group by :class:`~drizzle_core._adaptive.AIMD`). For each group the
:class:`~drizzle_core._plan.Planner` plans every stage of every job; the
group's program (nodes and job functions) is cloudpickled ONCE and each
worker gets ONE launch message with all of its tasks. From then on the
driver only listens: map outputs travel worker to worker, and each job's
results are yielded, in job order, as soon as that job's last result
arrives. While a group runs, the next one is pulled, planned and pickled
(``_prepare``, against the blocks the running group will leave), and it is
launched the moment every worker has reported the current one done.

State kept between groups (shapes in comments):

    live: [worker index]                   workers that can take tasks
    cache_locations: {block: worker}        cached partitions that exist
    worker_programs: [OrderedDict[program id]]  mirror of each worker's program LRU
    programs: OrderedDict[key -> (program id, bytes, Program)]  serialized programs
    pending_drops: {worker: [block]}        unpersisted blocks to drop at next launch
    epochs: {worker: incarnation}           how often a worker's slot was refilled
    _open_plans: {group: GroupPlan}         planned ahead or running
    _deferred: [(group, dataset, drop, pulled)]  unpersists waiting for open groups
    metrics: [GroupMetrics]

State of the group in flight (``_Run``): the plan, ``results: {job:
[value per partition]}``, ``remaining: {job: results missing}``,
``finished: {task index}`` (a second result for a task is a duplicate and is
ignored), ``awaiting_done: {worker}``.

Events and their transitions (one small method each): ``RESULTS`` →
``_on_results``; ``FAILED`` → ``_on_failed`` (abort the group everywhere,
raise TaskError: a user error is not retried); ``DONE`` → ``_on_done``;
``WorkerLost`` → ``_on_worker_lost`` (forget its blocks; during a group,
``_recover``: abort the attempt, keep finished jobs' cached blocks, start a
replacement if the transport can, re-plan the unfinished jobs — at most
``max_recoveries`` times per group); ``WorkerJoined`` → ``_on_worker_joined``.
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
from ._trace import Trace
from ._transport import Transport, WorkerJoined, WorkerLost
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
    recoveries: int = 0
    worker_bytes_sent: int = 0   # what workers sent: results, shuffle blocks, forwarded blocks
    planned_size: int = 0        # the group size asked for (jobs is less for a short last group)


@dataclass
class _Run:
    plan: GroupPlan
    results: dict[int, list[Any]]
    remaining: dict[int, int]
    awaiting_done: set[int]
    finished: set[int] = field(default_factory=set)
    busy: float = 0.0
    worker_bytes: int = 0


@dataclass
class _Prepared:
    """A planned and serialized group, waiting to be launched."""

    plan: GroupPlan
    program_id: int
    program_bytes: bytes
    plan_s: float
    serialize_s: float
    live: tuple[int, ...]   # the workers it was planned on
    size: int = 0           # the group size it was planned with


_PLACEHOLDER = GroupPlan(group=-1)  # marks a group being planned (its plan is not made yet)


class _Lost(Exception):
    """Internal: a worker was lost while a group ran (caught by the group loop)."""

    def __init__(self, worker: int, reason: str) -> None:
        super().__init__(worker, reason)
        self.worker = worker
        self.reason = reason


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
        self.epochs: dict[int, int] = {}  # worker -> times replaced (its process incarnation)
        # Groups planned (ahead) or running: {group id: plan}. While any is open,
        # unpersists and drops wait:
        # [(latest group id then, dataset | None, (worker, block) | None, asked while pulling jobs)].
        self._open_plans: dict[int, Any] = {}
        self._deferred: list[tuple[int, Any, Any, bool]] = []
        self._latest_group = 0
        self._recovered = False                 # a recovery since the group planned ahead was planned
        self._pulling = False                   # the job generator is being pulled (by _prepare)
        self.max_recoveries = 3                  # lost workers one group survives
        self.on_failure: Callable[[], None] | None = None  # told of each recovery (adaptive G)
        self.trace: Trace | None = None
        self.metrics: list[GroupMetrics] = []
        self._run: _Run | None = None

    # ------------------------------------------------------------- caching
    def unpersist(self, ds: Any) -> None:
        """Stop caching ``ds``; its blocks are dropped on the workers with a later message.

        Asked while groups are planned or running (a job generator unpersists
        the state the job it just yielded reads), it waits until the groups
        open at that moment have ended: their tasks were planned against
        those blocks, and recovery from a lost worker may still need them.
        """
        if self._open_plans:
            self._deferred.append((self._latest_group, ds, None, self._pulling))
            return
        ds._cached = False
        self.drop_cached(ds.id)

    def drop_cached(self, node_id: int) -> None:
        """Forget a dataset's cached blocks (it was unpersisted, or garbage-collected)."""
        for block in [b for b in self.cache_locations if b[1] == node_id]:
            w = self.cache_locations.pop(block)
            if self._open_plans:
                self._deferred.append((self._latest_group, None, (w, block), False))
            else:
                self.pending_drops.setdefault(w, []).append(block)

    def _close(self, plan: GroupPlan, *, committed: bool, discarded: bool = False) -> None:
        """A group ended (or was dropped unlaunched): commit its cached blocks, apply what waited for it.

        A group ``discarded`` before launch never ran: the unpersists its job
        generator asked for while its jobs were pulled are cancelled with it
        (the caller may roll back to the datasets they would have superseded).
        """
        self._open_plans.pop(plan.group, None)
        if committed:
            self.cache_locations.update(plan.new_cache)
        still_read = set().union(*(p.reads for p in self._open_plans.values())) if self._open_plans else set()
        waiting, self._deferred = self._deferred, []
        for tag, ds, drop, pulled in waiting:
            node_id = ds.id if ds is not None else drop[1][1]
            if discarded and pulled and tag == plan.group:
                continue
            if self._open_plans and (tag > plan.group or node_id in still_read):
                self._deferred.append((tag, ds, drop, pulled))  # a later open group still reads it
            elif ds is not None:
                self.unpersist(ds)
            else:
                self.pending_drops.setdefault(drop[0], []).append(drop[1])

    # ---------------------------------------------------------------- run
    def run(self, jobs: Iterable[tuple[Any, Callable[[Any], Any]]],
            next_group_size: Callable[[], int],
            on_group: Callable[[GroupMetrics], None] | None = None,
            keep_going: Callable[[], bool] | None = None) -> Iterator[list[Any]]:
        """Yield each job's results (one per partition), in job order.

        Group k+1 is planned and serialized while group k runs (the driver
        would otherwise sit idle waiting for results), and launched the
        moment group k is done; so the planning cost of a group is off the
        critical path. ``keep_going()`` is asked before each launch: False
        drops a group planned ahead (a converged ``iterate``, a stopped stream).
        """
        it = iter(jobs)
        numbers = itertools.count()
        prep = self._prepare(it, numbers, next_group_size(), None)
        while prep is not None:
            ahead: list[Any] = []

            def plan_next(base: GroupPlan, ahead: list[Any] = ahead) -> None:
                try:
                    ahead.append(self._prepare(it, numbers, next_group_size(), base))
                except BaseException as e:  # raised once this group's results are out
                    ahead.append(e)

            try:
                yield from self._run_group(prep, on_group, plan_next)
            except BaseException:
                for nxt in ahead:
                    if isinstance(nxt, _Prepared):
                        self._close(nxt.plan, committed=False, discarded=True)
                raise
            nxt = ahead[0] if ahead else self._prepare(it, numbers, next_group_size(), None)
            if isinstance(nxt, BaseException):
                raise nxt
            if nxt is not None:
                if keep_going is not None and not keep_going():
                    self._close(nxt.plan, committed=False, discarded=True)
                    return
                if nxt.live != tuple(self.live) or self._recovered:
                    nxt = self._replan(nxt)  # planned on workers or blocks that changed since
            prep = nxt

    def _prepare(self, it: Iterator[Any], numbers: Iterator[int], g: int,
                 base: GroupPlan | None) -> _Prepared | None:
        """Pull up to ``g`` jobs, plan and serialize them; None when there are no more jobs.

        With ``base`` (the group still running) its cached blocks count as
        made: the next group is planned to read them where ``base`` puts them.
        """
        # Lazy: the planner pulls (and plans) one job at a time, so a job
        # generator may unpersist what the job it yielded last has read.
        pulled = ((next(numbers), ds, f) for ds, f in itertools.islice(it, g))
        located = self.cache_locations if base is None else {**self.cache_locations, **base.new_cache}
        t0 = time.perf_counter()
        group = self.planner.next_group
        self._latest_group = group
        self._open_plans[group] = _PLACEHOLDER
        self._pulling = True
        try:
            plan = self.planner.plan(pulled, self.live, located)
        except BaseException:
            self._open_plans.pop(group, None)
            raise
        finally:
            self._pulling = False
        self._open_plans[plan.group] = plan
        if not plan.jobs:
            self._close(plan, committed=False)
            return None
        t1 = time.perf_counter()
        program_id, program_bytes = self._serialize(plan, plan.jobs)
        return _Prepared(plan, program_id, program_bytes, t1 - t0, time.perf_counter() - t1, tuple(self.live), g)

    def _replan(self, prep: _Prepared) -> _Prepared:
        old = prep.plan
        t0 = time.perf_counter()
        self._latest_group = self.planner.next_group
        plan = self.planner.plan(old.jobs, self.live, self.cache_locations)
        self._open_plans[plan.group] = plan
        self._close(old, committed=False)
        t1 = time.perf_counter()
        program_id, program_bytes = self._serialize(plan, plan.jobs)
        self._recovered = False
        return _Prepared(plan, program_id, program_bytes, t1 - t0, time.perf_counter() - t1, tuple(self.live),
                         prep.size)

    def _run_group(self, prep: _Prepared, on_group: Callable[[GroupMetrics], None] | None,
                   plan_next: Callable[[GroupPlan], None]) -> Iterator[list[Any]]:
        """Launch a prepared group, yield its jobs' results in order; survive lost workers.

        A lost worker aborts the attempt on the survivors, which keep the
        cached blocks that finished jobs made (the state later jobs read).
        The jobs not finished yet are planned again on the live workers — a
        replacement worker included when the transport can start one — and
        what the lost worker held is recomputed from lineage. Results come
        from the latest attempt only (attempts are separate groups: late
        messages of an aborted one are ignored), so each job's results are
        yielded exactly once, in job order.
        """
        plan = first = prep.plan
        jobs = list(plan.jobs)
        next_job, last_job = jobs[0][0], jobs[-1][0]
        done: dict[int, list[Any]] = {}  # finished jobs not yielded yet
        recoveries = 0
        busy = 0.0
        worker_bytes = 0
        msgs0, bytes0 = self.transport.messages_sent, self.transport.bytes_sent
        t2 = time.perf_counter()
        launched = self._launch(plan, prep.program_id, prep.program_bytes)
        t3 = time.perf_counter()
        run = self._start(plan, launched)
        plan_next(plan)  # overlaps this group's run; its time is not this group's
        try:
            while run.remaining or run.awaiting_done:
                lost = None
                for worker, msg in self.transport.poll(None):
                    try:
                        self._dispatch(run, worker, msg)
                    except _Lost as e:  # finish the round: results in it still count
                        lost = lost or e
                if lost is not None:
                    recoveries += 1
                    self._recovered = True
                    busy += run.busy
                    worker_bytes += run.worker_bytes
                    if self.trace is not None:
                        self.trace.instant(f"lost {self.transport.worker_names[lost.worker]}", lost.reason)
                    for job in run.results.keys() - run.remaining.keys():
                        done.setdefault(job, run.results[job])
                    old = plan
                    plan = self._recover(run, lost, recoveries, [j for j in jobs if j[0] not in done
                                                                 and j[0] >= next_job])
                    self._open_plans[plan.group] = plan
                    self._close(old, committed=False)
                    program_id, program_bytes = self._serialize(plan, plan.jobs)
                    run = self._start(plan, self._launch(plan, program_id, program_bytes))
                for job in run.results.keys() - run.remaining.keys():
                    done.setdefault(job, run.results[job])
                while next_job <= last_job and next_job in done:
                    if self.trace is not None:
                        self.trace.instant(f"job {next_job} done")
                    yield done.pop(next_job)
                    next_job += 1
        except BaseException:
            if run.remaining or run.awaiting_done:
                self._abort(run)
            self._run = None
            self._close(plan, committed=False)
            raise
        self._run = None
        self._close(plan, committed=True)
        end = time.perf_counter()
        wall = end - t2 + prep.plan_s + prep.serialize_s
        busy += run.busy
        worker_bytes += run.worker_bytes
        nw = max(1, len(launched))
        if self.trace is not None:
            self.trace.group(first.group, len(jobs), t2 - prep.plan_s - prep.serialize_s, t2 - prep.serialize_s,
                             t2, t3, end)
        m = GroupMetrics(
            group=first.group, jobs=len(jobs), tasks=len(first.tasks), workers=len(launched),
            wall_s=wall, plan_s=prep.plan_s, serialize_s=prep.serialize_s, launch_s=t3 - t2, busy_s=busy,
            coordination=min(1.0, max(0.0, 1.0 - busy / (wall * nw))),
            messages_sent=self.transport.messages_sent - msgs0, bytes_sent=self.transport.bytes_sent - bytes0,
            recoveries=recoveries, worker_bytes_sent=worker_bytes, planned_size=prep.size,
        )
        self.metrics.append(m)
        if on_group is not None:
            on_group(m)

    def _start(self, plan: GroupPlan, launched: list[int]) -> _Run:
        run = _Run(
            plan=plan,
            results={job: [None] * n for job, n in plan.job_partitions.items()},
            remaining=dict(plan.job_partitions),
            awaiting_done=set(launched),
        )
        self._run = run
        return run

    def _recover(self, run: _Run, lost: _Lost, recoveries: int, unfinished: list) -> GroupPlan:
        """Abort the attempt, keep what finished jobs cached, re-plan ``unfinished``."""
        name = self.transport.worker_names[lost.worker]
        if recoveries > self.max_recoveries:
            self._abort(run)
            raise WorkerLostError(f"lost {name}: {lost.reason} (gave up after {self.max_recoveries} "
                                  f"recoveries in one group)", worker=name)
        log.warning("lost %s during group %d: %s; recovering", name, run.plan.group, lost.reason)
        # Cached blocks made by result tasks that finished on a live worker stay.
        keep: dict[int, list[tuple]] = {}
        for index in run.finished:
            w = run.plan.worker_of[index]
            if w in self.live:
                for node_id, q in run.plan.tasks[index].stores:
                    keep.setdefault(w, []).append(("c", node_id, q))
                    self.cache_locations[("c", node_id, q)] = w
        self._abort(run, keep)
        if self._replace(lost.worker):
            log.warning("started a replacement for %s", name)
        if not self.live:
            raise WorkerLostError(f"lost {name}: {lost.reason}; no worker is left", worker=name)
        if self.on_failure is not None:
            self.on_failure()
        return self.planner.plan(unfinished, self.live, self.cache_locations)

    def add_worker(self, worker: int) -> None:
        """A worker joined (index ``worker``): plans from the next group on may use it."""
        while len(self.worker_programs) <= worker:
            self.worker_programs.append(OrderedDict())
        self.worker_programs[worker] = OrderedDict()
        if worker not in self.live:
            self.live.append(worker)
            self.live.sort()

    def _replace(self, worker: int) -> bool:
        replace = getattr(self.transport, "replace_worker", None)
        if replace is None:
            return False
        try:
            ready = replace(worker, self.epochs.get(worker, 0) + 1)
        except Exception as e:
            log.warning("could not replace worker %d: %s", worker, e)
            return False
        if ready is False:
            return False
        self.epochs[worker] = self.epochs.get(worker, 0) + 1
        if ready:
            self.add_worker(worker)
        # else: starting; it joins (WorkerJoined) while the survivors carry on
        return True

    # ------------------------------------------------------------ launching
    def _serialize(self, plan: GroupPlan, batch: list) -> tuple[int, bytes]:
        """The group's program, pickled once (and reused while it repeats)."""
        # Node identity, not just id: a dataset's node can be replaced (lineage
        # truncated to a value the driver holds), and must not hit a stale program.
        key = (tuple(sorted((nid, id(n)) for nid, n in plan.nodes.items())), tuple(sorted(plan.funcs)))
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
            per_worker.setdefault(w, []).append(tuple(task))  # a NamedTuple pickles ~4x slower
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
                             plan.forwards.get(w, []), self.pending_drops.pop(w, []), self.epochs,
                             self.trace is not None))
        for w in [w for w in self.pending_drops if w not in per_worker]:
            self.transport.send(w, (M.DROP, self.pending_drops.pop(w)))
        self.transport.send_shared(workers, messages)
        return workers

    # --------------------------------------------------------------- events
    def _dispatch(self, run: _Run, worker: int, msg: Any) -> None:
        if isinstance(msg, WorkerLost):
            self._on_worker_lost(run, worker, msg.reason)
            return
        if isinstance(msg, WorkerJoined):
            self._on_worker_joined(worker)
            return
        tag, group = msg[0], msg[1]
        if group != run.plan.group:
            return  # a late message of an aborted group
        if tag == M.RESULTS:
            self._on_results(run, msg[2])
        elif tag == M.DONE:
            if len(msg) > 5 and msg[5]:
                self._on_results(run, msg[5])
            self._on_done(run, worker, msg[2], msg[4] if len(msg) > 4 else {})
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

    def _on_done(self, run: _Run, worker: int, busy: float, stats: dict) -> None:
        run.awaiting_done.discard(worker)
        run.busy += busy
        run.worker_bytes += stats.get("bytes_sent", 0)
        if self.trace is not None and stats.get("spans"):
            self.trace.tasks(run.plan, worker, stats["spans"])

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
        """Forget the worker and what it held; during a group, start a recovery."""
        if worker in self.live:
            self.live.remove(worker)
        for block in [b for b, w in self.cache_locations.items() if w == worker]:
            del self.cache_locations[block]
        self.pending_drops.pop(worker, None)
        self._deferred = [d for d in self._deferred if d[2] is None or d[2][0] != worker]
        if run is not None:
            raise _Lost(worker, reason)
        name = self.transport.worker_names[worker]
        log.warning("lost %s between jobs: %s", name, reason)
        self._replace(worker)

    def _abort(self, run: _Run, keep: dict[int, list[tuple]] | None = None) -> None:
        run.remaining.clear()
        run.awaiting_done.clear()
        for w in self.live:
            try:
                self.transport.send(w, (M.ABORT, run.plan.group, (keep or {}).get(w, [])))
            except Exception as e:  # the worker may be the one that just died
                log.debug("could not send abort to worker %d: %s", w, e)

    def _on_worker_joined(self, worker: int) -> None:
        """A replacement is up: plans from now on (the next group, or a recovery) may use it."""
        self.add_worker(worker)
        if self.trace is not None:
            self.trace.instant(f"{self.transport.worker_names[worker]} joined")

    def check_workers(self) -> None:
        """Notice workers lost or joined while idle (so the next plan sees them)."""
        for worker, msg in self.transport.poll(0):
            if isinstance(msg, WorkerLost):
                self._on_worker_lost(None, worker, msg.reason)
            elif isinstance(msg, WorkerJoined):
                self._on_worker_joined(worker)


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
