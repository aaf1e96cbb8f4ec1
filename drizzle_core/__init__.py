"""Drizzle for Python: low-latency iterative and streaming work by group scheduling.

>>> import drizzle_core as dz
>>> with dz.Context(workers=2) as ctx:                      # doctest: +SKIP
...     ds = ctx.parallelize(range(100), num_partitions=4).cache()
...     ctx.run_jobs([(ds, sum)] * 100, group_size=10)
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._adaptive import AIMD
from ._context import Context
from ._dataset import Dataset
from ._errors import (
    DrizzleError,
    RemoteTraceback,
    SerializationError,
    TaskError,
    TransportError,
    WorkerLostError,
)
from ._iterate import IterateResult
from ._partitioner import portable_hash
from ._plugins import TransportInfo
from ._scheduler import GroupMetrics
from ._sources import BatchTime, DirectorySource, GeneratorSource, SocketSource, Source
from ._stream import CollectingSink, DStream, Stream
from ._stream_metrics import BatchMetrics, StreamSummary
from .hookspecs import hookimpl, hookspec


def transports() -> dict[str, str]:
    """Installed transports: ``{name: version}``."""
    from ._plugins import transports as _t

    return {name: info.version for name, info in _t().items()}


__all__ = [
    "AIMD",
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
    "IterateResult",
    "RemoteTraceback",
    "SerializationError",
    "SocketSource",
    "Source",
    "Stream",
    "StreamSummary",
    "TaskError",
    "TransportError",
    "TransportInfo",
    "WorkerLostError",
    "__version__",
    "hookimpl",
    "hookspec",
    "portable_hash",
    "transports",
]
