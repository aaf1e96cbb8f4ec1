"""The ``tcp`` transport: Drizzle worker daemons reached over TCP.

Start daemons with ``drizzle worker --listen HOST:PORT --secret-file PATH``
and drive them with ``Context(transport="tcp", workers=["host:port", ...],
secret=...)``; or let the driver start N with ``workers=N`` — on loopback by
default, or wherever a :class:`Launcher` puts them (the ``ray`` and ``dask``
transports are this transport with their engine's launcher).
"""

__version__ = "0.1.0"

from ._launcher import DaemonSpec, Failed, Launcher, LauncherEvent, Lost, Started, start_daemon
from ._local_launcher import LocalLauncher
from ._transport import TcpTransport

__all__ = ["DaemonSpec", "Failed", "Launcher", "LauncherEvent", "LocalLauncher", "Lost", "Started", "TcpTransport",
           "__version__", "start_daemon"]
