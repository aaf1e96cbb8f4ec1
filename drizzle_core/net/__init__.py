"""Networking both process transports share: the Transport interface, the selector hub, the driver side built on
it (HubTransport), worker-process helpers.

Below the driver: a worker process imports this and the worker runtime,
never the scheduler.
"""

from ._hub import Disconnected, Hub, ProtocolError, is_connection_refused
from ._process import THREAD_VARS, describe_exit, die_with_parent, hash_seed, spawn_process, worker_env
from ._transport import HubTransport, Transport, WorkerJoined, WorkerLost

__all__ = ["THREAD_VARS", "Disconnected", "Hub", "HubTransport", "ProtocolError", "Transport", "WorkerJoined",
           "WorkerLost", "describe_exit", "die_with_parent", "hash_seed", "is_connection_refused", "spawn_process",
           "worker_env"]
