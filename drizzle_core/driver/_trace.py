"""A Chrome trace-event file of what ran where: ``Context(trace="trace.json")``.

Perfetto (ui.perfetto.dev) and chrome://tracing open it. One row for the
driver (planning, serializing, launching, waiting for each group; job
completions and lost workers as instants) and one per worker (each task,
named by job, stage and partition). Workers record task spans only when the
launch asks for it, so tracing costs nothing when it is off. Times are wall
clock; on one host all processes share it.

Written as it goes, not only at ``stop()``: a program that never stops its
Context (a script that ends, a notebook kernel that is killed) still leaves
its trace. The file is opened when the Context is made (a bad path fails
there, not at exit), events are appended at most every ``FLUSH_EVERY``
seconds (checked once per group, never per task), and after every flush the
file is a complete JSON document: the new events are written over the
closing ``]}``, which is then written again after them. So each flush costs
the new events only, and a driver killed with SIGKILL leaves a valid trace
of everything up to its last flush. The rest is written by :meth:`close`,
which the Context calls at ``stop()`` and, through a finalizer, when it is
garbage-collected or the interpreter exits.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO, Any

_DRIVER_PID = 0
#: seconds between two flushes of the events to the file (checked when a group ends)
FLUSH_EVERY = 1.0
#: events kept in memory before a flush is due whatever the time (a long group of many tasks)
FLUSH_EVENTS = 50_000

_HEAD = b'{"displayTimeUnit": "ms", "traceEvents": [\n'
_TAIL = b"\n]}\n"


class Trace:
    """Collects trace events and appends them to ``path`` as it goes (see the module docstring).

    ``events`` holds the events not written yet. :meth:`write` flushes them
    now; :meth:`close` flushes and closes the file (idempotent; events
    recorded after it are dropped).
    """

    def __init__(self, path: str | os.PathLike[str], worker_names: list[str] | None = None) -> None:
        self.path = os.fspath(path)
        # perf_counter (driver spans) -> wall clock (worker spans), fixed once
        self._offset = time.time() - time.perf_counter()
        self.events: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": _DRIVER_PID, "args": {"name": "driver"}},
        ]
        self._named: set[int] = set()
        self._lock = threading.Lock()  # a finalizer may close the trace from any thread
        self._file: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115  (kept open: appended to as it goes)
        self._file.write(_HEAD + b"]}\n")
        self._file.flush()
        self._end = len(_HEAD)    # where the next events go: over the closing "]}"
        self._any = False         # whether events are on disk already (the next ones need a comma first)
        self._last_flush = time.perf_counter()
        if worker_names:
            self.name_workers(worker_names)

    @property
    def closed(self) -> bool:
        return self._file is None

    def name_workers(self, worker_names: list[str]) -> None:
        """Name the rows of workers not named yet (those of the Context's start, then any added later)."""
        for i, name in enumerate(worker_names):
            if i not in self._named:
                self._named.add(i)
                self.events.append({"ph": "M", "name": "process_name", "pid": i + 1, "args": {"name": name}})

    def _us(self, perf: float) -> float:
        return (perf + self._offset) * 1e6

    def group(self, group: int, jobs: int, t0: float, t1: float, t2: float, t3: float, end: float) -> None:
        for name, a, b in (("plan", t0, t1), ("serialize", t1, t2), ("launch", t2, t3), ("wait for results", t3, end)):
            self.events.append({"ph": "X", "name": name, "cat": "driver", "pid": _DRIVER_PID, "tid": 0,
                                "ts": self._us(a), "dur": max(0.0, (b - a) * 1e6),
                                "args": {"group": group, "jobs": jobs}})
        # once per group: a flush is due after FLUSH_EVERY seconds, or when many events wait
        if end - self._last_flush >= FLUSH_EVERY or len(self.events) >= FLUSH_EVENTS:
            self.write()

    def instant(self, name: str, detail: str = "") -> None:
        self.events.append({"ph": "i", "s": "p", "name": name, "pid": _DRIVER_PID, "tid": 0,
                            "ts": self._us(time.perf_counter()), "args": {"detail": detail} if detail else {}})

    def tasks(self, plan: Any, worker: int, spans: list[tuple[int, float, float]]) -> None:
        for index, start, seconds in spans:
            task = plan.tasks[index]
            kind = "map" if task.kind == 0 else "result"
            self.events.append({
                "ph": "X", "name": f"{kind} j{task.job} s{task.stage} p{task.partition}", "cat": "task",
                "pid": worker + 1, "tid": 0, "ts": start * 1e6, "dur": seconds * 1e6,
                "args": {"group": plan.group, "job": task.job, "stage": plan.stage_labels.get(task.stage, ""),
                         "partition": task.partition},
            })

    def write(self) -> None:
        """Append the events recorded since the last flush; the file is a complete trace afterwards."""
        with self._lock:
            f = self._file
            self._last_flush = time.perf_counter()
            if f is None or not self.events:
                return
            pending, self.events = self.events, []
            # one call for all (the list without its [ ]); ASCII, as json.dumps escapes the rest
            body = json.dumps(pending, separators=(",", ":"))[1:-1].encode()
            f.seek(self._end)
            if self._any:
                f.write(b",\n")
            f.write(body)
            self._end = f.tell()
            self._any = True
            f.write(_TAIL)
            f.truncate()
            f.flush()

    def close(self) -> None:
        """Write what is left and close the file. Idempotent; safe at interpreter exit."""
        self.write()
        with self._lock:
            f, self._file = self._file, None
            self.events = []
        if f is not None:
            f.close()
