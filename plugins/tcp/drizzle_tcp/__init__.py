"""The ``tcp`` transport: Drizzle worker daemons reached over TCP.

Start daemons with ``drizzle worker --listen HOST:PORT --secret-file PATH``
and drive them with ``Context(transport="tcp", workers=["host:port", ...],
secret=...)``; or let the driver start N on loopback with ``workers=N``.
"""

__version__ = "0.1.0"

from ._transport import TcpTransport

__all__ = ["TcpTransport", "__version__"]
