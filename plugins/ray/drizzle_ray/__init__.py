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

from ._blocks import RayBlock
from ._launcher import RayLauncher
from ._transport import RayTransport

__all__ = ["RayBlock", "RayLauncher", "RayTransport", "__version__"]
