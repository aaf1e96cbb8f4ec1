"""Streaming: micro-batch DStreams built on drizzle_core's API (``ctx.stream(...)``).

Importing it registers :class:`Stream` with the API layer below, which
``Context.stream`` makes.
"""

from ..api import register_stream
from ._metrics import BatchMetrics, StreamSummary
from ._sources import BatchTime, DirectorySource, GeneratorSource, SocketSource, Source
from ._stream import CollectingSink, DStream, Stream

register_stream(Stream)

__all__ = ["BatchMetrics", "BatchTime", "CollectingSink", "DStream", "DirectorySource", "GeneratorSource",
           "SocketSource", "Source", "Stream", "StreamSummary"]
