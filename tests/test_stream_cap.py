"""The latency cap of a stream's auto group size (issue 9, item 6), driven with made-up groups.

``LatencyCap`` sees one ``GroupSample`` per finished group; these tests feed
it groups and assert the cap a stream would get: within its latency budget,
not lifted by one slow group, grown gradually, raised only while the stream
falls behind.
"""

from __future__ import annotations

import pytest

from drizzle_core.stream._cap import GroupSample, LatencyCap

I = 0.01  # noqa: E741  (batch interval, seconds)


def group(jobs, *, plan=0.0002, launch=0.00005, latency=0.002, lag_end=0.0005, lag_growth=0.0):
    """A group of ``jobs`` batches with per-batch driver costs ``plan`` and ``launch`` (seconds)."""
    return GroupSample(jobs=jobs, plan_s=plan * jobs, launch_s=launch * jobs, latency=latency,
                       lag_end=lag_end, lag_growth=lag_growth)


def feed(cap, n, **kw):
    return [cap.observe(group(cap.cap, **kw)) for _ in range(n)]


def test_the_cap_fits_the_latency_budget():
    cap = LatencyCap(I, time_cap=100)
    feed(cap, 10)
    # planning: G * 0.2 ms <= I / 2 = 5 ms -> 25; launching: G * 0.05 ms <= slack 8 ms -> 160
    assert cap.cap == 25
    cap = LatencyCap(I, time_cap=100)
    feed(cap, 10, launch=0.0004, latency=0.006)  # slack 4 ms / 0.4 ms per batch
    assert cap.cap == 10


def test_the_cap_grows_gradually():
    cap = LatencyCap(I, time_cap=100, start=1)
    assert feed(cap, 6, plan=0.00001, launch=0.00001) == [2, 4, 8, 16, 32, 64]


def test_without_slack_the_cap_is_one():
    cap = LatencyCap(I, time_cap=100)
    feed(cap, 5, latency=0.012, lag_end=0.001)  # processing takes longer than the interval, keeping up
    assert cap.cap == 1


def test_one_slow_group_does_not_lift_the_cap():
    cap = LatencyCap(0.004, time_cap=250)
    feed(cap, 8, plan=0.0005, latency=0.002)  # 4 ms batches: the budget allows G = 4
    assert cap.cap == 4
    # a hiccup: one group late by 40 ms, more queued at its end than before
    cap.observe(group(cap.cap, plan=0.005, latency=0.05, lag_end=0.04, lag_growth=0.04))
    assert cap.cap <= 4
    assert feed(cap, 3, plan=0.0005, latency=0.002) == [4, 4, 4]


def test_one_cheap_group_does_not_lift_it_either():
    cap = LatencyCap(0.004, time_cap=250)
    feed(cap, 8, plan=0.0005, latency=0.002)
    cap.observe(group(cap.cap, plan=0.00001, latency=0.002))
    assert cap.cap == 4  # the median over recent groups, not the last one


def test_a_stream_falling_behind_grows_the_cap_gradually_then_lets_it_decay():
    cap = LatencyCap(I, time_cap=100, start=1)
    feed(cap, 2, latency=0.012, lag_end=0.001)
    assert cap.cap == 1
    caps = feed(cap, 5, latency=0.03, lag_end=0.02, lag_growth=0.01)  # queue growing every group
    assert caps == [1, 1, 2, 4, 8]  # once most recent groups are behind: doubling, not a jump to 100
    caught_up = feed(cap, 3, latency=0.012, lag_end=0.015, lag_growth=-0.005)  # queue shrinking
    assert caught_up == [7, 6, 5]  # held near what caught up, then down by one per group


def test_it_never_exceeds_the_time_limit():
    cap = LatencyCap(I, time_cap=6, start=4)
    feed(cap, 10, latency=0.5, lag_end=0.5, lag_growth=0.1)
    assert cap.cap == 6
    feed(cap, 10, plan=1e-9, launch=1e-9)
    assert cap.cap == 6


@pytest.mark.parametrize("bad", [dict(interval=0.0), dict(time_cap=0), dict(growth=1.0), dict(window=0)])
def test_bad_arguments(bad):
    args = dict(interval=I, time_cap=10) | bad
    with pytest.raises(ValueError):
        LatencyCap(**args)


def test_after_catching_up_a_large_group_comes_down_within_a_few_seconds():
    cap = LatencyCap(0.004, time_cap=250, start=1)
    while cap.cap < 64:
        cap.observe(group(cap.cap, plan=0.0005, latency=0.1, lag_end=0.1, lag_growth=0.01))
    batches = 0
    while cap.cap > 4:  # caught up: the latency budget allows 4 (2 ms per 0.5 ms of planning)
        batches += cap.cap
        cap.observe(group(cap.cap, plan=0.0005, latency=0.002))
    assert batches * 0.004 < 2.5  # seconds of batches in groups larger than the budget
