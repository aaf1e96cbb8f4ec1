"""The transport interface: what a plugin implements, and nothing about scheduling.

A transport starts (or connects to) workers, moves messages from the driver
to a worker and back, and reports a worker it has lost. Worker-to-worker
messages travel inside the transport too, but the driver never sees them.
On the worker side a transport feeds messages to a
:class:`~drizzle_core.transport.WorkerRuntime` and gives it a ``send``
function; the runtime (shared by every transport) does all the scheduling.

:class:`HubTransport` is the driver side of every transport whose workers
are sockets in one :class:`~drizzle_core.net.Hub` (``local``, ``tcp``): what
such transports share, written once; they add only how workers are started
or reached, connected and named. It lives here, not in a module of its own,
because a worker process imports this package too and should load no more
modules than it needs (tests/test_layers.py counts them).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from .._errors import TransportError
from ..protocol import messages as M
from ._hub import Disconnected, Hub
from ._process import describe_exit


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """Event: the transport lost ``worker`` (process died, connection dropped)."""

    reason: str


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    """Event: a worker started by ``replace_worker`` (which returned None) is ready."""


class Transport(ABC):
    """Driver side of a transport. Created by the factory a plugin registers.

    Lifecycle: ``start()`` once, then any number of ``send``/``poll``, then
    ``close()`` (idempotent; must leave no worker process behind).
    """

    #: the name the transport was registered under
    name: str = "?"

    @abstractmethod
    def start(self) -> None:
        """Start or connect to the workers; raise TransportError naming the culprit."""

    @property
    @abstractmethod
    def worker_names(self) -> list[str]:
        """Human names of the workers, by index (used in error messages)."""

    @abstractmethod
    def send(self, worker: int, message: Any) -> int:
        """Queue ``message`` for ``worker`` without blocking on it; return bytes queued."""

    def send_shared(self, workers: list[int], messages: list[Any]) -> int:
        """Send ``messages[i]`` to ``workers[i]``; transports may override to share encoding."""
        return sum(self.send(w, m) for w, m in zip(workers, messages))

    @abstractmethod
    def poll(self, timeout: float | None) -> list[tuple[int, Any]]:
        """Wait up to ``timeout`` seconds; return ``(worker, message)`` pairs.

        A lost worker is reported once as ``(worker, WorkerLost(reason))``.
        """

    @abstractmethod
    def close(self) -> None:
        """Stop every worker this transport started and release its resources."""

    # Optional capacity changes: the defaults say "not supported".
    def replace_worker(self, worker: int, epoch: int) -> bool | None:
        """Start a new worker in lost ``worker``'s slot, incarnation ``epoch``.

        Returns True when it is ready now, None when it is starting (``poll``
        then reports ``(worker, WorkerJoined())``), False when this transport
        cannot replace workers (the default).
        """
        return False

    def add_worker(self, spec: Any = None) -> int:
        """Add a worker (what ``spec`` is depends on the transport: tcp takes an address); its index."""
        raise TypeError(f"the {self.name!r} transport cannot add workers")

    @property
    def messages_sent(self) -> int:
        return 0

    @property
    def bytes_sent(self) -> int:
        return 0


# ------------------------------------------------------------ HubTransport
#: while a replacement starts in the background, poll at least this often (seconds) to notice its socket
JOIN_POLL = 0.005
#: close(): how long queued frames (the STOPs) may take to go out, and how long workers may take to exit
CLOSE_FLUSH = 1.0
CLOSE_REAP = 2.0


class HubTransport(Transport):
    """Driver side of a transport whose workers are sockets in one :class:`Hub`.

    A process transport (``local``, ``tcp``) differs from another only in how
    its workers are started or reached, connected and named: a subclass
    implements ``_start_workers`` (called by ``start``; a failure closes
    everything started so far), ``worker_names`` and ``_why_lost`` and, for
    replacements started in the background, ``_try_join``. What happens once
    a worker's socket is in the hub is the same for all, and is written here:

    * ``send``/``send_shared``: nothing goes to a worker already lost (the
      scheduler hears of the loss from ``poll``; a frame queued into a dead
      connection would vanish). The launch's shared program body is a
      ``PickleBuffer``, so the wire format already sends it out of band without
      copying it per worker.
    * ``poll``: a hub ``Disconnected`` becomes ``WorkerLost(reason)``, once,
      worded by the subclass (``_why_lost``); a replacement started in the
      background (``_starting``) is connected as soon as its subclass says it
      can be (``_try_join``) and reported as ``WorkerJoined``.
    * ``messages_sent``/``bytes_sent``: the hub's counters.
    * ``close``: STOP to every live worker, a bounded flush, then the processes
      this transport started are reaped (killed after 2 s).

    State (the subclass may read all of it, and changes it only through the
    helpers below):

    * ``_hub``: one Hub; peer id = worker index.
    * ``_procs: [Popen]`` — index -> the process in that slot, for the workers
      this transport started (tcp: only with ``workers=N``, so it may be shorter
      than the worker list).
    * ``_lost: {worker}`` — lost and not (yet) replaced.
    * ``_starting: {worker: deadline}`` — replacements starting in the
      background; ``poll`` waits at most 5 ms while there are any, so a new
      worker joins within about that of its socket appearing.
    * ``_closed``: ``close`` ran.

    The per-message path (``send``, ``poll``) is the code the two transports had
    (a set lookup and the hub call). Measured over a fake hub, no I/O, best of
    15 (python 3.11): ``send`` 106 -> 104 ns (local and tcp alike), ``poll`` of
    4 events 554 -> 519 ns (local), 503 -> 528 ns (tcp: the test for
    background joins it did not make before), against a select() of several
    microseconds under it.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lost: set[int] = set()
        self._starting: dict[int, float] = {}  # replacement worker -> connect deadline
        self._closed = False

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        try:
            self._start_workers()
        except BaseException:
            self.close()
            raise

    @abstractmethod
    def _start_workers(self) -> None:
        """Start or reach the first workers and ``_hub.add`` each one's socket."""

    @abstractmethod
    def _why_lost(self, worker: int, msg: Disconnected) -> str:
        """The reason in ``WorkerLost`` for ``worker``, whose connection ended with ``msg``."""

    def _try_join(self, worker: int) -> socket.socket | None:
        """A connected socket to the replacement starting in ``worker``'s slot, or None: not yet."""
        return None

    def _exit_of(self, worker: int, timeout: float = 1.0) -> str | None:
        """How the process this transport started in ``worker``'s slot ended (``describe_exit``).

        None when there is none or it still runs after ``timeout`` seconds (a
        connection can end a moment before its process does).
        """
        if worker >= len(self._procs):
            return None
        try:
            code = self._procs[worker].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return describe_exit(code)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the transport is closed")

    def _adopt(self, worker: int, sock: socket.socket) -> None:
        """Make ``sock`` (handshaken) the connection to ``worker``: new, or its slot's replacement."""
        self._hub.disconnect(worker)  # nothing should be left; never mistake it for the new one
        self._hub.add(sock, worker)
        self._lost.discard(worker)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """End a process that is no longer a worker (a lost one before its slot is refilled) and reap it."""
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    # ------------------------------------------------------------ messages
    def send(self, worker: int, message: Any) -> int:
        if worker in self._lost:
            return 0
        try:
            return self._hub.send(worker, message)
        except KeyError:  # dropped since the last poll: poll reports it as lost
            return 0

    def poll(self, timeout: float | None) -> list[tuple[int, Any]]:
        if self._starting:
            timeout = JOIN_POLL if timeout is None else min(timeout, JOIN_POLL)
        events = self._hub.poll(timeout)
        for k, (worker, msg) in enumerate(events):
            if isinstance(msg, Disconnected):
                events[k] = (worker, WorkerLost(self._why_lost(worker, msg)))
                self._lost.add(worker)
        if self._starting:
            events.extend(self._joined())
        return events

    def _joined(self) -> list[tuple[int, Any]]:
        """Connect to replacements that are up; give up on those that died or are late."""
        joined: list[tuple[int, Any]] = []
        for worker, deadline in list(self._starting.items()):
            proc = self._procs[worker]
            if proc.poll() is not None or time.monotonic() > deadline:
                del self._starting[worker]
                logging.getLogger(f"drizzle.{self.name}").warning(
                    "the replacement for %s worker %d did not start (%s)", self.name, worker,
                    describe_exit(proc.returncode) if proc.returncode is not None else "timed out")
                continue
            sock = self._try_join(worker)
            if sock is None:
                continue
            del self._starting[worker]
            self._adopt(worker, sock)
            joined.append((worker, WorkerJoined()))
        return joined

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
        for i in self._hub.peers():
            if i not in self._lost and i != M.DRIVER:
                with contextlib.suppress(Exception):
                    self._hub.send(i, (M.STOP,))
        with contextlib.suppress(Exception):
            self._hub.flush(timeout=CLOSE_FLUSH)
        # Closing first: a worker that missed its STOP leaves when its driver connection ends.
        self._hub.close()
        deadline = time.monotonic() + CLOSE_REAP
        for proc in self._procs:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None and not pipe.closed:
                    pipe.close()
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        """Release what the subclass holds besides the hub and the processes (called last by ``close``)."""

