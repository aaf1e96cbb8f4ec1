"""A Context made in a thread that then ends keeps its workers (issue 11).

Linux sends a worker's parent-death signal when the *thread* that started it
ends, so a Context made in a short-lived thread used to lose every worker the
moment that thread returned (replacements then hid it behind "lost worker"
warnings). Workers must live as long as the Context, whichever thread made it,
and still die with the driver process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import child_pids
from support import kill_alive, wait_dead, worker_pids

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)

TRANSPORTS = ["local", "tcp"]


def _context_from_a_thread(transport: str) -> tuple[dz.Context, list[int]]:
    """A Context made (and first used) in a thread that has ended by the time this returns."""
    box: dict[str, object] = {}

    def make() -> None:
        ctx = dz.Context(transport=transport, workers=2)
        box["ctx"], box["pids"] = ctx, worker_pids(ctx)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return box["ctx"], box["pids"]  # type: ignore[return-value]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_workers_outlive_the_thread_that_made_the_context(transport, no_orphans):
    ctx, pids = _context_from_a_thread(transport)
    try:
        time.sleep(0.3)  # a parent-death signal, if one were sent, has been delivered
        for i in range(3):
            ds = ctx.parallelize(range(100), 4).map(lambda x, i=i: x * i)
            assert ds.collect() == [x * i for x in range(100)]
            sums = ctx.parallelize(range(50), 2).map(lambda x: (x % 5, x)).reduce_by_key(lambda a, b: a + b)
            assert sorted(sums.collect()) == [(k, sum(range(k, 50, 5))) for k in range(5)]
        # the same processes served every job: none was lost and replaced
        assert worker_pids(ctx) == pids
    finally:
        ctx.stop()
    assert wait_dead(pids) == []


DRIVER = textwrap.dedent("""
    import os, sys, threading, time
    import drizzle_core as dz
    box = {}
    def make():
        box["ctx"] = dz.Context(transport=sys.argv[1], workers=2)
    t = threading.Thread(target=make)
    t.start(); t.join()
    ctx = box["ctx"]
    pids = [p[0] for p in ctx.parallelize(range(2), 2).map_partitions(lambda it: [os.getpid()]).glom()]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_driver_killed_with_kill_9_leaves_no_worker_of_a_thread_made_context(transport):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, transport], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2
        pids += sorted(child_pids(proc.pid) - set(pids))  # tcp: the daemons, parents of the session processes
        proc.kill()
        proc.wait(timeout=10)
        assert wait_dead(pids) == []
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        kill_alive(pids)
