"""Recovery never surfaces an internal exception: a job returns its exact result or raises a Drizzle error.

Workers are SIGKILLed at random moments while groups are planned, launched
and run (one worker, or both a moment apart; while two threads share the
Context; while a task's unpicklable result is being reported). Whatever the
moment, each job must either return exactly what a run without the kill
returns, or raise ``WorkerLostError`` (recovery gave up) or the ``TaskError``
its own code deserves - never a ``KeyError`` from a transport's bookkeeping
or an ``AttributeError`` from a half-recovered run (a race of the local
transport's send once let one through: /work/shared/repro/d4_keyerror.py).
"""

from __future__ import annotations

import contextlib
import operator
import os
import random
import signal
import threading
import time
import traceback

import pytest
from support import Lineage, wait_all_live, wait_dead, worker_pids
from test_scheduler_unit import idle, scheduler, state

import drizzle_core as dz
from drizzle_core.net import WorkerLost

pytestmark = pytest.mark.timeout(90)

ITEMS = list(range(120))


def _inc(x):
    return x + 1


def _float_pair(x):
    return (x % 5, x * 0.1)


def _gen(x):
    return (i for i in range(x))


def _local(part, w):
    return sum(part) * 1e-4 + w * 1e-3


def _update(w, g):
    return w - g


def _expected_rbk():
    """reduce_by_key's order: per map partition in record order, then the partials in partition order."""
    out: dict = {}
    for part in (ITEMS[0:30], ITEMS[30:60], ITEMS[60:90], ITEMS[90:120]):
        partial: dict = {}
        for x in part:
            k, v = _float_pair(x + 1)
            partial[k] = partial[k] + v if k in partial else v
        for k, v in partial.items():
            out[k] = out[k] + v if k in out else v
    return out


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone (the other timer's victim)
        os.kill(pid, signal.SIGKILL)


def _job(ctx: dz.Context, kind: str, g: int, clean_iterate: float | None) -> None:
    """Run one job of ``kind``; assert its result is exact (an exception propagates to the caller)."""
    src = ctx.parallelize(ITEMS, 4)
    total = sum(ITEMS) + len(ITEMS)
    if kind == "groups":  # many small groups: launches, results, DONEs all in flight
        assert ctx.run_jobs([(src.map(_inc), sum)] * 24, group_size=g) == [[sum(p) for p in _parts(1)]] * 24
    elif kind == "shuffle":
        assert dict(src.map(_inc).map(_float_pair).reduce_by_key(operator.add, 3).collect()) == _expected_rbk()
    elif kind == "iterate":
        res = ctx.iterate(src, 0.0, local=_local, combine=operator.add, update=_update, iterations=25, group_size=g)
        assert res.iterations == 25 and res.state == clean_iterate
    elif kind == "cached":
        cached = src.map(_inc).cache()
        try:
            assert [sum(r) for r in ctx.run_jobs([(cached, sum)] * 12, group_size=g)] == [total] * 12
        finally:
            cached.unpersist()
    elif kind == "unpicklable":  # the repro's job: its own TaskError, or WorkerLostError
        with pytest.raises((dz.TaskError, dz.WorkerLostError)) as info:
            src.map(_gen).collect()
        if isinstance(info.value, dz.TaskError):
            assert "generator" in str(info.value)
    elif kind == "threads":  # two callers share the Context: recovery runs in whichever polls
        errors: list[BaseException] = []

        def other() -> None:
            try:
                _job(ctx, "groups", g, clean_iterate)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        try:
            _job(ctx, "shuffle", g, clean_iterate)
        finally:
            t.join(60)
        assert not t.is_alive()
        if errors:
            raise errors[0]
    else:
        raise AssertionError(kind)


def _parts(add: int) -> list[list[int]]:
    return [[x + add for x in ITEMS[i:i + 30]] for i in range(0, 120, 30)]


KINDS = ["groups", "shuffle", "iterate", "cached", "unpicklable", "threads"]


def test_a_worker_killed_at_random_moments_gives_exact_results_or_drizzle_errors(no_orphans):
    rnd = random.Random(11)
    outcomes: dict[str, int] = {}
    recoveries = 0
    with dz.Context(workers=2) as ctx:
        clean_iterate = ctx.iterate(ctx.parallelize(ITEMS, 4), 0.0, local=_local, combine=operator.add,
                                    update=_update, iterations=25).state
        for rnd_round in range(10):
            kind = KINDS[rnd_round % len(KINDS)] if rnd_round < len(KINDS) else rnd.choice(KINDS)
            g = rnd.choice([1, 3, 10])
            pids = sorted(set(worker_pids(ctx)))
            delay = rnd.uniform(0.0, 0.04)
            timers = [threading.Timer(delay, _kill, (rnd.choice(pids),))]
            if len(pids) > 1 and rnd.random() < 0.3:  # both workers, a moment apart
                timers = [threading.Timer(delay, _kill, (pids[0],)),
                          threading.Timer(delay + rnd.uniform(0.0, 0.03), _kill, (pids[1],))]
            n0 = len(ctx.metrics)
            for t in timers:
                t.start()
            try:
                _job(ctx, kind, g, clean_iterate)
                outcome = "as expected"  # the exact result, or the unpicklable job's own TaskError
            except dz.WorkerLostError:
                outcome = "WorkerLostError"
            except AssertionError:
                raise
            except Exception as e:  # anything else is an internal exception escaping recovery
                pytest.fail(f"round {rnd_round} ({kind}, G={g}): {type(e).__name__} escaped:\n"
                            + "".join(traceback.format_exception(e)))
            finally:
                for t in timers:
                    t.join()
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            recoveries += sum(m.recoveries for m in ctx.metrics[n0:])
            wait_all_live(ctx)
        report = ctx.bookkeeping()
    assert recoveries >= 3, (recoveries, outcomes)  # the kills did land inside groups
    assert outcomes.get("as expected", 0) >= 5, outcomes
    driver = dict(report["driver"])
    driver.pop("cached_blocks")
    assert all(v == 0 for v in driver.values()), driver  # recovery left nothing behind on the driver


def test_a_fault_inside_recovery_ends_that_run_with_worker_lost_naming_it_not_a_raw_exception():
    """If re-planning itself breaks (a bug), the run raises WorkerLostError with the fault as its cause,
    and the scheduler is left clean: the exception never escapes from the poll that saw the loss."""
    fake, s = scheduler(workers=2)
    lin = Lineage()
    ds = lin.map(lin.source([1], [2]), abs)
    real_plan = s.planner.plan

    def broken_plan(*args, **kwargs):
        raise KeyError("a bookkeeping bug")

    def script():
        fake.take()
        s.planner.plan = broken_plan  # type: ignore[method-assign]  # the re-plan after the loss breaks
        yield [(1, WorkerLost("killed by the test"))]

    fake.play(script())
    with pytest.raises(dz.WorkerLostError, match=r"lost fake worker 1: killed by the test; re-planning the group "
                                                 r"failed: KeyError") as info:
        list(s.run([(ds, list)], lambda: 1))
    fake.finish()
    assert isinstance(info.value.__cause__, KeyError)
    s.planner.plan = real_plan  # type: ignore[method-assign]
    fake.take()
    assert state(s) == idle(live=[0])


def test_sending_to_a_worker_that_died_since_the_last_poll_is_not_an_error(no_orphans):
    """The repro's race, made deterministic: a worker dies after the driver's last poll, and the driver
    sends to it twice (an ABORT, then the re-planned LAUNCH). The first write fails and the hub drops
    the connection; the second must be a no-op too (it once raised KeyError), and the next poll
    reports the loss, once."""
    from drizzle_local import LocalTransport

    from drizzle_core.protocol import messages as M

    transport = LocalTransport(workers=1)
    transport.start()
    try:
        [name] = transport.worker_names
        pid = int(name.rsplit("pid ", 1)[1].rstrip(")"))
        os.kill(pid, signal.SIGKILL)
        assert wait_dead([pid]) == []
        for _ in range(3):
            transport.send(0, (M.DROP, []))  # no poll in between: the hub learns of the death by writing
        events: list = []
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            events = transport.poll(0.05)
        assert [(w, type(e)) for w, e in events] == [(0, WorkerLost)]
        assert transport.send(0, (M.DROP, [])) == 0
        assert transport.poll(0.05) == []  # reported once
    finally:
        transport.close()
