"""The ``ray`` launcher: each tcp worker daemon is the child of a Ray actor, all in one placement group.

Why one placement group: Ray reserves the whole session's resources at
once (``open`` waits for it, bounded by ``placement_timeout``, and an error
lists what was asked and what the cluster has), bundle ``i`` is worker
slot ``i``, and a replacement is a new actor in the same bundle (0.34-0.39 s
measured here with ray 2.60) — Ray reschedules the bundle of a node that
died onto a live node when one has room.

Why ``max_restarts=0`` and driver-owned actors: Drizzle's epochs replace a
lost worker (``launch(index, epoch + 1)``), and an actor Ray restarted on
its own would be a daemon nobody connects to. Actors owned by the driver
die with it (their daemons within 0.1 s of a kill -9 of the driver, measured
here): no detached actor outlives a session.

State (driver side, under the scheduler's lock like every launcher call):
``slots: {index: _Slot}`` — the current actor of each slot, its ``start``
and ``watch`` ObjectRefs, what it reported (``info``) and whether its news
went out (``reported``); ``held: {key: [block refs]}`` — every ``from_ray``
dataset's refs, handed to each actor, including replacements.

``poll`` is ``ray.wait(refs, timeout=0)``: it never blocks (the transport
asks every 50 ms while it listens).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from drizzle_tcp import DaemonSpec, Failed, Launcher, LauncherEvent, Lost, Started

from drizzle_core.transport import TransportError, describe_exit

from . import _host, _session

#: close(): how long daemons told STOP may take to leave before their actors are killed
CLOSE_REAP = 2.0
#: close(): how long killed actors may take to be reported dead (their daemons die with them)
CLOSE_KILL = 5.0

log = logging.getLogger("drizzle.ray")


@dataclass
class _Slot:
    """The current actor of one worker slot."""

    epoch: int
    actor: Any
    start: Any                          # ObjectRef[HostInfo]
    watch: Any                          # ObjectRef[int | None]: resolves when the daemon or the actor ends
    info: _host.HostInfo | None = None  # set once start resolved
    ended: str | None = None            # how it ended, once known ("describe_exit" wording or Ray's)
    reported: bool = False              # its Started/Failed/Lost went out


def _actor_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray's actor options asking for exactly one bundle's resources."""
    opts: dict[str, Any] = {"num_cpus": 0}
    custom = {}
    for name, amount in resources.items():
        if name == "CPU":
            opts["num_cpus"] = amount
        elif name == "GPU":
            opts["num_gpus"] = amount
        elif name == "memory":
            opts["memory"] = amount
        else:
            custom[name] = amount
    if custom:
        opts["resources"] = custom
    return opts


class RayLauncher(Launcher):
    """Daemons hosted by Ray actors in one placement group (see the module docstring)."""

    name = "ray"

    def __init__(self, *, address: str | None = None, resources_per_worker: dict[str, float] | None = None,
                 placement: str = "PACK", placement_timeout: float = 60.0,
                 runtime_env: dict[str, Any] | None = None) -> None:
        self.address = _session.check_address(address)
        self.resources = _session.check_resources(resources_per_worker)
        self.placement = _session.check_placement(placement)
        if not isinstance(placement_timeout, (int, float)) or isinstance(placement_timeout, bool) \
                or placement_timeout <= 0:
            raise ValueError(f"the ray transport's placement_timeout must be a positive number of seconds, "
                             f"got {placement_timeout!r}")
        self.placement_timeout = float(placement_timeout)
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise TypeError(f"the ray transport's runtime_env must be a dict (Ray's runtime_env), "
                            f"got {type(runtime_env).__name__}")
        self.runtime_env = runtime_env
        self.slots: dict[int, _Slot] = {}
        self.held: dict[str, list[Any]] = {}
        self._spec: DaemonSpec | None = None
        self._pg: Any = None
        self._actor_class: Any = None
        self._actor_options: dict[str, Any] = {}
        self._owns_ray = False
        self._closed = False

    # ------------------------------------------------------------ open
    def open(self, spec: DaemonSpec) -> None:
        self._owns_ray = _session.connect(self.address)
        try:
            self._place(spec)
        except BaseException:
            if self._owns_ray:  # nothing of this session is left in Ray, nor the Ray session it started
                self._owns_ray = False
                _session.disconnect()
            raise

    def _place(self, spec: DaemonSpec) -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        self._spec = spec  # its env is the driver's chosen variables only (the tcp transport's _daemon_spec)
        bundles = [dict(self.resources) for _ in range(spec.workers)]
        self._pg = placement_group(bundles, strategy=self.placement)
        ready, _ = ray.wait([self._pg.ready()], timeout=self.placement_timeout)
        if not ready:
            remove_placement_group(self._pg)
            self._pg = None
            total = {k: v * spec.workers for k, v in self.resources.items()}
            raise TransportError(
                f"the ray transport could not place {spec.workers} workers ({self.resources} each, placement "
                f"{self.placement!r}) within {self.placement_timeout:g}s: requested {total} in total; the "
                f"cluster has {_session.resources(ray.cluster_resources())}, of which "
                f"{_session.resources(ray.available_resources())} is available")
        options = {"max_restarts": 0, "max_task_retries": 0, "max_concurrency": _host.CONCURRENCY,
                   **_actor_options(self.resources)}
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        self._actor_options = options
        self._actor_class = ray.remote(_host.DaemonHost)

    # ---------------------------------------------------------- launch
    def launch(self, index: int, epoch: int) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        assert self._actor_class is not None, "open() first"
        old = self.slots.pop(index, None)
        if old is not None:
            self._kill_actor(old)
        strategy = PlacementGroupSchedulingStrategy(placement_group=self._pg, placement_group_bundle_index=index)
        options = {**self._actor_options, "scheduling_strategy": strategy}
        actor = self._actor_class.options(**options).remote(self._spec, self.held)
        self.slots[index] = _Slot(epoch, actor, actor.start.remote(), actor.watch.remote())

    # ------------------------------------------------------------ poll
    def poll(self) -> list[LauncherEvent]:
        import ray

        events: list[LauncherEvent] = []
        starting = [s.start for s in self.slots.values() if s.info is None and not s.reported]
        if starting:
            ready, _ = ray.wait(starting, num_returns=len(starting), timeout=0)
            done = set(ready)
            for index, slot in self.slots.items():
                if slot.start in done:
                    events.append(self._started(index, slot))
        watched = [s.watch for s in self.slots.values() if s.info is not None and not s.reported]
        if watched:
            ready, _ = ray.wait(watched, num_returns=len(watched), timeout=0)
            done = set(ready)
            for index, slot in self.slots.items():
                if slot.watch in done and not slot.reported:
                    slot.reported = True
                    events.append(Lost(index, slot.epoch, f"its daemon {self._ending(slot)} (ray actor on "
                                                          f"{self._where(slot)})"))
        return events

    def _started(self, index: int, slot: _Slot) -> LauncherEvent:
        import ray

        try:
            slot.info = ray.get(slot.start)
        except Exception as e:
            slot.reported = True
            self._kill_actor(slot)  # no daemon: its bundle and the block refs it holds go now
            return Failed(index, slot.epoch, f"its ray actor could not start the daemon: {_short(e)}")
        return Started(index, slot.epoch, slot.info.address, slot.info.pid, where=f"ray node {slot.info.node_ip}")

    def _ending(self, slot: _Slot) -> str:
        """How the slot's daemon ended, its watch having resolved."""
        import ray

        if slot.ended is None:
            try:
                code = ray.get(slot.watch)
                slot.ended = "never started" if code is None else describe_exit(code)
            except Exception as e:
                slot.ended = f"is gone: {_short(e)}"
        return slot.ended

    @staticmethod
    def _where(slot: _Slot) -> str:
        return f"node {slot.info.node_ip} ({slot.info.node_id[:12]})" if slot.info else "a node not known yet"

    def exit_of(self, index: int, timeout: float = 1.0) -> str | None:
        import ray

        slot = self.slots.get(index)
        if slot is None:
            return None
        if slot.ended is None:
            ready, _ = ray.wait([slot.watch], timeout=timeout)
            if not ready:
                return None
        return f"{self._ending(slot)} (ray actor on {self._where(slot)})"

    # ------------------------------------------------------ kill, close
    def kill(self, index: int) -> None:
        slot = self.slots.get(index)
        if slot is not None:
            self._kill_actor(slot)

    @staticmethod
    def _kill_actor(slot: _Slot) -> None:
        import ray

        with contextlib.suppress(Exception):  # already dead: nothing to fence
            ray.kill(slot.actor, no_restart=True)

    def node_of(self, index: int) -> str | None:
        """The Ray node id of the daemon in ``index``'s slot, while it runs (for ``from_ray``)."""
        slot = self.slots.get(index)
        return slot.info.node_id if slot is not None and slot.info is not None and not slot.reported else None

    def hold(self, key: str, refs: list[Any], timeout: float = 30.0) -> None:
        """Give every actor (and every later replacement) a ``from_ray`` dataset's block refs; wait for the
        running ones to have them (an actor still waiting for room gets them when it starts)."""
        import ray

        self.held[key] = refs
        calls = [(s.info is not None, s.actor.hold.remote(key, refs)) for s in self.slots.values() if not s.reported]
        running = [ref for started, ref in calls if started]
        ready, pending = ray.wait(running, num_returns=len(running), timeout=timeout)
        for ref in ready:
            with contextlib.suppress(Exception):  # an actor that died meanwhile: its slot is lost anyway
                ray.get(ref)
        if pending:
            raise TransportError(f"{len(pending)} ray actors did not take the from_ray block refs within "
                                 f"{timeout:g}s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._end_actors()
        finally:
            self.held.clear()
            if self._owns_ray:
                _session.disconnect()

    def _end_actors(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        if not _session.connected():
            return
        watches = [s.watch for s in self.slots.values()]
        if watches:  # daemons told STOP leave after their one session: let them, briefly
            ray.wait(watches, num_returns=len(watches), timeout=CLOSE_REAP)
        for slot in self.slots.values():
            self._kill_actor(slot)
        if watches:  # killed actors take their daemons with them (parent-death signal)
            _, late = ray.wait(watches, num_returns=len(watches), timeout=CLOSE_KILL)
            if late:
                log.warning("%d ray actors were not reported dead within %gs of their kill", len(late), CLOSE_KILL)
        self.slots.clear()
        if self._pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self._pg)
            self._pg = None


def _short(e: BaseException) -> str:
    """Ray's errors run to many lines; the first says what happened."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
