"""Drizzle's single-stage example: every iteration sums each partition of a cached array.

    python examples/single_stage.py [ITERATIONS] [GROUP_SIZE] [PARTITIONS]

With group size 1 the driver plans, launches and waits for every iteration
(what Spark does); with a larger group it plans G iterations at once and
each worker gets one message for all of them.
"""

from __future__ import annotations

import time

import numpy as np

import drizzle_core as dz
from drizzle_core.cli import ArgumentParser, positive_int


def main(iterations: int = 200, group_size: int = 10, partitions: int = 4) -> float:
    with dz.Context(workers=2) as ctx:
        data = ctx.parallelize(np.random.default_rng(0).random(partitions * 10_000), partitions).cache()
        data.count()  # ship and cache the data once, before timing
        start = time.perf_counter()
        results = ctx.run_jobs([(data, np.sum)] * iterations, group_size=group_size)
        ms = (time.perf_counter() - start) / iterations * 1e3
        assert len(results) == iterations and all(len(r) == partitions for r in results)
        print(f"single stage: {iterations} iterations, group size {group_size}, {partitions} partitions: "
              f"{ms:.3f} ms per iteration")
        return ms


if __name__ == "__main__":
    ap = ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2].strip())
    ap.add_argument("iterations", nargs="?", type=positive_int, default=200, help="jobs to run (default 200)")
    ap.add_argument("group_size", nargs="?", type=positive_int, default=10, help="jobs per group, G (default 10)")
    ap.add_argument("partitions", nargs="?", type=positive_int, default=4, help="partitions of the array (default 4)")
    args = ap.parse_args()
    main(args.iterations, args.group_size, args.partitions)
