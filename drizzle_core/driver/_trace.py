"""A Chrome trace-event file of what ran where: ``Context(trace="trace.json")``.

Perfetto (ui.perfetto.dev) and chrome://tracing open it. One row for the
driver (planning, serializing, launching, waiting for each group; job
completions and lost workers as instants) and one per worker (each task,
named by job, stage and partition). Workers record task spans only when the
launch asks for it, so tracing costs nothing when it is off. Times are wall
clock; on one host all processes share it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

_DRIVER_PID = 0


class Trace:
    """Collects trace events in memory; :meth:`write` saves them."""

    def __init__(self, path: str | os.PathLike[str], worker_names: list[str]) -> None:
        self.path = os.fspath(path)
        # perf_counter (driver spans) -> wall clock (worker spans), fixed once
        self._offset = time.time() - time.perf_counter()
        self.events: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": _DRIVER_PID, "args": {"name": "driver"}},
        ]
        for i, name in enumerate(worker_names):
            self.events.append({"ph": "M", "name": "process_name", "pid": i + 1, "args": {"name": name}})

    def _us(self, perf: float) -> float:
        return (perf + self._offset) * 1e6

    def group(self, group: int, jobs: int, t0: float, t1: float, t2: float, t3: float, end: float) -> None:
        for name, a, b in (("plan", t0, t1), ("serialize", t1, t2), ("launch", t2, t3), ("wait for results", t3, end)):
            self.events.append({"ph": "X", "name": name, "cat": "driver", "pid": _DRIVER_PID, "tid": 0,
                                "ts": self._us(a), "dur": max(0.0, (b - a) * 1e6),
                                "args": {"group": group, "jobs": jobs}})

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
        with open(self.path, "w") as f:
            json.dump({"traceEvents": self.events, "displayTimeUnit": "ms"}, f)
