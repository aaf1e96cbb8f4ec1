"""Late events of event-time windows (issue 11): counted per batch and in total, and seen in a side output.

A record is late when every window it belongs to was emitted before it
arrived (the previous batch's watermark had passed all their ends). What a
user checks: the count equals the late events injected, the side output
(``agg.late_events()``) receives exactly those records in the batch they
arrived in, every other record is counted in its windows exactly once, and
a run after a failed sink counts no late event twice.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

import drizzle_core as dz
from drizzle_core.stream._window import windows_of

pytestmark = pytest.mark.timeout(120)

I = 0.01  # noqa: E741  (batch interval, seconds)
LATENESS = 1.5 * I
BATCHES = 14


class Events:
    """Per batch and partition: on-time events ``(key, time, "on time")``, some of them out of order within
    the lateness, and in a few batches events whose time lies far behind the watermark ``(key, time, "late")``.

    With ``partly_late`` (sliding windows of 3 intervals), one event per batch is behind the
    watermark by 2.2 intervals: some of its windows were emitted, others are open, so it is
    not late (Flink's rule) and counts in the open ones. Deterministic in ``(p, b, bt)``; the
    test recomputes the same events on the driver.
    """

    def __init__(self, seed: int, late_every: int = 3, partly_late: bool = False) -> None:
        self.seed = seed
        self.late_every = late_every
        self.partly_late = partly_late

    def __call__(self, p, b, bt):
        rng = random.Random(self.seed * 1000 + b * 10 + p)
        span = bt.end - bt.start
        # out of order by up to the lateness: never late (at or after the previous watermark)
        out = [(rng.choice("abc"), bt.start - LATENESS + rng.uniform(0, LATENESS + span * 0.99), "on time")
               for _ in range(rng.randint(1, 5))]
        if b >= 3 and b % self.late_every == p:
            # behind the previous watermark by more than a window: every window of it was emitted
            out += [(rng.choice("abc"), bt.start - LATENESS - 4 * I - rng.uniform(0, 3 * I), "late")
                    for _ in range(rng.randint(1, 3))]
        if b >= 3 and self.partly_late:
            # 2.2 intervals behind the previous watermark: two of its three windows were emitted, one is open
            out.append((rng.choice("abc"), bt.start - LATENESS - 2.2 * I, "partly late"))
        rng.shuffle(out)
        return out


def _key_time(e):
    return (e[0], e[1])


def _time(kv):
    return kv[1]


def _expected(gen, metrics, length, slide, partitions):
    """Per window and key, the count of every event not late; the late events per batch; how many events
    missed some of their windows but not all (a direct computation)."""
    counts: Counter = Counter()
    late: dict[int, list] = {}
    partial = 0
    upto = float("-inf")
    for m in metrics:
        bt = dz.BatchTime(m.start, m.end)
        for p in range(partitions):
            for e in gen(p, m.batch, bt):
                live = [s for s in windows_of(e[1], length, slide) if s + length > upto]
                if not live:
                    late.setdefault(m.batch, []).append(e)
                elif len(live) < len(windows_of(e[1], length, slide)):
                    partial += 1
                for s in live:
                    counts[((s, s + length), e[0])] += 1
        upto = max(upto, m.end - LATENESS)
    return counts, late, partial


@pytest.mark.parametrize("transport", ["inline", "local"])
@pytest.mark.parametrize("length,slide", [(2 * I, 2 * I), (3 * I, I)])
def test_late_events_are_counted_and_reach_the_side_output(transport, length, slide, no_orphans):
    gen = Events(seed=5, partly_late=slide < length)
    with dz.Context(transport=transport, workers=2) as ctx:
        s = ctx.stream(dz.GeneratorSource(gen, 2), batch_interval=I, group_size=3)
        agg = s.map(_key_time).window(length, slide, event_time=_time, lateness=LATENESS).count_by_key(2)
        windows = agg.collect_sink()
        late = agg.late_events().collect_sink()
        s.run(batches=BATCHES)
    counts, expected_late, partial = _expected(gen, s.metrics, length, slide, 2)
    assert (partial > 0) == gen.partly_late  # sliding: events that missed some windows, not all, are not late
    injected = sum(1 for m in s.metrics for p in range(2)
                   for e in gen(p, m.batch, dz.BatchTime(m.start, m.end)) if e[2] == "late")
    assert injected > 0
    # every injected late event is late (and nothing else is): the count, per batch and in total
    assert sum(len(v) for v in expected_late.values()) == injected
    assert s.late_events == injected
    assert [m.late_events for m in s.metrics] == [len(expected_late.get(m.batch, [])) for m in s.metrics]
    assert s.metrics_summary().late_events == injected
    # the side output: exactly those records (as the window received them), in the batch they arrived in
    assert [sorted(b) for b in late.batches] == [sorted(_key_time(e) for e in expected_late.get(m.batch, []))
                                                 for m in s.metrics]
    # every window emitted counts its on-time events exactly once
    emitted = [kv for b in windows.batches for kv in b]
    assert len(emitted) == len(dict(emitted)) > 0  # each (window, key) emitted once
    for (window, key), n in emitted:
        assert n == counts[(window, key)], (window, key)


class FlakySink:
    """Raises the first time it sees batch ``fail_at``."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.failed = False

    def __call__(self, records, m):
        if m.batch == self.fail_at and not self.failed:
            self.failed = True
            raise ConnectionError("sink down")


def test_a_batch_delivered_again_after_a_sink_error_counts_its_late_events_once():
    gen = Events(seed=9, late_every=1)  # late events in every batch from 3 on
    with dz.Context(transport="inline", workers=2) as ctx:
        s = ctx.stream(dz.GeneratorSource(gen, 2), batch_interval=I, group_size=2)
        agg = s.map(_key_time).window(2 * I, event_time=_time, lateness=LATENESS).count()
        late = agg.late_events().collect_sink()
        s.foreach_batch(FlakySink(fail_at=5))
        with pytest.raises(ConnectionError, match="sink down"):
            s.run(batches=10)
        s.run(batches=10 - len(s.metrics))
    assert [m.batch for m in s.metrics] == list(range(10))
    assert s.late_events == sum(m.late_events for m in s.metrics) > 0
    # The side output's sink ran before the flaky one: it saw batch 5 twice (the second time built
    # again on the new run's clock, so its late events may differ), each time with its own count ...
    assert [m.batch for m in late.metrics] == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    assert [len(b) for b in late.batches] == [m.late_events for m in late.metrics]
    # ... and the total counts the delivered one only
    failed = late.metrics[5]
    assert s.late_events == sum(m.late_events for m in late.metrics) - failed.late_events


def test_a_stream_without_event_time_windows_counts_no_late_events():
    with dz.Context(transport="inline", workers=1) as ctx:
        s = ctx.stream(dz.GeneratorSource(Events(seed=1), 1), batch_interval=I, group_size=2)
        s.map(_key_time).window(2 * I).collect_sink()
        s.run(batches=6)
    assert s.late_events == 0 and all(m.late_events == 0 for m in s.metrics)
