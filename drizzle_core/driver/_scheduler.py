"""Group scheduler (driver side): plan groups, launch them, route what comes back.

Policy. Jobs are taken from the caller's iterable G at a time (G fixed, or
tuned per group by :class:`~drizzle_core._adaptive.AIMD`). For each group the
:class:`~drizzle_core._plan.Planner` plans every stage of every job; the
group's program (nodes and job functions) is cloudpickled ONCE and each
worker gets ONE launch message with all of its tasks; a job repeating a
shape already planned (an iteration, a micro-batch) is not planned at all
but stamped from that shape's execution template (``_template``), and the
workers stamp its tasks themselves. From then on the
driver only listens: map outputs travel worker to worker, and each job's
results are yielded, in job order, as soon as that job's last result
arrives. While a group runs, the next one is planned a few jobs at a time
between polls of the transport (so planning never holds back results), and
launched as soon as it is planned (``pipeline``: workers queue it behind the
current one's tasks), or else the moment the current one is done.

Several groups can be in flight at once, and that is first-class: an action
called while results are consumed (inside an ``iter_jobs`` loop, a stream's
sink, an ``iterate`` callback, a job generator) launches its own group, and
two threads may run jobs on one Context. Messages are routed to the run of
their group, whichever caller happens to be polling; each caller waits for
its own run. One re-entrant lock guards all of this state and the transport;
it is never held while results are handed to the caller.

State (shapes in comments):

    live: [worker index]                     workers that can take tasks
    cache_locations: {block: worker}          cached partitions that exist
    worker_programs: [OrderedDict[program id]]  mirror of each worker's program LRU
    programs: OrderedDict[key -> (program id, bytes, Program)]  serialized programs
    pending_drops: {worker: [block]}          blocks to drop with the next message to it
    epochs: {worker: incarnation}             how often a worker's slot was refilled
    _runs: {wire group id: _Run}              launched groups (current attempts)
    _run_of: {group: _Run}                    the same runs, by their current attempt's plan
    _open_plans: {group: GroupPlan}           planned (ahead, perhaps in part) or running
    _deferred: [_DeferredDrop]                unpersists waiting for the groups that may read them
    _version: int                             bumped when workers or blocks change under open plans
    metrics: [GroupMetrics]

Ids. ``plan.group`` numbers plans (metrics, traces, deferred drops). Each
launch attempt gets a *wire* id, increasing in launch order: workers use it
to tell a late message of a finished group from an early one of a group
not launched to them yet, which needs that order.

Events and their transitions (one small method each): ``RESULTS`` →
``_on_results``; ``FAILED`` → ``_on_failed`` (abort that attempt; the owner
raises TaskError after delivering the jobs that finished before it: a user
error is not retried); ``DONE`` → ``_on_done``; ``WorkerLost`` →
``_on_worker_lost`` (forget its blocks; every run in flight recovers: abort
the attempt, keep finished jobs' cached blocks, start a replacement if the
transport can, re-plan the unfinished jobs — at most ``max_recoveries``
times per group; whatever goes wrong while re-planning ends that run with a
Drizzle error, never escapes into the caller that happened to poll); ``WorkerJoined`` → ``_on_worker_joined``.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .._errors import (
    DrizzleError,
    RemoteTraceback,
    SerializationError,
    TaskError,
    TaskTimeout,
    TaskTimeoutError,
    WorkerLostError,
)
from .._retained import Retained
from ..lineage import SourceNode
from ..net import Transport, WorkerJoined, WorkerLost
from ..protocol import Program
from ..protocol import _messages as M
from ._plan import GroupPlan, PlanBuilder, Planner
from ._template import encode_instances
from ._trace import Trace

log = logging.getLogger("drizzle.scheduler")

_POLL_SLICE = 0.05     # longest wait in one poll: lets another thread in, and bounds a missed wake-up
_PLAN_SLICE = 0.0005   # planning ahead between two polls, in seconds
_SHARED_POLL = 0.002   # poll slice while several threads drive runs
# While groups run, released blocks go out in one DROP per worker every this many jobs handed out:
# bounded memory (a 1 MB state per job holds at most ~32 MB) at a few control messages per group, not
# one per job (the launch stays the only per-group message a worker needs).
_DROP_EVERY_JOBS = 32
REPLACEMENT_WAIT = 60.0  # seconds a group with no live worker waits for a replacement being started
# A group the driver has heard nothing of for this long (past its last micro-batch's time) is logged, with what
# each of its workers says it is waiting for: a hang explains itself before any timeout kills it.
QUIET_WARN = 60.0
_HANDOFF = 0.0005      # lock released this long between polls while several threads drive runs


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
    stamped: int = 0             # jobs stamped from an execution template instead of planned (``_template``)


@dataclass(eq=False, slots=True)
class _DeferredDrop:
    """An unpersist, or a stale copy of a block, waiting for the jobs that may still read it.

    Released when, in every open group, the last job that reads or makes
    ``node_id``'s blocks (``GroupPlan.read_by``) has finished, and no group
    planned but not launched reads them: a loop that supersedes its state
    every job frees each state one job later, not one group later (a
    300-job group of a 1 MB state held 300 MB per worker).
    """

    node_id: int
    uncache: Callable[[], None] | None = None  # clears the unpersisted dataset's cached flag, at release
    copy: tuple[int, tuple[Any, ...]] | None = None  # (worker, block): one superseded copy, not the dataset
    pulled_for: int | None = None       # asked while this group's jobs were pulled: cancelled with it


@dataclass(eq=False, slots=True)
class _Prepared:
    """A planned and serialized group, waiting to be launched."""

    plan: GroupPlan
    program_id: int
    program_bytes: bytes
    plan_s: float
    serialize_s: float
    version: int            # the scheduler's _version it was planned at
    size: int = 0           # the group size it was planned with
    origin: int = -1        # the group its jobs were pulled for (their unpersists name it), kept when re-planned


@dataclass(eq=False, slots=True)
class _Ahead:
    """The next group of one ``run`` call, planned a few jobs at a time while the current one runs."""

    jobs: Iterator[Any]
    numbers: Iterator[int]
    size: int
    hold: float = 0.0              # seconds workers may keep its results (``run``'s ``hold``)
    builder: PlanBuilder | None = None
    version: int = 0
    pulled: int = 0
    exhausted: bool = False
    finished: bool = False
    plan_s: float = 0.0
    prepared: _Prepared | None = None
    error: Exception | None = None
    launched: _Run | None = None   # pipelined: the next group, launched while the current one runs


@dataclass(eq=False)
class _Run:
    """One launched group, across the attempts its recoveries make."""

    prep: _Prepared
    unfinished: dict[int, tuple[int, Any, Any]]  # job -> (job, dataset, function) until its results are in
    count: int                          # jobs in the group
    next_job: int                       # the next job to hand to the caller
    last_job: int
    plan: GroupPlan                     # the current attempt
    wire: int = 0                       # its group id on the wire
    program_id: int = 0
    attempt_open: bool = False          # the current attempt's plan is still in _open_plans
    results: dict[int, list[Any]] = field(default_factory=dict)   # job -> value per partition (unfinished)
    remaining: dict[int, int] = field(default_factory=dict)       # job -> results missing
    awaiting_done: set[int] = field(default_factory=set)          # workers whose DONE is due
    finished: set[int] = field(default_factory=set)               # task indexes with a result
    done: dict[int, list[Any]] = field(default_factory=dict)      # finished jobs not handed out yet
    launched: list[int] = field(default_factory=list)             # workers of the first attempt
    busy: float = 0.0
    worker_bytes: int = 0
    recoveries: int = 0
    error: BaseException | None = None  # raised by the owner once the jobs before it are out
    t_launch: float = 0.0
    t_launched: float = 0.0
    msgs: int = 0                       # what the driver sent for this group (launches, aborts): with
    sent_bytes: int = 0                 # pipelining, another group's launch goes out while this one runs
    stalled_until: float = 0.0          # no live worker: waiting (until then) for a replacement to join
    behind: _Run | None = None          # pipelined: the run it was launched behind, while that one ran
    parked: bool = False                # pipelined and recovered: re-planned once the run before it ends
    heard: float = 0.0                  # time.monotonic() of its last message (or launch): see QUIET_WARN

    @property
    def complete(self) -> bool:
        return not self.remaining and not self.awaiting_done and not self.stalled_until and not self.parked


class JobIterator(Iterator[list[Any]]):
    """What ``iter_jobs`` returns: each job's results as soon as it finishes, in job order.

    ``group`` is the group id of the job most recently returned (streams
    report it per batch). ``close()`` stops early: the rest of the running
    group is aborted and nothing planned ahead runs.
    """

    __slots__ = ("_gen", "group")

    def __init__(self, gen: Iterator[tuple[int, list[Any]]]) -> None:
        self._gen = gen
        self.group = -1

    def __iter__(self) -> JobIterator:
        return self

    def __next__(self) -> list[Any]:
        group, result = next(self._gen)
        self.group = group
        return result

    def close(self) -> None:
        self._gen.close()  # type: ignore[attr-defined]


class _Locked:
    """The scheduler's lock as a context manager that applies deferred drops when the outermost hold ends.

    A class, not a ``contextlib.contextmanager`` generator: the drive loop
    takes it on every round, and a generator context manager costs about
    five times as much to enter and leave (~1.5 us against ~0.3 us).
    """

    __slots__ = ("_s",)

    def __init__(self, scheduler: GroupScheduler) -> None:
        self._s = scheduler

    def __enter__(self) -> None:
        s = self._s
        s._lock.acquire()
        s._depth += 1

    def __exit__(self, *exc: object) -> None:
        s = self._s
        try:
            s._depth -= 1
            if s._depth == 0 and s._gc_drops:
                s._apply_gc_drops()
        finally:
            s._lock.release()


class GroupScheduler:
    """Runs groups of jobs on a transport (see the module docstring)."""

    def __init__(self, transport: Transport, num_workers: int) -> None:
        self.transport = transport
        self.planner = Planner()
        self.live: list[int] = list(range(num_workers))
        self.cache_locations: dict[tuple[Any, ...], int] = {}
        self.worker_programs: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(num_workers)]
        self.worker_templates: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(num_workers)]
        self.programs: OrderedDict[tuple[Any, ...], tuple[int, bytes, Program]] = OrderedDict()
        self._program_ids = itertools.count(1)
        self._wire_ids = itertools.count(1)
        self.pending_drops: dict[int, list[tuple[Any, ...]]] = {}
        self.epochs: dict[int, int] = {}  # worker -> times replaced (its process incarnation)
        self._runs: dict[int, _Run] = {}
        self._run_of: dict[int, _Run] = {}      # plan group -> the run whose current attempt it is
        self._stalled: list[_Run] = []          # runs with no live worker, waiting for a replacement
        self._starting: set[int] = set()        # workers whose replacement is starting (WorkerJoined to come)
        self._last_loss = ""                    # "lost <name>: <reason>", for the error when none is left
        self.replacement_wait = REPLACEMENT_WAIT
        self._open_plans: dict[int, GroupPlan] = {}
        self._deferred: list[_DeferredDrop] = []
        self._deferred_max = -1  # the highest node id an unpersist was ever deferred for (keep_cached)
        self._pulling: list[int] = []           # groups whose jobs are being pulled now (innermost last)
        self._version = 0
        self._gc_drops: deque[int] = deque()    # node ids of collected datasets, applied at a safe point
        self._jobs_since_drop = 0               # jobs handed out since pending drops were last sent
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._depth = 0                         # nesting of critical sections (GC drops wait for 0)
        self._held = _Locked(self)
        self._drivers: dict[int, int] = {}      # thread id -> runs it is driving
        self.max_recoveries = 3                  # lost workers one group survives
        #: launch a run's next group as soon as it is planned, while the current one runs (no barrier
        #: between groups: workers queue it behind their current tasks); False: after the current ends
        self.pipeline = True
        self.planner.templates.enabled = True  # see the ``templates`` property
        self.on_failure: Callable[[], None] | None = None  # told of each recovery (adaptive G)
        self.trace: Trace | None = None
        self.metrics: Retained[GroupMetrics] = Retained()  # the last METRICS_RETAINED groups' (a stream never ends)
        self._described: dict[int, dict[int, dict[str, int]]] = {}  # token -> {worker: bookkeeping}
        self._quiet_asks: dict[int, tuple[int, set[int]]] = {}  # token -> (run wire, workers yet to say)
        self._tokens = itertools.count(1)
        log.info("%d workers on %s: %s", num_workers, getattr(transport, "name", type(transport).__name__),
                 ", ".join(transport.worker_names))

    @property
    def templates(self) -> bool:
        """Whether jobs that repeat a shape are stamped from a template (``_template``), not planned again."""
        return self.planner.templates.enabled

    @templates.setter
    def templates(self, on: bool) -> None:
        with self._locked():
            self.planner.templates.enabled = bool(on)
            if not on:
                self.planner.templates.clear()

    def _locked(self) -> _Locked:
        """``with self._locked():`` the scheduler's lock (reentrant); drops deferred meanwhile go when it is left."""
        return self._held

    # ------------------------------------------------------------- caching
    def unpersist(self, node_id: int, uncache: Callable[[], None]) -> None:
        """Stop caching ``node_id``'s dataset; its blocks are dropped on the workers with a later message.

        Asked while groups are planned or running (a job generator unpersists
        the state the job it just yielded reads), it waits until no job that
        reads or makes those blocks is unfinished: their tasks were planned
        against them, and recovery from a lost worker may still need them.
        ``uncache()`` is called when the dataset stops counting as cached
        (the planner reads the flag, so not before).
        """
        with self._locked():
            if self._open_plans:
                d = _DeferredDrop(node_id, uncache=uncache, pulled_for=self._pulling[-1] if self._pulling else None)
                if self._still_read(node_id):
                    self._deferred.append(d)  # the others waiting did not change: only this one is looked at
                    self._deferred_max = max(self._deferred_max, node_id)
                else:
                    uncache()
                    self._drop_node(node_id)
                return
            uncache()
            self._drop_node(node_id)
            if not self._runs:
                self._flush_drops()

    def keep_cached(self, node_id: int) -> None:
        """A dataset is cached again: cancel unpersists of it still waiting.

        Datasets get increasing ids, so one newer than every unpersist ever
        deferred (a loop caching its new state every job) has none waiting:
        no walk of the deferred drops, which a group of G jobs holds G of.
        """
        if node_id > self._deferred_max:
            return
        with self._locked():
            self._deferred = [d for d in self._deferred if d.node_id != node_id or d.copy is not None]

    def drop_cached(self, node_id: int) -> None:
        """Forget a dataset's cached blocks (it was garbage-collected). Safe from any thread, at any time.

        A finalizer can run in the middle of the scheduler's own code (the
        garbage collector runs anywhere): the drop is queued and applied at
        the next point where no scheduler code is running.
        """
        self._gc_drops.append(node_id)
        if self._lock.acquire(blocking=False):
            try:
                if self._depth == 0:
                    self._apply_gc_drops()
            finally:
                self._lock.release()

    def _apply_gc_drops(self) -> None:
        self._depth += 1
        try:
            while self._gc_drops:
                node_id = self._gc_drops.popleft()
                if self._open_plans:
                    self._deferred.append(_DeferredDrop(node_id))
                    self._deferred_max = max(self._deferred_max, node_id)
                else:
                    self._drop_node(node_id)
            if not self._runs:
                self._flush_drops()  # idle: free the blocks now rather than with the next job
        finally:
            self._depth -= 1

    def _drop_node(self, node_id: int) -> None:
        """Drop a dataset's blocks: those that exist, and those running groups made (not committed yet)."""
        moves = self.planner.moves
        for block in [b for b in self.cache_locations if b[1] == node_id]:
            self.pending_drops.setdefault(self.cache_locations.pop(block), []).append(block)
            moves.pop(block, None)
        for plan in self._open_plans.values():
            for block in plan.made_of.pop(node_id, ()):
                w = plan.new_cache.pop(block, None)
                if w is not None and w in self.live:
                    self.pending_drops.setdefault(w, []).append(block)

    def _close(self, plan: GroupPlan, *, committed: bool, discarded: bool = False) -> None:
        """A plan ended (ran, was aborted, or was dropped unlaunched): commit its blocks, release drops.

        A group ``discarded`` before launch never ran: the unpersists its job
        generator asked for while its jobs were pulled are cancelled with it
        (the caller may roll back to the datasets they would have superseded).
        """
        self._open_plans.pop(plan.group, None)
        self._run_of.pop(plan.group, None)
        if not committed:
            # What it made and nobody keeps goes: a worker that finished its share of an aborted attempt, or
            # of a pipelined group the caller stopped before, holds those blocks (an ABORT reaches only
            # the groups still running there). Queued now, they ride the next message to the worker,
            # ahead of any later group that makes the same block again.
            for block, w in plan.new_cache.items():
                if w in self.live and self.cache_locations.get(block) != w:
                    self.pending_drops.setdefault(w, []).append(block)
        if committed:
            for block, w in plan.new_cache.items():
                if w not in self.live:
                    continue
                old = self.cache_locations.get(block)
                if old is not None and old != w:
                    # two groups in flight made the same block: the older copy goes once no group reads it
                    self._deferred.append(_DeferredDrop(block[1], copy=(old, block)))
                self.cache_locations[block] = w
        self._release_deferred(plan.group if discarded else None)

    def _still_read(self, node_id: int) -> bool:
        """Whether a job not finished yet, in any open group, reads or makes ``node_id``'s blocks."""
        for p in self._open_plans.values():
            last = p.read_by.get(node_id)
            if last is not None:
                run = self._run_of.get(p.group)
                if run is None or last >= run.next_job:
                    return True  # planned, not launched; or launched and that job is not handed out yet
        return False

    def _release_deferred(self, discarded: int | None = None, touched: dict[int, int] | None = None) -> None:
        """Release the deferred drops no job still reads (those of ``touched``'s nodes only, when given)."""
        if not self._deferred:
            return
        waiting, self._deferred = self._deferred, []
        for d in waiting:
            if discarded is not None and d.pulled_for == discarded:
                continue  # asked by a job that never ran
            if (touched is not None and d.node_id not in touched) or self._still_read(d.node_id):
                self._deferred.append(d)
            elif d.copy is not None:
                w, block = d.copy
                if self.cache_locations.get(block) != w and w in self.live:
                    self.pending_drops.setdefault(w, []).append(block)
            else:
                if d.uncache is not None:
                    d.uncache()
                self._drop_node(d.node_id)

    def _flush_drops(self) -> None:
        """Send pending drops now (nothing is running that would carry them, or enough have piled up)."""
        self._jobs_since_drop = 0
        for w in [w for w in self.pending_drops if w in self.live]:
            self.transport.send(w, (M.DROP, self.pending_drops.pop(w)))

    # ---------------------------------------------------------------- run
    def run(self, jobs: Iterable[tuple[Any, Callable[[Any], Any]]],
            next_group_size: Callable[[], int],
            on_group: Callable[[GroupMetrics], None] | None = None,
            keep_going: Callable[[], bool] | None = None, hold: float = 0.0) -> JobIterator:
        """Each job's results (one per partition), in job order (see :class:`JobIterator`).

        Group k+1 is planned and serialized while group k runs, between polls,
        and launched the moment group k is done; so planning is off the
        critical path. ``keep_going()`` is asked before each launch: False
        drops a group planned ahead (a converged ``iterate``, a stopped stream).
        ``hold``: seconds a worker may keep these jobs' results before sending
        them (batched: one wake-up of the driver for many jobs, where nobody
        waits on each job as it finishes); 0 sends them as soon as the
        worker's ready queue runs dry.
        """
        return JobIterator(self._run(iter(jobs), next_group_size, on_group, keep_going, hold))

    def _run(self, it: Iterator[Any], next_group_size: Callable[[], int],
             on_group: Callable[[GroupMetrics], None] | None,
             keep_going: Callable[[], bool] | None, hold: float) -> Iterator[tuple[int, list[Any]]]:
        try:
            yield from self._groups(it, next_group_size, on_group, keep_going, hold)
        finally:
            # Between groups, drops ride the next LAUNCH (no message of their own); once this
            # run_jobs call has no next group, they go now, unless another run is in flight.
            with self._locked():
                if not self._runs:
                    self._flush_drops()

    def _groups(self, it: Iterator[Any], next_group_size: Callable[[], int],
                on_group: Callable[[GroupMetrics], None] | None,
                keep_going: Callable[[], bool] | None, hold: float = 0.0) -> Iterator[tuple[int, list[Any]]]:
        """Launch the groups of one ``run`` call and hand out their jobs in order.

        Pipelined (``self.pipeline``): group k+1 is launched the moment it is
        planned, while k runs; each worker queues its tasks behind k's (a
        dependency between the groups is a block dependency, waited on where
        the task runs). What was decided at the end of k is decided there
        still: ``keep_going()`` false (a stream stopped, an iterate converged)
        aborts k+1 unseen, its jobs never handed out and the unpersists its
        job generator asked for cancelled, exactly as a group planned ahead and
        discarded; a k+1 planned on workers or blocks that changed is
        re-planned before it goes; a loss recovers both, as any runs in flight.
        """
        numbers = itertools.count()
        with self._locked():
            prep = self._finish_ahead(_Ahead(it, numbers, next_group_size(), hold=hold))
            run = self._launch_run(prep) if prep is not None else None
        while run is not None:
            with self._locked():
                ahead = _Ahead(it, numbers, next_group_size(), hold=hold)
            try:
                yield from self._drive(run, ahead)
            except BaseException:
                with self._locked():
                    self._discard_ahead(ahead)
                    self._end_run(run, committed=False)
                    if ahead.launched is not None:
                        self._end_run(ahead.launched, committed=False, discarded=True)
                raise
            with self._locked():
                self._end_run(run, committed=True)
                m = self._group_metrics(run)
                log.debug("group %d done: %d jobs, %d tasks on %d workers in %.2f ms; coordination share %.1f%%, "
                          "%d recoveries", m.group, m.jobs, m.tasks, m.workers, 1e3 * m.wall_s, 100 * m.coordination,
                          m.recoveries)
                if on_group is not None:
                    on_group(m)
                nxt = ahead.launched
                if nxt is not None:
                    if keep_going is not None and not keep_going():
                        log.debug("group %d aborted unseen: the loop stopped (keep_going)", nxt.prep.plan.group)
                        self._end_run(nxt, committed=False, discarded=True)
                        return
                    nxt.behind = None
                    if nxt.parked:  # it was recovered while this one ran: re-planned now, on what it left
                        nxt.parked = False
                        if nxt.error is None:
                            self._try_reattempt(nxt, f"group {nxt.prep.plan.group} was launched behind a group "
                                                     f"that recovered")
                    run = nxt
                    continue
                prep = self._finish_ahead(ahead)
                if prep is not None:
                    if keep_going is not None and not keep_going():
                        log.debug("group %d dropped unlaunched: the loop stopped (keep_going)", prep.plan.group)
                        self._close(prep.plan, committed=False, discarded=True)
                        return
                    if prep.version != self._version:
                        prep = self._replan(prep)  # planned on workers or blocks that changed since
                run = self._launch_run(prep) if prep is not None else None

    def _launch_ahead(self, ahead: _Ahead, behind: _Run) -> None:
        """Pipelining: launch ``ahead``'s group now (re-planned first if workers or blocks changed)."""
        prep = ahead.prepared
        assert prep is not None
        ahead.prepared = None
        if prep.version != self._version:
            prep = self._replan(prep)
        ahead.launched = self._launch_run(prep)
        ahead.launched.behind = behind
        log.debug("group %d launched behind group %d (pipelined)", prep.plan.group, behind.prep.plan.group)

    def _drive(self, run: _Run, ahead: _Ahead) -> Iterator[tuple[int, list[Any]]]:
        """Hand out ``run``'s jobs as they finish; poll (for every run) and plan ahead meanwhile."""
        me = threading.get_ident()
        with self._locked():
            self._drivers[me] = self._drivers.get(me, 0) + 1
        try:
            while True:
                with self._locked():
                    out = self._take(run)
                    if not out:
                        if run.error is not None:
                            raise run.error
                        if run.complete:
                            return
                        self._step(ahead)
                        if ahead.prepared is not None and ahead.launched is None and self.pipeline and \
                                run.error is None and self.live:
                            self._launch_ahead(ahead, run)
                        if time.monotonic() - run.heard > QUIET_WARN and run.wire in self._runs:
                            self._quiet(run)
                        continue
                group = run.prep.plan.group
                for result in out:  # outside the lock: the caller may run anything, in any thread
                    yield group, result
        finally:
            with self._locked():
                left = self._drivers.pop(me) - 1
                if left:
                    self._drivers[me] = left

    def _quiet(self, run: _Run) -> None:
        """``run`` has sent nothing for ``QUIET_WARN`` seconds: log what it waits for, and ask its workers.

        A group whose micro-batches are not due yet is only waiting for their
        time: its silence counts from its last batch's time. Each worker that
        owes a DONE answers with what it is running and waiting for (blocks,
        timers, held results), logged as it arrives; one busy in a long task
        answers when the task ends. Logged again after another quiet spell.
        """
        plan = run.plan
        due = _latest_start(plan) - time.time()  # seconds until its last micro-batch is due (<= 0: all are)
        if due > 0:
            run.heard = time.monotonic() + due
            return
        run.heard = time.monotonic()
        jobs = sorted(run.remaining)
        owing = sorted(run.awaiting_done)
        names = self.transport.worker_names
        log.warning("group %d has sent nothing for %g s: %d of its %d jobs unfinished (jobs %s), DONE due from %s; "
                    "asking them what they are waiting for", plan.group, QUIET_WARN, len(jobs), run.count,
                    _span(jobs), ", ".join(names[w] for w in owing) or "no worker")
        token = next(self._tokens)
        asked = {w for w in owing if w in self.live}
        if asked:
            self._quiet_asks[token] = (run.wire, asked)
            for w in sorted(asked):
                self.transport.send(w, (M.DESCRIBE, token, True))

    def _on_quiet_answer(self, worker: int, msg: Any) -> None:
        token = msg[1]
        wire, waiting = self._quiet_asks[token]
        waiting.discard(worker)
        if not waiting:
            del self._quiet_asks[token]
        text = msg[3] if len(msg) > 3 else "(no detail)"
        log.warning("%s, of a quiet group (wire %d), says: %s", self.transport.worker_names[worker], wire, text)

    def _take(self, run: _Run) -> list[list[Any]]:
        out = []
        while run.next_job <= run.last_job and run.next_job in run.done:
            if self.trace is not None:
                self.trace.instant(f"job {run.next_job} done")
            out.append(run.done.pop(run.next_job))
            run.next_job += 1
        if out and self._deferred:
            # only unpersists of what this run reads can have been released by handing out its jobs
            self._release_deferred(touched=run.plan.read_by)
        if out and self.pending_drops:
            self._jobs_since_drop += len(out)
            if self._jobs_since_drop >= _DROP_EVERY_JOBS:
                self._flush_drops()
        return out

    def _step(self, ahead: _Ahead | None) -> None:
        """One round: read what arrived and route it; with nothing to read, plan ahead a little."""
        if self._stalled:
            self._expire_stalled()
        planning = ahead is not None and not ahead.finished and bool(self.live)
        shared = len(self._drivers) > 1
        timeout = 0.0 if planning else (_SHARED_POLL if shared else _POLL_SLICE)
        events = self.transport.poll(timeout)
        for worker, msg in events:
            self._dispatch(worker, msg)
        if planning and not events and ahead is not None:
            self._plan_some(ahead, _PLAN_SLICE)
        if shared:
            self._cond.wait(_HANDOFF)  # releases the lock: another thread's turn

    def _await_worker(self) -> None:
        """With no live worker but a replacement starting, wait for it (bounded) before planning."""
        deadline = time.monotonic() + self.replacement_wait
        while not self.live and self._starting and time.monotonic() < deadline:
            for worker, msg in self.transport.poll(_POLL_SLICE):
                self._dispatch(worker, msg)

    def _check_live(self) -> None:
        """No live worker to plan on: say which was lost last, and why (not only that none is left)."""
        if not self.live:
            what = f": {self._last_loss}" if self._last_loss else ""
            raise WorkerLostError(f"no live worker is left to run jobs on{what}", worker="")

    def _expire_stalled(self) -> None:
        now = time.monotonic()
        for run in [r for r in self._stalled if r.stalled_until <= now]:
            self._stalled.remove(run)
            run.stalled_until = 0.0
            run.error = WorkerLostError(f"no worker is left, and no replacement joined within "
                                        f"{self.replacement_wait:.0f} s", worker="")

    def _plan_some(self, ahead: _Ahead, budget: float | None) -> None:
        """Add jobs to ``ahead``'s plan for about ``budget`` seconds (None: all); serialize it when full."""
        if ahead.finished:
            return
        t0 = time.perf_counter()
        try:
            if ahead.builder is None:
                self._await_worker()
                ahead.version = self._version
                self._check_live()
                ahead.builder = self.planner.begin(self.live, self._located())
                ahead.builder.plan.hold = ahead.hold
                self._open_plans[ahead.builder.plan.group] = ahead.builder.plan
            builder = ahead.builder
            self._pulling.append(builder.plan.group)
            try:
                # Lazy: one job pulled and planned at a time, so a job generator may
                # unpersist what the job it yielded last has read.
                while ahead.pulled < ahead.size:
                    job = next(ahead.jobs, None)
                    if job is None:
                        ahead.exhausted = True
                        break
                    ds, f = job
                    builder.add(next(ahead.numbers), ds, f)
                    ahead.pulled += 1
                    if budget is not None and time.perf_counter() - t0 > budget:
                        break
            finally:
                self._pulling.pop()
            ahead.plan_s += time.perf_counter() - t0
            if not (ahead.exhausted or ahead.pulled >= ahead.size):
                return
            ahead.finished = True
            plan = builder.plan
            if not plan.jobs:
                self._close(plan, committed=False)
                return
            t1 = time.perf_counter()
            program_id, program_bytes = self._serialize(plan, plan.jobs)
            ahead.prepared = _Prepared(plan, program_id, program_bytes, ahead.plan_s, time.perf_counter() - t1,
                                       ahead.version, ahead.size, plan.group)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("group %d planned: %d jobs (G=%d asked; %d stamped from templates, %d templates recorded), "
                          "%d tasks on %d workers; planning %.2f ms, serializing %.2f ms (program %d bytes)",
                          plan.group, len(plan.jobs), ahead.size, len(plan.instances),
                          len(self.planner.templates.by_key), len(plan.tasks), len(self.live), 1e3 * ahead.plan_s,
                          1e3 * ahead.prepared.serialize_s, len(program_bytes))
        except Exception as e:  # raised once the running group's results are out
            ahead.error = e
            self._discard_ahead(ahead)
        except BaseException:
            self._discard_ahead(ahead)
            raise

    def _finish_ahead(self, ahead: _Ahead) -> _Prepared | None:
        self._plan_some(ahead, None)
        if ahead.error is not None:
            raise ahead.error
        return ahead.prepared

    def _discard_ahead(self, ahead: _Ahead) -> None:
        ahead.finished = True
        plan = ahead.prepared.plan if ahead.prepared is not None else (
            ahead.builder.plan if ahead.builder is not None else None)
        ahead.prepared = None
        if plan is not None and plan.group in self._open_plans:
            self._close(plan, committed=False, discarded=True)

    def _located(self, before: _Run | None = None) -> dict[tuple[Any, ...], int]:
        """Cached blocks a new plan may read: those that exist, and those launched groups will leave.

        With ``before``, only groups launched before it (a re-plan must not
        wait on a group launched after it, which may be waiting on it).
        """
        located = self.cache_locations
        runs = [r for r in self._runs.values() if r.error is None and r.attempt_open
                and (before is None or r.wire < before.wire)]
        if not runs:
            return located
        located = dict(located)
        for r in sorted(runs, key=lambda r: r.wire):
            located.update(r.plan.new_cache)
        return located

    def _replan(self, prep: _Prepared) -> _Prepared:
        old = prep.plan
        self._await_worker()  # every worker was lost since it was planned: a replacement may be coming
        t0 = time.perf_counter()
        self._check_live()
        plan = self.planner.plan(old.jobs, self.live, self._located())
        plan.hold = old.hold
        self._open_plans[plan.group] = plan
        self._close(old, committed=False)
        t1 = time.perf_counter()
        program_id, program_bytes = self._serialize(plan, plan.jobs)
        log.debug("group %d re-planned as group %d before its launch: workers or cached blocks changed since",
                  old.group, plan.group)
        return _Prepared(plan, program_id, program_bytes, t1 - t0, time.perf_counter() - t1, self._version,
                         prep.size, prep.origin)

    def _launch_run(self, prep: _Prepared) -> _Run:
        plan = prep.plan
        jobs = plan.jobs
        run = _Run(prep=prep, unfinished={j[0]: j for j in jobs}, count=len(jobs), next_job=jobs[0][0],
                   last_job=jobs[-1][0], plan=plan)
        run.t_launch = time.perf_counter()
        self._start_attempt(run, plan, prep.program_id, prep.program_bytes)
        run.launched = sorted(run.awaiting_done)
        run.t_launched = time.perf_counter()
        log.debug("group %d launched (wire %d) to workers %s: %d messages, %d bytes, in %.2f ms", plan.group,
                  run.wire, run.launched, run.msgs, run.sent_bytes, 1e3 * (run.t_launched - run.t_launch))
        return run

    def _start_attempt(self, run: _Run, plan: GroupPlan, program_id: int, program_bytes: bytes) -> None:
        wire = next(self._wire_ids)
        run.plan, run.wire, run.program_id, run.attempt_open = plan, wire, program_id, True
        run.heard = time.monotonic()
        run.results = {job: [None] * n for job, n in plan.job_partitions.items()}
        run.remaining = dict(plan.job_partitions)
        run.finished = set()
        self._runs[wire] = run
        self._run_of[plan.group] = run
        t = self.transport
        m0, b0 = t.messages_sent, t.bytes_sent
        try:
            run.awaiting_done = set(self._launch(plan, wire, program_id, program_bytes))
        finally:
            run.msgs += t.messages_sent - m0
            run.sent_bytes += t.bytes_sent - b0
        plan.jobs = []  # launched: the run keeps the unfinished ones (a finished job's datasets can go)

    def _end_run(self, run: _Run, *, committed: bool, discarded: bool = False) -> None:
        """The owner is done with ``run`` (all handed out, or it gave up): close its attempt.

        ``discarded``: a pipelined group whose jobs will never be handed out (the caller stopped before
        it): as for a group discarded unlaunched, the unpersists asked while its jobs were pulled are
        cancelled."""
        if run in self._stalled:
            self._stalled.remove(run)
            run.stalled_until = 0.0
        if run.wire in self._runs:
            if not run.complete:
                self._abort_attempt(run)
            self._runs.pop(run.wire, None)
        if run.attempt_open:
            run.attempt_open = False
            self._close(run.plan, committed=committed and run.error is None)
        if discarded:
            self._release_deferred(run.prep.origin)
        run.unfinished.clear()
        for token in [t for t, (wire, _) in self._quiet_asks.items() if wire == run.wire]:
            del self._quiet_asks[token]  # an answer after the group ended says nothing about it

    def _group_metrics(self, run: _Run) -> GroupMetrics:
        prep, first = run.prep, run.prep.plan
        end = time.perf_counter()
        wall = end - run.t_launch + prep.plan_s + prep.serialize_s
        nw = max(1, len(run.launched))
        if self.trace is not None:
            t2 = run.t_launch
            self.trace.group(first.group, run.count, t2 - prep.plan_s - prep.serialize_s, t2 - prep.serialize_s,
                             t2, run.t_launched, end)
        m = GroupMetrics(
            group=first.group, jobs=run.count, tasks=len(first.tasks), workers=len(run.launched),
            wall_s=wall, plan_s=prep.plan_s, serialize_s=prep.serialize_s, launch_s=run.t_launched - run.t_launch,
            busy_s=run.busy, coordination=min(1.0, max(0.0, 1.0 - run.busy / (wall * nw))),
            messages_sent=run.msgs, bytes_sent=run.sent_bytes,
            recoveries=run.recoveries, worker_bytes_sent=run.worker_bytes, planned_size=prep.size,
            stamped=len(first.instances),
        )
        self.metrics.append(m)
        return m

    # ------------------------------------------------------------ recovery
    def _recover(self, run: _Run, worker: int, reason: str) -> None:
        """Abort ``run``'s attempt, keep what its finished jobs cached on live workers."""
        keep: dict[int, list[tuple[Any, ...]]] = {}
        plan = run.plan
        tasks = plan.tasks
        for index in run.finished:
            w = tasks.worker(index)
            if w in self.live:
                for node_id, q in tasks.task(index).stores:
                    block = ("c", node_id, q)
                    if block not in plan.new_cache:
                        continue  # its dataset was unpersisted while the group ran: dropped, not kept
                    keep.setdefault(w, []).append(block)
                    self.cache_locations[block] = w
        self._abort_attempt(run, keep)

    def _try_reattempt(self, run: _Run, why: str) -> None:
        """``_reattempt``, where a failure ends ``run`` (its owner raises it), never the caller that polled.

        Recovery runs inside whichever caller happens to be polling (another
        run's loop, ``check_workers``): an exception escaping it would surface
        in an unrelated job. Drizzle's own errors (no live worker, a program
        that cannot be pickled) go to the run as they are; anything else is a
        fault of recovery itself, logged with its traceback and raised as a
        ``WorkerLostError`` saying why the group needed recovering, with the
        original as its cause: never a bare KeyError.
        """
        try:
            self._reattempt(run)
        except DrizzleError as e:
            run.error = e
        except Exception as e:
            log.exception("re-planning group %d failed (%s)", run.prep.plan.group, why)
            err = WorkerLostError(f"{why}; re-planning the group failed: {type(e).__name__}: {e}", worker="")
            err.__cause__ = e
            run.error = err

    def _reattempt(self, run: _Run) -> None:
        """Plan ``run``'s unfinished jobs again on the live workers and launch them."""
        old = run.plan
        unfinished = [run.unfinished[j] for j in sorted(run.unfinished)]
        try:
            if unfinished:
                plan = self.planner.plan(unfinished, self.live, self._located(before=run))
                plan.hold = old.hold
                self._open_plans[plan.group] = plan
        finally:
            if run.attempt_open:
                run.attempt_open = False
                self._close(old, committed=False)
        if unfinished:
            program_id, program_bytes = self._serialize(plan, plan.jobs)
            self._start_attempt(run, plan, program_id, program_bytes)
            log.info("group %d recovered: %d unfinished jobs re-planned on %d workers (recovery %d, wire %d)",
                     run.prep.plan.group, len(unfinished), len(self.live), run.recoveries, run.wire)

    def add_worker(self, worker: int) -> None:
        """A worker joined (index ``worker``): plans from the next group on may use it."""
        with self._locked():
            while len(self.worker_programs) <= worker:
                self.worker_programs.append(OrderedDict())
                self.worker_templates.append(OrderedDict())
            self.worker_programs[worker] = OrderedDict()
            self.worker_templates[worker] = OrderedDict()
            if worker not in self.live:
                self.live.append(worker)
                self.live.sort()
            self._version += 1
            self._rebalance(worker)
            log.info("%s joined: %d live workers from the next plan on", self.transport.worker_names[worker],
                     len(self.live))

    def _rebalance(self, worker: int) -> None:
        """Give a worker that joined its share of the cached partitions.

        Partition q of a cached dataset is made on ``live[q % n]`` when nothing
        is cached; after a loss the survivors recomputed the lost worker's
        partitions, and locality would keep every later job of them there (a
        replacement stayed idle: 2x slower after a recovery). Each block that
        the default placement gives ``worker`` moves to it the next time a job
        reads it (``Planner.moves``): forwarded to the reader there, which
        keeps it; the old copy is dropped once no group reads it.
        """
        live = self.live
        n = len(live)
        moves = self.planner.moves
        for block, loc in self.cache_locations.items():
            if loc != worker and live[block[2] % n] == worker:
                moves[block] = worker

    def _replace(self, worker: int) -> bool:
        try:
            ready = self.transport.replace_worker(worker, self.epochs.get(worker, 0) + 1)
        except Exception as e:
            log.warning("could not replace worker %d: %s", worker, e)
            return False
        if ready is False:
            return False
        self.epochs[worker] = self.epochs.get(worker, 0) + 1
        if ready:
            self.add_worker(worker)
        else:  # starting; it joins (WorkerJoined) while the survivors carry on
            self._starting.add(worker)
        return True

    # ------------------------------------------------------------ launching
    def _serialize(self, plan: GroupPlan, batch: list[Any]) -> tuple[int, bytes]:
        """The group's program, pickled once (and reused while it repeats)."""
        # Node identity, not just id: a dataset's node can be replaced (lineage
        # truncated to a value the driver holds), and must not hit a stale program.
        # A source goes without its data, so what it puts in the program is all its key needs (a template
        # keeps its sources without their data: the same program as the job it was made from).
        key = (tuple(sorted((nid, id(n)) if type(n) is not SourceNode else (nid, n.num_partitions, n.label, n.start_at)
                            for nid, n in plan.nodes.items())), tuple(sorted(plan.funcs)))
        hit = self.programs.get(key)
        if hit is not None:
            self.programs.move_to_end(key)
            return hit[0], hit[1]
        # Sources without their data: each partition goes only to the worker that reads it (_launch).
        nodes = {nid: SourceNode(nid, [None] * n.num_partitions, n.label, n.start_at) if type(n) is SourceNode else n
                 for nid, n in plan.nodes.items()}
        program = Program(nodes, plan.funcs)
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

    def _launch(self, plan: GroupPlan, wire: int, program_id: int, program_bytes: bytes) -> list[int]:
        if self._gc_drops:
            self._apply_gc_drops()
        per_worker: dict[int, list[Any]] = {}
        for task, w in plan.tasks.explicit():
            per_worker.setdefault(w, []).append(tuple(task))  # a NamedTuple pickles ~4x slower
        # Stamped jobs: each worker holding a share of their template gets the instances (pickled once
        # for every worker), and its share of the template the first time only.
        stamped: dict[int, list[int]] = {}
        templates = {}
        shared_instances: dict[int, pickle.PickleBuffer] = {}
        if plan.instances:
            for tid, data in encode_instances(plan.instances).items():
                shared_instances[tid] = pickle.PickleBuffer(data)
            for inst in plan.instances:
                tm = inst.template
                if tm.id not in templates:
                    templates[tm.id] = tm
                    for w in tm.slices:
                        per_worker.setdefault(w, [])
                        stamped.setdefault(w, []).append(tm.id)
        for w in plan.forwards:
            per_worker.setdefault(w, [])
        shared = pickle.PickleBuffer(program_bytes)
        workers = sorted(per_worker)
        messages = []
        for w in workers:
            body = None if _held(self.worker_programs[w], program_id, M.PROGRAM_CACHE) else shared
            runs = plan.run_of_worker.get(w, ())
            routes = {run: tuple(tuple(sorted(d)) for d in plan.routes[run]) for run in runs}
            stamps = []
            if w in stamped:
                held = self.worker_templates[w]
                for tid in stamped[w]:
                    part = None if _held(held, tid, M.TEMPLATE_CACHE) else tuple(templates[tid].slices[w])
                    stamps.append((tid, part, shared_instances[tid]))
                for run in plan.dirty_runs:  # a stamped shuffle read by later jobs too: the whole route
                    tm, run_t = plan.stamped_runs[run]
                    if tm.id in templates and w in tm.slices and run_t in tm.slices[w].routes:
                        routes[run] = tuple(tuple(sorted(d)) for d in plan.routes[run])
            sources = {key: node.partitions[key[1]] for key, node in plan.sources.get(w, {}).items()}
            messages.append((M.LAUNCH, wire, program_id, body, per_worker[w], routes,
                             plan.forwards.get(w, []), self.pending_drops.pop(w, []), self.epochs,
                             self.trace is not None, sources, stamps, plan.hold))
        if templates and log.isEnabledFor(logging.DEBUG):
            log.debug("wire %d: %d jobs stamped from templates %s (each worker's share sent once, then held)",
                      wire, len(plan.instances), sorted(templates))
        for w in [w for w in self.pending_drops if w not in per_worker and w in self.live]:
            self.transport.send(w, (M.DROP, self.pending_drops.pop(w)))
        try:
            self.transport.send_shared(workers, messages)
        except Exception as e:  # the data of a source could not be pickled: no worker may run the group
            for w in workers:
                with contextlib.suppress(Exception):
                    self.transport.send(w, (M.ABORT, wire, []))
                # which of the launches went out is not known: programs and templates are sent again
                self.worker_programs[w].pop(program_id, None)
                self.worker_templates[w].clear()
            self._runs.pop(wire, None)
            raise _culprit(plan, plan.jobs, e) from e
        return workers

    # --------------------------------------------------------------- events
    def _dispatch(self, worker: int, msg: Any) -> None:
        if isinstance(msg, WorkerLost):
            self._on_worker_lost(worker, msg.reason)
            return
        if isinstance(msg, WorkerJoined):
            self._on_worker_joined(worker)
            return
        tag = msg[0]
        if tag == M.DESCRIBED:
            box = self._described.get(msg[1])
            if box is not None:
                box[worker] = msg[2]
            elif msg[1] in self._quiet_asks:
                self._on_quiet_answer(worker, msg)
            return
        run = self._runs.get(msg[1])
        if run is None:
            return  # a late message of an aborted attempt, or of a group already closed
        run.heard = time.monotonic()
        if tag == M.RESULTS:
            _, _, items = msg
            self._on_results(run, items)
        elif tag == M.DONE:
            _, _, busy, _ran, stats, last = msg
            if last:
                self._on_results(run, last)  # the group's last results ride in DONE
            self._on_done(run, worker, busy, stats)
        elif tag == M.FAILED:
            _, _, index, attempt, tb, exc_bytes = msg
            self._on_failed(run, worker, index, attempt, tb, exc_bytes)
        else:
            log.warning("unexpected message %r from worker %d", tag, worker)

    def _on_results(self, run: _Run, items: list[Any]) -> None:
        result_of = run.plan.tasks.result_of
        finished = run.finished
        for index, _attempt, value in items:
            if index in finished:
                continue  # a duplicate (an attempt superseded has another wire id: never routed here)
            finished.add(index)
            job, p = result_of(index)  # type: ignore[misc]
            run.results[job][p] = value
            left = run.remaining[job] - 1
            if left:
                run.remaining[job] = left
            else:
                del run.remaining[job]
                run.done[job] = run.results.pop(job)
                run.unfinished.pop(job, None)

    def _on_done(self, run: _Run, worker: int, busy: float, stats: dict[Any, Any]) -> None:
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
        # The worker may not hold the program now (it could not load it): send it again next time. Every
        # worker the attempt went to may have failed the same way, and only the first failure is heard
        # (the attempt is aborted with it): each of them gets the program again.
        self.worker_programs[worker].pop(run.program_id, None)
        if tb.startswith(M.PROGRAM_LOAD_FAILED):
            for held in self.worker_programs:
                held.pop(run.program_id, None)
        self._abort_attempt(run)
        name = self.transport.worker_names[worker]
        label = run.plan.stage_labels[task.stage]
        what = f"{type(exc).__name__}: {exc}" if exc is not None else tb.strip().splitlines()[-1]
        hint = _unimportable(run.plan, exc) if tb.startswith(M.PROGRAM_LOAD_FAILED) else ""
        if isinstance(exc, TaskTimeout) and not str(exc):  # raised asynchronously: no message of its own
            what = "TaskTimeout: the task ran longer than task_timeout and was interrupted"
        err = (TaskTimeoutError if isinstance(exc, TaskTimeout) else TaskError)(
            f"job {task.job}, stage {task.stage} ({label}), partition {task.partition} failed on {name}: {what}{hint}",
            job=task.job, stage=task.stage, partition=task.partition, worker=name,
            remote_traceback=tb, exception=exc,
        )
        err.__cause__ = RemoteTraceback(tb)
        run.error = err
        log.debug("group %d: task %d (job %d, stage %d, partition %d) failed on %s; attempt aborted",
                  run.prep.plan.group, index, task.job, task.stage, task.partition, name)
        self._version += 1
        # Groups in flight waiting on blocks this attempt would have made never get them: re-plan them.
        lost = run.plan.new_cache
        if lost:
            for other in sorted(self._runs.values(), key=lambda r: r.wire):
                if other.error is None and not other.complete and any(
                        b in lost for t in other.plan.tasks for b in t.inputs):
                    self._recover(other, worker, "an input group failed")
                    self._try_reattempt(other, f"group {other.prep.plan.group} read blocks of a failed group")

    def _on_worker_lost(self, worker: int, reason: str) -> None:
        """Forget the worker and what it held; every run in flight recovers."""
        self._starting.discard(worker)
        if worker in self.live:
            self.live.remove(worker)
        for block in [b for b, w in self.cache_locations.items() if w == worker]:
            del self.cache_locations[block]
        moves = self.planner.moves
        for block in [b for b, to in moves.items() if to == worker or b not in self.cache_locations]:
            del moves[block]
        self.pending_drops.pop(worker, None)
        self._deferred = [d for d in self._deferred if d.copy is None or d.copy[0] != worker]
        for plan in self._open_plans.values():
            if any(w == worker for w in plan.new_cache.values()):
                plan.new_cache = {b: w for b, w in plan.new_cache.items() if w != worker}
        self._version += 1
        name = self.transport.worker_names[worker]
        self._last_loss = f"lost {name}: {reason}"
        affected = [r for r in sorted(self._runs.values(), key=lambda r: r.wire)
                    if r.error is None and not r.complete]
        if self.trace is not None:
            self.trace.instant(f"lost {name}", reason)
        if not affected:
            log.warning("lost %s between jobs: %s", name, reason)
            self._replace(worker)
            return
        log.warning("lost %s during group %s: %s; recovering", name,
                    ", ".join(str(r.prep.plan.group) for r in affected), reason)
        for run in affected:
            run.recoveries += 1
            self._recover(run, worker, reason)
        if self._replace(worker):
            log.warning("started a replacement for %s", name)
        if self.on_failure is not None:
            self.on_failure()
        for run in affected:
            ahead_of = run.behind
            if ahead_of is not None and ahead_of.error is None and not ahead_of.complete:
                # Pipelined behind a group that recovers too: re-planned when that one ends, on what it
                # left (as if it had not been launched yet), never alongside its re-attempt.
                run.parked = True
                continue
            if run.recoveries > self.max_recoveries:
                run.error = WorkerLostError(f"lost {name}: {reason} (gave up after {self.max_recoveries} "
                                            f"recoveries in one group)", worker=name)
            elif not self.live and self._starting:
                # the last worker is gone but its replacement is coming: wait for it (bounded)
                run.stalled_until = time.monotonic() + self.replacement_wait
                self._stalled.append(run)
                log.warning("no live worker: group %d waits up to %.0f s for a replacement",
                            run.prep.plan.group, self.replacement_wait)
            elif not self.live:
                run.error = WorkerLostError(f"lost {name}: {reason}; no worker is left", worker=name)
            else:
                self._try_reattempt(run, f"lost {name}: {reason}")

    def _abort_attempt(self, run: _Run, keep: dict[int, list[tuple[Any, ...]]] | None = None) -> None:
        log.debug("group %d: attempt (wire %d) aborted on workers %s", run.prep.plan.group, run.wire, self.live)
        run.remaining.clear()
        run.awaiting_done.clear()
        self._runs.pop(run.wire, None)
        t = self.transport
        m0, b0 = t.messages_sent, t.bytes_sent
        for w in self.live:
            try:
                t.send(w, (M.ABORT, run.wire, (keep or {}).get(w, [])))
            except Exception as e:  # the worker may be the one that just died
                log.debug("could not send abort to worker %d: %s", w, e)
        run.msgs += t.messages_sent - m0  # counted as the launches are (_start_attempt)
        run.sent_bytes += t.bytes_sent - b0

    def _on_worker_joined(self, worker: int) -> None:
        """A replacement is up: plans from now on (the next group, or a recovery) may use it."""
        self._starting.discard(worker)
        self.add_worker(worker)
        stalled, self._stalled = self._stalled, []
        for run in stalled:  # groups that had no worker left go on
            run.stalled_until = 0.0
            self._try_reattempt(run, "no worker was left")
        if self.trace is not None:
            self.trace.instant(f"{self.transport.worker_names[worker]} joined")

    def check_workers(self) -> None:
        """Read what arrived while idle (workers lost or joined), so the next plan sees it."""
        with self._locked():
            for worker, msg in self.transport.poll(0):
                self._dispatch(worker, msg)

    def bookkeeping(self, timeout: float = 10.0) -> dict[str, Any]:
        """Sizes of every driver container that must be empty between jobs, and each live worker's.

        For tests and debugging (``Context.bookkeeping()``): after every job,
        stream and iterate everything but cached partitions must be gone, on
        the driver and on the workers. Workers answer a DESCRIBE message; one
        that does not answer within ``timeout`` seconds is reported as None.
        """
        with self._locked():
            token = next(self._tokens)
            box: dict[int, dict[str, int]] = {}
            self._described[token] = box
            asked = list(self.live)
            for w in asked:
                self.transport.send(w, (M.DESCRIBE, token))
            deadline = time.monotonic() + timeout
            try:
                while len(box) < len(asked) and time.monotonic() < deadline:
                    for worker, msg in self.transport.poll(_POLL_SLICE):
                        self._dispatch(worker, msg)
            finally:
                del self._described[token]
            driver = {
                "runs": len(self._runs), "run_of": len(self._run_of), "open_plans": len(self._open_plans),
                "deferred_drops": len(self._deferred),
                "pulling": len(self._pulling), "gc_drops": len(self._gc_drops),
                "pending_drops": sum(len(v) for v in self.pending_drops.values()),
                "driving_threads": len(self._drivers), "stalled": len(self._stalled),
                "quiet_asks": len(self._quiet_asks),
                "cached_blocks": len(self.cache_locations),
                # moves (Planner.moves) wait for the next job reading their block; one for a block gone is a leak
                "stale_moves": sum(1 for b in self.planner.moves if b not in self.cache_locations),
            }
            names = self.transport.worker_names
            return {"driver": driver, "workers": {names[w]: box.get(w) for w in asked}}


def _latest_start(plan: GroupPlan) -> float:
    """The epoch time of the group's last micro-batch (its sources' ``start_at``); 0.0 for a group of none."""
    latest = max((inst.start for inst in plan.instances), default=0.0)
    for node in plan.nodes.values():
        at = getattr(node, "start_at", None)
        if at is not None and at > latest:
            latest = at
    return latest


def _span(jobs: list[int]) -> str:
    """Sorted job numbers, briefly: ``3-7`` when they follow each other, else the first few."""
    if not jobs:
        return "none"
    if jobs[-1] - jobs[0] == len(jobs) - 1:
        return str(jobs[0]) if len(jobs) == 1 else f"{jobs[0]}-{jobs[-1]}"
    return ", ".join(map(str, jobs[:5])) + (", ..." if len(jobs) > 5 else "")


def _held(lru: OrderedDict[int, None], key: int, size: int) -> bool:
    """Whether a worker holds ``key`` (a program, a template), by the driver's mirror of its LRU of ``size``.

    Either way it is the most recently used now, as on the worker once the
    launch arrives; a key not held is added (the launch carries it), and the
    least recently used one goes, as it will on the worker.
    """
    if key in lru:
        lru.move_to_end(key)
        return True
    lru[key] = None
    if len(lru) > size:
        lru.popitem(last=False)
    return False


def _culprit(plan: GroupPlan, batch: list[Any], error: Exception) -> SerializationError:
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


def _unimportable(plan: GroupPlan, exc: BaseException | None) -> str:
    """For a program the workers could not load: which module is missing, and which user functions need it."""
    module = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    if not module:
        return ("; the workers could not load the group's program (are the modules it uses installed on "
                "the workers?)")
    users = []
    funcs = [f for node in plan.nodes.values() for f in node.user_functions()] + list(plan.funcs.values())
    for f in funcs:
        g = getattr(f, "f", f)
        mod = getattr(g, "__module__", None) or ""
        if (mod == module or mod.startswith(module + ".")) and _name(g) not in users:
            users.append(_name(g))
    who = f" needed by {', '.join(users)}" if users else ""
    return (f"; module {module!r}{who} exists on the driver but cannot be imported on the workers: install it "
            f"there, or ship it with cloudpickle.register_pickle_by_value({module})")


def _name(f: Any) -> str:
    inner = getattr(f, "f", None)  # the engine's op wrappers hold the user function as .f
    g = inner if inner is not None else f
    name = getattr(g, "__qualname__", None) or getattr(g, "__name__", None) or repr(g)
    code = getattr(g, "__code__", None)
    where = f" (defined at {code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"{name!r}{where}"
