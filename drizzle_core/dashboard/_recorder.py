"""The scheduler's trace hook, kept in memory for the dashboard: what a task ran when, and worker events.

The scheduler already reports what a user wants to see through its
:class:`~drizzle_core.driver.Trace` hook: each group's plan, serialize,
launch and wait spans, each job as it is handed out, each worker lost or
joined, and each worker's task spans (which workers record only when a trace
is set, so they cost nothing otherwise). :class:`Recorder` takes the trace's
place and keeps those calls for the dashboard's own thread. It runs on the
scheduler's thread, under its lock, so every call does O(1) work: it appends
a reference to a deque and returns (converting a task span to what the page
shows happens later, on the dashboard's thread). A trace file the user asked
for (``Context(trace=...)``) is still written: every call is passed on.

Worker events are read from the trace's instants ("lost <name>", "<name>
joined"), the only form in which the scheduler reports them today.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..driver import Trace

#: task-span reports kept for the dashboard's thread (one per worker and group): bounds memory if it falls behind
MAX_PENDING = 4096


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """A worker lost or joined, as the scheduler reported it."""

    time: float    # epoch seconds
    kind: str      # "lost" or "joined"
    worker: int    # the worker's index (-1: its name was no longer known)
    name: str
    detail: str    # why it was lost ("" for a join)


@dataclass(frozen=True, slots=True)
class GroupSpan:
    """When a group ran (epoch seconds): planning began, launch was done, its last job was handed out."""

    group: int
    start: float
    launched: float
    end: float


class Recorder(Trace):
    """A :class:`~drizzle_core.driver.Trace` that keeps its events for the dashboard (and passes them on)."""

    def __init__(self, inner: Trace | None, worker_names: Callable[[], list[str]]) -> None:
        # no super().__init__(): no file of its own; ``inner`` writes the user's
        self.inner = inner
        self.path = inner.path if inner is not None else ""
        self.events = inner.events if inner is not None else []
        self._offset = time.time() - time.perf_counter()
        self._worker_names = worker_names
        self.recording = True
        #: (plan, worker, [(task index, wall start, seconds)]) as reported, for the dashboard's thread to read
        self.spans: deque[tuple[Any, int, list[tuple[int, float, float]]]] = deque(maxlen=MAX_PENDING)
        self.groups: deque[GroupSpan] = deque(maxlen=MAX_PENDING)
        self.worker_events: deque[WorkerEvent] = deque(maxlen=1000)
        self._jobs = itertools.count(1)
        self.jobs_done = 0  # jobs handed to callers so far (the live count; ctx.metrics has finished groups only)

    # --- the Trace hook: called by the scheduler, under its lock
    def group(self, group: int, jobs: int, t0: float, t1: float, t2: float, t3: float, end: float) -> None:
        if self.inner is not None:
            self.inner.group(group, jobs, t0, t1, t2, t3, end)
        if self.recording:
            off = self._offset
            self.groups.append(GroupSpan(group, t0 + off, t3 + off, end + off))

    def instant(self, name: str, detail: str = "") -> None:
        if self.inner is not None:
            self.inner.instant(name, detail)
        if not self.recording:
            return
        if name.startswith("job "):
            self.jobs_done = next(self._jobs)  # next() on a count is atomic: callers on two threads lose nothing
        elif name.startswith("lost "):
            self._worker_event("lost", name[5:], detail)
        elif name.endswith(" joined"):
            self._worker_event("joined", name[:-7], "")

    def tasks(self, plan: Any, worker: int, spans: list[tuple[int, float, float]]) -> None:
        if self.inner is not None:
            self.inner.tasks(plan, worker, spans)
        if self.recording:
            self.spans.append((plan, worker, spans))

    def write(self) -> None:
        if self.inner is not None:
            self.inner.write()

    # ---
    def _worker_event(self, kind: str, name: str, detail: str) -> None:
        names = self._worker_names()  # rare: a worker lost or joined
        index = names.index(name) if name in names else -1
        self.worker_events.append(WorkerEvent(time.time(), kind, index, name, detail))
