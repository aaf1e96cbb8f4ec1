"""AIMD group sizing against a fake overhead model (no processes, no clocks)."""

from __future__ import annotations

import pytest

from drizzle_core import AIMD


def share(g: int, fixed: float, per_job: float) -> float:
    """Coordination share of a group: a fixed cost per group against G jobs of work."""
    return fixed / (fixed + g * per_job)


def drive(ctl: AIMD, fixed: float, per_job: float, groups: int) -> list[int]:
    sizes = []
    for _ in range(groups):
        g = ctl.next_size()
        sizes.append(g)
        ctl.observe(share(g, fixed, per_job), g)
    return sizes


def test_group_size_rises_under_high_overhead_and_settles_between_the_bounds():
    ctl = AIMD(initial=1, lower=0.05, upper=0.10)
    sizes = drive(ctl, fixed=1.0, per_job=0.1, groups=40)  # at G=1, 91% of the time is coordination
    assert sizes[:5] == [1, 2, 4, 8, 16]                   # multiplicative increase
    tail = sizes[-10:]
    assert max(tail) - min(tail) <= max(tail) // 2 + 1     # settled (AIMD saw-tooth, no runaway)
    assert all(0.05 * 0.5 <= share(g, 1.0, 0.1) <= 0.10 * 1.5 for g in tail)


def test_group_size_shrinks_additively_when_overhead_is_negligible():
    ctl = AIMD(initial=50, lower=0.05, upper=0.10)
    sizes = drive(ctl, fixed=0.001, per_job=1.0, groups=5)
    assert sizes == [50, 49, 48, 47, 46]


def test_a_failure_halves_the_group_size_so_the_engine_reacts_sooner():
    ctl = AIMD(initial=64)
    ctl.on_failure()
    assert ctl.next_size() == 32
    ctl.on_failure()
    ctl.on_failure()
    assert ctl.next_size() == 8


def test_caps_and_bounds():
    ctl = AIMD(initial=4, max_size=10)
    ctl.cap = 3
    assert ctl.next_size() == 3
    ctl.cap = None
    drive(ctl, fixed=1.0, per_job=0.001, groups=10)
    assert ctl.next_size() == 10
    with pytest.raises(ValueError, match="lower < upper"):
        AIMD(lower=0.2, upper=0.1)


def test_a_short_last_group_does_not_move_the_size():
    ctl = AIMD(initial=16)
    ctl.observe(0.9, jobs=3)
    assert ctl.next_size() == 16


def test_a_group_is_judged_against_the_size_it_was_planned_with():
    # planned ahead: group k+1 is planned (size 8) before group k (size 4) is reported
    ctl = AIMD(initial=4)
    first, second = ctl.next_size(), None
    ctl.observe(0.9, jobs=4, planned=first)
    second = ctl.next_size()
    ctl.observe(0.9, jobs=4, planned=first)  # the group planned before the increase: still counts
    assert second == 8 and ctl.next_size() == 16


def test_a_group_lasts_at_most_max_group_seconds():
    ctl = AIMD(initial=64, max_group_seconds=0.5)
    ctl.observe(0.9, jobs=64, planned=64, wall_s=6.4)  # 0.1 s per job
    assert ctl.next_size() == 5
