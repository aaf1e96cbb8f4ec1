"""Groups pipelined: group k+1 launched while k runs, against the barrier between groups (issue 13).

    python benchmarks/bench_pipeline.py              # 7 rounds
    python benchmarks/bench_pipeline.py --rounds 3

Two workloads of ``bench_core``'s shape on a 2-worker local Context, at G=10 and G=100:

* W1: one stage, 4 partitions of 10k floats summed (cached), one job per
  iteration;
* W2: a shuffle, 4 map partitions of 2,500 ``(key, 1)`` records (cached)
  over 100 keys reduced into 2, a shuffle per job.

Each round measures the numpy floor (the same kernels in this process),
then drizzle pipelined and with the barrier (``Scheduler.pipeline``), in
the same Context, interleaved; printed are ms per job and the medians
(ranges) of the paired ratios: x floor for both, and pipelined / barrier.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tables import table

import drizzle_core as dz

GROUPS = (10, 100)
JOBS = 1000


def _sum(p: np.ndarray) -> float:
    return float(p.sum())


def _add(a: int, b: int) -> int:
    return a + b


def _count(it) -> int:
    return sum(1 for _ in it)


def workloads(ctx: dz.Context, g: int) -> dict[str, tuple[Callable[[], None], Callable[[int], None]]]:
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


def _ms(f: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) * 1000 / n


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rows = []
    with dz.Context(transport="local", workers=2) as ctx:
        for g in GROUPS:
            for name, (floor, job) in workloads(ctx, g).items():
                job(2 * g)  # warm: programs cached on the workers
                fl, on, off = [], [], []
                for _ in range(args.rounds):
                    fl.append(_ms(floor, 200))
                    for pipelined, out in ((True, on), (False, off)):
                        ctx._scheduler.pipeline = pipelined
                        t = time.perf_counter()
                        job(JOBS)
                        out.append((time.perf_counter() - t) * 1000 / JOBS)
                ctx._scheduler.pipeline = True
                rows.append([f"{name}, G={g}", f"{statistics.median(fl):.4f}", f"{statistics.median(on):.4f}",
                             f"{statistics.median(off):.4f}", _med([a / f for a, f in zip(on, fl)]),
                             _med([b / f for b, f in zip(off, fl)]), _med([a / b for a, b in zip(on, off)])])
    print(table(["workload", "floor ms", "pipelined ms", "barrier ms", "pipelined x floor",
                 "barrier x floor", "pipelined / barrier"], rows))


if __name__ == "__main__":
    main()
