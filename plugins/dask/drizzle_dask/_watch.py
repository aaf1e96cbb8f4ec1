"""The scheduler plugin: tells the driver, on the session's topic, which Dask workers come and go.

The scheduler runs ``remove_worker`` hooks as soon as it drops a worker (its
comm closed, or heartbeats stopped): 7-15 ms after a SIGKILL here, usually
before the driver's socket to the daemon that died with it has been read.
The driver turns ``worker-removed`` into ``Lost`` for the Drizzle workers
hosted there, and ``worker-added`` into a place for replacements (a nanny
restarts a worker at a new address).

Dask reruns a task whose worker left; a host task must not be rerun (its
daemon died with the worker; a new one in its slot is the driver's choice,
not Dask's). When the hook runs the scheduler has already moved such a task
back to ``processing`` on another worker (a second ``processing`` transition
of a host task: ``transition`` notes it in ``reruns``) but not sent it yet
(same event-loop turn), so the plugin releases it on the driver's behalf and
says so (``host-released``): the compute and the release reach the new
worker in one batch and the task never runs there. (A rerun started later
from ``no-worker`` is released on the loop's next turn; should one run all
the same, the launcher stops its daemon.)

This module needs only ``distributed``: the launcher ships the class to the
scheduler by value (cloudpickle), so a scheduler without drizzle installed
can run it. The plugin removes itself when the client that registered it
disconnects (a driver that died), so nothing of a session stays on the
scheduler.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin


class WorkerWatch(SchedulerPlugin):
    """Publishes worker arrivals and departures to ``topic``; leaves with the client ``client``."""

    def __init__(self, name: str, topic: str, client: str, prefix: str) -> None:
        self.name = name
        self.topic = topic
        self.client = client
        self.prefix = prefix                       # the session's host task keys start with it
        self.placed: set[str] = set()              # host task keys that went to processing once
        self.reruns: set[str] = set()              # ... and again: Dask reruns them (their worker left)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(key, str) and key.startswith(self.prefix)):
            return
        if finish == "processing":
            if key in self.placed:
                self.reruns.add(key)
                asyncio.get_running_loop().call_soon(self._release, "")
            self.placed.add(key)
        elif finish in ("memory", "erred", "forgotten"):
            self.placed.discard(key)
            self.reruns.discard(key)

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def _release(self, worker: str) -> None:
        """Release the reruns of host tasks on the driver's behalf (see the module docstring)."""
        keys = [k for k in self.reruns if k in self.scheduler.tasks]
        self.reruns.clear()
        if keys and self.client in self.scheduler.clients:
            self.scheduler.client_releases_keys(keys=keys, client=self.client, stimulus_id=f"drizzle-{self.name}")
            for k in keys:
                self.scheduler.log_event(self.topic, {"kind": "host-released", "key": k, "worker": worker})

    def add_worker(self, scheduler: Any, worker: str) -> None:
        scheduler.log_event(self.topic, {"kind": "worker-added", "worker": worker})

    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str, **kwargs: Any) -> None:
        scheduler.log_event(self.topic, {"kind": "worker-removed", "worker": worker})
        self._release(worker)

    def remove_client(self, scheduler: Any, client: str) -> None:
        if client == self.client and self.name in scheduler.plugins:
            scheduler.remove_plugin(self.name)
