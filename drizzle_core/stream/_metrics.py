"""Per-batch streaming metrics: one record per batch, and a summary over a run.

A batch ``b`` covers event/arrival time ``[start, end)``; its source tasks
start on the workers at ``end`` at the earliest (the batch's data is complete
then). What a user of a streaming system wants to know about it:

* ``latency`` — processing latency, ``arrived - end``: from the batch's end
  to its output reaching the sink on the driver (before the sink callbacks
  run, so a slow callback does not count as engine latency);
* ``events`` — records the source produced for the batch;
* ``lag`` — how late the batch's source tasks *started* relative to ``end``
  (the latest partition). Close to zero while processing keeps up with the
  interval; when it falls behind, batches queue (nothing is dropped) and lag
  grows by about (processing time - interval) per batch;
* ``queued`` — batches whose end time had passed but which had not reached
  the sink when this one did (``floor(latency / interval)``);
* ``late_events`` — records the stream's event-time windows left out of
  every window as late in this batch (they arrived after all their windows
  were emitted; see :mod:`drizzle_core.stream._window`);
* ``dropped`` — records the source dropped for this batch (a
  :class:`~drizzle_core.SocketSource` with ``overflow="drop"`` whose replay
  buffer was full); 0 for the other sources.

Times are epoch seconds (``time.time()``): the workers' clocks and the
driver's are the same clock on one host; across hosts they are as good as
NTP makes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .._stats import percentile


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """What one micro-batch cost (see the module docstring for each field)."""

    batch: int           # batch index, from 0 over the life of the stream
    start: float         # the batch covers [start, end), epoch seconds
    end: float
    arrived: float       # its output reached the sink (epoch seconds)
    latency: float       # arrived - end
    events: int          # records produced by the source for this batch
    lag: float           # latest source task start - end (>= 0 when on time)
    queued: int          # batches due but not delivered when this one was
    group: int           # the scheduling group (one launch) the batch ran in
    late_events: int = 0  # records left out of event-time windows as late
    dropped: int = 0     # records the source dropped (a full replay buffer, overflow="drop")


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """A run's metrics in a few numbers; ``str()`` gives a printable table."""

    batches: int
    interval: float
    events: int
    events_per_s: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    latency_max: float
    lag_max: float
    queued_max: int
    groups: int
    late_events: int = 0
    dropped: int = 0

    def __str__(self) -> str:
        ms = 1e3
        rows = [
            ("batches", f"{self.batches} of {self.interval * ms:g} ms in {self.groups} groups"),
            ("events", f"{self.events} ({self.events_per_s:,.0f} /s)"),
            ("latency p50", f"{self.latency_p50 * ms:.1f} ms"),
            ("latency p95", f"{self.latency_p95 * ms:.1f} ms"),
            ("latency p99", f"{self.latency_p99 * ms:.1f} ms"),
            ("latency max", f"{self.latency_max * ms:.1f} ms"),
            ("lag max", f"{self.lag_max * ms:.1f} ms ({self.queued_max} batches queued at most)"),
        ]
        if self.late_events or self.dropped:
            rows.append(("late / dropped", f"{self.late_events} late events, {self.dropped} dropped by the source"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def summarize(metrics: Sequence[BatchMetrics], interval: float) -> StreamSummary:
    """Summarize ``metrics`` (any subset, e.g. without a warm-up)."""
    lat = [m.latency for m in metrics]
    events = sum(m.events for m in metrics)
    span = (metrics[-1].end - metrics[0].start) if metrics else 0.0
    return StreamSummary(
        batches=len(metrics), interval=interval, events=events,
        events_per_s=events / span if span > 0 else 0.0,
        latency_p50=percentile(lat, 50), latency_p95=percentile(lat, 95), latency_p99=percentile(lat, 99),
        latency_max=max(lat) if lat else math.nan,
        lag_max=max((m.lag for m in metrics), default=math.nan),
        queued_max=max((m.queued for m in metrics), default=0),
        groups=len({m.group for m in metrics}),
        late_events=sum(m.late_events for m in metrics), dropped=sum(m.dropped for m in metrics),
    )
