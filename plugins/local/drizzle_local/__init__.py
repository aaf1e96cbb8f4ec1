"""The ``local`` transport: Drizzle worker processes on this host over Unix sockets."""

__version__ = "0.1.0"

from ._transport import LocalTransport

__all__ = ["LocalTransport", "__version__"]
