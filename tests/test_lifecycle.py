"""No orphans: Ctrl-C and kill -9 of the driver end every worker."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest
from support import kill_alive, wait_dead

pytestmark = pytest.mark.timeout(120)

DRIVER = textwrap.dedent("""
    import os, sys, time
    import drizzle_core as dz
    with dz.Context(transport=sys.argv[1], workers=2) as ctx:
        pids = [p[0] for p in ctx.parallelize(range(2), 2).map_partitions(lambda it: [os.getpid()]).glom()]
        print(" ".join(map(str, pids)), flush=True)
        try:
            ctx.parallelize(range(4), 4).map(lambda x: time.sleep(60)).collect()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
""")


def _start_driver(transport):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, transport], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in proc.stdout.readline().split()]
    assert len(pids) == 2
    time.sleep(0.3)  # the long job is running
    return proc, pids


@pytest.mark.parametrize("transport", ["local"])
def test_ctrl_c_in_the_driver_ends_every_worker(transport):
    proc, pids = _start_driver(transport)
    try:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert "interrupted" in out
        assert proc.returncode != 0
        assert wait_dead(pids) == []
    finally:
        proc.kill()
        kill_alive(pids)


@pytest.mark.parametrize("transport", ["local"])
def test_driver_killed_with_kill_9_leaves_no_worker(transport):
    proc, pids = _start_driver(transport)
    try:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        assert wait_dead(pids) == []
    finally:
        kill_alive(pids)
