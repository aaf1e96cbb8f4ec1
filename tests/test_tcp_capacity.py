"""tcp: capacity comes back (add_worker, replacement of daemons the driver started), epochs, loss detection.

What the transport notices, and what these tests pin down:

* a daemon killed with kill -9: at once (its kernel closes the sockets); one
  the driver started is replaced in its slot (next epoch), one it was given
  is not, and when it restarts at the same address it is added again;
* a host that vanishes without closing its sockets: TCP keepalive, within
  about idle + interval * count seconds (the network-namespace test pulls
  a worker's link down mid-group);
* a worker that is alive but stopped (SIGSTOP): NOT noticed — its kernel
  answers the keepalive probes — and so it is not counted as lost: it
  carries on when continued.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from support import wait_all_live, worker_pids
from test_tcp import SECRET, Daemon, netns_workers

import drizzle_core as dz

pytestmark = pytest.mark.timeout(90)


def _pid(it):
    return [os.getpid()]


def _slow_pid(x):
    time.sleep(0.1)
    return os.getpid()


def _shuffle_ok(ctx: dz.Context) -> None:
    """A shuffle across every live worker (worker to worker connections, made lazily) gives the right sums."""
    n = len(ctx.live_workers)
    out = dict(ctx.parallelize(range(200), 2 * n).map(lambda x: (x % 5, x)).reduce_by_key(lambda a, b: a + b, n)
               .collect())
    assert out == {k: sum(range(k, 200, 5)) for k in range(5)}


def _names_pid(name: str) -> int:
    return int(name.rsplit("pid ", 1)[1].rstrip(")"))


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _session_pid(name: str, daemon: Daemon) -> int:
    """The pid a worker's name gives: its session process, a child of the daemon (which runs no task)."""
    assert name.startswith("tcp worker ") and f"({daemon.address}, pid " in name, name
    pid = _names_pid(name)
    assert pid != daemon.proc.pid and _parent_of(pid) == daemon.proc.pid, (name, daemon.proc.pid)
    return pid


def test_an_added_daemon_takes_tasks_from_the_next_group(tmp_path, no_orphans):
    daemon = Daemon(tmp_path)
    try:
        with dz.Context(transport="tcp", workers=1, secret=SECRET) as ctx:
            first = worker_pids(ctx)[0]
            ds = ctx.parallelize(range(4), 2)
            jobs = [(ds.map(_slow_pid), list)] * 6
            seen = []
            for k, result in enumerate(ctx.iter_jobs(jobs, group_size=2)):
                seen.append({p for part in result for p in part})
                if k == 0:  # mid-group: it joins at the next group boundary
                    name = ctx.add_worker(daemon.address)
                    assert name.startswith("tcp worker 1 ")
                    added = _session_pid(name, daemon)
                    assert len(ctx.live_workers) == 2
            assert seen[:2] == [{first}, {first}]          # the group in flight keeps its plan
            # so does the group pipelined behind it, if it was launched before the worker came
            assert seen[2] == seen[3] and seen[2] in ({first}, {first, added})
            assert all(s == {first, added} for s in seen[4:])
            _shuffle_ok(ctx)
            assert set(worker_pids(ctx)) == {first, added}
        # the daemon we were given outlives the driver, free for the next one
        assert daemon.proc.poll() is None
        with dz.Context(transport="tcp", workers=[daemon.address], secret=SECRET) as ctx:
            assert ctx.parallelize(range(10), 2).sum() == 45
    finally:
        daemon.close()


def test_add_worker_errors_name_the_address(tmp_path, no_orphans):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{s.getsockname()[1]}"
    with dz.Context(transport="tcp", workers=1, secret=SECRET) as ctx:
        with pytest.raises(dz.TransportError, match=f"connection refused.*{nobody}"):
            ctx.add_worker(nobody)
        with pytest.raises(ValueError, match="host:port"):
            ctx.add_worker()
        assert len(ctx.live_workers) == 1 and ctx.num_workers == 1
        assert ctx.parallelize(range(10), 2).sum() == 45
    daemon = Daemon(tmp_path)  # a daemon with another secret is refused, and nothing changes
    try:
        with dz.Context(transport="tcp", workers=1, secret="another-secret") as ctx:
            with pytest.raises(dz.TransportError, match="authentication failed"):
                ctx.add_worker(daemon.address)
            assert ctx.num_workers == 1
    finally:
        daemon.close()


def test_a_killed_daemon_started_by_the_driver_is_replaced(no_orphans):
    with dz.Context(transport="tcp", workers=2) as ctx:
        pids = worker_pids(ctx)
        name1 = ctx.workers[1]
        state = ctx.parallelize([0, 0], 2).cache()
        jobs = []
        for _ in range(6):
            state = state.zip_partitions(ctx.parallelize([1, 1], 2).map(lambda x: time.sleep(0.1) or x),
                                         lambda a, b: [a[0] + next(iter(b))]).cache()
            jobs.append((state, list))
        timer = threading.Timer(0.3, os.kill, (pids[1], signal.SIGKILL))
        timer.start()
        assert ctx.run_jobs(jobs, group_size=6) == [[[i], [i]] for i in range(1, 7)]
        timer.join()
        assert ctx.metrics[-1].recoveries == 1
        wait_all_live(ctx)  # the launcher starts the replacement in the background; it joins from a poll
        new = worker_pids(ctx)
        assert new[0] == pids[0] and new[1] != pids[1]
        assert ctx.workers[1] != name1 and _names_pid(ctx.workers[1]) == new[1]
        _shuffle_ok(ctx)  # the survivor reaches the replacement (new address, new epoch)
        # both ends of the survivor <-> replacement connections know the replacement is incarnation 1
        hubs = [p[0] for p in ctx.parallelize(range(2), 2).map_partitions(_hub_epochs).glom()]
        assert hubs[0]["expected"].get(1) == 1 and {e for p, e in hubs[0]["conns"] if p == 1} == {1}
        assert {e for p, e in hubs[1]["conns"] if p == 0} == {0}
        # and again, between jobs this time (noticed before the next group is planned)
        os.kill(new[1], signal.SIGKILL)
        time.sleep(0.2)
        _shuffle_ok(ctx)
        wait_all_live(ctx)
        assert new[1] not in worker_pids(ctx)
        procs = list(ctx._transport.launcher.procs.values())
    assert all(p.poll() is not None for p in procs)


def test_a_daemon_restarted_at_the_same_address_is_added_again(tmp_path, no_orphans):
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first = Daemon(tmp_path / "1")
    second = None
    try:
        with dz.Context(transport="tcp", workers=1, secret=SECRET) as ctx:
            ctx.add_worker(first.address)
            _shuffle_ok(ctx)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=5)
            # lost between jobs: not replaced (the driver did not start it); worker 0 carries on
            assert ctx.parallelize(range(10), 4).sum() == 45
            assert len(ctx.live_workers) == 1
            second = Daemon(tmp_path / "2", "--listen", first.address)
            assert second.address == first.address
            name = ctx.add_worker(second.address)
            assert name.startswith("tcp worker 2 ")
            added = _session_pid(name, second)
            assert [_names_pid(n) for n in ctx.live_workers][1] == added
            _shuffle_ok(ctx)
            assert added in {p[0] for p in ctx.parallelize(range(6), 6).map_partitions(_pid).glom()}
    finally:
        first.close()
        if second is not None:
            second.close()


def test_keepalive_is_on_for_driver_and_worker_connections(no_orphans):
    with dz.Context(transport="tcp", workers=2, keepalive=(3, 2, 4)) as ctx:
        _shuffle_ok(ctx)  # so that the workers are connected to each other too
        driver = [c.sock for c in ctx._transport._hub._conns]
        assert len(driver) == 2 and all(_keepalive(s) == (1, 3, 2, 4) for s in driver)
        on_workers = ctx.parallelize(range(2), 2).map_partitions(_worker_keepalive).glom()
        for settings in on_workers:  # the driver's connection and the other worker's (one or two)
            assert 2 <= len(settings) <= 3 and set(settings) == {(1, 3, 2, 4)}
    with dz.Context(transport="tcp", workers=1, keepalive=None) as ctx:
        assert [_keepalive(c.sock)[0] for c in ctx._transport._hub._conns] == [0]
    with pytest.raises(ValueError, match="keepalive"):
        dz.Context(transport="tcp", workers=1, keepalive=(0, 1, 1))


def _hub_epochs(it):
    """In a worker: its session Hub's expected incarnations and (peer, epoch) of its peer connections."""
    import gc

    from drizzle_core.transport import Hub

    hub = next(h for h in gc.get_objects() if isinstance(h, Hub) and h._conns)
    return [{"expected": dict(hub._expected),
             "conns": sorted((c.peer, c.epoch) for c in hub._conns if isinstance(c.peer, int) and c.peer >= 0)}]


def _keepalive(sock: socket.socket) -> tuple[int, int, int, int]:
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            *(sock.getsockopt(socket.IPPROTO_TCP, o) for o in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL,
                                                                socket.TCP_KEEPCNT)))


def _worker_keepalive(it):
    import gc
    import socket as s

    out = []
    for obj in gc.get_objects():
        if isinstance(obj, s.socket) and obj.fileno() >= 0 and obj.family == s.AF_INET \
                and obj.type == s.SOCK_STREAM:
            try:
                obj.getpeername()
            except OSError:
                continue  # the listener
            out.append(_keepalive(obj))
    return out


def test_a_stopped_worker_is_not_lost_it_carries_on_when_continued(no_orphans):
    """SIGSTOP: the kernel still answers keepalive probes, so a paused worker (a debugger, a long
    swap-in) is not declared lost however short the keepalive; the group waits for it."""
    with dz.Context(transport="tcp", workers=2, keepalive=(1, 1, 1)) as ctx:
        pids = worker_pids(ctx)
        os.kill(pids[1], signal.SIGSTOP)
        timer = threading.Timer(3.0, os.kill, (pids[1], signal.SIGCONT))  # > 3x the keepalive time
        timer.start()
        try:
            t = time.monotonic()
            assert ctx.parallelize(range(100), 4).map(lambda x: x * 2).sum() == 9900
            assert time.monotonic() - t >= 2.5
        finally:
            timer.cancel()
            os.kill(pids[1], signal.SIGCONT)
        assert ctx.metrics[-1].recoveries == 0 and worker_pids(ctx) == pids


_VANISH_DRIVER = """
import json, logging, os, subprocess, sys, threading, time
import drizzle_core as dz

lost = []
class Seen(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("lost "):
            lost.append((time.monotonic(), record.getMessage()))
logging.getLogger("drizzle.scheduler").addHandler(Seen())

def slow(x):
    time.sleep(0.05)
    return x

namespace, addresses = sys.argv[1], sys.argv[2:]
with dz.Context(transport="tcp", workers=addresses, keepalive=(1, 1, 2)) as ctx:
    assert ctx.parallelize(range(4), 2).sum() == 6
    cut = []
    def pull_the_cable():
        subprocess.run(["ip", "-n", namespace, "link", "set", "eth0", "down"], check=True)
        cut.append(time.monotonic())
    threading.Timer(0.5, pull_the_cable).start()
    t = time.monotonic()
    out = ctx.run_jobs([(ctx.parallelize(range(8), 2).map(slow), sum)] * 8, group_size=8)
    print(json.dumps({"out": out, "wall": time.monotonic() - t, "detected_after": lost[0][0] - cut[0],
                      "reason": lost[0][1], "recoveries": ctx.metrics[-1].recoveries,
                      "live": ctx.live_workers}))
"""


def test_a_vanished_host_is_lost_within_the_keepalive_time(tmp_path, no_orphans):
    """A worker's network link goes down mid-group (nothing is closed: the host just vanishes); the
    driver's keepalive (1 s idle, 1 s interval, 2 probes) notices it within a few seconds and the
    group finishes on the survivor."""
    with netns_workers("--keepalive", "1,1,2") as (net, env, addresses):
        script = tmp_path / "driver.py"
        script.write_text(_VANISH_DRIVER)
        run = subprocess.run(["ip", "netns", "exec", net.ns("drv"), sys.executable, str(script), net.ns("b"),
                              *addresses], capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        assert result["out"] == [[6, 22]] * 8
        assert result["recoveries"] == 1
        assert "10.200.0.3" in result["reason"] and "keepalive" in result["reason"], result["reason"]
        assert result["detected_after"] < 5.0, result  # about idle + interval * count = 3 s after the last byte
        assert len(result["live"]) == 1 and "10.200.0.2" in result["live"][0]
