"""Assert that nothing is left behind after work, on the driver and on every worker.

Spark's scheduler suite ends its tests by asserting the scheduler's maps
empty; this is ours. Between jobs only cached partitions may remain, and the
workers must hold exactly the cached blocks the driver knows of: a block the
driver forgot is a leak nobody will ever drop.
"""

from __future__ import annotations

import gc

import drizzle_core as dz


def assert_no_bookkeeping(ctx: dz.Context) -> None:
    gc.collect()  # datasets that went out of scope drop their blocks now
    report = ctx.bookkeeping()
    driver = dict(report["driver"])
    cached = driver.pop("cached_blocks")
    assert all(v == 0 for v in driver.values()), f"driver bookkeeping left: {driver}"
    held = 0
    for name, worker in report["workers"].items():
        assert worker is not None, f"{name} did not answer"
        left = dict(worker)
        held += left.pop("cached_blocks")
        assert left.pop("stage_durations") <= 256
        assert all(v == 0 for v in left.values()), f"{name} bookkeeping left: {left}"
    assert held == cached, f"workers hold {held} cached blocks, the driver knows of {cached}"
