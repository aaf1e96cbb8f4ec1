"""Property tests: any pipeline, group size, worker count and partitioning gives
the sequential reference result, on the inline and the local transport."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipelines import pipelines
from support import check_pipelines, context

pytestmark = pytest.mark.timeout(300)


data = st.lists(st.integers(-50, 50), max_size=40)
jobs_strategy = st.lists(st.tuples(pipelines(), st.sampled_from(["sum", "list", "len"])), min_size=1, max_size=6)


def _check(transport, workers, items, partitions, jobs, group_size):
    check_pipelines(context(transport, workers), items, partitions, jobs, group_size)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=data, partitions=st.integers(1, 6), jobs=jobs_strategy, group_size=st.integers(1, 50),
       workers=st.integers(1, 4))
def test_inline_matches_reference(items, partitions, jobs, group_size, workers):
    _check("inline", workers, items, partitions, jobs, group_size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=data, partitions=st.integers(1, 6), jobs=jobs_strategy, group_size=st.integers(1, 50),
       workers=st.integers(1, 4))
def test_local_matches_reference(items, partitions, jobs, group_size, workers):
    _check("local", workers, items, partitions, jobs, group_size)


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.integers(0, 20), min_size=1, max_size=30), iterations=st.integers(1, 30),
       group_size=st.integers(1, 50), workers=st.integers(1, 4), reducers=st.integers(1, 4))
def test_state_carried_across_iterations_equals_a_sequential_fold(items, iterations, group_size, workers, reducers):
    """The running-sum pattern: state_i = state_{i-1} zip reduce_by_key(batch_i)."""
    from drizzle_core.cli._workloads import merge_state

    ctx = context("local", workers)
    batches = [ctx.parallelize([(x + i) % 7 for x in items], 3).map(lambda k: (k, 1)) for i in range(iterations)]
    state = ctx.parallelize([{} for _ in range(reducers)], reducers).cache()
    jobs = []
    for batch in batches:
        state = state.zip_partitions(batch.reduce_by_key(lambda a, b: a + b, reducers), merge_state).cache()
        jobs.append((state, lambda part: dict(part[0])))
    got = ctx.run_jobs(jobs, group_size=group_size)
    totals: dict[int, int] = {}
    for i, job in enumerate(got):
        for x in items:
            totals[(x + i) % 7] = totals.get((x + i) % 7, 0) + 1
        merged = {k: v for part in job for k, v in part.items()}
        assert merged == totals
