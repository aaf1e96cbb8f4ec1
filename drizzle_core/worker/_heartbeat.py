"""A worker's liveness thread: heartbeats to the driver, and the task timeout.

Why a thread: the runtime runs tasks on the thread that polls the
connections, so while a task runs for minutes nothing is read or written
there. A worker that only answered between tasks would look hung during
every long task. This thread sends ``(HEARTBEAT,)`` every ``interval``
seconds whatever the task does (the Hub serializes its writes with the
polling thread's), so the driver can tell a long task from a stopped
process (SIGSTOP, a frozen VM, a lost network path): only the latter goes
silent.

The same thread watches the running task (``WorkerRuntime.running``: the
task and when it started). One that runs past ``task_timeout`` is
interrupted: a signal to the task's thread when that is the main thread (a
``time.sleep``, a blocking read, a Python loop: all give way to it), else an
asynchronous exception; either way :class:`~drizzle_core.TaskTimeout` is
raised inside the task, which fails like any error of the task (a
``TaskTimeoutError`` on the driver, not retried) and the worker goes on.

A task that does not give way (C code that never returns to the
interpreter, or that blocks the signal) is reported by this thread itself
after ``STUCK_GRACE`` seconds, and then ``on_stuck`` runs: the local worker
exits so that a fresh process takes its slot; with no ``on_stuck`` the
heartbeats stop and the driver declares the worker lost after its
``worker_timeout``. Either way the job gets an answer and no slot stays
wedged.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from .._errors import TaskTimeout
from ..protocol import _messages as M

log = logging.getLogger("drizzle.worker")

#: seconds a timed-out task may take to give way to the interrupt before the thread reports it
STUCK_GRACE = 2.0
#: the signal that interrupts a task on the main thread (SIGUSR1 is the local worker's "describe")
INTERRUPT_SIGNAL = signal.SIGUSR2
_HEARTBEAT_MSG = (M.HEARTBEAT,)


class Liveness:
    """The thread of one :class:`WorkerRuntime` (see the module docstring); started by ``configure``."""

    def __init__(self, runtime: Any, send: Callable[[int, Any], Any],
                 on_stuck: Callable[[], None] | None = None) -> None:
        self.runtime = runtime
        self._send = send
        self.on_stuck = on_stuck
        self.interval: float | None = None
        self.task_timeout: float | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._serve_ident = threading.get_ident()
        self._interrupted: Any = None     # the running record already interrupted
        self._interrupted_at = 0.0
        self._reported: Any = None        # the running record reported as stuck
        self._silent = False              # heartbeats stopped (a stuck task, no on_stuck)
        self._handler_installed = False

    def configure(self, interval: float | None, task_timeout: float | None) -> None:
        """Apply the driver's CONFIG (called on the polling thread); start the thread if needed."""
        self.interval = interval
        self.task_timeout = task_timeout
        self._serve_ident = threading.get_ident()
        if task_timeout is not None and not self._handler_installed \
                and self._serve_ident == threading.main_thread().ident:
            signal.signal(INTERRUPT_SIGNAL, self._on_signal)
            self._handler_installed = True
        if (interval is not None or task_timeout is not None) and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="drizzle-liveness", daemon=True)
            self._thread.start()
        self._wake.set()  # a new interval applies now

    def stop(self) -> None:
        """End the thread (the runtime stopped); returns at once."""
        self._wake.set()

    # ---------------------------------------------------------- the thread
    def _tick(self) -> float:
        ticks = [t for t in (self.interval, None if self.task_timeout is None else max(0.01, self.task_timeout / 20))
                 if t is not None]
        return min(ticks) if ticks else 1.0

    def _loop(self) -> None:
        next_beat = 0.0
        while not self.runtime.stopped:
            self._wake.wait(self._tick())
            self._wake.clear()
            if self.runtime.stopped:
                break
            now = time.monotonic()
            if self.interval is not None and now >= next_beat and not self._silent:
                next_beat = now + self.interval
                try:
                    self._send(M.DRIVER, _HEARTBEAT_MSG)
                except Exception as e:  # the driver went away: the polling thread notices and stops
                    log.debug("heartbeat not sent: %s", e)
            if self.task_timeout is not None:
                self._watch(self.task_timeout)

    def _watch(self, limit: float) -> None:
        running = self.runtime.running
        if running is None:
            return
        gs, task, t0 = running
        ran = time.perf_counter() - t0
        if ran < limit:
            return
        if self._interrupted is not running:
            self._interrupted = running
            self._interrupted_at = time.monotonic()
            log.warning("task %d of group %d ran past task_timeout=%g s: interrupting it", task.index, gs.group, limit)
            self._interrupt()
        elif self._reported is not running and time.monotonic() - self._interrupted_at > STUCK_GRACE:
            self._reported = running
            text = (f"the task ran longer than task_timeout={limit:g} s and did not stop when interrupted "
                    f"(for {STUCK_GRACE:g} s); its worker is restarted")
            log.error("task %d of group %d: %s", task.index, gs.group, text)
            try:
                self.runtime.send_failure(gs.group, task.index, task.attempt, text + "\n", TaskTimeout(text))
            except Exception as e:
                log.debug("could not report the stuck task: %s", e)
            if self.on_stuck is not None:
                self.on_stuck()
            else:
                self._silent = True  # the driver declares this worker lost after its worker_timeout

    def _interrupt(self) -> None:
        if self._handler_installed:
            signal.pthread_kill(self._serve_ident, INTERRUPT_SIGNAL)
        else:  # not the main thread: no signal handler there; an asynchronous exception instead
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._serve_ident),
                                                       ctypes.py_object(TaskTimeout))

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        running = self.runtime.running
        if running is not None and running is self._interrupted:
            raise TaskTimeout(f"the task ran longer than task_timeout={self.task_timeout:g} s and was interrupted")

