"""The host task: what runs on a Dask worker for one Drizzle worker (one incarnation of a slot).

It is a long-running Dask task (``DaskLauncher.launch`` submits it). It
leaves the worker's thread pool at once (``secede``): it only waits on its
child, and holding a thread slot would starve the user's own Dask work on
that worker (``from_dask`` persists collections on the same workers; with
``--nthreads 1`` a held slot deadlocks it). The scheduler then counts it as
long-running, not against the worker's threads.

The daemon is a child *process* of the Dask worker process
(``drizzle_tcp.start_daemon``, listening on the worker's host, port 0,
dying with this process by parent-death signal), not a thread in it: as a
thread it shared the GIL with Dask's event loop and ran 1.5-2.5x slower
(measured on this 2-core machine with distributed 2026.8).

What the task tells the driver goes as worker events on the session's topic
(``Worker.log_event``; the driver subscribed before submitting): ``started``
(address, pid, the Dask worker it landed on: ``allow_other_workers`` may put
it elsewhere than asked), ``failed`` (the daemon could not start) and
``exited`` (its exit status). The task returns the daemon's exit status.

``stop(key)`` is what the driver runs on the worker (``Client.run``) to end
a daemon now: a fence, a duplicate run. ``stop_session(prefix)`` ends every
daemon of a session at its close, including one that a rerun by Dask (of a
task whose worker died) is starting right then: the prefix is remembered,
and a host task of a stopped session ends its daemon as soon as it has one.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any

from drizzle_tcp import DaemonSpec, start_daemon

_lock = threading.Lock()
#: host task key -> its daemon, in this Dask worker process (under ``_lock``: task threads add, ``stop`` reads)
_daemons: dict[str, subprocess.Popen[bytes]] = {}
#: key prefixes of sessions that closed (under ``_lock``): their late host tasks stop at once
_stopped: set[str] = set()


def host(spec: DaemonSpec, topic: str, key: str, index: int, epoch: int, start_timeout: float) -> int:
    """Run one daemon as this worker process's child until it exits; return its exit status."""
    from distributed import get_worker, secede
    from distributed.comm.addressing import get_address_host

    worker = get_worker()
    secede()
    where = worker.address
    base: dict[str, Any] = {"key": key, "index": index, "epoch": epoch, "worker": where}
    host_ip = get_address_host(where)
    listen = f"[{host_ip}]:0" if ":" in host_ip else f"{host_ip}:0"
    try:
        proc, address = start_daemon(spec, listen, timeout=start_timeout, parent_pid=os.getpid())
    except BaseException as e:
        worker.log_event(topic, {**base, "kind": "failed", "reason": f"{type(e).__name__}: {e}"})
        raise
    with _lock:
        _daemons[key] = proc
        if any(key.startswith(prefix) for prefix in _stopped):
            proc.kill()  # its session closed while it was starting
    worker.log_event(topic, {**base, "kind": "started", "address": address, "pid": proc.pid})
    try:
        code = proc.wait()
    finally:
        with _lock:
            _daemons.pop(key, None)
    worker.log_event(topic, {**base, "kind": "exited", "code": code})
    return code


def stop(key: str) -> bool:
    """Kill the daemon of host task ``key`` if it runs in this worker process (run by ``Client.run``)."""
    with _lock:
        proc = _daemons.get(key)
    if proc is None or proc.poll() is not None:
        return False
    proc.kill()
    return True


def stop_session(prefix: str) -> int:
    """Kill every daemon whose host task key starts with ``prefix`` (one session), now and when they start."""
    with _lock:
        _stopped.add(prefix)
        procs = [p for k, p in _daemons.items() if k.startswith(prefix) and p.poll() is None]
    for proc in procs:
        proc.kill()
    return len(procs)
