"""The latency cap on a stream's automatic group size (see :class:`LatencyCap`)."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GroupSample:
    """What one finished group of a stream tells :class:`LatencyCap`."""

    jobs: int            # batches in the group
    plan_s: float        # driver time to plan and serialize it
    launch_s: float      # driver time to launch it
    latency: float       # median processing latency of its batches (s)
    lag_end: float       # start lag of its last batch (s): batches still queued when it ended
    lag_growth: float    # its last batch's lag minus the previous group's last: > 0 while falling behind


class LatencyCap:
    """A stream's cap on the AIMD group size: a group's driver cost must fit the latency budget.

    Why a cap at all: for a stream AIMD alone grows G to the time limit,
    because the time spent waiting for batches to come due counts as
    coordination. But a group's driver work runs on the driver's one thread,
    and while it runs no result is delivered: a 250-batch group at 4 ms
    batches took 270 ms to plan and held the results of the running group
    back by that much (p99 65-117 ms against G=1's 15-73 ms).

    The budget. Group k+1 is planned and serialized while group k runs,
    starting when k is launched; k's first result is due one interval later
    (its first batch ends one interval after k-1's last). So planning a group
    may take at most half an interval (the other half is for delivering
    results) without holding a result back: ``G * plan_per_batch <= I / 2``.
    Launching happens between k's last result and k+1's first batch, in the
    *slack* ``I - processing latency``: ``G * launch_per_batch <= slack``.
    G=1 pays the same costs for one batch, so a cap from these two bounds
    is never later than G=1; where G=1 has no slack either, 1 is the cap.

    One slow group must not move the cap far: every figure is a median
    over the last ``window`` groups, and the cap grows at most ``growth``
    times (at least +1) per group, so a hiccup is outvoted before it
    matters; it shrinks at once (a smaller group is never later).

    Falling behind (in most recent groups, batches were still queued when
    the group ended, more each time) means processing does not keep up, and
    throughput matters more than reaction: a *floor* under the cap then
    grows ``growth`` times per group, and decays by a tenth (at least one)
    per group once the queue stops growing (AIMD on the queue): enough to
    catch up and stay caught up, and back to the latency bound within a few
    seconds when the load drops (a 64-batch floor at 4 ms batches: 2 s).
    """

    def __init__(self, interval: float, time_cap: int, *, start: int = 4, window: int = 8,
                 growth: float = 2.0) -> None:
        if not interval > 0 or time_cap < 1 or start < 1 or window < 1 or growth <= 1:
            raise ValueError("need interval > 0, time_cap >= 1, start >= 1, window >= 1 and growth > 1")
        self.interval = interval
        self.time_cap = time_cap
        self.growth = growth
        self.cap = min(start, time_cap)
        self.floor = 1                                            # throughput floor (falling behind)
        self.samples: deque[GroupSample] = deque(maxlen=window)  # the last groups, oldest first

    def _late(self, s: GroupSample) -> bool:
        return s.lag_end > self.interval and s.lag_growth > 0

    def behind(self) -> bool:
        """Falling behind: the last group and most recent ones ended with more batches queued than before.

        The last group must agree, so the floor stops growing as soon as the
        queue stops growing (a larger G than that only costs reaction time).
        """
        if not self.samples or not self._late(self.samples[-1]):
            return False
        return 2 * sum(map(self._late, self.samples)) > len(self.samples)

    def latency_bound(self) -> int:
        """The largest G whose driver cost fits the latency budget (see the class docstring)."""
        if not self.samples:
            return self.cap
        plan = statistics.median(s.plan_s / s.jobs for s in self.samples)
        launch = statistics.median(s.launch_s / s.jobs for s in self.samples)
        slack = self.interval - statistics.median(s.latency for s in self.samples)
        if slack <= 0:
            return 1
        bound = float(self.time_cap)
        if plan > 0:
            bound = min(bound, self.interval / 2 / plan)
        if launch > 0:
            bound = min(bound, slack / launch)
        return max(1, min(self.time_cap, int(bound)))

    def observe(self, sample: GroupSample) -> int:
        """Feed one finished group; returns the new cap."""
        if sample.jobs <= 0:
            return self.cap
        self.samples.append(sample)
        grown = min(self.time_cap, max(self.cap + 1, int(self.cap * self.growth)))
        self.floor = grown if self.behind() else max(1, min(self.floor - 1, int(self.floor * 0.9)))
        self.cap = min(max(self.latency_bound(), self.floor), grown)
        return self.cap
