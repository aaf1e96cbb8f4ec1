"""``Context.metrics`` and ``Stream.metrics`` keep their last entries only, indexed as the whole log."""

from __future__ import annotations

import pickle
import tracemalloc

import pytest
from bookkeeping import assert_no_bookkeeping
from support import context

import drizzle_core as dz
from drizzle_core._retained import METRICS_RETAINED, Retained

pytestmark = pytest.mark.timeout(60)


def test_positions_are_those_of_the_whole_log_and_old_entries_say_they_were_dropped():
    r: Retained[int] = Retained(10)
    for i in range(35):
        r.append(i)
    assert len(r) == 35 and r.dropped == 25
    assert list(r) == list(range(25, 35))
    assert r[34] == r[-1] == 34 and r[25] == 25
    assert r[30:] == [30, 31, 32, 33, 34] and r[-3:] == [32, 33, 34]
    assert r[20:27] == [25, 26]  # a slice leaves out what is gone
    assert r[::5] == [25, 30]
    assert list(reversed(r)) == list(range(34, 24, -1))
    assert 30 in r and 3 not in r
    with pytest.raises(IndexError, match="entry 3 is no longer kept: only the last 10 of 35"):
        r[3]
    with pytest.raises(IndexError, match="out of range"):
        r[35]
    assert r.pop() == 34 and len(r) == 34
    copy = pickle.loads(pickle.dumps(r))
    assert copy == r and len(copy) == 34 and copy[33] == 33
    assert Retained(3) == [] and r != list(range(25, 34))
    with pytest.raises(ValueError, match="maxlen"):
        Retained(0)


def test_a_list_of_up_to_maxlen_entries_behaves_as_a_list():
    r: Retained[str] = Retained(100)
    items = [str(i) for i in range(60)]
    for x in items:
        r.append(x)
    assert r == items and r[10:20] == items[10:20] and r[-1] == items[-1] and r.dropped == 0


def test_memory_stays_flat_however_many_entries_are_appended():
    r: Retained[bytes] = Retained(1000)
    for _ in range(2000):
        r.append(bytes(100))
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(50_000):
            r.append(bytes(100))
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert len(r) == 52_000
    assert grown < 400_000, f"{grown} bytes more after 50,000 appends to a log that keeps 1,000"


class _Count:
    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, p: int, b: int, t: dz.BatchTime):
        return [1] * self.n


def test_a_long_stream_keeps_its_last_batch_metrics_and_a_context_its_last_groups(monkeypatch):
    ctx = context("local", 2)
    monkeypatch.setattr(ctx._scheduler, "metrics", Retained(20))
    seen: list[int] = []
    s = ctx.stream(dz.GeneratorSource(_Count(3), 1), batch_interval=0.002, group_size=4)
    s.metrics = Retained(30)
    s.foreach_batch(lambda records, m: seen.append(len(records)))
    first = len(ctx.metrics)
    ran = s.run(batches=200)
    assert len(s.metrics) == 200 and s.metrics.dropped >= 170
    assert [m.batch for m in ran] == list(range(200 - len(ran), 200)) and len(ran) <= 60
    assert s.metrics[-1].batch == 199 and s.metrics_summary().batches == len(list(s.metrics))
    assert len(ctx.metrics) - first >= 50 and ctx.metrics.dropped > 0   # 200 batches in groups of 4
    assert seen == [3] * 200
    assert_no_bookkeeping(ctx)


def test_the_default_keeps_ten_thousand():
    assert METRICS_RETAINED == 10_000
    assert isinstance(context("local", 2).metrics, Retained)
