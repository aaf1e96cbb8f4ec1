"""The ``local`` launcher: worker daemons as child processes of the driver, on this host.

What ``Context(transport="tcp", workers=N)`` uses: each daemon is
``python -m drizzle_tcp._worker_main`` listening on ``host`` (loopback by
default), started without waiting (``launch``) and reported as
:class:`Started` once it prints its address; it dies with the driver
process (parent-death signal) and leaves after its one session.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time

from drizzle_core.transport import describe_exit, spawn_process

from ._launcher import DaemonSpec, Failed, Launcher, LauncherEvent, Started, address_of, daemon_command

START_TIMEOUT = 60.0
#: close(): how long daemons told STOP may take to exit before they are killed
CLOSE_REAP = 2.0


class LocalLauncher(Launcher):
    """Daemons started as child processes of the driver (see the module docstring)."""

    name = "local"

    def __init__(self, host: str = "127.0.0.1", *, start_timeout: float = START_TIMEOUT) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self.procs: dict[int, subprocess.Popen[bytes]] = {}               # slot -> its current daemon
        self._starting: dict[int, tuple[int, subprocess.Popen[bytes], float]] = {}  # slot -> (epoch, proc, deadline)
        self._spec: DaemonSpec | None = None
        self._closed = False

    def open(self, spec: DaemonSpec) -> None:
        self._spec = spec

    def launch(self, index: int, epoch: int) -> None:
        assert self._spec is not None, "open() first"
        old = self.procs.pop(index, None)
        if old is not None:
            _end(old)
        argv, env = daemon_command(self._spec, f"{self.host}:0", os.getpid())
        # spawn_process, not Popen: the daemon's parent-death signal follows this process, not this thread
        proc = spawn_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.procs[index] = proc
        self._starting[index] = (epoch, proc, time.monotonic() + self.start_timeout)

    def poll(self) -> list[LauncherEvent]:
        events: list[LauncherEvent] = []
        for index, (epoch, proc, deadline) in list(self._starting.items()):
            assert proc.stdout is not None
            if select.select([proc.stdout], [], [], 0)[0]:
                del self._starting[index]
                address = address_of(proc)
                if address is not None:
                    events.append(Started(index, epoch, address, proc.pid))
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                how = describe_exit(proc.returncode) if proc.returncode is not None else "printed no address"
                events.append(Failed(index, epoch, f"the daemon (pid {proc.pid}) {how} while starting; its error "
                                                   f"output is above"))
            elif time.monotonic() > deadline:
                del self._starting[index]
                _end(proc)
                events.append(Failed(index, epoch, f"the daemon (pid {proc.pid}) did not start within "
                                                   f"{self.start_timeout:.0f}s"))
        return events

    def exit_of(self, index: int, timeout: float = 1.0) -> str | None:
        proc = self.procs.get(index)
        if proc is None:
            return None
        try:
            return describe_exit(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            return None

    def kill(self, index: int) -> None:
        proc = self.procs.get(index)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _epoch, proc, _deadline in self._starting.values():
            _end(proc)  # not up yet: nobody will connect to it
        deadline = time.monotonic() + CLOSE_REAP
        for proc in self.procs.values():
            if proc.stdout is not None and not proc.stdout.closed:
                proc.stdout.close()
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _end(proc)
        self._starting.clear()


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a daemon that is no longer wanted."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    proc.wait()
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()
