"""Reaching Ray from the driver, and checking the ray transport's options before anything starts.

Policy: a driver that already called ``ray.init`` is used as it is (the
transport neither re-initializes nor shuts down what it did not start);
otherwise the transport calls ``ray.init(address)`` — ``address`` from the
option, else Ray's own rules (``RAY_ADDRESS``, which ``ray job submit`` and a
KubeRay RayJob set) — and shuts Ray down at close.

Ray Client (``ray://``) is refused: through it the driver is outside the
cluster, and the tcp transport needs the driver to reach every daemon's
``ip:port`` directly (and every daemon the driver). The fix is to run the
driver inside the cluster: ``ray job submit -- python train.py``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from drizzle_core.transport import TransportError

_CLIENT_HELP = ("the ray transport cannot run under Ray Client ({what}): Drizzle's driver must reach every worker "
                "daemon directly. Submit the driver as a Ray job instead (ray job submit --address http://HEAD:8265 "
                "-- python train.py; a KubeRay RayJob does this), which runs it inside the cluster")
_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def check_address(address: Any) -> str | None:
    if address is not None and not isinstance(address, str):
        raise TypeError(f"the ray transport's address must be a str (a Ray cluster address, e.g. 'auto' or "
                        f"'10.0.0.5:6379'), got {type(address).__name__}")
    target = address if address is not None else os.environ.get("RAY_ADDRESS")
    if target is not None and target.strip().startswith("ray://"):
        where = f"address={address!r}" if address is not None else f"RAY_ADDRESS={target!r}"
        raise TransportError(_CLIENT_HELP.format(what=where))
    return address


def check_resources(resources: Any) -> dict[str, float]:
    if resources is None:
        return {"CPU": 1.0}
    if not isinstance(resources, dict) or not resources:
        raise ValueError(f"the ray transport's resources_per_worker must be a non-empty dict of Ray resource "
                         f"names to amounts (e.g. {{'CPU': 1}}), got {resources!r}")
    out: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                or amount < 0:
            raise ValueError(f"the ray transport's resources_per_worker: {name!r}: {amount!r} is not a resource "
                             f"name with a non-negative amount")
        out[name] = float(amount)
    if not any(out.values()):
        raise ValueError(f"the ray transport's resources_per_worker asks for nothing: {resources!r} (Ray needs "
                         f"a positive amount of some resource in each bundle)")
    return out


def check_placement(placement: Any) -> str:
    if not isinstance(placement, str) or placement.upper() not in _STRATEGIES:
        raise ValueError(f"the ray transport's placement must be one of Ray's placement group strategies "
                         f"{', '.join(_STRATEGIES)}; got {placement!r}")
    return placement.upper()


#: transports of this process using a Ray session that a transport started: shut down when the last one
#: leaves, not the first (two contexts in one driver: closing one must not kill the other's actors)
_users = 0
_lock = threading.Lock()


def connect(address: str | None) -> bool:
    """Make sure this process is a Ray driver; True if the Ray session is one a transport started (the
    caller then calls :func:`disconnect` once at close, and the last one out shuts Ray down)."""
    import ray

    global _users
    with _lock:
        if ray.is_initialized():
            if _client_connected():
                raise TransportError(_CLIENT_HELP.format(
                    what="this driver is connected through ray.init('ray://...')"))
            if _users == 0:
                return False  # the user's own Ray session: left as it was
            _users += 1
            return True
        check_address(address)
        ray.init(address=address, logging_level=logging.WARNING)
        _users = 1
        return True


def connected() -> bool:
    import ray

    return bool(ray.is_initialized())


def disconnect() -> None:
    """One transport that got True from :func:`connect` is done; the last one shuts the Ray session down."""
    import ray

    global _users
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0:
            ray.shutdown()


def _client_connected() -> bool:
    try:
        from ray.util.client import ray as client
    except ImportError:  # pragma: no cover - every supported ray has it
        return False
    return bool(client.is_connected())


def resources(amounts: dict[str, float]) -> dict[str, float]:
    """A cluster's resources as a user reads them: no per-node pseudo-resources, memory in GiB."""
    shown: dict[str, float] = {}
    for name, amount in sorted(amounts.items()):
        if name.startswith("node:") or name.startswith("accelerator_type:"):
            continue
        if name in ("memory", "object_store_memory"):
            shown[f"{name}_GiB"] = round(amount / 2**30, 2)
        else:
            shown[name] = amount
    return shown
