"""The ``ray`` transport: the tcp transport, its daemons started by Ray actors (``RayLauncher``).

Options (keyword arguments of ``Context(transport="ray", workers=N, ...)``):
``workers`` (how many daemons, one actor each), ``address`` (the Ray cluster,
when the driver has not called ``ray.init``; default Ray's own rules:
``RAY_ADDRESS``), ``resources_per_worker`` (one placement group bundle per
worker, default ``{"CPU": 1}``), ``placement`` (the group's strategy:
``"PACK"`` (default), ``"SPREAD"``, ``"STRICT_PACK"``, ``"STRICT_SPREAD"``),
``placement_timeout`` (seconds to wait for the group, default 60; an
autoscaling cluster may need to add nodes first), ``runtime_env`` (Ray's,
for the actors and so for their daemons), and every option of the tcp
transport (``secret``, ``max_frame``, ``tls_*``, ``keepalive``,
``start_timeout``, ``replace_lost``, ...). The session's secret is fresh and
random unless given, and reaches the actors as a constructor argument
(Ray's channel), never a command line.

What Ray adds to the tcp transport's failure handling: a daemon whose actor
died (its node removed, its raylet killed, the actor killed) is reported
lost by Ray within milliseconds (``Lost`` from the launcher), even if its
sockets never closed; its replacement is a new actor in the same bundle.
"""

from __future__ import annotations

from typing import Any

from drizzle_tcp import TcpTransport

from . import _blocks
from ._launcher import RayLauncher


class RayTransport(TcpTransport):
    """Drizzle workers hosted by Ray actors; see the module docstring."""

    name = "ray"

    def __init__(self, workers: Any = None, *, address: str | None = None,
                 resources_per_worker: dict[str, float] | None = None, placement: str = "PACK",
                 placement_timeout: float = 60.0, runtime_env: dict[str, Any] | None = None,
                 **tcp_options: Any) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers <= 0:
            raise ValueError(f"the ray transport starts workers=N Ray actors (N >= 1), got workers={workers!r}")
        if "launcher" in tcp_options:
            raise TypeError("the ray transport's launcher is Ray's: the 'launcher' option is not taken")
        self.ray_launcher = RayLauncher(address=address, resources_per_worker=resources_per_worker,
                                        placement=placement, placement_timeout=placement_timeout,
                                        runtime_env=runtime_env)
        super().__init__(workers, launcher=self.ray_launcher, **tcp_options)

    def from_ray(self, ctx: Any, dataset: Any, *, format: str = "rows", label: str | None = None) -> Any:
        """A cached dataset of ``dataset``'s blocks, one partition each, read where they are (``_blocks``)."""
        if format not in _blocks.FORMATS:
            raise ValueError(f"from_ray: format must be one of {', '.join(map(repr, _blocks.FORMATS))}, "
                             f"got {format!r}")
        pieces = _blocks.block_refs(dataset)
        if not pieces:
            raise ValueError("from_ray: the Ray Dataset has no blocks")
        key = _blocks.new_key()
        refs = [ref for ref, _start, _end in pieces]
        self.ray_launcher.hold(key, refs)
        nodes = {i: node for i in range(len(self.addresses))
                 if i not in self._lost and (node := self.ray_launcher.node_of(i)) is not None}
        prefer = _blocks.place(refs, nodes)
        parts = [_blocks.RayBlock(key, p, start, end, format) for p, (_ref, start, end) in enumerate(pieces)]
        return ctx.from_partitions(parts, prefer=prefer, label=label or f"from_ray {key}").cache()
