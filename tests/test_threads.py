"""One Context, several threads: jobs submitted from many threads at once all come back exact."""

from __future__ import annotations

import threading
import time

import pytest
import reference
from bookkeeping import assert_no_bookkeeping
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipelines import build, pipelines

import drizzle_core as dz

pytestmark = pytest.mark.timeout(240)

_FUNCS = {"sum": sum, "list": list}


@pytest.fixture(scope="module", params=["inline", "local", "tcp"])
def ctx(request):
    with dz.Context(transport=request.param, workers=2) as ctx:
        yield ctx


def _in_threads(targets, timeout=60.0):
    """Run each callable in its own thread; re-raise the first error; fail on a hang."""
    errors: list[BaseException] = []

    def wrap(f):
        def run():
            try:
                f()
            except BaseException as e:  # reported to the test below
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(f), daemon=True) for f in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


def test_two_threads_run_jobs_on_one_context(ctx):
    ds = ctx.parallelize(range(100), 4)
    out: dict[str, list] = {}

    def worker(name, k):
        out[name] = ctx.run_jobs([(ds.map(lambda x, k=k, i=i: x * k + i), sum) for i in range(30)], group_size=7)

    _in_threads([lambda: worker("a", 2), lambda: worker("b", 3)])
    parts = [list(range(0, 25)), list(range(25, 50)), list(range(50, 75)), list(range(75, 100))]
    for name, k in (("a", 2), ("b", 3)):
        assert out[name] == [[sum(x * k + i for x in p) for p in parts] for i in range(30)]
    assert_no_bookkeeping(ctx)


def test_threads_mix_actions_iterations_and_streams(ctx):
    import operator

    import numpy as np

    data = ctx.parallelize(np.ones((8, 1)), 2).cache()
    box: dict[str, object] = {}

    def iterating():
        box["iterate"] = ctx.iterate(data, 0.0, local=lambda p, s: float(p.sum()), combine=operator.add,
                                     update=lambda s, t: s + t, iterations=20, group_size=4).state

    def streaming():
        s = ctx.stream(dz.GeneratorSource(lambda p, b, t: [b], 1), batch_interval=0.005, group_size=2)
        sink = s.collect_sink()
        s.run(batches=15)
        box["stream"] = [r for batch in sink.batches for r in batch]

    def acting():
        box["counts"] = [ctx.parallelize(range(i), 3).count() for i in range(20)]

    _in_threads([iterating, streaming, acting])
    assert box == {"iterate": 160.0, "stream": list(range(15)), "counts": list(range(20))}
    data.unpersist()
    assert_no_bookkeeping(ctx)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.integers(-20, 20), max_size=20), partitions=st.integers(1, 4),
       programs=st.lists(st.lists(st.tuples(pipelines(), st.sampled_from(["sum", "list"])), min_size=1, max_size=4),
                         min_size=2, max_size=3),
       group_sizes=st.lists(st.integers(1, 4), min_size=3, max_size=3),
       delays=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.005]), min_size=3, max_size=3))
def test_random_programs_from_threads_match_the_reference(ctx, items, partitions, programs, group_sizes, delays):
    """Hypothesis picks the programs, group sizes and start delays (so the interleavings) of 2-3 threads."""
    source = ctx.parallelize(items, partitions)
    work = []
    for steps_list in programs:
        built = [(build(ctx, source, steps), _FUNCS[fn]) for steps, fn in steps_list]
        expected = [[_FUNCS[fn](part) for part in reference.partitions(ds)]
                    for (ds, _), (_, fn) in zip(built, steps_list)]
        work.append((built, expected))
    got: dict[int, list] = {}

    def runner(i):
        def run():
            time.sleep(delays[i])
            got[i] = [r for r in ctx.iter_jobs(work[i][0], group_size=group_sizes[i])]
        return run

    _in_threads([runner(i) for i in range(len(work))])
    assert [got[i] for i in range(len(work))] == [expected for _, expected in work]
