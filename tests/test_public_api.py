"""The public API a library builds on (issue 10): what streaming needed from drizzle_core, made public.

* ``Context.from_partitions(partitions, not_before=, label=)`` — a dataset
  of explicit partitions; ``not_before`` makes it a timed source whose tasks
  are launched ahead and wait on their worker.
* ``Dataset.zip_broadcast(small, f)`` — every partition with the one
  partition of a small dataset, forwarded to the workers, not shuffled.
* ``Dataset.truncate_lineage(partitions)`` — a checkpoint: the lineage is
  replaced by a value the driver holds, so an endless loop's stays bounded.
* ``group_size=`` a :class:`~drizzle_core.GroupSizeController` (``next_size``,
  ``observe``); ``ctx.auto_group_size`` and ``AutoGroupSize`` are ``"auto"``.

Each: what a user sees, and bad input failing at the call, naming the culprit.
Most run on the inline transport (in-process); those about timing and
streams on local worker processes.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import numpy as np
import pytest
from bookkeeping import assert_no_bookkeeping

import drizzle_core as dz


@pytest.fixture(scope="module")
def inline():
    with dz.Context(transport="inline", workers=3) as ctx:
        yield ctx


@pytest.fixture
def ctx(no_orphans):
    with dz.Context(transport="local", workers=2) as ctx:
        yield ctx


def _add(a, b):
    return a + b


def _metrics(jobs: int = 4, recoveries: int = 0, coordination: float = 0.5) -> dz.GroupMetrics:
    return dz.GroupMetrics(group=0, jobs=jobs, tasks=jobs, workers=1, wall_s=0.1, plan_s=0.0, serialize_s=0.0,
                           launch_s=0.0, busy_s=0.05, coordination=coordination, messages_sent=1, bytes_sent=1,
                           recoveries=recoveries, planned_size=jobs)


# ------------------------------------------------------------ from_partitions


def test_from_partitions_keeps_the_partitions_as_given(inline):
    block = np.arange(6).reshape(3, 2)
    ds = inline.from_partitions([[1, 2], (3,), block, []])
    assert ds.num_partitions == 4
    parts = ds.glom()
    assert parts[0] == [1, 2] and list(parts[1]) == [3] and parts[3] == []
    assert isinstance(parts[2], np.ndarray) and np.array_equal(parts[2], block)  # not split, not listed
    assert ds.map(lambda x: x * 10).take(3) == [10, 20, 30]
    assert "my source" in repr(inline.from_partitions([[1]], label="my source"))


def test_a_timed_source_starts_on_its_worker_no_earlier_than_not_before(ctx):
    """A group of three timed jobs is launched at once; each job's task waits for its own time."""
    t0 = time.time() + 0.3
    starts = [t0 + 0.1 * i for i in range(3)]
    jobs = [(ctx.from_partitions([[i], [i]], not_before=t), _started) for i, t in enumerate(starts)]
    groups = len(ctx.metrics)
    out = ctx.run_jobs(jobs, group_size=3)
    assert len(ctx.metrics) == groups + 1  # one group: planned and launched before any was due
    for t, parts in zip(starts, out):
        assert all(started >= t for started in parts), (t, parts)
    assert max(max(p) for p in out) < starts[-1] + 1.0


def _started(it):
    return time.time()


@pytest.mark.parametrize("bad, error, words", [
    ([], ValueError, "at least one partition"),
    ("abc", TypeError, "list of partitions, got str"),
    ((p for p in [[1]]), TypeError, "list of partitions, got generator"),
    ([[1], 2], TypeError, "partition 1 must be an iterable of records"),
    ([[1], "ab"], TypeError, "partition 1 .* got str"),
    ([{"k": 1}], TypeError, "partition 0 .* got dict"),
])
def test_from_partitions_refuses_what_is_not_a_list_of_partitions(inline, bad, error, words):
    with pytest.raises(error, match=f"from_partitions.*{words}"):
        inline.from_partitions(bad)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), "soon", True])
def test_from_partitions_refuses_a_bad_not_before(inline, bad):
    with pytest.raises(ValueError, match="not_before must be a finite time"):
        inline.from_partitions([[1]], not_before=bad)


def test_from_partitions_refuses_a_bad_label_and_a_stopped_context(inline):
    with pytest.raises(TypeError, match="label must be a str, got int"):
        inline.from_partitions([[1]], label=3)
    with dz.Context(transport="inline", workers=1) as stopped:
        pass
    with pytest.raises(RuntimeError, match="stopped"):
        stopped.from_partitions([[1]])


# -------------------------------------------------------------- zip_broadcast


def _lookup(part, table_part):
    table = table_part[0]
    return [(k, table[k]) for k in part if k in table]


def test_zip_broadcast_gives_every_partition_the_small_one(inline):
    data = inline.parallelize(["a", "b", "c", "x", "a", "b"], 4)
    table = inline.parallelize([{"a": 1, "b": 2, "c": 3}], 1).cache()
    joined = data.zip_broadcast(table, _lookup)
    assert joined.num_partitions == 4
    assert joined.collect() == [("a", 1), ("b", 2), ("c", 3), ("a", 1), ("b", 2)]
    assert joined.parents == (data, table)
    assert "zip_broadcast(_lookup)" in repr(joined)


def test_zip_broadcast_reads_a_cached_small_dataset_where_it_is(ctx):
    """The small dataset is computed once (cached) and forwarded: every partition of every job sees it."""
    data = ctx.parallelize(range(8), 4).cache()
    model = ctx.parallelize([np.full(3, 2.0)], 1).cache()
    scaled = data.zip_broadcast(model, lambda part, m: [x * m[0].sum() for x in part])
    assert ctx.run_jobs([(scaled, sum)] * 5, group_size=5) == [[6.0, 30.0, 54.0, 78.0]] * 5
    del scaled, data, model
    assert_no_bookkeeping(ctx)


def test_zip_broadcast_refuses_bad_input_naming_it(inline):
    data = inline.parallelize(range(4), 2)
    two = inline.parallelize([1, 2], 2)
    with pytest.raises(ValueError, match=r"one-partition dataset to broadcast: <Dataset #\d+ .* has 2"):
        data.zip_broadcast(two, _lookup)
    with pytest.raises(TypeError, match=r"Dataset\.zip_broadcast needs a callable, got int"):
        data.zip_broadcast(inline.parallelize([1], 1), 42)
    with pytest.raises(TypeError, match=r"Dataset\.zip_broadcast needs a Dataset, got list"):
        data.zip_broadcast([{}], _lookup)
    with dz.Context(transport="inline", workers=1) as other, pytest.raises(ValueError, match="another Context"):
        data.zip_broadcast(other.parallelize([1], 1), _lookup)


# ----------------------------------------------------------- truncate_lineage


def _merge(old, new):
    return [old[0] + sum(new)]


def _depth(ds: dz.Dataset) -> int:
    """The longest chain of parents (explicit stack)."""
    best, stack = 0, [(ds, 0)]
    while stack:
        d, n = stack.pop()
        best = max(best, n)
        stack.extend((p, n + 1) for p in d.parents)
    return best


def test_truncate_lineage_bounds_an_endless_loops_lineage(inline):
    """State carried 100 rounds, checkpointed every 10: the lineage never gets deeper than 10 rounds."""
    step = inline.parallelize(range(4), 2).cache()
    state = inline.parallelize([0, 0], 2).cache()
    deepest = 0
    for i in range(1, 101):
        new = state.zip_partitions(step, _merge).cache()
        state.unpersist()
        state = new
        if i % 10 == 0:
            value = state.glom()
            assert state.truncate_lineage(value) is state
            assert state.parents == () and _depth(state) == 0
        deepest = max(deepest, _depth(state))
    assert deepest <= 10
    assert state.collect() == [100 * (0 + 1), 100 * (2 + 3)]


def test_truncate_lineage_keeps_the_id_and_the_cached_blocks(inline):
    ds = inline.parallelize(range(6), 3).map(lambda x: x + 1).cache()
    assert ds.collect() == [1, 2, 3, 4, 5, 6]
    ident = ds.id
    ds.truncate_lineage([[10], [20], [30]])  # a value the cached blocks do not hold: which is read?
    assert ds.id == ident and ds.is_cached
    assert ds.collect() == [1, 2, 3, 4, 5, 6]  # the cached partitions, where they are
    ds.unpersist()
    assert ds.collect() == [10, 20, 30]  # recomputed: from the value, not the old lineage
    assert "checkpoint of map(" in repr(ds)


def test_truncate_lineage_refuses_a_value_of_another_shape(inline):
    ds = inline.parallelize(range(6), 3)
    with pytest.raises(ValueError, match=r"truncate_lineage: <Dataset #\d+ .*> has 3 partitions, got 2 values"):
        ds.truncate_lineage([[1], [2]])
    with pytest.raises(TypeError, match="truncate_lineage: partition 2 must be an iterable of records"):
        ds.truncate_lineage([[1], [2], 3])
    with pytest.raises(TypeError, match="truncate_lineage needs a list of partitions, got int"):
        ds.truncate_lineage(3)
    assert ds.collect() == [0, 1, 2, 3, 4, 5]  # untouched by the refused calls


# ------------------------------------------------------- GroupSizeController


@dataclasses.dataclass
class Scripted:
    """Sizes from a script (the last one repeats); keeps what it was told."""

    sizes: list[int]
    seen: list[dz.GroupMetrics] = dataclasses.field(default_factory=list)

    def next_size(self) -> int:
        return self.sizes.pop(0) if len(self.sizes) > 1 else self.sizes[0]

    def observe(self, metrics: dz.GroupMetrics) -> None:
        self.seen.append(metrics)


def test_a_controller_sets_each_groups_size_and_is_told_each_group(inline):
    ds = inline.parallelize(range(4), 2).cache()
    ctl = Scripted([2, 3, 1])
    assert isinstance(ctl, dz.GroupSizeController)
    results = inline.iter_jobs([(ds, sum)] * 7, group_size=ctl)
    groups = []
    for r in results:
        assert r == [1, 5]
        groups.append(results.group)
    assert list(Counter(groups).values()) == [2, 3, 1, 1]
    assert [m.jobs for m in ctl.seen] == [2, 3, 1, 1]
    assert [m.group for m in ctl.seen] == list(Counter(groups))
    assert inline.run_jobs([(ds, sum)] * 3, group_size=Scripted([3])) == [[1, 5]] * 3
    assert_no_bookkeeping(inline)


def test_iterate_takes_a_controller_too(inline):
    ds = inline.parallelize(np.ones((6, 1)), 3)
    ctl = Scripted([2, 4])
    r = inline.iterate(ds, 0.0, local=lambda part, s: float(part.sum()), combine=_add,
                       update=lambda s, total: s + total, iterations=6, group_size=ctl)
    assert r.state == 36.0 and r.iterations == 6
    assert [m.jobs for m in ctl.seen] == [2, 4]


def test_a_context_may_default_to_a_controller():
    ctl = Scripted([2])
    with dz.Context(transport="inline", workers=2, group_size=ctl) as c:
        ds = c.parallelize(range(4), 2)
        assert c.run_jobs([(ds, sum)] * 4) == [[1, 5]] * 4
    assert [m.jobs for m in ctl.seen] == [2, 2]


def test_auto_is_the_contexts_auto_group_size(inline):
    auto = inline.auto_group_size
    assert isinstance(auto, dz.GroupSizeController) and isinstance(auto, dz.AutoGroupSize)
    assert inline.auto_group_size is auto  # one per context, shared by its "auto" loops
    ds = inline.parallelize(range(4), 2).cache()
    before = len(inline.metrics)
    assert inline.run_jobs([(ds, sum)] * 20, group_size=auto) == [[1, 5]] * 20
    sizes = [m.planned_size for m in inline.metrics[before:]]
    assert sizes[0] >= 1 and sum(m.jobs for m in inline.metrics[before:]) == 20
    assert "AIMD at" in repr(auto)


def test_auto_group_size_is_aimd_and_halves_after_a_recovery():
    ctl = dz.AutoGroupSize(dz.AIMD(initial=8))
    assert ctl.next_size() == 8
    ctl.observe(_metrics(jobs=8, coordination=0.5))  # coordination above AIMD's upper bound: grow
    assert ctl.next_size() == 16
    ctl.observe(_metrics(jobs=16, coordination=0.07, recoveries=1))  # hold, then one lost worker: halve
    assert ctl.next_size() == 8
    assert dz.AutoGroupSize().next_size() == dz.AIMD().next_size()
    with pytest.raises(TypeError, match="AutoGroupSize needs an AIMD or None, got int"):
        dz.AutoGroupSize(8)


class NoObserve:
    def next_size(self) -> int:
        return 2


class Returns:
    def __init__(self, *sizes):
        self.sizes = list(sizes)

    def next_size(self):
        return self.sizes.pop(0) if len(self.sizes) > 1 else self.sizes[0]

    def observe(self, metrics):
        pass

    def __repr__(self):
        return "<Returns>"


@pytest.mark.parametrize("bad", [NoObserve(), 2.5, object()])
def test_something_else_is_not_a_group_size(inline, bad):
    ds = inline.parallelize([1], 1)
    with pytest.raises(ValueError, match="group_size must be a positive int or 'auto'"):
        inline.run_jobs([(ds, sum)], group_size=bad)
    with pytest.raises(ValueError, match="group_size must be a positive int or 'auto'"):
        dz.Context(transport="inline", workers=1, group_size=bad)
    if not isinstance(bad, float):
        with pytest.raises(ValueError, match=r"or a GroupSizeController, with next_size\(\) and observe"):
            inline.iter_jobs([(ds, sum)], group_size=bad)


@pytest.mark.parametrize("size", [0, -1, True, 2.0, "3"])
def test_a_bad_first_size_fails_before_anything_runs(inline, size):
    ds = inline.parallelize([1], 1)
    groups = len(inline.metrics)
    with pytest.raises(ValueError, match=r"group_size: <Returns>.next_size\(\) returned .*, not a positive int"):
        inline.run_jobs([(ds, sum)] * 3, group_size=Returns(size))
    assert len(inline.metrics) == groups


def test_a_bad_later_size_or_a_failing_observe_ends_the_loop_cleanly(inline):
    ds = inline.parallelize(range(4), 2).cache()
    got = []
    with pytest.raises(ValueError, match=r"returned 0, not a positive int"):
        for r in inline.iter_jobs([(ds, sum)] * 10, group_size=Returns(2, 2, 0)):
            got.append(r)
    assert 2 <= len(got) < 10

    class Broken(Returns):
        def observe(self, metrics):
            raise RuntimeError("observe broke")

    with pytest.raises(RuntimeError, match="observe broke"):
        inline.run_jobs([(ds, sum)] * 10, group_size=Broken(3))
    assert inline.run_jobs([(ds, sum)] * 2, group_size=2) == [[1, 5]] * 2  # the context is still usable
    assert_no_bookkeeping(inline)


def test_a_stream_takes_a_controller_and_leaves_the_contexts_auto_alone(ctx):
    src = dz.GeneratorSource(lambda p, b, bt: [(b % 2, 1)], 2)
    s = ctx.stream(src, batch_interval=0.01, group_size=Scripted([3]))
    sink = s.count_by_key().collect_sink()
    s.run(batches=6)
    assert list(Counter(m.group for m in s.metrics).values()) == [3, 3]
    assert [sorted(b) for b in sink.batches] == [[(b % 2, 2)] for b in range(6)]
    size = ctx.auto_group_size.next_size()
    s.run(batches=20, group_size="auto")  # idle time grows a stream's AIMD to its caps: its own, not ours
    assert ctx.auto_group_size.next_size() == size
    assert len(sink.batches) == 26


def test_from_partitions_prefer_places_each_partition_on_its_worker():
    """``prefer``: partition p runs on worker prefer[p] while it is live (the opposite of the default p % W),
    and the cached blocks stay there; a preferred worker that is not there is ignored."""
    from support import worker_pids

    with dz.Context(transport="local", workers=2) as ctx:
        pids = worker_pids(ctx)
        ds = ctx.from_partitions([[0], [1], [2], [3]], prefer=[1, 0, None, 7]).map_partitions(_pid_of).cache()
        got = ds.glom()
        assert [p[0] for p in got[:2]] == [pids[1], pids[0]]
        assert {p[0] for p in got[2:]} <= set(pids)
        assert ds.glom() == got  # read where it was cached
        ds.unpersist()
        assert_no_bookkeeping(ctx)


def _pid_of(it):
    import os

    return [os.getpid()]


@pytest.mark.parametrize("bad", [[0], [0, -1], [0, "w1"], [0, True], 3])
def test_from_partitions_refuses_a_bad_prefer(inline, bad):
    with pytest.raises((ValueError, TypeError), match="prefer must give one worker index"):
        inline.from_partitions([[1], [2]], prefer=bad)


def test_from_dask_and_from_ray_say_which_transport_they_need(inline):
    with pytest.raises(TypeError, match=r"from_dask .* needs Context\(transport='dask'\).*'inline'"):
        inline.from_dask(object())
    with pytest.raises(TypeError, match=r"from_ray .* needs Context\(transport='ray'\)"):
        inline.from_ray(object())


# ------------------------------------------------ the PySpark RDD API (issue 15 part 6)
#: method -> its parameters: PySpark's names in snake_case (partitionFunc is not taken: keys go by portable_hash)
PYSPARK = {
    "distinct": ["num_partitions"], "map_values": ["f"], "flat_map_values": ["f"], "keys": [], "values": [],
    "repartition": ["num_partitions"], "coalesce": ["num_partitions", "shuffle"],
    "sort_by": ["keyfunc", "ascending", "num_partitions"], "sort_by_key": ["ascending", "num_partitions", "keyfunc"],
    "count_by_key": [], "count_by_value": [],
    "aggregate_by_key": ["zero_value", "seq_func", "comb_func", "num_partitions"],
    "fold_by_key": ["zero_value", "func", "num_partitions"],
    "combine_by_key": ["create_combiner", "merge_value", "merge_combiners", "num_partitions"],
    "cogroup": ["other", "num_partitions"], "left_outer_join": ["other", "num_partitions"],
    "right_outer_join": ["other", "num_partitions"], "full_outer_join": ["other", "num_partitions"],
    "cartesian": ["other"], "sample": ["with_replacement", "fraction", "seed"], "zip_with_index": [],
    "top": ["num", "key"], "take_ordered": ["num", "key"], "first": [], "max": ["key"], "min": ["key"],
    "mean": [], "stats": [], "variance": [], "stdev": [], "sample_variance": [], "sample_stdev": [],
    "save_as_text_file": ["path", "compression_codec_class"],
}


@pytest.mark.parametrize("name", sorted(PYSPARK))
def test_the_pyspark_methods_take_pysparks_arguments_and_say_what_they_do(name):
    import inspect

    method = getattr(dz.Dataset, name)
    assert list(inspect.signature(method).parameters)[1:] == PYSPARK[name]
    assert method.__doc__ and len(method.__doc__) > 20


def test_text_file_takes_pysparks_arguments_and_stat_counter_is_public():
    import inspect

    assert list(inspect.signature(dz.Context.text_file).parameters)[1:] == ["name", "min_partitions", "use_unicode"]
    assert "StatCounter" in dz.__all__ and "StatCounter" in dz.api.__all__
    with dz.Context(transport="inline", workers=1) as ctx:
        assert isinstance(ctx.parallelize([1.0, 3.0], 2).stats(), dz.StatCounter)
