"""Drizzle for Python: low-latency iterative and streaming work by group scheduling.

>>> import drizzle_core as dz
>>> with dz.Context(workers=2) as ctx:                      # doctest: +SKIP
...     ds = ctx.parallelize(range(100), num_partitions=4).cache()
...     ctx.run_jobs([(ds, sum)] * 100, group_size=10)

The layers, lowest first (a package imports only those below it; a test
enforces it): ``lineage`` · ``protocol`` · ``worker`` · ``net`` · ``driver`` ·
``inline`` · ``api`` · ``stream`` · ``cli``.

The names below load on first use (PEP 562): a worker process imports
``drizzle_core.transport`` and the runtime, never the driver, the API or
streaming.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    DrizzleError,
    RemoteTraceback,
    SerializationError,
    TaskError,
    TaskTimeout,
    TaskTimeoutError,
    TransportError,
    WorkerLostError,
)
from ._version import __version__
from .hookspecs import hookimpl, hookspec

if TYPE_CHECKING:
    from .api import (
        AutoGroupSize,
        Context,
        Dataset,
        GroupSizeController,
        IterateResult,
        KeyedIterateResult,
        ProgressBar,
        StatCounter,
    )
    from .driver import AIMD, GroupMetrics, TransportInfo
    from .lineage import portable_hash
    from .stream import (
        BatchMetrics,
        BatchTime,
        CollectingSink,
        DirectorySource,
        DStream,
        GeneratorSource,
        SocketSource,
        Source,
        Stream,
        StreamSummary,
    )

_LAZY = {
    "AIMD": "driver", "GroupMetrics": "driver", "TransportInfo": "driver",
    "AutoGroupSize": "api", "Context": "api", "Dataset": "api", "GroupSizeController": "api", "IterateResult": "api",
    "KeyedIterateResult": "api", "ProgressBar": "api", "StatCounter": "api",
    "portable_hash": "lineage",
    "BatchMetrics": "stream", "BatchTime": "stream", "CollectingSink": "stream", "DStream": "stream",
    "DirectorySource": "stream", "GeneratorSource": "stream", "SocketSource": "stream", "Source": "stream",
    "Stream": "stream", "StreamSummary": "stream",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'drizzle_core' has no attribute {name!r}")
    importlib.import_module(".stream", __name__)  # the whole user-facing stack (streaming registers itself)
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def transports() -> dict[str, str]:
    """Installed transports: ``{name: version}``."""
    importlib.import_module(".inline", __name__)  # the built-in transport registers on import
    from .driver import transports as _t

    return {name: info.version for name, info in _t().items()}


__all__ = [
    "AIMD",
    "AutoGroupSize",
    "BatchMetrics",
    "BatchTime",
    "CollectingSink",
    "Context",
    "DStream",
    "Dataset",
    "DirectorySource",
    "DrizzleError",
    "GeneratorSource",
    "GroupMetrics",
    "GroupSizeController",
    "IterateResult",
    "KeyedIterateResult",
    "ProgressBar",
    "RemoteTraceback",
    "SerializationError",
    "SocketSource",
    "Source",
    "StatCounter",
    "Stream",
    "StreamSummary",
    "TaskError",
    "TaskTimeout",
    "TaskTimeoutError",
    "TransportError",
    "TransportInfo",
    "WorkerLostError",
    "__version__",
    "hookimpl",
    "hookspec",
    "portable_hash",
    "transports",
]
