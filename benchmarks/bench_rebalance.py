"""After a recovery: does the replacement take its share of the cached data again? (issue 12)

    python benchmarks/bench_rebalance.py            # 5 rounds
    python benchmarks/bench_rebalance.py --rounds 3

Each round opens a 2-worker local Context, caches 8 partitions of a float
array and times a job over them (a CPU-bound kernel per partition, 8 jobs
per group): ``before``. Then it SIGKILLs worker 1, lets the survivor
recompute the lost half, waits for the replacement to join, reads the data
once (the read that moves the blocks) and times the same job: ``after``.
The same round is run with rebalancing switched off (the scheduler's
``_rebalance`` made a no-op, which is how it behaved before issue 12), in
the same process, interleaved. Printed: ms per job before and after, and
the after/before ratio per round (median, range): about 1.0 with
rebalancing, about 2.0 without (the survivor does everything).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tables import fmt, table

import drizzle_core as dz


def _kernel(a):
    acc = 0.0  # a: the partition, an ndarray row slice
    for _ in range(3):
        acc += float(np.sqrt(a * a + 1.0).sum())
    return [acc]


def _pid(it):
    return [os.getpid()]


def _ms_per_job(ctx: dz.Context, data: dz.Dataset, jobs: int = 24) -> float:
    t = time.perf_counter()
    ctx.run_jobs([(data.map_partitions(_kernel), list) for _ in range(jobs)], group_size=8)
    return (time.perf_counter() - t) * 1000 / jobs


def one_round(rebalance: bool) -> tuple[float, float]:
    with dz.Context(transport="local", workers=2) as ctx:
        if not rebalance:
            ctx._scheduler._rebalance = lambda worker: None  # type: ignore[method-assign]
        data = ctx.parallelize(np.random.default_rng(0).random(8 * 200_000), 8).cache()
        data.count()
        _ms_per_job(ctx, data, 4)  # warm
        before = _ms_per_job(ctx, data)
        pids = [p[0] for p in ctx.parallelize(range(2), 2).map_partitions(_pid).glom()]
        os.kill(pids[1], signal.SIGKILL)
        time.sleep(0.1)
        data.count()  # recovery: the survivor recomputes worker 1's half
        deadline = time.monotonic() + 30
        while len(ctx.live_workers) < 2 and time.monotonic() < deadline:
            ctx.parallelize([0], 1).count()
            time.sleep(0.02)
        data.count()  # the read that moves the blocks (with rebalancing)
        after = _ms_per_job(ctx, data)
        return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    got: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for rebalance in (True, False):  # interleaved: the machine's noise hits both alike
            got[rebalance].append(one_round(rebalance))
    rows = []
    for rebalance in (True, False):
        pairs = got[rebalance]
        ratios = [a / b for b, a in pairs]
        rows.append(["on" if rebalance else "off (before issue 12)",
                     fmt(statistics.median(b for b, _ in pairs), ".2f"),
                     fmt(statistics.median(a for _, a in pairs), ".2f"),
                     f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"])
    print(table(["rebalancing", "before ms/job", "after ms/job", "after/before (range)"], rows))


if __name__ == "__main__":
    main()
