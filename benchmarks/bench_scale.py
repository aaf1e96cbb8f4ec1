"""Driver work per group as workers and group size grow: W1's shape, 2 to 128 workers (issue 13).

    python benchmarks/bench_scale.py             # a few minutes
    python benchmarks/bench_scale.py --quick     # fewer configurations

W1's shape at scale: 4 tasks per worker per job (4W partitions of one
float each, so the tasks themselves cost next to nothing), ``G`` jobs per
group, G = 1, 10, 100, 1000. Local worker processes as far as this 2-core
machine allows (2 and 4), the inline transport beyond (8, 32, 128: the
workers live in the driver's process, so only the driver-side figures
below mean anything there, and they are what this measures).

The driver's work for a group is what ``ctx.metrics`` times on the
driver: planning, serializing the program, sending the launches
(``plan_s + serialize_s + launch_s``); it excludes waiting for the
workers. Printed per configuration (medians over the timed groups):
driver us per group, per task and per worker, and the launch bytes per
group; then a least-squares fit ``driver us per group = a + b * tasks + c
* workers`` over every configuration, and the driver's coordination per
iteration (per job) at 128 workers x 4 tasks, G=100, next to the Drizzle
paper's whole iteration at 128 machines (4.2 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tables import table

import drizzle_core as dz

PAPER_ITERATION_MS = 4.2


def _first(part):
    return part[0]


def measure(transport: str, workers: int, g: int, groups: int) -> dict[str, float]:
    with dz.Context(transport=transport, workers=workers) as ctx:
        ds = ctx.parallelize(np.arange(4.0 * workers), 4 * workers).cache()
        ds.count()
        ctx.run_jobs([(ds, _first)] * g, group_size=g)  # warm: the program is on the workers
        n0 = len(ctx.metrics)
        ctx.run_jobs([(ds, _first)] * (g * groups), group_size=g)
        ms = [m for m in ctx.metrics[n0:] if m.jobs == g]
        driver = [(m.plan_s + m.serialize_s + m.launch_s) * 1e6 for m in ms]
        per_group = statistics.median(driver)
        tasks = statistics.median(m.tasks for m in ms)
        return {"us_group": per_group, "tasks": tasks, "us_task": per_group / tasks,
                "us_worker": per_group / workers, "bytes": statistics.median(m.bytes_sent for m in ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    configs = [("local", 2), ("local", 4), ("inline", 8), ("inline", 32), ("inline", 128)]
    sizes = [1, 10, 100] if args.quick else [1, 10, 100, 1000]
    rows, fit_rows = [], []
    for transport, workers in configs:
        for g in sizes:
            if workers * 4 * g > 200_000 and args.quick:
                continue
            groups = max(3, min(20, 2000 // (g * workers)))
            r = measure(transport, workers, g, groups)
            fit_rows.append((r["tasks"], workers, r["us_group"]))
            rows.append([transport, workers, g, int(r["tasks"]), f"{r['us_group']:.0f}", f"{r['us_task']:.2f}",
                         f"{r['us_worker']:.1f}", f"{r['bytes'] / 1e3:.1f}"])
    print(table(["transport", "workers", "G", "tasks/group", "driver us/group", "us/task", "us/worker",
                 "launch KB/group"], rows))
    # relative least squares: every configuration counts alike, not only the largest groups
    w = np.array([1.0 / u for _, _, u in fit_rows])
    A = np.array([[1.0, t, k] for t, k, _ in fit_rows]) * w[:, None]
    y = np.array([u for _, _, u in fit_rows]) * w
    (a, b, c), *_ = np.linalg.lstsq(A, y, rcond=None)
    print(f"\nfit (relative least squares): driver us per group = {a:.0f} + {b:.2f} * tasks + {c:.1f} * workers")
    measured = [r for r in rows if r[1] == 128 and r[2] == 100]
    if measured:
        us = float(measured[0][4])
        print(f"128 workers x 4 tasks, G=100, measured: {us / 1e3:.1f} ms of driver work per group, "
              f"{us / 100 / 1e3:.2f} ms per iteration (the paper's whole iteration at 128 machines: "
              f"{PAPER_ITERATION_MS} ms; the issue's target for this figure: 0.1 ms)")


if __name__ == "__main__":
    main()
