"""The ``inline`` transport: workers as objects in the driver's process.

Synchronous and deterministic: ``poll`` runs worker steps until the driver
has something to read. Messages still go through pickling, so a program that
works here does not depend on sharing memory with the driver. For debugging
(set a breakpoint in your function) and for fast scheduler tests.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..hookspecs import hookimpl
from ..net import Transport
from ..protocol import _messages as M
from ..protocol import _wire
from ..worker import WorkerRuntime


class InlineTransport(Transport):
    name = "inline"

    def __init__(self, workers: int | None = None, **options: Any) -> None:
        if options:
            raise TypeError(f"the inline transport takes no options, got {sorted(options)}")
        self.num_workers = workers if workers is not None else (os.cpu_count() or 1)
        self._inbox: list[deque[tuple[int, Any]]] = []
        self._to_driver: list[tuple[int, Any]] = []
        self._runtimes: list[WorkerRuntime] = []
        self._sent = 0

    def configure(self, *, worker_timeout: float | None = None, task_timeout: float | None = None) -> None:
        """Workers here cannot hang apart from the driver (no ``worker_timeout``), nor be interrupted."""
        if task_timeout is not None:
            raise ValueError("the inline transport runs tasks in the calling thread and cannot interrupt them: "
                             "task_timeout needs a transport with worker processes (local, tcp)")
        super().configure(worker_timeout=worker_timeout)

    def start(self) -> None:
        self._inbox = [deque() for _ in range(self.num_workers)]
        self._runtimes = [WorkerRuntime(i, self._sender(i), flush_interval=0.0) for i in range(self.num_workers)]

    def _sender(self, src: int) -> Callable[[int, Any], None]:
        def send(dest: int, msg: Any) -> None:
            msg = _wire.roundtrip(msg)
            if dest == M.DRIVER:
                self._to_driver.append((src, msg))
            else:
                self._inbox[dest].append((src, msg))
        return send

    @property
    def worker_names(self) -> list[str]:
        return [f"inline worker {i}" for i in range(self.num_workers)]

    def send(self, worker: int, message: Any) -> int:
        self._inbox[worker].append((M.DRIVER, _wire.roundtrip(message)))
        self._sent += 1
        return 0

    def poll(self, timeout: float | None) -> list[tuple[int, Any]]:
        progress = True
        while progress and not self._to_driver:
            progress = False
            waits = [w for w in (rt.due_timers() for rt in self._runtimes) if w is not None]
            if waits and not any(rt.ready for rt in self._runtimes) and not any(self._inbox):
                time.sleep(min(waits))  # only timed tasks are left: wait for the first
                progress = True
                continue
            for rt, inbox in zip(self._runtimes, self._inbox):
                while inbox:
                    src, msg = inbox.popleft()
                    rt.handle(src, msg)
                    progress = True
                if rt.ready:
                    rt.run_ready(budget=0.0)
                    progress = True
                rt.flush_results()
        out, self._to_driver = self._to_driver, []
        return out

    def close(self) -> None:
        self._runtimes = []

    @property
    def messages_sent(self) -> int:
        return self._sent


class _InlinePlugin:
    """Registers ``inline`` through the same hook third-party transports use."""

    @hookimpl
    def drizzle_register_transports(self, register: Callable[..., None]) -> None:
        from .._version import __version__

        register("inline", InlineTransport, version=__version__,
                 description="workers as objects in the driver process (synchronous; for debugging)")


inline_plugin = _InlinePlugin()
