"""Micro-batch streaming (issue 5): the DStream API, sources, windows, stopping, metrics.

Property tests compare every stream against a sequential computation over the
same events: ``update_state_by_key`` against a fold over the batches,
windows against a direct computation, and every event is counted once.
Intervals are 10-20 ms so the suite stays fast; a noisy machine only makes
batches queue, which must not change any result.
"""

from __future__ import annotations

import gc
import itertools
import operator
import os
import socket
import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import context

import drizzle_core as dz
from drizzle_core.stream._window import windows_of

pytestmark = pytest.mark.timeout(120)

I = 0.01  # noqa: E741  (the batch interval of most tests, seconds)


class Events:
    """A generator over fixed events: ``events[b][p]`` is partition p of batch b."""

    def __init__(self, events):
        self.events = events

    def __call__(self, p, b, bt):
        batch = self.events[b] if b < len(self.events) else []
        return list(batch[p]) if p < len(batch) else []


class TimedEvents(Events):
    """Events ``(key, offset)`` become ``(key, start + offset * I)``: event times in (or before) the batch."""

    def __call__(self, p, b, bt):
        return [(k, bt.start + off * (bt.end - bt.start)) for k, off in super().__call__(p, b, bt)]


def _sum_update(values, old):
    total = (old or 0) + sum(values)
    return None if total == 0 else total


keys = st.sampled_from(["a", "b", "c", 1, 2, (3, "x")])
group_sizes = st.one_of(st.integers(1, 8), st.just("auto"))


def event_batches(value=None, partitions=3, max_batches=7):
    value = st.integers(-3, 5) if value is None else value
    return st.lists(st.lists(st.lists(st.tuples(keys, value), max_size=6), min_size=partitions,
                             max_size=partitions), min_size=1, max_size=max_batches)


# ------------------------------------------------------------ properties


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_batches(), g=group_sizes, workers=st.integers(1, 3), reducers=st.integers(1, 3),
       transport=st.sampled_from(["inline", "local"]))
def test_update_state_by_key_equals_a_sequential_fold(events, g, workers, reducers, transport):
    ctx = context(transport, workers)
    s = ctx.stream(dz.GeneratorSource(Events(events), 3), batch_interval=I, group_size=g)
    raw = s.collect_sink()
    state = s.update_state_by_key(_sum_update, reducers).collect_sink()
    s.run(batches=len(events))
    assert [m.batch for m in s.metrics] == list(range(len(events)))
    assert raw.batches == [[e for part in batch for e in part] for batch in events]  # none lost or doubled
    assert [m.events for m in s.metrics] == [sum(len(p) for p in batch) for batch in events]
    expected: dict = {}
    for b, batch in enumerate(events):
        new: dict = {}
        for part in batch:
            for k, v in part:
                new.setdefault(k, []).append(v)
        for k in set(expected) | set(new):
            v = _sum_update(new.get(k, []), expected.get(k))
            if v is None:
                expected.pop(k, None)
            else:
                expected[k] = v
        got = dict(state.batches[b])
        assert len(got) == len(state.batches[b])  # each key once
        assert got == expected, f"batch {b}"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_batches(max_batches=9), g=group_sizes, workers=st.integers(1, 3),
       n=st.integers(1, 4), m=st.integers(1, 4), transport=st.sampled_from(["inline", "local"]))
def test_batch_time_windows_equal_a_direct_computation(events, g, workers, n, m, transport):
    ctx = context(transport, workers)
    s = ctx.stream(dz.GeneratorSource(Events(events), 3), batch_interval=I, group_size=g)
    win = s.window(n * I, m * I).reduce_by_key(operator.add, 2).collect_sink()
    raw_win = s.window(n * I, m * I).collect_sink()
    s.run(batches=len(events))
    flat = [[e for part in batch for e in part] for batch in events]
    for b in range(len(events)):
        if (b + 1) % m:
            assert win.batches[b] == [] and raw_win.batches[b] == []
            continue
        inside = [e for batch in flat[max(0, b - n + 1):b + 1] for e in batch]
        assert raw_win.batches[b] == inside
        sums: dict = {}
        for k, v in inside:
            sums[k] = sums.get(k, 0) + v
        assert dict(win.batches[b]) == sums and len(win.batches[b]) == len(sums)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_batches(value=st.floats(-1.5, 0.999), max_batches=9), g=group_sizes,
       workers=st.integers(1, 3), length=st.integers(1, 40), slide_frac=st.sampled_from([1.0, 0.5, 0.3]),
       transport=st.sampled_from(["inline", "local"]))
def test_event_time_windows_equal_a_direct_computation(events, g, workers, length, slide_frac, transport):
    """Out of order by up to 1.5 batches, lateness 1.5 batches: every event in exactly one count per window."""
    length_s = length * I / 4
    slide_s = length_s * slide_frac
    lateness = 1.5 * I
    ctx = context(transport, workers)
    s = ctx.stream(dz.GeneratorSource(TimedEvents(events), 3), batch_interval=I, group_size=g)
    raw = s.collect_sink()
    counts = s.window(length_s, slide_s, event_time=lambda e: e[1], lateness=lateness).count_by_key(2)
    got = counts.collect_sink()
    totals = s.window(length_s, slide_s, event_time=lambda e: e[1], lateness=lateness).count().collect_sink()
    s.run(batches=len(events))
    final_watermark = s.metrics[-1].end - lateness
    expected: Counter = Counter()
    for e in raw.items():
        for ws in windows_of(e[1], length_s, slide_s):
            if ws + length_s <= final_watermark:
                expected[((ws, ws + length_s), e[0])] += 1
    emitted = Counter()
    previous_watermark = -1.0
    for records, m in zip(got.batches, got.metrics):
        watermark = m.end - lateness
        for (window, key), n in records:
            assert previous_watermark < window[1] <= watermark  # emitted when it closed
            assert ((window, key)) not in emitted  # once
            emitted[(window, key)] = n
        previous_watermark = watermark
    assert emitted == expected
    per_window: Counter = Counter()
    for (window, _key), n in expected.items():
        per_window[window] += n
    assert dict(((w, n) for (w, _none), n in totals.items())) == dict(per_window)


def test_windows_of():
    assert windows_of(5.0, 10.0, 10.0) == [0.0]
    assert windows_of(10.0, 10.0, 10.0) == [10.0]
    assert sorted(windows_of(12.0, 10.0, 5.0)) == [5.0, 10.0]
    assert sorted(windows_of(10.0, 10.0, 5.0)) == [5.0, 10.0]
    assert windows_of(-1.0, 2.0, 2.0) == [-2.0]


# ------------------------------------------------------------- operations


@pytest.mark.parametrize("transport", ["inline", "local"])
def test_operations_and_joins(transport):
    ctx = context(transport)
    events = [[[(i % 4, i) for i in range(b * 10 + p * 5, b * 10 + p * 5 + 5)] for p in range(2)] for b in range(5)]
    table = ctx.parallelize([(0, "zero"), (1, "one"), (1, "uno"), (2, "two")], 2)
    s = ctx.stream(dz.GeneratorSource(Events(events), 2), batch_interval=I, group_size=3)
    mapped = s.map(lambda kv: (kv[0], kv[1] * 2)).filter(lambda kv: kv[1] % 3).collect_sink()
    flat = s.flat_map(lambda kv: [kv[1]] * 2).map_partitions(lambda it: [sum(it)]).collect_sink()
    bjoin = s.join(table).collect_sink()
    sjoin = s.join(table.cache(), 3, broadcast=False).collect_sink()
    grouped = s.group_by_key(2).map(lambda kv: (kv[0], sorted(kv[1]))).collect_sink()
    counted = s.count_by_key().collect_sink()
    union = s.map(lambda kv: kv[1]).union(s.map(lambda kv: -kv[1])).collect_sink()
    via_transform = s.transform(lambda ds: ds.map(lambda kv: (kv[0], 1)).reduce_by_key(operator.add, 1)).collect_sink()
    s.run(batches=5)
    names = {0: ["zero"], 1: ["one", "uno"], 2: ["two"], 3: []}
    for b, batch in enumerate(events):
        records = [e for part in batch for e in part]
        assert mapped.batches[b] == [(k, v * 2) for k, v in records if (v * 2) % 3]
        assert sum(flat.batches[b]) == 2 * sum(v for _, v in records)
        expected_join = sorted((k, (v, w)) for k, v in records for w in names[k])
        assert sorted(bjoin.batches[b]) == expected_join
        assert sorted(sjoin.batches[b]) == expected_join
        by_key = {k: sorted(v for kk, v in records if kk == k) for k in {k for k, _ in records}}
        assert dict(grouped.batches[b]) == by_key
        assert dict(counted.batches[b]) == dict(Counter(k for k, _ in records))
        assert dict(via_transform.batches[b]) == dict(counted.batches[b])
        assert union.batches[b] == [v for _, v in records] + [-v for _, v in records]


def test_foreach_batch_sees_batches_in_order_with_their_metrics():
    ctx = context("local")
    seen = []
    s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [b] * (p + 1), 3), batch_interval=I)
    s.foreach_batch(lambda records, m: seen.append((m.batch, records, m)))
    out = s.run(batches=12, group_size="auto")
    assert [b for b, _, _ in seen] == list(range(12))
    assert all(records == [b] * 6 for b, records, _ in seen)
    assert out == s.metrics and len(out) == 12
    for m in out:
        assert m.events == 6
        assert m.end == pytest.approx(m.start + I)
        assert m.latency == pytest.approx(m.arrived - m.end)
        assert m.arrived >= m.end  # the source waited for the batch's end on the worker
        assert m.lag >= -1e-3
    assert all(b.start == pytest.approx(a.end) for a, b in itertools.pairwise(out))
    summary = s.metrics_summary()
    assert summary.batches == 12 and summary.events == 72
    assert summary.latency_p50 <= summary.latency_p95 <= summary.latency_p99 <= summary.latency_max
    assert summary.events_per_s == pytest.approx(72 / (12 * I), rel=0.01)
    text = str(summary)
    assert "latency p99" in text and "events" in text


def test_auto_group_size_is_capped_by_max_group_seconds():
    ctx = context("inline", 1)
    s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [b], 1), batch_interval=I, max_group_seconds=4 * I)
    sink = s.collect_sink()
    s.run(batches=30, group_size="auto")
    sizes = Counter(m.group for m in s.metrics)
    assert max(sizes.values()) == 4  # grew to the cap, not past it
    assert sink.items() == list(range(30))
    assert ctx._adaptive.cap is None  # the context's controller is left as it was


def test_fixed_group_size_schedules_that_many_batches_per_group():
    ctx = context("local")
    s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [b], 2), batch_interval=I)
    s.collect_sink()
    s.run(batches=10, group_size=5)
    assert list(Counter(m.group for m in s.metrics).values()) == [5, 5]


def test_falling_behind_queues_batches_and_shows_lag():
    ctx = context("local")

    def slow(p, b, bt):
        time.sleep(3 * I)  # each batch takes three intervals
        return [b]

    s = ctx.stream(dz.GeneratorSource(slow, 2), batch_interval=I, group_size=4)
    sink = s.collect_sink()
    s.run(batches=8)
    assert sink.items() == [b for b in range(8) for _ in range(2)]  # nothing dropped
    lags = [m.lag for m in s.metrics]
    assert lags[-1] > lags[0] + 8 * I  # about 2 intervals more per batch
    assert s.metrics[-1].queued >= 3
    assert s.metrics_summary().queued_max >= 3


# --------------------------------------------------------------- stopping


def test_stop_from_a_callback_finishes_the_group_and_workers_stay_usable():
    ctx = context("local")
    s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [(b % 3, 1)], 2), batch_interval=I, group_size=4)
    state = s.update_state_by_key(_sum_update).collect_sink()

    def stop_at_2(records, m):
        if m.batch == 2:
            s.stop()

    s.foreach_batch(stop_at_2)
    s.run()  # until stopped
    # stop noticed at the group boundary: the rest of the group (batch 3) is delivered too
    assert [m.batch for m in s.metrics] == [0, 1, 2, 3]
    assert not s.running
    assert ctx.parallelize(range(10), 3).sum() == 45  # workers usable
    # a later run continues the batch numbering and the state
    s.run(batches=2)
    assert [m.batch for m in s.metrics] == [0, 1, 2, 3, 4, 5]
    assert dict(state.batches[-1]) == {0: 4, 1: 4, 2: 4}


def test_stop_from_another_thread(no_orphans):
    with dz.Context(transport="local", workers=2) as ctx:
        s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [b], 2), batch_interval=I, max_group_seconds=0.1)
        sink = s.collect_sink()
        timer = threading.Timer(0.3, s.stop)
        timer.start()
        t = time.perf_counter()
        s.run()
        took = time.perf_counter() - t
        timer.join()
        assert took < 3.0
        n = len(s.metrics)
        # batches every 10 ms for 0.3 s: a handful at least, even when other processes hold the cores
        assert n >= 3 and [m.batch for m in s.metrics] == list(range(n))
        assert sink.items() == [b for b in range(n) for _ in range(2)]
        assert ctx.parallelize(range(4), 2).collect() == [0, 1, 2, 3]


def test_run_for_a_duration():
    ctx = context("inline", 1)
    s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [b], 1), batch_interval=0.02)
    s.collect_sink()
    t = time.perf_counter()
    out = s.run(duration=0.2)
    assert len(out) == 10
    assert 0.18 <= time.perf_counter() - t < 2.0


def test_bad_arguments():
    ctx = context("inline", 1)
    src = dz.GeneratorSource(lambda p, b, bt: [], 1)
    with pytest.raises(ValueError, match="batch_interval"):
        ctx.stream(src, batch_interval=0)
    with pytest.raises(TypeError, match="Source"):
        ctx.stream(lambda p, b, t: [], batch_interval=I)
    with pytest.raises(ValueError, match="group_size"):
        ctx.stream(src, batch_interval=I, group_size=0)
    s = ctx.stream(src, batch_interval=I)
    with pytest.raises(ValueError, match="no sink"):
        s.run(batches=1)
    with pytest.raises(ValueError, match="multiple of the batch interval"):
        s.window(1.5 * I)
    with pytest.raises(TypeError, match="callable"):
        s.map(3)
    with pytest.raises(ValueError, match="num_partitions"):
        dz.GeneratorSource(lambda p, b, bt: [], 0)


@pytest.mark.parametrize("transport", ["inline", "local"])
def test_the_driver_keeps_a_bounded_number_of_datasets(transport):
    """Stateful DStreams and windows: the driver's live Datasets do not grow with the batches.

    Before checkpoints, each batch's state kept the previous one as lineage:
    5 Datasets more per batch, forever (2,501 after 500 batches).
    """
    ctx = context(transport)
    s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [(b % 3, 1, bt.start)], 2), batch_interval=0.004,
                   group_size=5)
    live = []

    def probe(records, m):
        if m.batch % 50 == 49:
            gc.collect()
            live.append(sum(isinstance(o, dz.Dataset) for o in gc.get_objects()))

    s.map(lambda e: (e[0], e[1])).update_state_by_key(_sum_update).foreach_batch(probe)
    s.window(0.02, 0.008, event_time=lambda e: e[2]).count_by_key().foreach_batch(lambda r, m: None)
    s.window(0.012, 0.004).foreach_batch(lambda r, m: None)
    s.run(batches=400)
    assert len(live) == 8
    assert max(live[4:]) <= max(live[:4]) + 20, live  # flat, not +5 per batch
    assert max(live) < 400, live


def test_a_failing_sink_stops_the_run_and_the_context_survives():
    ctx = context("local")
    s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [b], 2), batch_interval=I, group_size=3)

    def boom(records, m):
        if m.batch == 1:
            raise RuntimeError("sink failed")

    s.foreach_batch(boom)
    with pytest.raises(RuntimeError, match="sink failed"):
        s.run(batches=6)
    assert not s.running
    assert ctx.parallelize(range(10), 2).sum() == 45


# ---------------------------------------------------------------- sources


@pytest.mark.parametrize("transport", ["inline", "local"])
def test_directory_source_reads_each_new_file_once(transport, tmp_path):
    ctx = context(transport)
    (tmp_path / "old.txt").write_text("too old\n")
    os.utime(tmp_path / "old.txt", (time.time() - 60, time.time() - 60))
    expected = [f"file{i} line{j}" for i in range(12) for j in range(3)]
    done = threading.Event()

    def writer():
        for i in range(12):
            tmp = tmp_path / f".f{i}.tmp"
            tmp.write_text("".join(f"file{i} line{j}\n" for j in range(3)))
            os.replace(tmp, tmp_path / f"f{i}.txt")
            time.sleep(0.013)
        done.set()

    s = ctx.stream(dz.DirectorySource(tmp_path, 2, settle=0.01), batch_interval=0.02, group_size="auto")
    sink = s.collect_sink()
    started = []

    def control(records, m):
        if not started:
            started.append(threading.Thread(target=writer))
            started[0].start()
        if done.is_set() and len(sink.items()) >= len(expected):
            s.stop()

    s.foreach_batch(control)
    s.run(batches=200)
    started[0].join()
    lines = sink.items()
    assert sorted(lines) == sorted(expected)  # each once; the old file ignored
    assert sum(m.events for m in s.metrics) == len(expected)


class _LineServer:
    """A local text server: every connection gets its share of ``lines``, one every ``gap`` seconds."""

    def __init__(self, lines, connections, gap=0.002):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines = lines
        self.connections = connections
        self.gap = gap
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conns = [self.sock.accept()[0] for _ in range(self.connections)]
        for i, line in enumerate(self.lines):
            conns[i % len(conns)].sendall((line + "\n").encode())
            time.sleep(self.gap)
        for c in conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("transport", ["inline", "local"])
def test_socket_source_receives_every_line_once(transport):
    ctx = context(transport)
    lines = [f"line {i}" for i in range(150)]
    server = _LineServer(lines, connections=2)
    s = ctx.stream(dz.SocketSource("127.0.0.1", server.port, 2), batch_interval=0.02, group_size="auto")
    words = s.flat_map(str.split).map(lambda w: (w, 1)).reduce_by_key(operator.add)
    counts = words.collect_sink()
    sink = s.collect_sink()

    def control(records, m):
        if len(sink.items()) >= len(lines):
            s.stop()

    s.foreach_batch(control)
    s.run(batches=500)
    server.thread.join(timeout=5)
    assert sorted(sink.items()) == sorted(lines)
    total: Counter = Counter()
    for batch in counts.batches:
        total.update(dict(batch))
    assert total["line"] == len(lines)
    # receivers are closed when the run ends; the workers still run jobs
    assert ctx.parallelize(range(10), 2).sum() == 45


def test_ysb_counts_equal_a_direct_computation(no_orphans):
    import sys

    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    import ysb

    with dz.Context(transport="local", workers=2) as ctx:  # started after the path change: imports ysb
        result = ysb.run_ysb(ctx, rate=5_000, seconds=1.2, group_size="auto", window=0.2, interval=0.02)
    assert result.correct
    assert len(result.window_latency) >= 4 and sum(result.counts.values()) > 0
    assert all(lat >= 0 for lat in result.window_latency.values())


@settings(max_examples=300, deadline=None)
@given(t=st.floats(0, 1e6, allow_nan=False), steps=st.integers(1, 5),
       slide=st.sampled_from([0.1, 0.2, 0.3, 0.05, 1 / 3, 0.004, 2.5]))
def test_an_event_is_in_exactly_length_over_slide_windows(t, steps, slide):
    """Tumbling windows partition time: no event in two of them (float starts are not exact multiples)."""
    from drizzle_core.stream._window import windows_of

    starts = windows_of(t, steps * slide, slide)
    assert len(starts) == steps
    assert len(set(starts)) == steps
