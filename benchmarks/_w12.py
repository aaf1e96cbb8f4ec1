"""W1 and W2 of ``bench_core`` on a Context, with their numpy floors: shared by the scripts that compare modes.

* W1: one stage, 4 cached partitions of 10k floats summed, one job per iteration;
* W2: a shuffle per job, 4 cached map partitions of 2,500 ``(key, 1)`` records over
  100 keys reduced into 2.

Also the timing helpers those scripts print with.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

import drizzle_core as dz


def _sum(p: np.ndarray) -> float:
    return float(p.sum())


def _add(a: int, b: int) -> int:
    return a + b


def _count(it) -> int:
    return sum(1 for _ in it)


def w1_w2(ctx: dz.Context, g: int) -> dict[str, tuple[Callable[[], None], Callable[[int], None]]]:
    """``{name: (floor(), run(n jobs))}`` for W1 and W2 at group size ``g``."""
    parts = [np.arange(10_000, dtype=np.float64) + i for i in range(4)]
    w1 = ctx.parallelize(np.concatenate(parts), 4).cache()
    records = [[(k % 100, 1) for k in range(m * 2500, (m + 1) * 2500)] for m in range(4)]
    src = ctx.from_partitions(records).cache()
    w1.count(), src.count()

    def floor_w1() -> None:
        for p in parts:
            float(p.sum())

    def floor_w2() -> None:
        acc: dict[int, int] = {}
        for part in records:
            for k, v in part:
                acc[k] = acc.get(k, 0) + v
        sorted(acc)

    return {
        "W1 single stage": (floor_w1, lambda n: ctx.run_jobs([(w1, _sum)] * n, group_size=g) and None),
        # a shuffle per job (one dataset read by every job of a group would be shuffled once per group)
        "W2 shuffle 4 -> 2": (floor_w2, lambda n: ctx.run_jobs(
            [(src.reduce_by_key(_add, 2), _count) for _ in range(n)], group_size=g) and None),
    }


def ms_per_call(f: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) * 1000 / n


def med(xs: list[float]) -> str:
    """A median and its range, for paired ratios."""
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"
