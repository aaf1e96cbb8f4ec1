"""Recovery is exact, bit for bit: floating-point results after a lost worker equal a clean run's.

Why it can differ at all: float addition is not associative, so a sum is
only reproducible if it is combined in the same tree every time. Shuffles
(``reduce_by_key``) and actions (``reduce``, ``sum``) fold in map-partition
order, whatever ran where. ``iterate`` pre-combines partials before the
reducer; that tree is fixed by the lineage (``ShuffleDep.combine_slots``:
slot ``p % W``, each slot folded in partition order, then the slots in
order), not by which worker ran which partition, so a recovery that moves
partitions to other workers changes nothing. The tests check it where a user
would: fitted coefficients (``np.array_equal``), iterate states and shuffle
results against a sequential fold in that order, with a worker SIGKILLed
at a random moment, on the local transport with 3 workers (so that a lost
worker's partitions are spread over two survivors, which splits a slot).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import os
import random
import signal
import threading
import time
import warnings

import numpy as np
import pytest
import reference
from drizzle_ml import ConvergenceWarning, KMeans, LogisticRegression, run_serial
from drizzle_ml import run as run_problem
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import FakeDataset, context, count_call, kill_self_once, recovered, wait_all_live, worker_pids

import drizzle_core as dz
from drizzle_core import lineage as N
from drizzle_core.driver import Planner

pytestmark = pytest.mark.timeout(120)

W = 3  # workers of the module's context


def _ctx() -> dz.Context:
    ctx = context("local", W)
    wait_all_live(ctx)
    return ctx


def _recoveries(ctx: dz.Context, since: int) -> int:
    return recovered(ctx.metrics[since:])


# ------------------------------------------------------------ the fixed tree
def test_reducers_read_one_block_per_whole_slot_and_the_partitions_of_a_split_one():
    """The planner names the blocks of a pre-combined shuffle by slot: a slot one worker maps is one
    block (``-1 - slot``); a slot split across workers (a recovery moved part of it) is its partitions'."""
    src = FakeDataset(N.SourceNode(1, [[1.0]] * 4, "source"), cached=True)
    dep = N.ShuffleDep(1, src.node, lambda part, R: [part], local_combine=operator.add, combine_slots=2)
    reduced = FakeDataset(N.ShuffleReadNode(2, (dep,), lambda p, deps: deps[0], 1, "combine"), (src,))

    def blocks_read(located):
        plan = Planner().plan([(0, reduced, list)], [0, 1, 2], located)
        [entry] = next(t for t in plan.tasks if t.shuffle_in).shuffle_in
        return entry[3]

    # where round-robin placement puts them: slot s on worker s
    assert blocks_read({("c", 1, p): p % 2 for p in range(4)}) == (-1, -2)
    # slot 1 (partitions 1 and 3) split over workers 2 and 0 after worker 1 was lost
    assert blocks_read({("c", 1, 0): 0, ("c", 1, 1): 2, ("c", 1, 2): 0, ("c", 1, 3): 0}) == (-1, 1, 3)
    # everything on one worker: still one block per slot, never one per worker
    assert blocks_read({("c", 1, p): 0 for p in range(4)}) == (-1, -2)


def test_a_split_slot_is_folded_as_its_worker_would_have():
    dep = N.ShuffleDep(1, N.SourceNode(1, [[0]] * 5, "s"), lambda part, R: [part], local_combine=operator.add,
                       combine_slots=2)
    a, b, c, d, e = 1e16, 1.0, -1e16, 1.0, 3.0   # partitions 0..4; slot 0 = {0, 2, 4}, slot 1 = {1, 3}
    whole = [(a + c) + e, b + d]
    assert N.fold_slots(dep, (-1, -2), whole) == whole
    assert N.fold_slots(dep, (0, 2, 4, -2), [a, c, e, b + d]) == whole
    assert N.fold_slots(dep, (-1, 1, 3), [(a + c) + e, b, d]) == whole
    assert N.fold_slots(dep, (0, 2, 4, 1, 3), [a, c, e, b, d]) == whole


def fixed_tree(partials: list, slots: int):
    """iterate's documented order: slot ``p % slots`` folds its partitions in order, then the slots in order."""
    per_slot = [functools.reduce(operator.add, partials[s::slots]) for s in range(min(slots, len(partials)))]
    return functools.reduce(operator.add, per_slot)


# ---------------------------------------------- float sums, a worker killed
class KillAtCall:
    """``local`` for iterate: the partition's float sum, scaled by the state; SIGKILLs its worker at the n-th call."""

    def __init__(self, directory: str, n: int) -> None:
        self.directory, self.n = directory, n

    def __call__(self, part, state):
        if count_call(self.directory) >= self.n:
            kill_self_once(self.directory)
        return float(np.sum(part) * (state[0] if isinstance(state, np.ndarray) else state) + part[0])


class KillAtRecord:
    """Identity map that SIGKILLs its own worker at the n-th record seen by any worker, once."""

    def __init__(self, directory: str, n: int) -> None:
        self.directory, self.n = directory, n

    def __call__(self, x):
        if count_call(self.directory) >= self.n:
            kill_self_once(self.directory)
        return x


def _update(state, total):
    return 0.5 + (total % 7.0) / 7.0


def _update_in_place(state, total):
    state[0] = _update(state[0], total)  # a one-element array changed in place: iterate gives update a copy
    return state


floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda x: x * 10.0 ** (int(x) % 9))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(values=st.lists(floats, min_size=8, max_size=40), partitions=st.integers(2, 7),  # no empty partition
       group_size=st.integers(1, 6), iterations=st.integers(2, 8), kill_at=st.integers(1, 40),
       job=st.sampled_from(["iterate", "iterate in place", "reduce_by_key", "reduce"]))
def test_float_sums_with_a_lost_worker_equal_the_sequential_fold_exactly(
        tmp_path_factory, values, partitions, group_size, iterations, kill_at, job):
    ctx = _ctx()
    tmp = str(tmp_path_factory.mktemp("kill"))
    n0 = len(ctx.metrics)
    if job.startswith("iterate"):
        data = ctx.parallelize(np.array(values), partitions)
        in_place = job == "iterate in place"
        res = ctx.iterate(data, np.array([1.0]) if in_place else 1.0, local=KillAtCall(tmp, kill_at),
                          combine=operator.add, update=_update_in_place if in_place else _update,
                          iterations=iterations, group_size=group_size, keep_history=True)
        parts = np.array_split(np.array(values), partitions)
        state, expected = 1.0, []
        for _ in range(iterations):
            state = _update(state, fixed_tree([float(np.sum(p) * state + p[0]) for p in parts], W))
            expected.append(state)
        assert [float(s[0]) if in_place else s for s in res.history] == expected
    elif job == "reduce_by_key":
        src = ctx.parallelize([(i % 3, v) for i, v in enumerate(values)], partitions)
        out = src.map(KillAtRecord(tmp, kill_at)).reduce_by_key(operator.add, 2).collect()
        # per map partition in record order, then the partials in partition order (tests/reference.py)
        assert out == [kv for part in reference.partitions(src.reduce_by_key(operator.add, 2)) for kv in part]
    else:
        src = ctx.parallelize(values, partitions)
        out = src.map(KillAtRecord(tmp, kill_at)).reduce(operator.add)
        parts = [functools.reduce(operator.add, p) for p in reference.partitions(src) if p]
        assert out == functools.reduce(operator.add, parts)
    killed = os.path.exists(os.path.join(tmp, "killed"))
    assert _recoveries(ctx, n0) == (1 if killed else 0)
    event(f"{job}: a worker was killed" if killed else f"{job}: the run ended before the kill")


# --------------------------------------------------------- estimators
def _blobs():
    rng = np.random.default_rng(7)
    X = np.concatenate([rng.normal(loc=c, size=(1500, 4)) for c in range(4)])
    y = (X[:, 0] + 0.5 * rng.normal(size=len(X)) > 1.5).astype(int)
    return X, y


def _problem(estimator: str, partitions: int):
    X, y = _blobs()
    if estimator == "kmeans":
        return KMeans(4, random_state=0, tol=0.0).make_problem(X, partitions)
    return LogisticRegression(tol=0.0).make_problem(X, y, partitions)


def _theta(state) -> np.ndarray:
    return state.centers if hasattr(state, "centers") else state.theta


class KillInLocal:
    """An estimator's ``local`` that SIGKILLs its worker at the n-th call (across workers), once."""

    def __init__(self, local, directory: str, n: int) -> None:
        self.local, self.directory, self.n = local, directory, n

    def __call__(self, part, state):
        if count_call(self.directory) >= self.n:
            kill_self_once(self.directory)
        return self.local(part, state)


@pytest.mark.parametrize(("estimator", "seed"), [("kmeans", 1), ("logistic", 2)])
def test_fit_with_a_worker_killed_at_a_random_call_is_bit_identical(tmp_path, estimator, seed):
    """Killed during the iterations (a random call of local, a random group size): every iteration's state
    equals the clean run's bit for bit, at group size 1 and at any other."""
    ctx = _ctx()
    rnd = random.Random(seed)
    partitions, iterations = rnd.choice([6, 7]), 25  # more partitions than workers: slots of several
    problem = _problem(estimator, partitions)
    clean = run_problem(problem, ctx, max_iter=iterations, group_size=1, keep_history=True)
    kill_at = rnd.randint(partitions + 1, partitions * iterations - partitions)
    hurt_problem = dataclasses.replace(problem, local=KillInLocal(problem.local, str(tmp_path), kill_at))
    n0 = len(ctx.metrics)
    hurt = run_problem(hurt_problem, ctx, max_iter=iterations, group_size=rnd.choice([2, 5, 25]),
                       keep_history=True)
    assert (tmp_path / "killed").exists() and _recoveries(ctx, n0) == 1
    assert hurt.iterations == clean.iterations == iterations
    for a, b in zip(hurt.history, clean.history):
        assert np.array_equal(_theta(a), _theta(b))
    # KMeans' final pass (labels and inertia per partition) too; LogisticRegression has none
    assert len(hurt.finished) == len(clean.finished)
    for (labels_a, inertia_a), (labels_b, inertia_b) in zip(hurt.finished, clean.finished):
        assert np.array_equal(labels_a, labels_b) and inertia_a == inertia_b


def test_with_at_most_one_partition_per_worker_the_fit_is_the_sequential_fold():
    """iterate's tree with P <= W slots of one partition each is the plain left fold: run_serial's, bit for bit."""
    ctx = _ctx()
    problem = _problem("kmeans", W)
    engine = run_problem(problem, ctx, max_iter=15, group_size=5, keep_history=True)
    serial = run_serial(problem, max_iter=15, keep_history=True)
    assert engine.iterations == serial.iterations
    assert all(np.array_equal(a.centers, b.centers) for a, b in zip(engine.history, serial.history))


def _fit(estimator: str, ctx: dz.Context, group_size):
    X, y = _blobs()
    if estimator == "kmeans":
        km = KMeans(4, random_state=0, max_iter=30, tol=0.0, context=ctx, group_size=group_size,
                    num_partitions=6).fit(X)
        return np.concatenate([km.cluster_centers_.ravel(), [km.inertia_], km.labels_])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 30 iterations, on purpose
        lr = LogisticRegression(max_iter=30, tol=0.0, context=ctx, group_size=group_size,
                                num_partitions=6).fit(X, y)
    return np.concatenate([lr.coef_.ravel(), np.atleast_1d(lr.intercept_)])


@pytest.mark.parametrize("estimator", ["kmeans", "logistic"])
def test_fit_with_a_worker_killed_at_a_random_moment_gives_the_clean_coefficients(estimator):
    """SIGKILL from outside at a random moment of ``fit`` (shipping the data, iterating, the final pass):
    the fitted attributes equal a clean fit's exactly, whatever the group size."""
    ctx = _ctx()
    clean = _fit(estimator, ctx, 1)
    t0 = time.perf_counter()
    assert np.array_equal(_fit(estimator, ctx, "auto"), clean)
    seconds = time.perf_counter() - t0
    rnd = random.Random(estimator)
    recovered = 0
    for attempt in range(3):
        pids = sorted(set(worker_pids(ctx)))
        timer = threading.Timer(rnd.uniform(0.0, 0.6 * seconds), os.kill, (rnd.choice(pids), signal.SIGKILL))
        n0 = len(ctx.metrics)
        timer.start()
        try:
            hurt = _fit(estimator, ctx, rnd.choice([1, 4, "auto"]))
        finally:
            timer.join()
        recovered += _recoveries(ctx, n0)
        assert np.array_equal(hurt, clean), f"attempt {attempt}"
        wait_all_live(ctx)
        if recovered:
            break
    assert recovered >= 1  # at least one kill landed inside a group (not between two)
