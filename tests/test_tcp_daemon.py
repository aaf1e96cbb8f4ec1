"""The ``drizzle worker`` daemon against hostile or unlucky clients (issue 11).

* idle unauthenticated connections, more than every bound, do not lock the
  driver out; thousands of refused connections write a bounded log;
* a driver that dies mid-task frees the daemon at once (its session process
  is killed), and back-to-back drivers are never refused as busy;
* no session process outlives the daemon.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import child_pids
from support import wait_dead
from test_tcp import SECRET, Daemon, _env

import drizzle_core as dz

pytestmark = pytest.mark.timeout(90)


def _job(address: str) -> int:
    with dz.Context(transport="tcp", workers=[address], secret=SECRET) as ctx:
        return ctx.parallelize(range(10), 2).map(lambda x: x * 2).sum()


def test_idle_unauthenticated_connections_do_not_lock_the_driver_out(tmp_path):
    """200 idle connections from the driver's own address (over the 16 per source and the 64 in all)."""
    daemon = Daemon(tmp_path, "--preauth-timeout", "30")  # idle ones would not time out during the test
    idle = []
    try:
        idle = [socket.create_connection((daemon.host, daemon.port), timeout=5) for _ in range(200)]
        time.sleep(0.3)  # all of them accepted and waiting in the daemon
        assert _job(daemon.address) == 90
        assert _job(daemon.address) == 90
        log = "\n".join(daemon.lines())
        assert "evicted" in log and "Traceback" not in log
    finally:
        for s in idle:
            s.close()
        daemon.close()


def test_thousands_of_refused_connections_write_a_bounded_log(tmp_path):
    """At most 20 lines per window, then one summary per window counting the rest by reason."""
    window, burst = 3.0, 20
    daemon = Daemon(tmp_path, "--refusal-log-window", str(window))
    n = 1000
    try:
        started = time.monotonic()
        for _ in range(n):
            with socket.create_connection((daemon.host, daemon.port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 60)  # refused as garbage
        assert _job(daemon.address) == 90
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # every refusal counted, one way or the other
            lines = daemon.lines()
            single = sum(1 for line in lines if "refused connection from" in line or "dropped connection" in line)
            summed = sum(int(m.group(1)) for line in lines if (m := re.search(r"(\d+) more connections", line)))
            if single + summed == n:
                break
            time.sleep(0.2)
        assert single + summed == n, (single, summed, lines[-3:])
        windows = (time.monotonic() - started) / window + 2
        assert len(lines) <= windows * (burst + 1) < n / 3, (len(lines), windows)  # one line each before
        assert any("not logged one by one" in line and "garbage" in line for line in lines)
    finally:
        daemon.close()


_SLOW_DRIVER = """
import os, sys, time
import drizzle_core as dz

MARKER = sys.argv[2]  # a global: it travels with the task (the worker's own sys.argv is the daemon's)

def task(it):
    with open(MARKER, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    return [0]

with dz.Context(transport="tcp", workers=[sys.argv[1]], secret=%r) as ctx:
    ctx.parallelize(range(1), 1).map_partitions(task).collect()
"""


def test_a_driver_killed_mid_task_frees_the_daemon_at_once(tmp_path):
    daemon = Daemon(tmp_path)
    script, marker = tmp_path / "driver.py", tmp_path / "task-pid"
    script.write_text(_SLOW_DRIVER % SECRET)
    driver = subprocess.Popen([sys.executable, str(script), daemon.address, str(marker)], env=_env())
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        task_pid = int(marker.read_text())  # the 60 s task runs, in the daemon's session process
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        assert _job(daemon.address) == 90  # the next driver is served, not refused as busy for a minute
        assert wait_dead([task_pid], timeout=5) == []  # the departed driver's task was cancelled
        assert any("dropped the session" in line and "without STOP" in line for line in daemon.lines())
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        daemon.close()


def test_back_to_back_drivers_all_get_in(tmp_path):
    daemon = Daemon(tmp_path)
    try:
        assert [_job(daemon.address) for _ in range(20)] == [90] * 20
        assert daemon.lines() == []  # no busy refusal, no dropped session
    finally:
        daemon.close()


def test_no_session_process_outlives_the_daemon(tmp_path):
    daemon = Daemon(tmp_path)
    try:
        with dz.Context(transport="tcp", workers=[daemon.address], secret=SECRET) as ctx:
            assert ctx.parallelize(range(10), 2).sum() == 45
            children = child_pids(daemon.proc.pid)  # the session's process and the standby
            assert len(children) >= 1
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(timeout=5)
            assert wait_dead(children, timeout=5) == []
            with pytest.raises(dz.DrizzleError):
                ctx.parallelize(range(10), 2).sum()
    finally:
        daemon.close()


def test_a_task_that_ends_its_process_ends_only_its_session(tmp_path):
    """os._exit in a task takes the session process, not the daemon: the next driver is served."""
    daemon = Daemon(tmp_path)
    try:
        with dz.Context(transport="tcp", workers=[daemon.address], secret=SECRET) as ctx:
            with pytest.raises(dz.DrizzleError) as info:
                ctx.parallelize(range(2), 2).map(lambda x: os._exit(7)).collect()
            assert daemon.address in str(info.value)
        assert daemon.proc.poll() is None
        assert _job(daemon.address) == 90
        assert any("exited with status 7" in line for line in daemon.lines())
    finally:
        daemon.close()
