"""Adaptive group size: AIMD on the measured coordination share, as in Drizzle.

After each group the scheduler reports the share of worker time spent not
running tasks (planning, serializing, launching, waiting on the driver). If
it is above ``upper``, coordination dominates: the group size is multiplied
(amortize more). If it is below ``lower``, groups are bigger than they need
to be, which costs reaction time (to failures, new workers, convergence):
the group size is decreased additively. Between the bounds it holds.

A stream also caps the size by its latency budget (:class:`drizzle_core.stream._cap.LatencyCap`).
"""

from __future__ import annotations

import logging

log = logging.getLogger("drizzle.adaptive")


class AIMD:
    """Multiplicative increase, additive decrease of the group size."""

    def __init__(self, *, initial: int = 4, lower: float = 0.05, upper: float = 0.10,
                 increase: float = 2.0, decrease: int = 1, min_size: int = 1, max_size: int = 1000,
                 max_group_seconds: float = 1.0) -> None:
        if not 0 <= lower < upper <= 1:
            raise ValueError(f"need 0 <= lower < upper <= 1, got lower={lower}, upper={upper}")
        if increase <= 1 or decrease < 1 or not 1 <= min_size <= initial <= max_size:
            raise ValueError("need increase > 1, decrease >= 1 and min_size <= initial <= max_size")
        self.size = initial
        self.lower = lower
        self.upper = upper
        self.increase = increase
        self.decrease = decrease
        self.min_size = min_size
        self.max_size = max_size
        self.cap: int | None = None       # set by a caller (a stream's latency bound)
        self.max_group_seconds = max_group_seconds
        self.time_cap: int | None = None  # from the measured time per job

    def next_size(self) -> int:
        size = self.size
        for cap in (self.cap, self.time_cap):
            if cap is not None:
                size = min(size, cap)
        return max(self.min_size, size)

    def observe(self, coordination: float, jobs: int, planned: int | None = None,
                wall_s: float | None = None) -> None:
        """Feed one finished group: its coordination share, jobs, planned size and wall time."""
        if wall_s is not None and wall_s > 0 and jobs:
            self.time_cap = max(self.min_size, int(self.max_group_seconds * jobs / wall_s))
        if jobs < (planned if planned is not None else self.size):
            return  # a short last group says little about the right size
        old = self.size  # for the log lines only
        if coordination > self.upper:
            self.size = min(self.max_size, max(self.size + 1, int(self.size * self.increase)))
            if self.size != old:
                log.info("group size %d -> %d (next group: %d, after caps): coordination share %.0f%% is above "
                         "%.0f%%", old, self.size, self.next_size(), 100 * coordination, 100 * self.upper)
        elif coordination < self.lower:
            self.size = max(self.min_size, self.size - self.decrease)
            if self.size != old:  # one step a group: DEBUG, not a line per group at INFO
                log.debug("group size %d -> %d: coordination share %.1f%% is below %.0f%%", old, self.size,
                          100 * coordination, 100 * self.lower)

    def on_failure(self) -> None:
        """A worker was lost: react sooner next time (halve the group size)."""
        self.size = max(self.min_size, self.size // 2)
        log.info("group size halved to %d after a lost worker", self.size)
