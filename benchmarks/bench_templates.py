"""Execution templates: jobs stamped from a template against jobs planned one by one (issue 13).

    python benchmarks/bench_templates.py              # 7 rounds
    python benchmarks/bench_templates.py --rounds 3

Three workloads on a 2-worker local Context, at G=10 and G=100:

* W1: one stage, 4 cached partitions of 10k floats summed, one job per iteration
  (every job the same dataset: a stamped job is a job number and a task index);
* W2: a shuffle per job, 4 cached map partitions of 2,500 ``(key, 1)`` records
  over 100 keys reduced into 2 (new datasets every job: stamped with new ids);
* iterate: ``ctx.iterate`` over 4 cached partitions of 2.5k x 4 floats, a
  4-vector state (the shape of a small gradient step).

Each round measures the numpy floor (the same kernels in this process), then
drizzle with templates and without (``GroupScheduler.templates``), in the
same Context, interleaved. Printed: ms per job; the medians (ranges) of the
paired ratios (x floor for both, stamped / planned); and, per job, the
driver's own work (plan + serialize + launch, from ``ctx.metrics``) and the
bytes the driver sent, with and without templates.
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
from _w12 import med as _med
from _w12 import ms_per_call as _ms
from _w12 import w1_w2

import drizzle_core as dz

GROUPS = (10, 100)
JOBS = 1000


def _grad(part: np.ndarray, w: np.ndarray) -> np.ndarray:
    return part.T @ (part @ w) * 1e-9


def _step(w: np.ndarray, g: np.ndarray) -> np.ndarray:
    return w - g


def workloads(ctx: dz.Context, g: int) -> dict[str, tuple[Callable[[], None], Callable[[int], None]]]:
    rows = [np.random.default_rng(i).random((2_500, 4)) for i in range(4)]
    data = ctx.from_partitions(rows).cache()
    data.count()
    w0 = np.ones(4)

    def floor_iterate() -> None:
        total = _grad(rows[0], w0)
        for r in rows[1:]:
            total = total + _grad(r, w0)
        _step(w0, total)

    return {**w1_w2(ctx, g), "iterate 4 x 2.5k x 4": (floor_iterate, lambda n: ctx.iterate(
        data, w0, local=_grad, combine=np.add, update=_step, iterations=n, group_size=g) and None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=JOBS)
    args = parser.parse_args()
    rows, driver_rows = [], []
    with dz.Context(transport="local", workers=2) as ctx:
        s = ctx._scheduler
        for g in GROUPS:
            for name, (floor, job) in workloads(ctx, g).items():
                job(2 * g)  # warm: programs (and templates) on the workers
                fl, on, off = [], [], []
                cost: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                for _ in range(args.rounds):
                    fl.append(_ms(floor, 200))
                    for templates, out in ((True, on), (False, off)):
                        s.templates = templates
                        n0 = len(s.metrics)
                        t = time.perf_counter()
                        job(args.jobs)
                        out.append((time.perf_counter() - t) * 1000 / args.jobs)
                        ms = s.metrics[n0:]
                        jobs = sum(m.jobs for m in ms)
                        cost[templates].append((sum(m.plan_s + m.serialize_s + m.launch_s for m in ms) * 1e6 / jobs,
                                                sum(m.bytes_sent for m in ms) / jobs))
                s.templates = True
                rows.append([f"{name}, G={g}", f"{statistics.median(fl):.4f}", f"{statistics.median(on):.4f}",
                             f"{statistics.median(off):.4f}", _med([a / f for a, f in zip(on, fl)]),
                             _med([b / f for b, f in zip(off, fl)]), _med([a / b for a, b in zip(on, off)])])
                driver_rows.append([f"{name}, G={g}",
                                    f"{statistics.median(c for c, _ in cost[True]):.1f}",
                                    f"{statistics.median(c for c, _ in cost[False]):.1f}",
                                    f"{statistics.median(b for _, b in cost[True]):.0f}",
                                    f"{statistics.median(b for _, b in cost[False]):.0f}"])
    print(table(["workload", "floor ms", "stamped ms", "planned ms", "stamped x floor", "planned x floor",
                 "stamped / planned"], rows))
    print()
    print(table(["workload", "driver us/job stamped", "planned", "bytes sent/job stamped", "planned"],
                driver_rows))


if __name__ == "__main__":
    main()
