"""The scheduler plugin: tells the driver, on the session's topic, which Dask workers come and go.

The scheduler runs ``remove_worker`` hooks as soon as it drops a worker (its
comm closed, or heartbeats stopped): 7-15 ms after a SIGKILL here, usually
before the driver's socket to the daemon that died with it has been read.
The driver turns ``worker-removed`` into ``Lost`` for the Drizzle workers
hosted there, and ``worker-added`` into a place for replacements (a nanny
restarts a worker at a new address).

This module needs only ``distributed``: the launcher ships the class to the
scheduler by value (cloudpickle), so a scheduler without drizzle installed
can run it. The plugin removes itself when the client that registered it
disconnects (a driver that died), so nothing of a session stays on the
scheduler.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin


class WorkerWatch(SchedulerPlugin):
    """Publishes worker arrivals and departures to ``topic``; leaves with the client ``client``."""

    def __init__(self, name: str, topic: str, client: str) -> None:
        self.name = name
        self.topic = topic
        self.client = client

    def add_worker(self, scheduler: Any, worker: str) -> None:
        scheduler.log_event(self.topic, {"kind": "worker-added", "worker": worker})

    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str, **kwargs: Any) -> None:
        scheduler.log_event(self.topic, {"kind": "worker-removed", "worker": worker})

    def remove_client(self, scheduler: Any, client: str) -> None:
        if client == self.client and self.name in scheduler.plugins:
            scheduler.remove_plugin(self.name)
