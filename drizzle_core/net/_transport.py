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
    #: set by :meth:`configure` (the Context does, before ``start``)
    worker_timeout: float | None = None
    task_timeout: float | None = None

    def configure(self, *, worker_timeout: float | None = None, task_timeout: float | None = None) -> None:
        """Liveness settings, given before ``start()``: what a transport does with them is its own.

        ``worker_timeout``: declare a worker lost (``WorkerLost``) once it has
        sent nothing for that many seconds while the driver was listening.
        ``task_timeout``: interrupt a task that runs longer. A transport that
        cannot do either keeps the values and ignores them (the default).
        """
        self.worker_timeout = worker_timeout
        self.task_timeout = task_timeout

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
#: heartbeats are sent this many times per worker_timeout (at most once a second): a few may be late
BEATS_PER_TIMEOUT = 5
MAX_HEARTBEAT = 1.0


def heartbeat_interval(worker_timeout: float) -> float:
    """How often workers send a heartbeat when the driver declares them lost after ``worker_timeout`` s."""
    return min(MAX_HEARTBEAT, worker_timeout / BEATS_PER_TIMEOUT)


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
    * liveness (``configure``): every worker gets ``(CONFIG, ...)`` once
      connected, and then sends heartbeats from a thread of its own; ``poll``
      declares lost a worker whose connection has been silent (no byte read,
      so a large frame still arriving counts as life) for ``worker_timeout``
      seconds *while the driver was listening*: after a gap between polls
      (the caller's own work between jobs) the clock starts again, since
      what the worker sent meanwhile is only being read now. A silent worker
      is fenced (``_fence``: its process killed when this transport started
      it, the connection closed) before it is reported, so a stopped process
      that wakes up cannot deliver anything late; its replacement is a new
      incarnation, as for a crash.

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
        self._listen_from = 0.0                # when the driver last began listening after a gap
        self._polled_at = 0.0                  # when the last poll returned
        self._next_check = 0.0                 # when to look for silent workers next
        self._adopted_at: dict[int, float] = {}  # worker -> when its connection was configured

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        try:
            self._start_workers()
            for worker in self._hub.peers():
                if worker != M.DRIVER:
                    self._configure_worker(worker)
        except BaseException:
            self.close()
            raise

    def _configure_worker(self, worker: int) -> None:
        """Send ``worker`` (just connected) the liveness settings; its silence is timed from now."""
        self._adopted_at[worker] = time.monotonic()
        wt, tt = self.worker_timeout, self.task_timeout
        if wt is None and tt is None:
            return
        with contextlib.suppress(KeyError):
            self._hub.send(worker, (M.CONFIG, {"heartbeat": None if wt is None else heartbeat_interval(wt),
                                               "task_timeout": tt}))

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

    def _adopt(self, worker: int, sock: socket.socket, auth: Any = None) -> None:
        """Make ``sock`` (handshaken) the connection to ``worker``: new, or its slot's replacement.
        ``auth``: its frame MAC state (``Hub.add``), when the handshake made one."""
        self._hub.disconnect(worker)  # nothing should be left; never mistake it for the new one
        self._hub.add(sock, worker, auth=auth)
        self._lost.discard(worker)
        self._configure_worker(worker)

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
        wt = self.worker_timeout
        if wt is not None:
            now = time.monotonic()
            if now - self._polled_at > wt / 2:
                self._listen_from = now  # the driver was away: silence is timed from now
            timeout = wt / 4 if timeout is None else min(timeout, wt / 4)
        events = self._hub.poll(timeout)
        beats = 0
        stale = False
        for k, (worker, msg) in enumerate(events):
            if isinstance(msg, Disconnected):
                if worker in self._lost:  # already reported (fenced, or lost by the launcher's news first)
                    stale = True
                    continue
                events[k] = (worker, WorkerLost(self._why_lost(worker, msg)))
                self._lost.add(worker)
            elif msg[0] == M.HEARTBEAT:
                beats += 1
        if beats or stale:
            events = [e for e in events if not isinstance(e[1], Disconnected) and (
                type(e[1]) is not tuple or e[1][0] != M.HEARTBEAT)]
        if self._starting:
            events.extend(self._joined())
        if wt is not None:
            self._polled_at = now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + min(0.1, wt / 10)
                events.extend(self._silent(now, wt))
        return events

    def _silent(self, now: float, wt: float) -> list[tuple[int, Any]]:
        """Fence and report the workers that have sent nothing for ``wt`` seconds of listening."""
        lost: list[tuple[int, Any]] = []
        heard = self._hub.heard
        for worker in self._hub.peers():
            if worker == M.DRIVER or worker in self._lost:
                continue
            last = max(heard.get(worker, 0.0), self._listen_from, self._adopted_at.get(worker, 0.0))
            silent = now - last
            if silent <= wt:
                continue
            reason = (f"it sent nothing for {silent:.1f} s (worker_timeout={wt:g} s): the process is hung or "
                      f"stopped, or the network path to it is down")
            logging.getLogger(f"drizzle.{self.name}").warning("%s worker %d: %s; fencing it", self.name, worker,
                                                              reason)
            self._fence(worker)
            self._lost.add(worker)
            lost.append((worker, WorkerLost(reason)))
        return lost

    def _fence(self, worker: int) -> None:
        """Make sure a worker declared lost while silent can do nothing more: kill its process, close its connection.

        The process is killed when this transport started it (SIGKILL ends a
        stopped process too); a worker it only reached (a remote daemon) has
        its connection closed, which ends that driver's session there, and
        its replacement is a new incarnation whose peers refuse the old one.
        """
        if worker < len(self._procs) and self._procs[worker].poll() is None:
            with contextlib.suppress(OSError):
                self._procs[worker].kill()
        self._hub.disconnect(worker)

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

