"""The API for transport plugin authors.

A transport plugin implements :class:`Transport` (driver side) and runs a
:class:`WorkerRuntime` in each worker, feeding it messages and giving it a
``send``; :class:`Hub` gives it framed, non-blocking sockets, and
:class:`HubTransport` the driver side of a transport whose workers are hub
sockets (sends, losses, joins, close), leaving it only how workers are
started, connected and named. The plugin
registers a factory through the ``drizzle_register_transports`` hook.

This module imports only what a worker process needs (the runtime, the hub,
the wire format), never the driver.
"""

from ._errors import TransportError
from .hookspecs import hookimpl
from .net import (
    THREAD_VARS,
    Disconnected,
    Hub,
    HubTransport,
    ProtocolError,
    Transport,
    WorkerJoined,
    WorkerLost,
    describe_exit,
    die_with_parent,
    hash_seed,
    spawn_process,
    worker_env,
)
from .protocol import DEFAULT_MAX_FRAME, decode, encode
from .protocol._messages import DRIVER, STOP
from .worker import WorkerRuntime

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DRIVER",
    "STOP",
    "THREAD_VARS",
    "Disconnected",
    "Hub",
    "HubTransport",
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
    "hash_seed",
    "hookimpl",
    "spawn_process",
    "worker_env",
]
