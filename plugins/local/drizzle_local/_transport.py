"""Driver side of the ``local`` transport: start worker processes, talk over Unix sockets.

Every worker, added or replacement, starts from one environment
(``worker_env``, made once in :meth:`LocalTransport.start`), so all run with
the same PYTHONHASHSEED and keys that ``portable_hash`` leaves to Python's
``hash`` still meet their equals in one reducer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from drizzle_core.transport import (
    DRIVER,
    STOP,
    Disconnected,
    Hub,
    Transport,
    TransportError,
    WorkerJoined,
    WorkerLost,
    describe_exit,
    worker_env,
)

from . import _hello

log = logging.getLogger("drizzle.local")

START_TIMEOUT = 60.0


class LocalTransport(Transport):
    """``workers`` processes on this host; see the package docstring."""

    name = "local"

    def __init__(self, workers: int | None = None, *, start_timeout: float = START_TIMEOUT,
                 max_frame: int | None = None, replace_lost: bool = True) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
            raise ValueError(f"the local transport needs a positive number of workers, got {workers!r}")
        self.num_workers = workers
        self.start_timeout = start_timeout
        self.replace_lost = replace_lost
        self._hub = Hub() if max_frame is None else Hub(max_frame=max_frame)
        self._procs: list[subprocess.Popen] = []
        self._dir: str | None = None
        self._lost: set[int] = set()
        self._starting: dict[int, float] = {}  # replacement worker -> connect deadline
        self._closed = False

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="drizzle-local-")
        env = worker_env()
        try:
            self._env = env
            for i in range(self.num_workers):
                self._procs.append(self._spawn(i, 0))
            deadline = time.monotonic() + self.start_timeout
            for i in range(self.num_workers):
                self._hub.add(self._connect(i, deadline), i)
        except BaseException:
            self.close()
            raise

    def _spawn(self, i: int, epoch: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "drizzle_local._worker_main", str(i), self._dir or "", str(os.getpid()),
             str(epoch)],
            stdin=subprocess.DEVNULL, env=self._env, start_new_session=True,
        )

    def add_worker(self, spec: Any = None) -> int:
        """Start one more worker process; returns its index."""
        if spec is not None:
            raise ValueError(f"the local transport starts its own workers: add_worker() takes no spec, got {spec!r}")
        if self._closed:
            raise TransportError("the transport is closed")
        i = len(self._procs)
        self._procs.append(self._spawn(i, 0))
        self._hub.add(self._connect(i, time.monotonic() + self.start_timeout), i)
        return i

    def replace_worker(self, worker: int, epoch: int) -> bool | None:
        """Start a new process in a lost worker's slot (incarnation ``epoch``)."""
        if self._closed or not self.replace_lost:
            return False
        old = self._procs[worker]
        if old.poll() is None:
            old.kill()
            old.wait()
        path = os.path.join(self._dir or "", f"w{worker}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._procs[worker] = self._spawn(worker, epoch)
        # Python takes ~0.1 s to start: don't hold the recovery for it; poll()
        # connects when the socket appears and reports WorkerJoined.
        self._starting[worker] = time.monotonic() + self.start_timeout
        return None

    def _connect(self, i: int, deadline: float):
        path = os.path.join(self._dir or "", f"w{i}.sock")
        while True:
            code = self._procs[i].poll()
            if code is not None:
                raise TransportError(f"local worker {i} (pid {self._procs[i].pid}) exited while starting "
                                     f"({describe_exit(code)}); its error output is above")
            if os.path.exists(path):
                try:
                    return _hello.connect(path, DRIVER)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TransportError(f"local worker {i} (pid {self._procs[i].pid}) did not start within "
                                     f"{self.start_timeout:.0f}s")
            time.sleep(0.005)

    @property
    def worker_names(self) -> list[str]:
        return [f"local worker {i} (pid {p.pid})" for i, p in enumerate(self._procs)]

    # ------------------------------------------------------------ messages
    def send(self, worker: int, message: Any) -> int:
        if worker in self._lost:
            return 0
        return self._hub.send(worker, message)

    def poll(self, timeout: float | None) -> list[tuple[int, Any]]:
        if self._starting:
            timeout = 0.005 if timeout is None else min(timeout, 0.005)
        events = self._hub.poll(timeout)
        for k, (worker, msg) in enumerate(events):
            if isinstance(msg, Disconnected):
                events[k] = (worker, WorkerLost(self._why_lost(worker, msg)))
                self._lost.add(worker)
        if self._starting:
            events.extend(self._joined())
        return events

    def _joined(self) -> list[tuple[int, Any]]:
        """Connect to replacements whose socket is up; give up on those that died or are late."""
        joined = []
        for worker, deadline in list(self._starting.items()):
            proc = self._procs[worker]
            path = os.path.join(self._dir or "", f"w{worker}.sock")
            if proc.poll() is not None or time.monotonic() > deadline:
                del self._starting[worker]
                log.warning("the replacement for local worker %d did not start (%s)", worker,
                            describe_exit(proc.returncode) if proc.returncode is not None else "timed out")
                continue
            if not os.path.exists(path):
                continue
            try:
                sock = _hello.connect(path, DRIVER)
            except OSError:
                continue
            del self._starting[worker]
            self._hub.add(sock, worker)
            self._lost.discard(worker)
            joined.append((worker, WorkerJoined()))
        return joined

    def _why_lost(self, worker: int, msg: Disconnected) -> str:
        proc = self._procs[worker]
        try:
            code = proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return f"its connection ended ({msg.reason}) but the process is still running"
        return f"the process {describe_exit(code)}"

    @property
    def messages_sent(self) -> int:
        return self._hub.messages_sent

    @property
    def bytes_sent(self) -> int:
        return self._hub.bytes_sent

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for i in range(len(self._procs)):
            if i not in self._lost:
                with contextlib.suppress(OSError, KeyError):
                    self._hub.send(i, (STOP,))
        with contextlib.suppress(Exception):
            self._hub.flush(timeout=1.0)
        deadline = time.monotonic() + 2.0
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._hub.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

