"""Driver work per group as workers and group size grow: W1's shape, 2 to 128 workers (issue 13).

    python benchmarks/bench_scale.py             # a few minutes
    python benchmarks/bench_scale.py --quick     # fewer configurations

W1's shape at scale: 4 tasks per worker per job (4W partitions of one
float each, so the tasks themselves cost next to nothing), ``G`` jobs per
group, G = 1, 10, 100, 1000. Local worker processes as far as this 2-core
machine allows (2 and 4), the inline transport beyond (8, 32, 128: the
workers live in the driver's process, so only the driver-side figures
below mean anything there, and they are what this measures).

Each configuration runs twice, with execution templates (the default:
jobs that repeat a shape are stamped, not planned) and without (every
task planned and pickled), so the two columns come from the same run.
The driver's work for a group is what ``ctx.metrics`` times on the
driver: planning, serializing the program, sending the launches
(``plan_s + serialize_s + launch_s``); it excludes waiting for the
workers. Printed per configuration (medians over the timed groups):
driver us per group, per task and per worker, and the launch bytes per
group; then, for each mode, a least-squares fit ``driver us per group =
a + b * tasks + c * workers`` over every configuration, and the driver's coordination per
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


def measure(transport: str, workers: int, g: int, groups: int, templates: bool) -> dict[str, float]:
    with dz.Context(transport=transport, workers=workers) as ctx:
        ctx._scheduler.templates = templates
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


def _fit(fit_rows: list[tuple[float, int, float]]) -> tuple[float, float, float]:
    # relative least squares: every configuration counts alike, not only the largest groups
    w = np.array([1.0 / max(u, 1e-9) for _, _, u in fit_rows])
    A = np.array([[1.0, t, k] for t, k, _ in fit_rows]) * w[:, None]
    y = np.array([u for _, _, u in fit_rows]) * w
    (a, b, c), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(a), float(b), float(c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    configs = [("local", 2), ("local", 4), ("inline", 8), ("inline", 32), ("inline", 128)]
    sizes = [1, 10, 100] if args.quick else [1, 10, 100, 1000]
    rows = []
    fits: dict[bool, list[tuple[float, int, float]]] = {True: [], False: []}
    per_iteration: dict[bool, float] = {}
    for transport, workers in configs:
        for g in sizes:
            if workers * 4 * g > 200_000 and args.quick:
                continue
            groups = max(3, min(20, 2000 // (g * workers)))
            r = {t: measure(transport, workers, g, groups, t) for t in (False, True)}
            for t in (False, True):
                fits[t].append((r[t]["tasks"], workers, r[t]["us_group"]))
                if workers == 128 and g == 100:
                    per_iteration[t] = r[t]["us_group"] / 100
            rows.append([transport, workers, g, int(r[True]["tasks"]),
                         f"{r[False]['us_group']:.0f}", f"{r[True]['us_group']:.0f}",
                         f"{r[True]['us_group'] / r[False]['us_group']:.3f}",
                         f"{r[False]['us_task']:.2f}", f"{r[True]['us_task']:.3f}",
                         f"{r[False]['bytes'] / 1e3:.1f}", f"{r[True]['bytes'] / 1e3:.2f}"])
    print(table(["transport", "workers", "G", "tasks/group", "driver us/group planned", "stamped", "ratio",
                 "us/task planned", "stamped", "launch KB/group planned", "stamped"], rows))
    for t, name in ((False, "planned"), (True, "stamped")):
        a, b, c = _fit(fits[t])
        print(f"fit, {name}: driver us per group = {a:.0f} + {b:.3f} * tasks + {c:.2f} * workers")
    for t, name in ((False, "planned"), (True, "stamped")):
        if t in per_iteration:
            print(f"128 workers x 4 tasks, G=100, {name}: {per_iteration[t] / 1e3:.3f} ms of driver work per "
                  f"iteration (the paper's whole iteration at 128 machines: {PAPER_ITERATION_MS} ms; the issue's "
                  f"target: 0.1 ms)")


if __name__ == "__main__":
    main()
