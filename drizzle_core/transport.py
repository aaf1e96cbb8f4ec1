"""The API for transport plugin authors.

A transport plugin implements :class:`Transport` (driver side) and runs a
:class:`WorkerRuntime` in each worker, feeding it messages and giving it a
``send``; :class:`Hub` gives it framed, non-blocking sockets. The plugin
registers a factory through the ``drizzle_register_transports`` hook.
"""

from ._errors import TransportError
from ._hub import Disconnected, Hub, ProtocolError
from ._messages import DRIVER, STOP
from ._process import describe_exit, die_with_parent, worker_env
from ._transport import Transport, WorkerJoined, WorkerLost
from ._wire import DEFAULT_MAX_FRAME, decode, encode
from ._worker import WorkerRuntime
from .hookspecs import hookimpl

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DRIVER",
    "STOP",
    "Disconnected",
    "Hub",
    "ProtocolError",
    "Transport",
    "TransportError",
    "WorkerJoined",
    "WorkerLost",
    "WorkerRuntime",
    "decode",
    "describe_exit",
    "die_with_parent",
    "encode",
    "hookimpl",
    "worker_env",
]
