"""The two Drizzle workloads, shared by ``drizzle demo``, ``drizzle bench`` and the examples.

* single stage: every iteration sums each partition of a cached array;
* running sum: every iteration counts the keys of a cached dataset with a
  shuffle (``reduce_by_key`` into R partitions) and folds the counts into a
  per-key state that is itself a cached dataset: state partition r of
  iteration i is computed from partition r of iteration i-1 on the same
  worker, never on the driver.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..api import Context, Dataset


def single_stage_data(ctx: Context, partitions: int = 4, rows: int = 10_000) -> Dataset:
    """``partitions`` cached float64 partitions of ``rows`` values each."""
    data = np.random.default_rng(0).random(partitions * rows)
    ds = ctx.parallelize(data, partitions).cache()
    ds.count()  # materialize once, outside the timed loop
    return ds


def single_stage_jobs(ds: Dataset, iterations: int) -> list[tuple[Dataset, Any]]:
    return [(ds, np.sum)] * iterations


class _Keyer:
    """``x -> (x % keys, 1)``: a class, so the program pickles it by reference (plus ``keys``), not by value."""

    __slots__ = ("keys",)

    def __init__(self, keys: int) -> None:
        self.keys = keys

    def __call__(self, x: int) -> tuple[int, int]:
        return (x % self.keys, 1)


def merge_state(old: list[dict[Any, Any]], counts: list[tuple[Any, int]]) -> list[dict[Any, Any]]:
    """New state partition: the old per-key totals plus this iteration's counts."""
    state = dict(old[0]) if old else {}
    for k, c in counts:
        state[k] = state.get(k, 0) + c
    return [state]


def state_total(part: list[dict[Any, Any]]) -> int:
    """What each iteration reports: the sum of all counts in one state partition."""
    return sum(part[0].values()) if part else 0


def running_sum_source(ctx: Context, partitions: int = 4, reducers: int = 2, keys: int = 100,
                       records: int = 1_000) -> tuple[Dataset, Dataset]:
    """The cached input records and the initial (empty) state."""
    source = ctx.parallelize(range(partitions * records), partitions).map(_Keyer(keys)).cache()
    state = ctx.parallelize([{} for _ in range(reducers)], reducers).cache()
    return source, state


def running_sum_jobs(source: Dataset, state: Dataset, iterations: int, reducers: int) -> Iterator[tuple[Dataset, Any]]:
    """One job per iteration; superseded states are unpersisted as the jobs are pulled."""
    for _ in range(iterations):
        counts = source.reduce_by_key(operator.add, reducers)
        new = state.zip_partitions(counts, merge_state).cache()
        yield new, state_total
        # The job just yielded has been planned (the scheduler plans each job
        # before pulling the next), so the state it reads can go.
        state.unpersist()
        state = new
