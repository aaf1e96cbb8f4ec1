"""Driver side of the ``local`` transport: start worker processes, talk over Unix sockets.

Every worker, added or replacement, starts from one environment
(``worker_env``, made once in :meth:`LocalTransport.start`), so all run with
the same PYTHONHASHSEED and keys that ``portable_hash`` leaves to Python's
``hash`` still meet their equals in one reducer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

from drizzle_core.transport import (
    DRIVER,
    Disconnected,
    Hub,
    HubTransport,
    TransportError,
    describe_exit,
    spawn_process,
    worker_env,
)

from . import _folders, _hello

START_TIMEOUT = 60.0


class LocalTransport(HubTransport):
    """``workers`` processes on this host; see the package docstring.

    What is local here: processes started by this transport, reached over
    ``DIR/w{i}.{epoch}.sock`` (the worker binds it; its appearing means "ready"),
    named by pid. DIR is this driver's private folder in the temp dir, named after it so that the next local
    transport removes it if this driver is killed before it can (:mod:`._folders`). The rest (sends, losses,
    joins, close) is :class:`~drizzle_core.transport.HubTransport`'s.
    """

    name = "local"

    def __init__(self, workers: int | None = None, *, start_timeout: float = START_TIMEOUT,
                 max_frame: int | None = None, replace_lost: bool = True) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
            raise ValueError(f"the local transport needs a positive number of workers, got {workers!r}")
        super().__init__(Hub() if max_frame is None else Hub(max_frame=max_frame))
        self.num_workers = workers
        self.start_timeout = start_timeout
        self.replace_lost = replace_lost
        self._dir: str | None = None
        self._epochs: list[int] = []  # slot -> incarnation of the process in it (its socket's name)

    # ---------------------------------------------------------------- start
    def _start_workers(self) -> None:
        _folders.remove_orphans()  # those of drivers killed before they could remove theirs
        self._dir = _folders.make_folder()
        self._env = worker_env()
        for i in range(self.num_workers):
            self._procs.append(self._spawn(i, 0))
            self._epochs.append(0)
        deadline = time.monotonic() + self.start_timeout
        for i in range(self.num_workers):
            self._hub.add(self._connect(i, deadline), i)

    def _spawn(self, i: int, epoch: int) -> subprocess.Popen:
        # spawn_process: from the process's spawner thread, so the worker's parent-death signal is tied
        # to the driver process, not to whichever thread (maybe a short-lived one) made the Context
        return spawn_process(
            [sys.executable, "-m", "drizzle_local._worker_main", str(i), self._dir or "", str(os.getpid()),
             str(epoch)],
            stdin=subprocess.DEVNULL, env=self._env, start_new_session=True,
        )

    def _path(self, i: int) -> str:
        return os.path.join(self._dir or "", _hello.socket_name(i, self._epochs[i]))

    def add_worker(self, spec: Any = None) -> int:
        """Start one more worker process; returns its index."""
        if spec is not None:
            raise ValueError(f"the local transport starts its own workers: add_worker() takes no spec, got {spec!r}")
        self._check_open()
        i = len(self._procs)
        self._procs.append(self._spawn(i, 0))
        self._epochs.append(0)
        self._hub.add(self._connect(i, time.monotonic() + self.start_timeout), i)
        self._configure_worker(i)
        return i

    def replace_worker(self, worker: int, epoch: int) -> bool | None:
        """Start a new process in a lost worker's slot (incarnation ``epoch``)."""
        if self._closed or not self.replace_lost:
            return False
        self._kill(self._procs[worker])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(worker))
        self._epochs[worker] = epoch
        self._procs[worker] = self._spawn(worker, epoch)
        # Python takes ~0.1 s to start: don't hold the recovery for it; poll()
        # connects when the socket appears (_try_join) and reports WorkerJoined.
        self._starting[worker] = time.monotonic() + self.start_timeout
        return None

    def _connect(self, i: int, deadline: float) -> socket.socket:
        while True:
            code = self._procs[i].poll()
            if code is not None:
                raise TransportError(f"local worker {i} (pid {self._procs[i].pid}) exited while starting "
                                     f"({describe_exit(code)}); its error output is above")
            sock = self._try_join(i)
            if sock is not None:
                return sock
            if time.monotonic() > deadline:
                raise TransportError(f"local worker {i} (pid {self._procs[i].pid}) did not start within "
                                     f"{self.start_timeout:.0f}s")
            time.sleep(0.005)

    def _try_join(self, worker: int) -> socket.socket | None:
        path = self._path(worker)
        if not os.path.exists(path):
            return None
        try:
            return _hello.connect(path, DRIVER)
        except OSError:
            return None

    @property
    def worker_names(self) -> list[str]:
        return [f"local worker {i} (pid {p.pid})" for i, p in enumerate(self._procs)]

    def _why_lost(self, worker: int, msg: Disconnected) -> str:
        how = self._exit_of(worker)
        if how is None:
            return f"its connection ended ({msg.reason}) but the process is still running"
        return f"the process {how}"

    # ---------------------------------------------------------------- close
    def _cleanup(self) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
