"""Soak test of a long ``iterate``: does memory stay flat over 5,000 iterations of a 1 MB state?

    python benchmarks/soak_iterate.py                       # 5,000 iterations
    python benchmarks/soak_iterate.py --iterations 1000     # quick look

The target (issue 9): "5,000 iterations of a 1 MB-state ``iterate``: driver and
worker RSS grow less than 50 MB after warm-up." The state is a float64 array
of ``--state-mb`` MB; every iteration each partition adds its row count to
it, so iteration i's state is ``i * rows`` everywhere (checked at the end).
The state goes worker to worker every iteration and reaches the driver too
(``iterate`` checkpoints each one it receives), so a leak of states on
either side shows at once.

Every ``--report-every`` iterations (from ``on_iteration``, while the loop
runs) it prints the driver's and each worker's RSS and the live Datasets on
the driver; the last line is PASS or FAIL on each process's growth from the
first report after ``--warmup`` iterations to the end.
"""

from __future__ import annotations

import argparse
import operator
import sys
import time

import numpy as np
from _tables import table
from soak_stream import live_datasets, rss_mb, worker_pids

import drizzle_core as dz


class Local:
    """The partition's contribution: its row count, as a state-sized array."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, part: np.ndarray, state: np.ndarray) -> np.ndarray:
        return np.full(self.size, float(len(part)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--state-mb", type=float, default=1.0)
    ap.add_argument("--report-every", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--budget-mb", type=float, default=50.0)
    ap.add_argument("--group-size", default="auto")
    ap.add_argument("--transport", default="local")
    args = ap.parse_args(argv)
    g = args.group_size if args.group_size == "auto" else int(args.group_size)
    size = int(args.state_mb * (1 << 20) / 8)
    rows: list[list[object]] = []
    with dz.Context(transport=args.transport, workers=2) as ctx:
        data = ctx.parallelize(np.ones((1000, 2)), 4).cache()
        pids = worker_pids()
        t0 = time.perf_counter()

        def report(i: int, state: np.ndarray) -> None:
            if i % args.report_every == 0:
                rows.append([i, f"{time.perf_counter() - t0:.1f}", f"{rss_mb():.0f}",
                             *[f"{rss_mb(p):.0f}" for p in pids], live_datasets()])

        res = ctx.iterate(data, np.zeros(size), local=Local(size), combine=operator.add,
                          update=operator.add, iterations=args.iterations, group_size=g, on_iteration=report)
        assert res.iterations == args.iterations and float(res.state[0]) == 1000.0 * args.iterations
        assert not res.history
        data.unpersist()
        left = ctx.bookkeeping()
    headers = ["iteration", "s", "driver MB", *[f"worker {i} MB" for i in range(len(pids))], "live Datasets"]
    print(f"iterate soak: {args.iterations} iterations, state {args.state_mb} MB, G={args.group_size}, "
          f"{args.transport}, 2 workers")
    print(table(headers, rows))
    print("bookkeeping after:", left["driver"])
    base = next((r for r in rows if int(r[0]) >= args.warmup), rows[0])
    growth = [float(b) - float(a) for a, b in zip(base[2:-1], rows[-1][2:-1])]
    ok = all(x < args.budget_mb for x in growth)
    print(f"{'PASS' if ok else 'FAIL'}: RSS growth after iteration {base[0]} (MB, driver then workers): "
          f"{', '.join(f'{x:+.1f}' for x in growth)} (budget {args.budget_mb:.0f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
