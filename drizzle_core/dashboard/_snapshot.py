"""The dashboard's model: what the scheduler, its trace hook, the streams and the iterate loops recorded, as JSON.

Only the dashboard's thread (and a request asking for the state) runs this,
one at a time (``Collector.lock``), never the scheduler's thread: it does
not take the scheduler's lock. It reads what the scheduler keeps anyway,
each read a copy made in one step (a slice of ``scheduler.metrics``, the
``live`` list, the ``epochs`` dict), so the scheduler is never held up and a
read never sees a half-made record. New records are folded in
incrementally, each once, so a long run costs no more per refresh than a
short one.

Shapes kept here (each bounded):

    group_rows: deque[row]               the last MAX_GROUPS groups (GroupMetrics + when they ran)
    totals: {name: number}               over every group so far
    lanes: {worker: deque[span]}         the last MAX_SPANS task spans per worker
                                         span = (wall start, seconds, group, job, stage, kind)
    worker_state: {worker: _Worker}      lost / joined counts, when first seen
    events: deque[dict]                  the last MAX_EVENTS worker events, for the page
    stream_state: {stream no.: _Stream}  per-batch rows and the run's figures
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._stats import percentile
from ..driver import GroupMetrics, GroupScheduler
from ._recorder import GroupSpan, Recorder, WorkerEvent
from ._watch import IterateWatch, StreamWatch, sample_norm

MAX_GROUPS = 300       # groups listed (and plotted) on the page
MAX_SPANS = 3000       # task spans kept per worker
MAX_SHOWN_SPANS = 1500  # ... and sent per worker
MAX_EVENTS = 100       # worker events listed
MAX_BATCHES = 300      # batches plotted per stream
MAX_LATENCIES = 5000   # batches a stream's latency percentiles are taken over (the latest)
MAX_PLOTTED = 500      # convergence points sent per loop
MAX_LOOPS = 20         # streams and iterate loops listed (the latest)
RECENT_BATCHES = 10    # a stream's "recent" events per second are over its last this many batches


def _num(x: float) -> float | None:
    """JSON has no nan or inf: None instead."""
    return x if math.isfinite(x) else None


@dataclass(slots=True)
class _Worker:
    joined: float             # when the slot's current worker joined (epoch seconds)
    added: bool = False       # the slot was added after the Context started (``ctx.add_worker``)
    lost: int = 0             # times its worker was lost
    lost_at: float = 0.0      # when, the last time
    epoch: int = 0            # replacements seen started (``scheduler.epochs``)
    last_event: str = ""
    last_event_at: float = 0.0


@dataclass(slots=True)
class _Stream:
    seen: int = 0
    batches: int = 0
    events: int = 0
    first_start: float = math.nan
    last_end: float = math.nan
    lag_max: float = math.nan
    queued_max: int = 0
    late_events: int = 0
    dropped: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_LATENCIES))
    rows: deque[Any] = field(default_factory=lambda: deque(maxlen=MAX_BATCHES))  # BatchMetrics


class Collector:
    """Folds in what was recorded and builds the page's state (see the module docstring)."""

    def __init__(self, scheduler: GroupScheduler, recorder: Recorder, *, title: str, transport: str,
                 window: float = 10.0) -> None:
        self.scheduler = scheduler
        self.recorder = recorder
        self.title = title
        self.transport = transport
        self.window = window
        self.started = time.time()
        self.lock = threading.Lock()
        self.streams: list[StreamWatch] = []
        self.iterates: list[IterateWatch] = []
        self.group_rows: deque[dict[str, Any]] = deque(maxlen=MAX_GROUPS)
        self.totals: dict[str, float] = {"groups": 0, "jobs": 0, "tasks": 0, "stamped": 0, "recoveries": 0,
                                         "wall_s": 0.0, "busy_s": 0.0, "worker_s": 0.0}
        self._seen_metrics = 0
        self._group_times: dict[int, GroupSpan] = {}
        self.lanes: dict[int, deque[tuple[float, float, int, int, int, int]]] = {}
        self._last_span_end = 0.0
        self.worker_state: dict[int, _Worker] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.stream_state: dict[int, _Stream] = {}
        for i in range(len(scheduler.transport.worker_names)):  # the workers the Context started with
            self.worker_state[i] = _Worker(joined=self.started)

    # ------------------------------------------------------------ folding in
    def drain(self, wanted: bool) -> None:
        """Fold in what was recorded since the last call. ``wanted``: someone looks (convert the task spans)."""
        rec = self.recorder
        while rec.worker_events:
            self._worker_event(rec.worker_events.popleft())
        self._workers_seen()
        while rec.groups:
            span = rec.groups.popleft()
            self._group_times[span.group] = span
        metrics = self.scheduler.metrics[self._seen_metrics:]  # one slice: a copy of what is there now
        self._seen_metrics += len(metrics)
        for m in metrics:
            self._group(m)
        if len(self._group_times) > 4 * MAX_GROUPS:  # spans of groups whose metrics never came (an error)
            for g in sorted(self._group_times)[:-MAX_GROUPS]:
                del self._group_times[g]
        if wanted:
            while rec.spans:
                self._spans(*rec.spans.popleft())
        else:  # nobody looks: keep what the timeline window would show, unconverted, drop the rest
            horizon = time.time() - self.window
            while rec.spans and (not rec.spans[0][2] or rec.spans[0][2][-1][1] < horizon):
                rec.spans.popleft()
        for watch in self.streams:
            self._stream(watch)
        for it in self.iterates:
            if it.finished is None:
                sample_norm(it)

    def _workers_seen(self) -> None:
        """Workers added, and replacements started: what the scheduler shows only in its state (no event)."""
        sched = self.scheduler
        names = sched.transport.worker_names
        epochs = dict(sched.epochs)
        now = time.time()
        for i in range(len(names)):
            w = self.worker_state.get(i)
            if w is None:  # a worker added to the Context (``ctx.add_worker``)
                w = self.worker_state[i] = _Worker(joined=now, added=True)
                self._note(i, "joined", names[i], "added", now)
            epoch = epochs.get(i, 0)
            if epoch > w.epoch:
                # started when the loss was handled (``_on_worker_lost`` replaces at once): dated with it
                at = w.lost_at or now
                w.epoch = epoch
                if w.joined < at:
                    w.joined = at  # ready at once; or joining soon, and its "joined" event dates it
                self._note(i, "replaced", names[i], f"a replacement started (incarnation {epoch})", at)

    def _note(self, worker: int, kind: str, name: str, detail: str, at: float) -> None:
        w = self.worker_state.get(worker)
        if w is not None and at >= w.last_event_at:
            w.last_event, w.last_event_at = kind if not detail else f"{kind}: {detail}", at
        self.events.append({"time": at, "kind": kind, "worker": worker, "name": name, "detail": detail})

    def _worker_event(self, ev: WorkerEvent) -> None:
        w = self.worker_state.get(ev.worker)
        if w is not None:
            if ev.kind == "lost":
                w.lost += 1
                w.lost_at = ev.time
            else:
                w.joined = ev.time
        self._note(ev.worker, ev.kind, ev.name, ev.detail or ("replacement up" if ev.kind == "joined" else ""),
                   ev.time)

    def _group(self, m: GroupMetrics) -> None:
        t = self.totals
        t["groups"] += 1
        t["jobs"] += m.jobs
        t["tasks"] += m.tasks
        t["stamped"] += m.stamped
        t["recoveries"] += m.recoveries
        t["wall_s"] += m.wall_s
        t["busy_s"] += m.busy_s
        t["worker_s"] += m.wall_s * max(1, m.workers)
        span = self._group_times.pop(m.group, None)
        self.group_rows.append({
            "group": m.group, "jobs": m.jobs, "planned": m.planned_size, "stamped": m.stamped, "tasks": m.tasks,
            "workers": m.workers, "coordination": m.coordination, "wall_s": m.wall_s, "plan_s": m.plan_s,
            "serialize_s": m.serialize_s, "launch_s": m.launch_s, "busy_s": m.busy_s,
            "recoveries": m.recoveries, "messages": m.messages_sent, "bytes": m.bytes_sent,
            "worker_bytes": m.worker_bytes_sent,
            "start": span.start if span else None, "end": span.end if span else None,
        })

    def _spans(self, plan: Any, worker: int, spans: list[tuple[int, float, float]]) -> None:
        lane = self.lanes.get(worker)
        if lane is None:
            lane = self.lanes[worker] = deque(maxlen=MAX_SPANS)
        group = plan.group
        for index, start, seconds in spans[-MAX_SPANS:]:
            task = plan.tasks[index]
            lane.append((start, seconds, group, task.job, task.stage, task.kind))
            self._last_span_end = max(self._last_span_end, start + seconds)

    def _stream(self, watch: StreamWatch) -> None:
        stream = watch.ref()
        if stream is None:
            return  # dropped by the user: its last figures stay
        st = self.stream_state.get(watch.number)
        metrics = stream.metrics
        if st is None or len(metrics) < st.seen:  # new, or a batch taken back (not delivered): read all again
            st = self.stream_state[watch.number] = _Stream()
        new = metrics[st.seen:]
        st.seen += len(new)
        for b in new:
            if st.batches == 0:
                st.first_start = b.start
            st.batches += 1
            st.events += b.events
            st.last_end = b.end
            st.lag_max = b.lag if math.isnan(st.lag_max) else max(st.lag_max, b.lag)
            st.queued_max = max(st.queued_max, b.queued)
            st.late_events += b.late_events
            st.dropped += b.dropped
            st.latencies.append(b.latency)
            st.rows.append(b)

    # ---------------------------------------------------------- the state
    def build(self) -> dict[str, Any]:
        """Everything the page shows, JSON-ready."""
        with self.lock:
            self.drain(True)
            return {
                "title": self.title, "transport": self.transport, "started": self.started,
                "workers": self._workers_json(),
                "worker_events": sorted(self.events, key=lambda e: e["time"]),  # sorted() is stable
                "groups": self._groups_json(), "timeline": self._timeline_json(),
                "streams": [self._stream_json(w) for w in self.streams[-MAX_LOOPS:]],
                "iterates": [self._iterate_json(it) for it in self.iterates[-MAX_LOOPS:]],
            }

    def _workers_json(self) -> list[dict[str, Any]]:
        sched = self.scheduler
        names = list(sched.transport.worker_names)
        live = set(sched.live)
        epochs = dict(sched.epochs)
        out = []
        for i, name in enumerate(names):
            w = self.worker_state.get(i) or _Worker(joined=self.started)
            out.append({"index": i, "name": name, "state": "alive" if i in live else "lost",
                        "replaced": epochs.get(i, 0), "lost": w.lost, "joined": w.joined, "added": w.added,
                        "last_event": w.last_event, "last_event_at": w.last_event_at})
        return out

    def _groups_json(self) -> dict[str, Any]:
        t = self.totals
        coordination = 1.0 - t["busy_s"] / t["worker_s"] if t["worker_s"] else math.nan
        return {"count": t["groups"], "jobs": t["jobs"], "tasks": t["tasks"], "stamped": t["stamped"],
                "recoveries": t["recoveries"], "wall_s": t["wall_s"],
                "coordination": _num(min(1.0, max(0.0, coordination))) if t["worker_s"] else None,
                "jobs_done": self.recorder.jobs_done, "recent": list(self.group_rows)}

    def _timeline_json(self) -> dict[str, Any]:
        end = self._last_span_end
        start = end - self.window
        names = self.scheduler.transport.worker_names
        lanes = []
        for w in sorted(self.lanes):
            shown = [s for s in self.lanes[w] if s[0] + s[1] >= start][-MAX_SHOWN_SPANS:]
            lanes.append({"worker": w, "name": names[w] if w < len(names) else f"worker {w}",
                          "spans": [[round(s[0] - start, 6), round(s[1], 6), s[2], s[3], s[4], s[5]] for s in shown]})
        return {"start": start, "end": end, "window": self.window, "lanes": lanes}

    def _stream_json(self, watch: StreamWatch) -> dict[str, Any]:
        st = self.stream_state.get(watch.number) or _Stream()
        stream = watch.ref()
        lat = list(st.latencies)
        span = st.last_end - st.first_start if st.batches else 0.0
        rows = list(st.rows)
        recent = rows[-RECENT_BATCHES:]
        recent_span = recent[-1].end - recent[0].start if recent else 0.0
        return {
            "number": watch.number, "label": watch.label, "interval": watch.interval,
            "running": bool(stream is not None and stream.running), "batches": st.batches, "events": st.events,
            "events_per_s": st.events / span if span > 0 else 0.0,
            "recent_events_per_s": sum(b.events for b in recent) / recent_span if recent_span > 0 else 0.0,
            "latency_p50": _num(percentile(lat, 50)), "latency_p99": _num(percentile(lat, 99)),
            "latency_over": len(lat), "lag": _num(rows[-1].lag) if rows else None, "lag_max": _num(st.lag_max),
            "queued": rows[-1].queued if rows else 0, "queued_max": st.queued_max,
            "late_events": st.late_events, "dropped": st.dropped,
            "recent": [{"batch": b.batch, "end": b.end, "latency": b.latency, "lag": b.lag, "events": b.events,
                        "queued": b.queued, "group": b.group} for b in rows],
        }

    def _iterate_json(self, it: IterateWatch) -> dict[str, Any]:
        points, norms = it.points, it.norms  # read each list once: the loop's thread may swap in a halved one
        if points:
            labels = [f"state[{k}]" for k in range(len(points[-1][1]))] if len(points[-1][1]) > 1 else ["state"]
            series = [[i, *map(_num, v)] for i, v in _thin(points)]
        else:
            labels = ["‖state‖"] if norms else []
            series = [[i, _num(v)] for i, v in _thin(norms)]
        rate = (it.iteration - 1) / (it.last_at - it.first_at) if it.iteration > 1 and it.last_at > it.first_at \
            else None
        return {"number": it.number, "iterations": it.iterations, "iteration": it.iteration,
                "running": it.finished is None, "converged": it.converged, "error": it.error, "kind": it.kind,
                "started": it.started, "finished": it.finished, "per_s": rate, "labels": labels, "series": series}


def _thin(points: Sequence[Any]) -> list[Any]:
    """At most MAX_PLOTTED of ``points``, evenly spaced, the last one always in."""
    n = len(points)
    if n <= MAX_PLOTTED:
        return list(points)
    step = math.ceil(n / MAX_PLOTTED)
    out = list(points[::step])
    if out[-1] is not points[-1]:
        out.append(points[-1])
    return out
