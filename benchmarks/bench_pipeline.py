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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tables import table
from _w12 import med as _med
from _w12 import ms_per_call as _ms
from _w12 import w1_w2 as workloads

import drizzle_core as dz

GROUPS = (10, 100)
JOBS = 1000


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
