"""The ``ray`` transport: Drizzle's tcp worker daemons, hosted by Ray actors.

``Context(transport="ray", workers=N, resources_per_worker={"CPU": 1},
placement="PACK")`` inside a Ray job places one actor per worker in one
placement group; each actor starts a ``drizzle worker`` daemon as its child
and watches it. Ray places, watches and cleans up; Drizzle keeps its own
authenticated worker-to-worker protocol (the tcp transport), so no Ray call
is on the per-task path. ``ctx.from_ray(dataset)`` reads a Ray Dataset's
blocks on the nodes that hold them. See docs/ray.md.
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._blocks import RayBlock
    from ._launcher import RayLauncher
    from ._transport import RayTransport

# Loaded on first use (PEP 562): every Context loads the transport plugins to list them, and importing
# ray there would cost each one 0.25 s whatever transport it runs on.
_LAZY = {"RayBlock": "_blocks", "RayLauncher": "_launcher", "RayTransport": "_transport"}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["RayBlock", "RayLauncher", "RayTransport", "__version__"]
