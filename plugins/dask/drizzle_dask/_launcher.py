"""The ``dask`` launcher: each tcp worker daemon is the child of a long-running task on a Dask worker.

Policy:

* ``launch(index, epoch)`` submits one host task (``_host.host``) to a
  chosen Dask worker: ``workers=[address]``, ``allow_other_workers=True``
  (a task restricted to a worker that died before it ran waits in
  ``no-worker`` forever: dask/distributed#7346), ``pure=False`` and its own
  key. Where it really landed comes back in its ``started`` event, and that
  is what is recorded. The worker is chosen among the live ones with the
  fewest daemons of this session, avoiding the one the slot's previous
  incarnation ran on (its death may not have reached us yet) unless it is
  the only one: a replacement goes to a new worker (a nanny restart) when
  there is one, else shares one.
* News arrives as events on the session's topic (``Client.subscribe_topic``):
  the host tasks' ``started`` / ``failed`` / ``exited`` and the scheduler
  plugin's ``worker-added`` / ``worker-removed`` (``_watch``). Why a topic
  and not ``Queue``/``Variable``/``Event``: those are polled with a round
  trip to the scheduler each (``poll`` is called every 50 ms and must not
  block), a topic is pushed to the client's event loop, whose handler only
  appends to a deque that ``poll`` drains; and one ordered stream carries
  both kinds of news. The subscription is sent before any task is
  submitted, on the same ordered client-to-scheduler stream, so no event of
  the session is missed.
* Dask reruns a task whose worker died (up to ``allowed-failures`` times).
  The scheduler plugin releases our host tasks of a worker that left before
  the rerun is sent (``_watch``); one that had not started yet is submitted
  again under a new key. Should a rerun start all the same, its ``started``
  event matches no slot waiting for it and the launcher stops that daemon at
  once (``_host.stop`` via ``Client.run``) instead of reporting it; at close,
  ``_host.stop_session`` ends every daemon of the session on every worker.
  The future of an incarnation that ended is released so the scheduler
  forgets the task.
* ``kill`` and stops run ``Client.run`` on a one-thread pool: a fence must
  not wait on a round trip through the scheduler (or on an unreachable
  worker). The transport also closes its connection to the fenced daemon,
  which ends that daemon's one session even where ``Client.run`` cannot
  reach it.

State (all on the driver's calling thread, except ``_news`` and ``_exits``,
which the client's event-loop thread fills):

* ``slot_to_incarnation: {index: _Incarnation}`` — the current incarnation
  of each slot (key, target, future, the Dask worker it runs on, state).
* ``_news: deque[dict]`` — topic messages not yet read (thread-safe appends).
* ``_exits: {host task key: exit status}`` — under ``_cond``.
* ``_live: {Dask worker address: order seen}`` — workers the scheduler has.
* ``_events: list[LauncherEvent]`` — read from news, not yet returned by ``poll``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from drizzle_tcp import DaemonSpec, Failed, Launcher, LauncherEvent, Lost, Started

from drizzle_core.transport import TransportError, describe_exit

from . import _host, _watch

log = logging.getLogger("drizzle.dask")

#: close(): how long daemons told STOP may take to end their host tasks before they are stopped
CLOSE_REAP = 3.0
#: close(): the bound on each round trip to the scheduler (stops, unsubscribing, the plugin)
CLOSE_RPC = 5.0


@dataclass
class _Incarnation:
    """One host task: slot ``index``'s incarnation ``epoch``."""

    index: int
    epoch: int
    key: str                       # the host task's Dask key
    target: str                    # the Dask worker it was submitted to
    future: Any                    # its distributed.Future (kept: a dropped future cancels the task)
    worker: str | None = None      # the Dask worker it runs on, once started
    pid: int | None = None         # its daemon's pid on that worker's host
    state: str = "starting"        # "starting" -> "running" -> "ended"


class DaskLauncher(Launcher):
    """Host tasks on a Dask cluster, watched by a scheduler plugin (see the module docstring)."""

    name = "dask"

    def __init__(self, client: Any, *, start_timeout: float = 60.0) -> None:
        self.client = client
        self.start_timeout = start_timeout
        self.token = uuid.uuid4().hex[:12]
        self.topic = f"drizzle-dask-{self.token}"
        self.plugin_name = f"drizzle-dask-watch-{self.token}"
        self._prefix = f"drizzle-host-{self.token}-"
        self._attempts = 0  # host tasks submitted: each gets its own key
        self.slot_to_incarnation: dict[int, _Incarnation] = {}
        self._news: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._exits: dict[str, int] = {}
        self._live: dict[str, int] = {}
        self._seen = 0
        self._events: list[LauncherEvent] = []
        self._spec: DaemonSpec | None = None
        self._subscribed = self._registered = self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="drizzle-dask-stop")

    # ------------------------------------------------------------------ open
    def open(self, spec: DaemonSpec) -> None:
        check_client(self.client)
        self._spec = spec
        self.client.subscribe_topic(self.topic, self._on_event)
        self._subscribed = True
        _ship_by_value()
        self.client.register_plugin(_watch.WorkerWatch(self.plugin_name, self.topic, self.client.id,
                                                       self._prefix), name=self.plugin_name)
        self._registered = True
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise TransportError(f"the Dask cluster at {self.client.scheduler.address} has no workers: start some "
                                 f"(or wait for them: client.wait_for_workers(n)) before Context(transport='dask')")
        for w in workers:
            self._saw(w)

    def _on_event(self, event: tuple[float, Any]) -> None:
        """The client's event loop thread: keep the message for ``poll`` (never blocks)."""
        msg = event[1]
        if not isinstance(msg, dict):
            return
        with self._cond:
            if msg.get("kind") == "exited":
                self._exits[msg["key"]] = msg["code"]
            self._news.append(msg)
            self._cond.notify_all()  # exit_of and close wait for news

    def _saw(self, worker: str) -> None:
        if worker not in self._live:
            self._live[worker] = self._seen
            self._seen += 1

    # ---------------------------------------------------------------- launch
    def launch(self, index: int, epoch: int) -> None:
        assert self._spec is not None, "open() first"
        self._drain()
        old = self.slot_to_incarnation.get(index)
        if old is not None:
            self._end(old, stop=True)
        self._submit(index, epoch, avoid=None if old is None else (old.worker or old.target))

    def _submit(self, index: int, epoch: int, avoid: str | None) -> None:
        target = self._choose(index, avoid=avoid)
        if target is None:
            self._events.append(Failed(index, epoch, f"no Dask worker is left in the cluster at "
                                                     f"{self.client.scheduler.address}"))
            return
        self._attempts += 1
        key = f"{self._prefix}{index}-{epoch}-{self._attempts}"
        future = self.client.submit(_host.host, self._spec, self.topic, key, index, epoch, self.start_timeout,
                                    key=key, workers=[target], allow_other_workers=True, pure=False)
        self.slot_to_incarnation[index] = _Incarnation(index, epoch, key, target, future)

    def _choose(self, index: int, avoid: str | None) -> str | None:
        """The live Dask worker with the fewest daemons of this session (not ``avoid`` if there is another)."""
        candidates = [w for w in self._live if w != avoid] or list(self._live)
        if not candidates:
            return None
        load = dict.fromkeys(candidates, 0)
        for inc in self.slot_to_incarnation.values():
            where = inc.worker or inc.target
            if inc.index != index and inc.state != "ended" and where in load:
                load[where] += 1
        return min(candidates, key=lambda w: (load[w], self._live[w]))

    # ------------------------------------------------------------------ poll
    def poll(self) -> list[LauncherEvent]:
        self._drain()
        for inc in self.slot_to_incarnation.values():
            if inc.state == "starting" and inc.future.status in ("error", "cancelled"):
                # it failed before it could say so (e.g. drizzle is not installed on that worker)
                self._events.append(Failed(inc.index, inc.epoch, self._task_failure(inc)))
                self._end(inc, stop=False)
        events, self._events = self._events, []
        return events

    def _task_failure(self, inc: _Incarnation) -> str:
        try:
            exc = inc.future.exception(timeout=1)
        except Exception as e:
            exc = e
        return f"its host task {inc.key} on the Dask cluster {inc.future.status}: {type(exc).__name__}: {exc}"

    def _drain(self) -> None:
        """Turn the topic's news into launcher events (and stops of unwanted daemons)."""
        while self._news:
            msg = self._news.popleft()
            kind = msg.get("kind")
            if kind == "worker-added":
                self._saw(msg["worker"])
            elif kind == "worker-removed":
                self._left(msg["worker"])
            elif kind in ("started", "failed", "exited"):
                self._host_news(kind, msg)
            elif kind == "host-released":
                self._released(msg["key"], msg["worker"])

    def _released(self, key: str, worker: str) -> None:
        """The plugin kept Dask from rerunning a host task whose worker left: one not started yet is
        submitted again (a new key), elsewhere."""
        for inc in list(self.slot_to_incarnation.values()):
            if inc.key == key and inc.state == "starting":
                inc.state = "ended"
                inc.future.release()
                self._submit(inc.index, inc.epoch, avoid=worker)

    def _left(self, worker: str) -> None:
        self._live.pop(worker, None)
        for inc in self.slot_to_incarnation.values():
            if inc.state == "running" and inc.worker == worker:
                self._events.append(Lost(inc.index, inc.epoch, f"its Dask worker {worker} left the cluster "
                                                               f"(the daemon, pid {inc.pid}, died with it)"))
                self._end(inc, stop=False)

    def _host_news(self, kind: str, msg: dict[str, Any]) -> None:
        inc = self.slot_to_incarnation.get(msg["index"])
        current = inc is not None and inc.key == msg["key"] and inc.epoch == msg["epoch"]
        if kind == "started":
            if not current or inc.state != "starting" or msg["worker"] not in self._live:
                # a rerun by Dask of a task whose worker died, or one given up on: nobody will connect to it
                log.info("stopping an unwanted daemon of host task %s on %s", msg["key"], msg["worker"])
                self._stop(msg["worker"], msg["key"])
                return
            inc.state, inc.worker, inc.pid = "running", msg["worker"], msg["pid"]
            self._events.append(Started(inc.index, inc.epoch, msg["address"], msg["pid"],
                                        where=f"dask worker {msg['worker']}"))
        elif not current or inc.state == "ended":
            return
        elif kind == "failed":
            self._events.append(Failed(inc.index, inc.epoch, f"on Dask worker {msg['worker']}: {msg['reason']}"))
            self._end(inc, stop=False)
        elif inc.state == "running":  # exited: its kernel closed its sockets, the transport saw it at once
            log.info("the daemon (pid %s) of dask worker %d on %s %s", inc.pid, inc.index, inc.worker,
                     describe_exit(msg["code"]))

    # ------------------------------------------------------------ kill, exit
    def exit_of(self, index: int, timeout: float = 1.0) -> str | None:
        inc = self.slot_to_incarnation.get(index)
        if inc is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            self._drain()  # a worker-removed may come first: then no exit status will (the host died too)
            with self._cond:
                code = self._exits.get(inc.key)
                if code is not None:
                    return describe_exit(code)
                if inc.worker is not None and inc.worker not in self._live:
                    return f"died with its Dask worker {inc.worker}"
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if not self._news:
                    self._cond.wait(timeout=left)

    def kill(self, index: int) -> None:
        inc = self.slot_to_incarnation.get(index)
        if inc is not None:
            self._end(inc, stop=True)

    def _end(self, inc: _Incarnation, *, stop: bool) -> None:
        """This incarnation is over for the driver: stop its daemon if asked, let Dask forget its task."""
        if inc.state == "ended":
            return
        if stop and inc.worker is not None:
            self._stop(inc.worker, inc.key)
        inc.state = "ended"
        inc.future.release()

    def _stop(self, worker: str, key: str) -> None:
        try:
            self._pool.submit(self._run_stop, worker, key)
        except RuntimeError:  # closed: the close's own stops and the daemons' deadlines cover it
            log.debug("not stopping %s on %s: the launcher is closed", key, worker)

    def _run_stop(self, worker: str, key: str) -> None:
        try:
            self.client.run(_host.stop, key, workers=[worker], on_error="ignore")
        except Exception as e:
            log.debug("stopping %s on %s: %s", key, worker, e)

    # ------------------------------------------------------------------ info
    def placement(self) -> dict[int, str]:
        """Slot -> the Dask worker its running daemon lives on (what ``from_dask`` places partitions by)."""
        self._drain()
        return {i: inc.worker for i, inc in self.slot_to_incarnation.items()
                if inc.state == "running" and inc.worker is not None}

    # ----------------------------------------------------------------- close
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._drain()
            # (a daemon whose Dask worker left has no host to report its exit: it died with it)
            running = [inc for inc in self.slot_to_incarnation.values() if inc.worker in self._live]
            deadline = time.monotonic() + CLOSE_REAP
            with self._cond:  # the daemons were told STOP: their host tasks end by themselves
                self._cond.wait_for(lambda: all(inc.key in self._exits for inc in running),
                                    timeout=max(0.0, deadline - time.monotonic()))
                late = [inc.key for inc in running if inc.key not in self._exits]
            if late:
                log.info("stopping the daemons of %s: no exit after STOP within %.0fs", late, CLOSE_REAP)
            if late or self.slot_to_incarnation:
                # every daemon of the session, on every worker: the late ones, and any a rerun by Dask started
                # (of a task whose worker died) that nobody connected to
                stop = self._pool.submit(self.client.run, _host.stop_session, self._prefix,
                                         on_error="ignore")
                concurrent.futures.wait([stop], timeout=CLOSE_RPC)
            for inc in self.slot_to_incarnation.values():
                inc.state = "ended"
                inc.future.release()
            if self.client.status == "running":
                if self._subscribed:
                    self.client.unsubscribe_topic(self.topic)
                if self._registered:
                    self._pool.submit(self.client.unregister_scheduler_plugin,
                                      self.plugin_name).result(timeout=CLOSE_RPC)
        except Exception as e:
            log.warning("closing the dask launcher: %s: %s", type(e).__name__, e)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)


def check_client(client: Any) -> None:
    """A usable distributed.Client, or an error that says what is wrong with it."""
    from distributed import Client

    if not isinstance(client, Client):
        raise TypeError(f"the dask transport's client must be a distributed.Client, got {type(client).__name__}")
    if client.asynchronous:
        raise ValueError("the dask transport needs a synchronous distributed.Client (asynchronous=False)")
    if client.status != "running":
        raise ValueError(f"the dask transport's client is {client.status}, not running: pass an open "
                         f"distributed.Client (client={client!r})")


def _ship_by_value() -> None:
    """The scheduler plugin travels by value: the scheduler needs distributed, not drizzle."""
    import cloudpickle

    if _watch.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(_watch)
