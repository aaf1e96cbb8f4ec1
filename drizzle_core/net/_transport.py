"""The transport interface: what a plugin implements, and nothing about scheduling.

A transport starts (or connects to) workers, moves messages from the driver
to a worker and back, and reports a worker it has lost. Worker-to-worker
messages travel inside the transport too, but the driver never sees them.
On the worker side a transport feeds messages to a
:class:`~drizzle_core.transport.WorkerRuntime` and gives it a ``send``
function; the runtime (shared by every transport) does all the scheduling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


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
