"""Drizzle's running-sum example: a shuffle per iteration, and per-key state kept on the workers.

    python examples/running_sum.py [ITERATIONS] [GROUP_SIZE] [PARTITIONS] [REDUCERS]

Every iteration counts the keys of the input with ``reduce_by_key`` into
REDUCERS partitions, then folds the counts into the running state. The state
is a cached dataset too: state partition r of iteration i is computed from
state partition r of iteration i-1, on the worker that holds it, so neither
the counts nor the state pass through the driver.
"""

from __future__ import annotations

import operator
import time

import drizzle_core as dz
from drizzle_core.cli import ArgumentParser, positive_int


def add_counts(old_state, counts):
    state = dict(old_state[0]) if old_state else {}
    for key, n in counts:
        state[key] = state.get(key, 0) + n
    return [state]


def main(iterations: int = 100, group_size: int = 10, partitions: int = 4, reducers: int = 2) -> float:
    with dz.Context(workers=2) as ctx:
        records = ctx.parallelize(range(partitions * 1_000), partitions).map(lambda x: (x % 100, 1)).cache()
        records.count()
        state = ctx.parallelize([{} for _ in range(reducers)], reducers).cache()

        def jobs():
            nonlocal state
            for _ in range(iterations):
                counts = records.reduce_by_key(operator.add, reducers)
                new_state = state.zip_partitions(counts, add_counts).cache()
                yield new_state, lambda part: sum(part[0].values())
                # The scheduler has planned the job above before asking for the next
                # one, so the state it reads can be released after its group.
                state.unpersist()
                state = new_state

        start = time.perf_counter()
        totals = ctx.run_jobs(jobs(), group_size=group_size)
        ms = (time.perf_counter() - start) / iterations * 1e3
        assert sum(totals[-1]) == iterations * partitions * 1_000
        print(f"running sum: {iterations} iterations, group size {group_size}, {partitions} partitions, "
              f"{reducers} reducers: {ms:.3f} ms per iteration")
        return ms


if __name__ == "__main__":
    ap = ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2].strip())
    ap.add_argument("iterations", nargs="?", type=positive_int, default=100, help="iterations (default 100)")
    ap.add_argument("group_size", nargs="?", type=positive_int, default=10, help="iterations per group, G (default 10)")
    ap.add_argument("partitions", nargs="?", type=positive_int, default=4, help="input partitions (default 4)")
    ap.add_argument("reducers", nargs="?", type=positive_int, default=2, help="reduce partitions (default 2)")
    args = ap.parse_args()
    main(args.iterations, args.group_size, args.partitions, args.reducers)
