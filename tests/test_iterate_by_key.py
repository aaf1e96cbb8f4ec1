"""``Context.iterate_by_key``: a keyed, partitioned state, checked against a sequential evaluator.

The property test draws programs (keys of every hashable kind, one or two
data datasets, combined or listed messages, an aggregate, drops, a
convergence test) and runs them at any group size, worker count and
partition count: the state, the metrics and the iteration where the loop
stopped equal the plain-Python loop's. Integer messages make the answer
independent of the order messages are combined in; the float tests then
check that order is fixed by the lineage: bit for bit across group sizes,
worker counts, and a worker SIGKILLed mid-loop.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import operator
import os
import tracemalloc

import numpy as np
import pytest
from bookkeeping import assert_no_bookkeeping
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import context, count_call, kill_self_once, recovered, wait_all_live

import drizzle_core as dz

pytestmark = pytest.mark.timeout(180)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Cell:
    row: int
    name: str


class Named:
    """A key with a str-based ``__hash__``: equal across workers only because the transports share the seed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Named) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Named({self.name!r})"


KEYS = [0, 1, 2, 7, -3, "a", "bb", "ç", (1, "x"), (2, (3, "y")), frozenset({1, 2}), frozenset({"p"}),
        Color.RED, Color.BLUE, Cell(1, "n"), Cell(2, "m"), Named("u"), Named("v"), 2.5, None, b"raw"]


# ------------------------------------------------------------------ the reference
_NOTHING = object()


def sequential(state, datas, send, update, iterations, combine=None, aggregate=None, measure=None, until=None):
    """The semantics, one key at a time: what every run must equal."""
    state = dict(state)
    tables = []
    for d in datas:
        t: dict = {}
        for k, v in d:
            t.setdefault(k, []).append(v)
        tables.append(t)
    metrics, done, converged = [], 0, False
    for i in range(1, iterations + 1):
        table = tables[(i - 1) % len(tables)] if tables else None
        msgs: dict = {}
        total = _NOTHING
        for k, v in state.items():
            if table is None:
                out = send(k, v)
            elif k in table:
                out = send(k, v, table[k])
            else:
                continue
            args = (k, v) if table is None else (k, v, table[k])
            for dest, m in out:
                if combine is None:
                    msgs.setdefault(dest, []).append(m)
                else:
                    msgs[dest] = combine(msgs[dest], m) if dest in msgs else m
            if aggregate is not None:
                a = aggregate[0](*args)
                total = a if total is _NOTHING else aggregate[1](total, a)
        new, metric = dict(state), 0
        for k, m in msgs.items():
            old = state.get(k)
            v = update(k, old, m) if aggregate is None else update(k, old, m, None if total is _NOTHING else total)
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
            if measure is not None:
                metric += measure(k, old, v)
        state, done = new, i
        if measure is not None:
            metrics.append(metric)
            if until is not None and until(metric):
                converged = True
                break
    return state, metrics, done, converged


# --------------------------------------------------------- the programs drawn
def send_to_data(k, v, dests):
    return [(d, v + j) for j, d in enumerate(sorted(dests, key=repr))]


def send_to_self(k, v):
    return [(k, v), (k, 1)]


def update_int(k, old, m):
    total = sum(sorted(m)) if isinstance(m, list) else m
    new = ((old or 0) * 3 + total) % 1009
    return None if new % 11 == 0 else new


def update_with_total(k, old, m, total):
    base = sum(sorted(m)) if isinstance(m, list) else m
    return ((old or 0) + base + (total or 0)) % 1013


def seq_value(k, v, values=()):
    return v + len(values)


def measure_change(k, old, new):
    return 1 if new is None else abs(new - (old or 0))


class Below:
    def __init__(self, bound: int) -> None:
        self.bound = bound

    def __call__(self, metric: int) -> bool:
        return metric < self.bound


keys = st.sampled_from(KEYS)
programs = st.fixed_dictionaries({
    "state": st.dictionaries(keys, st.integers(0, 500), min_size=1, max_size=12),
    "datas": st.lists(st.lists(st.tuples(keys, keys), max_size=25), min_size=0, max_size=2),
    "combined": st.booleans(),
    "aggregate": st.booleans(),
    "bound": st.none() | st.integers(0, 3000),
    "iterations": st.integers(0, 9),
    "partitions": st.integers(1, 5),
    "input_partitions": st.integers(1, 4),
    "workers": st.sampled_from([1, 2, 3]),
    "group_size": st.integers(1, 8),
    "checkpoint": st.integers(1, 4),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_any_program_group_size_and_worker_count_give_the_sequential_result(program):
    ctx = context("local", program["workers"])
    wait_all_live(ctx)
    datas = program["datas"]
    aggregate = (seq_value, operator.add) if program["aggregate"] else None
    combine = operator.add if program["combined"] else None
    update = update_with_total if aggregate else update_int
    send = send_to_data if datas else send_to_self
    until = None if program["bound"] is None else Below(program["bound"])
    n_in = program["input_partitions"]
    expected, metrics, done, converged = sequential(
        program["state"].items(), datas, send, update, program["iterations"], combine=combine,
        aggregate=aggregate, measure=measure_change, until=until)
    res = ctx.iterate_by_key(
        ctx.parallelize(list(program["state"].items()), n_in),
        data=[ctx.parallelize(d, n_in) for d in datas] or None, send=send, update=update,
        iterations=program["iterations"], combine=combine, aggregate=aggregate, measure=measure_change, until=until,
        num_partitions=program["partitions"], group_size=program["group_size"],
        checkpoint_interval=program["checkpoint"])
    got = res.state.collect()
    assert len(got) == len(expected)
    assert dict(got) == expected
    assert res.metrics == metrics
    assert (res.iterations, res.converged) == (done, converged)
    assert res.state.num_partitions == program["partitions"]
    del res, got
    assert_no_bookkeeping(ctx)


# ------------------------------------------------------------------ PageRank
def _graph(n: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    edges = {(int(a), int(b)) for a, b in rng.integers(0, n, (4 * n, 2)) if a != b}
    return sorted(edges)


def _adjacency(edges, n):
    out = {k: [] for k in range(n)}
    for a, b in edges:
        out[a].append(b)
    return out


class Contribute:
    """PageRank's send: a vertex's rank split over its out-links, and a zero to itself (so it is updated)."""

    def __call__(self, k, rank, values):
        dests = values[0]
        yield (k, 0.0)
        for d in dests:
            yield (d, rank / len(dests))


class Rank:
    def __init__(self, n: int, damping: float = 0.85) -> None:
        self.n, self.damping = n, damping

    def __call__(self, k, old, contributions):
        return (1 - self.damping) / self.n + self.damping * contributions


def _delta(k, old, new):
    return abs(new - old)


def _pagerank(ctx, edges, n, iterations, group_size=None, partitions=4, send=None, until=None, checkpoint=10):
    adj = _adjacency(edges, n)
    links = ctx.parallelize(list(adj.items()), 3)
    ranks = ctx.parallelize([(k, 1.0 / n) for k in range(n)], 2)
    return ctx.iterate_by_key(ranks, data=links, send=send or Contribute(), combine=operator.add, update=Rank(n),
                              measure=_delta, until=until, iterations=iterations, num_partitions=partitions,
                              group_size=group_size, checkpoint_interval=checkpoint)


def _numpy_pagerank(edges, n, iterations):
    adj = _adjacency(edges, n)
    rows = [b for a, bs in adj.items() for b in bs]
    cols = [a for a, bs in adj.items() for _ in bs]
    vals = [1.0 / len(bs) for a, bs in adj.items() for _ in bs]
    import scipy.sparse as sp
    A = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    r = np.full(n, 1.0 / n)
    for _ in range(iterations):
        r = 0.15 / n + 0.85 * (A @ r)
    return r


def _as_array(res, n):
    got = dict(res.state.collect())
    return np.array([got[k] for k in range(n)])


def test_pagerank_equals_scipys_power_iteration_and_is_the_same_bits_for_any_group_size_and_workers():
    n, edges = 60, _graph(60, 1)
    ref = _numpy_pagerank(edges, n, 30)
    runs = []
    for workers, g in [(1, 1), (2, 4), (3, 30), (2, 7)]:
        ctx = context("local", workers)
        wait_all_live(ctx)
        res = _pagerank(ctx, edges, n, 30, group_size=g)
        runs.append(_as_array(res, n))
        assert res.iterations == 30 and not res.converged
        del res
        assert_no_bookkeeping(ctx)
    np.testing.assert_allclose(runs[0], ref, rtol=1e-12, atol=0)
    for r in runs[1:]:
        assert np.array_equal(r, runs[0])


def test_until_returns_the_state_of_the_iteration_where_it_became_true_for_any_group_size():
    n, edges = 40, _graph(40, 2)
    ctx = context("local", 2)
    wait_all_live(ctx)
    answers = []
    for g in (1, 5, 64):
        res = _pagerank(ctx, edges, n, 500, group_size=g, until=Below(1e-10))
        answers.append((res.iterations, _as_array(res, n), list(res.metrics)))
        assert res.converged and res.metrics[-1] < 1e-10 <= res.metrics[-2]
        del res
        assert_no_bookkeeping(ctx)
    assert answers[0][0] < 500
    np.testing.assert_allclose(answers[0][1], _numpy_pagerank(edges, n, answers[0][0]), rtol=1e-12)
    for it, ranks, metrics in answers[1:]:
        assert it == answers[0][0] and metrics == answers[0][2] and np.array_equal(ranks, answers[0][1])


class KillAtCall(Contribute):
    """Contribute, SIGKILLing its worker at the n-th partition-sized batch of calls (once, in any process)."""

    def __init__(self, directory: str, n: int) -> None:
        self.directory, self.n = directory, n

    def __call__(self, k, rank, values):
        if k == 0 and count_call(self.directory) >= self.n:
            kill_self_once(self.directory)
        return super().__call__(k, rank, values)


@pytest.mark.parametrize("kill_at", [3, 14])
def test_a_worker_killed_mid_loop_changes_no_bit(tmp_path, kill_at):
    n, edges = 50, _graph(50, 3)
    ctx = context("local", 3)
    wait_all_live(ctx)
    clean = _as_array(_pagerank(ctx, edges, n, 25, group_size=4, checkpoint=5), n)
    since = len(ctx.metrics)
    res = _pagerank(ctx, edges, n, 25, group_size=4, checkpoint=5, send=KillAtCall(str(tmp_path), kill_at))
    assert os.path.exists(tmp_path / "killed")
    assert recovered(ctx.metrics[since:]) >= 1
    assert np.array_equal(_as_array(res, n), clean)
    del res
    wait_all_live(ctx)
    assert_no_bookkeeping(ctx)


def _chain_depth(ds) -> int:
    depth, stack, seen = 0, [(ds, 0)], set()
    while stack:
        d, k = stack.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        depth = max(depth, k)
        stack.extend((p, k + 1) for p in d.parents)
    return depth


def test_checkpoints_bound_the_lineage_and_the_driver_memory_stays_flat():
    n, edges = 30, _graph(30, 4)
    ctx = context("local", 2)
    wait_all_live(ctx)
    _pagerank(ctx, edges, n, 20, group_size=5)  # warm: programs, templates
    gc.collect()
    tracemalloc.start()
    try:
        res = _pagerank(ctx, edges, n, 40, group_size=5, checkpoint=10)
        depth40 = _chain_depth(res.state)
        del res
        gc.collect()
        mid = tracemalloc.get_traced_memory()[0]
        res = _pagerank(ctx, edges, n, 400, group_size=5, checkpoint=10)
        depth400 = _chain_depth(res.state)
        del res
        gc.collect()
        end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # four datasets per iteration since the last checkpoint (at iteration 390): 10 iterations, whatever the length
    assert depth400 == depth40 <= 4 * 10 + 2
    assert end - mid < 200_000, f"driver memory grew by {end - mid} bytes over 360 more iterations"
    assert_no_bookkeeping(ctx)


# ----------------------------------------------------------- real programs
def test_an_action_inside_on_iteration_and_a_loop_without_data():
    ctx = context("local", 2)
    wait_all_live(ctx)
    other = ctx.parallelize(range(10), 2)
    seen = []

    def watch(i, metric):
        seen.append((i, metric, other.count()))

    res = ctx.iterate_by_key(ctx.parallelize([("a", 1), ("b", 2)], 1), send=send_to_self, update=update_int,
                             iterations=6, measure=measure_change, on_iteration=watch, group_size=3)
    expected, metrics, _, _ = sequential([("a", 1), ("b", 2)], [], send_to_self, update_int, 6,
                                         measure=measure_change)
    assert dict(res.state.collect()) == expected
    assert seen == [(i + 1, m, 10) for i, m in enumerate(metrics)]
    del res
    assert_no_bookkeeping(ctx)


def test_zero_iterations_give_the_initial_state_partitioned():
    ctx = context("local", 2)
    res = ctx.iterate_by_key(ctx.parallelize([(k, k * k) for k in range(10)], 3), send=send_to_self,
                             update=update_int, iterations=0, num_partitions=4)
    assert sorted(res.state.collect()) == [(k, k * k) for k in range(10)]
    assert res.state.num_partitions == 4 and res.iterations == 0 and res.metrics == []
    parts = res.state.glom()
    assert all(dz.portable_hash(k) % 4 == p for p, part in enumerate(parts) for k, _ in part)
    del res
    assert_no_bookkeeping(ctx)


# ----------------------------------------------------------------- bad input
def _bad_send(k, v, values):
    return [k]  # not pairs


def _none_send(k, v, values):
    return 5


def test_bad_input_gets_an_error_that_names_the_culprit():
    ctx = context("local", 2)
    state = ctx.parallelize([(1, 1.0), (2, 2.0)], 2)
    data = ctx.parallelize([(1, 2), (2, 1)], 2)
    with pytest.raises(dz.TaskError, match="initial state has several values for key 1"):
        ctx.iterate_by_key(ctx.parallelize([(1, 1.0), (1, 2.0)], 2), send=send_to_self, update=update_int,
                           iterations=1)
    with pytest.raises(dz.TaskError, match=r"\(key, message\) pairs; for key [12] it yielded int [12]"):
        ctx.iterate_by_key(state, data=data, send=_bad_send, update=update_int, iterations=1)
    with pytest.raises(dz.TaskError, match="send must return an iterable"):
        ctx.iterate_by_key(state, data=data, send=_none_send, update=update_int, iterations=1)
    with pytest.raises(ValueError, match="until needs measure"):
        ctx.iterate_by_key(state, send=send_to_self, update=update_int, iterations=1, until=Below(1))
    with pytest.raises(ValueError, match="iterations must be a non-negative int"):
        ctx.iterate_by_key(state, send=send_to_self, update=update_int, iterations=-1)
    with pytest.raises(ValueError, match="checkpoint_interval"):
        ctx.iterate_by_key(state, send=send_to_self, update=update_int, iterations=1, checkpoint_interval=0)
    with pytest.raises(ValueError, match="num_partitions"):
        ctx.iterate_by_key(state, send=send_to_self, update=update_int, iterations=1, num_partitions=0)
    with pytest.raises(TypeError, match="aggregate must be a"):
        ctx.iterate_by_key(state, send=send_to_self, update=update_int, iterations=1, aggregate=operator.add)
    with pytest.raises(TypeError, match="send"):
        ctx.iterate_by_key(state, send=3, update=update_int, iterations=1)
    with pytest.raises(ValueError, match=r"data\[1\] must be a Dataset"):
        ctx.iterate_by_key(state, data=[data, [1, 2]], send=send_to_data, update=update_int, iterations=1)
    with pytest.raises(ValueError, match="state must be a Dataset"):
        ctx.iterate_by_key({1: 2}, send=send_to_self, update=update_int, iterations=1)
    assert_no_bookkeeping(ctx)


def test_two_threads_iterate_on_one_context_at_once():
    import threading
    n, edges = 40, _graph(40, 5)
    ctx = context("local", 2)
    wait_all_live(ctx)
    expected = _numpy_pagerank(edges, n, 20)
    out: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out[i] = _as_array(_pagerank(ctx, edges, n, 20, group_size=3 + i), n)
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(out) == 2
    for r in out.values():
        np.testing.assert_allclose(r, expected, rtol=1e-12)
    assert np.array_equal(out[0], out[1])
    assert_no_bookkeeping(ctx)


def _to_next(k, v):
    yield ((k + 1) % 6, float(v.sum()))


def _halve_and_add_in_place(k, old, msg):
    old *= 0.5  # the numpy way: the key's value changed in place, no new array
    old += msg
    return old


def _halve_and_add(k, old, msg):
    return old * 0.5 + msg


def _moved(k, old, new):
    return float(np.abs(new - old).sum())


@pytest.mark.parametrize("transport,g", [("inline", 3), ("local", 4), ("local", 1)])
def test_an_update_changing_a_keys_value_in_place_is_measured_and_stopped_as_a_new_one(transport, g):
    # update(key, old, msg) gets its own copy of old: measure compares the new value with the old one (in
    # place, the change measured 0 and until stopped the loop at once), and recovery reads the old block
    ctx = context(transport, 2)
    runs = []
    for update in (_halve_and_add_in_place, _halve_and_add):
        state = ctx.parallelize([(k, np.array([float(k), 1.0])) for k in range(6)], 3)
        metrics = []
        res = ctx.iterate_by_key(state, send=_to_next, update=update, combine=operator.add, iterations=12,
                                 group_size=g, measure=_moved, until=Below(1e-300), checkpoint_interval=5,
                                 on_iteration=lambda i, m, seen=metrics: seen.append(m))
        runs.append((res.iterations, metrics, sorted((k, v.tolist()) for k, v in res.state.collect())))
        res.state.unpersist()
    assert runs[0] == runs[1] and runs[0][0] == 12 and all(m > 0 for m in runs[0][1])
    with pytest.raises(TypeError, match="copy_state must be a bool, got int"):
        ctx.iterate_by_key(ctx.parallelize([(0, 1)], 1), send=_to_next, update=_halve_and_add, iterations=1,
                           copy_state=1)
    assert_no_bookkeeping(ctx)
