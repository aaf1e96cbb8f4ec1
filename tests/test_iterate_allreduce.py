"""``iterate`` is an all-reduce: one hop between workers per iteration, states batched to the driver.

What a user checks: the states are those of a sequential loop folding the
partials in the same order (bit for bit), with any number of workers and
any group size; what the engine promises: no state is forwarded between
workers (each worker updates its own copy), and the driver hears of a
group's states in a few messages, not one per iteration.
"""

from __future__ import annotations

import numpy as np
import pytest
from bookkeeping import assert_no_bookkeeping
from support import context

from drizzle_core.api import _iterate
from drizzle_core.driver import GroupScheduler
from drizzle_core.protocol import messages as M

pytestmark = pytest.mark.timeout(120)


def _local(part, w):
    x = np.asarray(part)
    return np.array([x.sum() * w[0], np.sqrt((x * x).sum()) * w[1]])


def _update(w, g):
    return w * 0.999 + 1e-7 * g


def sequential(parts, init, iterations, slots):
    """The fold iterate promises: partials of a slot in partition order, then the slots in slot order."""
    w, out = init, []
    for _ in range(iterations):
        partials = [_local(p, w) for p in parts]
        per_slot = []
        for s in range(slots):
            mine = partials[s::slots]
            total = mine[0]
            for x in mine[1:]:
                total = np.add(total, x)
            per_slot.append(total)
        total = per_slot[0]
        for x in per_slot[1:]:
            total = np.add(total, x)
        w = _update(w, total)
        out.append(w)
    return out


@pytest.mark.parametrize("transport,workers,partitions,g", [
    ("inline", 2, 6, 7), ("local", 2, 5, 10), ("local", 2, 2, 1), ("inline", 3, 7, 4), ("inline", 1, 3, 5),
    ("inline", 20, 24, 6),  # more slots than ALL_REDUCE_MAX: one reducer, the state forwarded
])
def test_states_are_a_sequential_fold_bit_for_bit(transport, workers, partitions, g):
    ctx = context(transport, workers)
    data = np.random.default_rng(partitions).random(40 * partitions)
    ds = ctx.parallelize(data, partitions).cache()
    parts = np.array_split(data, partitions)
    init = np.array([1.0, 2.0])
    r = ctx.iterate(ds, init, local=_local, combine=np.add, update=_update, iterations=25, group_size=g,
                    keep_history=True)
    want = sequential(parts, init, 25, max(1, min(workers, partitions)))
    assert all(np.array_equal(a, b) for a, b in zip(r.history, want)), (r.history[-1], want[-1])
    assert np.array_equal(r.state, want[-1])
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def _add_in_place(a, b):
    a += b  # as Spark allows a combOp: modify the first argument and return it, no new array
    return a


_combines = []


def _counted_add(a, b):
    _combines.append(1)
    return np.add(a, b)


@pytest.mark.parametrize("transport,workers,partitions,g", [
    ("inline", 2, 4, 3), ("local", 2, 5, 4), ("local", 2, 4, 10), ("inline", 3, 7, 2), ("inline", 20, 24, 6),
])
def test_a_combine_updating_its_first_argument_in_place_gives_the_sequential_states(transport, workers,
                                                                                    partitions, g):
    # A slot's partial goes to every copy of the state: folded once per copy, an in-place combine added the
    # other partials into it again for each copy after the first (silently wrong states, 325 for 98).
    ctx = context(transport, workers)
    data = np.random.default_rng(partitions).random(40 * partitions)
    ds = ctx.parallelize(data, partitions).cache()
    init = np.array([1.0, 2.0])
    r = ctx.iterate(ds, init, local=_local, combine=_add_in_place, update=_update, iterations=12, group_size=g,
                    keep_history=True)
    want = sequential(np.array_split(data, partitions), init, 12, max(1, min(workers, partitions)))
    assert all(np.array_equal(a, b) for a, b in zip(r.history, want)), (r.history[-1], want[-1])
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def _update_in_place(w, g):
    w *= 0.999  # the numpy way: no new array
    w += 1e-7 * g
    return w


@pytest.mark.parametrize("transport,g", [("inline", 4), ("local", 5), ("local", 1)])
def test_an_update_changing_its_state_in_place_gives_every_iteration_its_own_state(transport, g):
    # The state update gets is the last iteration's, still held for the driver: changed in place, the driver
    # was sent a group's last state under each of its iterations' numbers (and recovery resumed from it)
    ctx = context(transport, 2)
    data = np.random.default_rng(3).random(160)
    ds = ctx.parallelize(data, 4).cache()
    init = np.array([1.0, 2.0])
    seen = []
    r = ctx.iterate(ds, init, local=_local, combine=np.add, update=_update_in_place, iterations=15, group_size=g,
                    keep_history=True, on_iteration=lambda i, w: seen.append(w.copy()))
    want = sequential(np.array_split(data, 4), np.array([1.0, 2.0]), 15, 2)
    assert all(np.array_equal(a, b) for a, b in zip(r.history, want))
    assert all(np.array_equal(a, b) for a, b in zip(seen, want)) and len(seen) == 15
    assert np.array_equal(init, [1.0, 2.0])  # the caller's init too
    # a pure update may skip the copy, with the same states
    fast = ctx.iterate(ds, init, local=_local, combine=np.add, update=_update, iterations=15, group_size=g,
                       keep_history=True, copy_state=False)
    assert all(np.array_equal(a, b) for a, b in zip(fast.history, want))
    with pytest.raises(TypeError, match="copy_state must be a bool, got str"):
        ctx.iterate(ds, init, local=_local, combine=np.add, update=_update, iterations=1, copy_state="no")
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def test_each_slot_folds_its_partials_once_whatever_the_number_of_copies():
    ctx = context("inline", 2)
    ds = ctx.parallelize(np.arange(400.0), 4).cache()
    ds.count()
    _combines.clear()
    ctx.iterate(ds, np.array([1.0, 1.0]), local=_local, combine=_counted_add, update=_update, iterations=5,
                group_size=5)
    # per iteration: 2 slots of 2 partitions fold once each, and each of the 2 copies folds the 2 slots
    assert len(_combines) == 5 * (2 + 2)
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def test_no_state_is_forwarded_and_every_worker_updates_its_own_copy(monkeypatch):
    ctx = context("inline", 2)
    plans = []
    launch = GroupScheduler._launch

    def spy(self, plan, *args):
        plans.append(plan)
        return launch(self, plan, *args)

    monkeypatch.setattr(GroupScheduler, "_launch", spy)
    ds = ctx.parallelize(np.arange(400.0), 4).cache()
    ds.count()
    plans.clear()
    ctx.iterate(ds, np.array([1.0, 1.0]), local=_local, combine=np.add, update=_update, iterations=30,
                group_size=10)
    assert plans
    for plan in plans:
        assert plan.forwards == {}, plan.forwards  # the state of iteration i is already where i+1 reads it
        updates = [t for t in plan.tasks if t.kind == 0]  # map side: each worker's slot partial, to both copies
        assert {plan.tasks.worker(t.index) for t in updates} == {0, 1}
        assert all(len(d) == 1 for run in plan.routes.values() for d in run)  # copy r is on worker r only
        assert {frozenset().union(*run) for run in plan.routes.values()} == {frozenset({0, 1})}
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def test_the_driver_hears_of_a_group_of_states_in_a_few_messages(monkeypatch):
    ctx = context("local", 2)
    monkeypatch.setattr(_iterate, "SMALL_STATE_HOLD", 5.0)  # longer than a group: its states all come with its DONE
    seen = {"results": 0, "done": 0}
    dispatch = GroupScheduler._dispatch

    def count(self, worker, msg):
        if isinstance(msg, tuple) and msg[0] in (M.RESULTS, M.DONE):
            seen["results" if msg[0] == M.RESULTS else "done"] += 1
        return dispatch(self, worker, msg)

    monkeypatch.setattr(GroupScheduler, "_dispatch", count)
    ds = ctx.parallelize(np.arange(800.0), 4).cache()
    ds.count()
    seen.update(results=0, done=0)
    calls = []
    r = ctx.iterate(ds, np.array([1.0, 1.0]), local=_local, combine=np.add, update=_update, iterations=100,
                    group_size=50, on_iteration=lambda i, w: calls.append(i))
    assert r.iterations == 100 and calls == list(range(1, 101))
    # 100 states, in 2 groups: without holding, one RESULTS message per state
    assert seen["results"] <= 4, seen
    assert seen["done"] <= 2 * 2 + 2, seen
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def test_a_small_state_is_held_longer_than_a_large_one(monkeypatch):
    ctx = context("inline", 2)
    holds = []
    launch = GroupScheduler._launch

    def spy(self, plan, *args):
        holds.append(plan.hold)
        return launch(self, plan, *args)

    monkeypatch.setattr(GroupScheduler, "_launch", spy)
    ds = ctx.parallelize(np.arange(400.0), 4).cache()
    ds.count()
    holds.clear()
    small = ctx.iterate(ds, np.array([1.0, 1.0]), local=_local, combine=np.add, update=_update, iterations=12,
                        group_size=5)
    assert holds == [_iterate.SMALL_STATE_HOLD] * 3
    holds.clear()
    big0 = np.ones(_iterate.SMALL_STATE_BYTES // 8 + 1)  # just past small, as pickled
    big = ctx.iterate(ds, big0, local=lambda part, w: w * float(np.sum(part)), combine=np.add,
                      update=lambda w, g: w * 1e-6 + g * 1e-9, iterations=12, group_size=5)
    assert holds == [_iterate.RESULT_HOLD] * 3
    assert small.iterations == big.iterations == 12 and big.state.shape == big0.shape
    # the measure: out-of-band arrays counted in place, a state only cloudpickle takes gets the default
    assert _iterate._result_hold(np.ones(_iterate.SMALL_STATE_BYTES // 8 - 64)) == _iterate.SMALL_STATE_HOLD
    assert _iterate._result_hold(np.ones((2, 1 << 17))[:, ::2]) == _iterate.RESULT_HOLD  # a strided view too
    assert _iterate._result_hold({"step": lambda x: x}) == _iterate.RESULT_HOLD
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def test_until_stops_every_copy_at_the_same_iteration():
    ctx = context("local", 2)
    ds = ctx.parallelize(range(8), 4).cache()
    r = ctx.iterate(ds, 0, local=lambda part, s: sum(part), combine=lambda a, b: a + b,
                    update=lambda s, total: s + total, iterations=1000, until=lambda s: s >= 75, group_size=8,
                    keep_history=True)
    assert r.converged and r.history == [28, 56, 84] and r.iterations == 3
    ds.unpersist()
    assert_no_bookkeeping(ctx)


def test_iter_jobs_refuses_a_bad_hold():
    ctx = context("inline", 2)
    ds = ctx.parallelize(range(4), 2)
    for bad in (-1, float("inf"), "1", True):
        with pytest.raises(ValueError, match="hold_results"):
            ctx.iter_jobs([(ds, list)], hold_results=bad)
