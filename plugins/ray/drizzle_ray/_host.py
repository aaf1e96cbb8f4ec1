"""The Ray actor that hosts one Drizzle worker daemon: it starts it, watches it, and serves it Ray blocks.

Why an actor is the daemon's parent: Ray places the actor (a bundle of the
session's placement group), watches it (its node, its process) and ends it
with the driver that owns it; the daemon is started with the actor's pid as
its parent-death process (``start_daemon``), so whatever ends the actor ends
the daemon. The actor never runs tasks: Drizzle's tasks reach the daemon
over Drizzle's own protocol.

Methods (the actor is threaded, ``max_concurrency`` = ``CONCURRENCY``, so
``watch`` may block while the others are served):

* ``start()`` once: start the daemon on the node's address, port 0; return
  where it listens (``HostInfo``). An error here is the launcher's
  ``Failed``.
* ``watch()``: the liveness sentinel. Returns the daemon's exit status once
  it ends; while the daemon runs it does not return. If the actor dies (its
  node, a kill, the driver) its ObjectRef resolves with ``ActorDiedError``
  (8-11 ms after a SIGKILL, measured with ray 2.60): the launcher's ``Lost``.
* ``hold(key, refs)``: keep block refs of a ``from_ray`` dataset (``key``),
  so that the daemon can read them (below). Refs nested in a list travel as
  refs (Ray borrows them); they are never resolved by the call.

Blocks for the daemon (``from_ray``): the daemon is not a Ray worker, so it
cannot ``ray.get``; its parent can. The actor listens on a Unix socket in a
directory only its user may enter (``mkdtemp``: 0700) and passes the path
to the daemon in its environment (``DRIZZLE_RAY_BLOCKS``). A
:class:`~drizzle_ray._blocks.RayBlock` read by a task asks for
``(key, position, start, end)`` and gets the block's columns as numpy
arrays (``BlockAccessor.to_batch_format("numpy")``), fetched by Ray into this
node's object store if it sits elsewhere — never through the driver.

Wire format of that socket, per request (one connection per read)::

    client -> actor   8-byte big-endian length + pickle((key, position, start, end))
    actor -> client   8-byte big-endian length + pickle(("ok", {column: ndarray}) | ("error", text))
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass, replace
from typing import Any

from drizzle_tcp import DaemonSpec, start_daemon

#: threads of the actor: one blocked in ``watch``, the rest for ``hold`` and the launcher's calls
CONCURRENCY = 4
#: the environment variable naming the block socket, set in the daemon's environment
BLOCKS_ENV = "DRIZZLE_RAY_BLOCKS"
#: how long a block read waits for its dataset's refs to arrive (``hold``) before it fails
HOLD_WAIT = 10.0
_LEN = struct.Struct(">Q")

log = logging.getLogger("drizzle.ray")


@dataclass(frozen=True)
class HostInfo:
    """Where ``start`` put the daemon."""

    address: str      # "ip:port" the driver and the other daemons reach
    pid: int          # the daemon's pid on its node
    node_ip: str
    node_id: str      # Ray's node id (hex): block locations are given in these


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=5)
    sock.sendall(_LEN.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> Any:
    head = _recv_exactly(sock, _LEN.size)
    return pickle.loads(_recv_exactly(sock, _LEN.unpack(head)[0]))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"the connection ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def merged_path(driver_path: str) -> str:
    """PYTHONPATH for the daemon: this actor's import path (its runtime_env's working_dir and py_modules
    come first), then the driver's entries that exist on this node (the same checkout, a shared volume)."""
    seen: list[str] = []
    for entry in [*sys.path, *os.environ.get("PYTHONPATH", "").split(os.pathsep), *driver_path.split(os.pathsep)]:
        if entry and entry not in seen and os.path.isdir(entry):
            seen.append(entry)
    return os.pathsep.join(seen)


_DIR_PREFIX = "drizzle-ray-"


def _remove_stale_dirs() -> None:
    """Remove the block-socket directories of host actors that died without cleaning up (SIGKILL)."""
    tmp = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(tmp):
            if not name.startswith(_DIR_PREFIX):
                continue
            pid = name[len(_DIR_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


class DaemonHost:
    """One worker daemon's host (made a Ray actor class by the launcher); see the module docstring."""

    def __init__(self, spec: DaemonSpec, held: dict[str, list[Any]]) -> None:
        self._spec = spec
        self._held = dict(held)             # from_ray key -> its block refs (borrowed from the driver)
        self._held_changed = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()   # start() has finished (well or not): watch() may look
        _remove_stale_dirs()
        # the pid in the name: a directory left by an actor that was killed (no code of it ran to remove
        # it) is found and removed by the next actor on this node
        self._dir = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")
        self._listener: socket.socket | None = None

    def start(self) -> HostInfo:
        import ray

        try:
            path = os.path.join(self._dir, "blocks.sock")
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(path)
            self._listener.listen(16)
            threading.Thread(target=self._serve, name="drizzle-ray-blocks", daemon=True).start()
            env = {**self._spec.env, "PYTHONPATH": merged_path(self._spec.env.get("PYTHONPATH", "")),
                   BLOCKS_ENV: path}
            ip = ray.util.get_node_ip_address()
            self._proc, address = start_daemon(replace(self._spec, env=env), f"{ip}:0", parent_pid=os.getpid())
            return HostInfo(address, self._proc.pid, ip, ray.get_runtime_context().get_node_id())
        except BaseException:
            self._close_listener()  # no daemon: nothing will read blocks through it
            raise
        finally:
            self._started.set()

    def watch(self) -> int | None:
        """The daemon's exit status once it ends (None: it never started); blocks while it runs."""
        self._started.wait()
        if self._proc is None:
            self._close_listener()
            return None
        code = self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._close_listener()
        return code

    def hold(self, key: str, refs: list[Any]) -> None:
        with self._held_changed:
            self._held[key] = refs
            self._held_changed.notify_all()

    # ------------------------------------------------------------ blocks
    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the daemon ended
            threading.Thread(target=self._answer, args=(conn,), name="drizzle-ray-block", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                key, position, start, end = recv_frame(conn)
            except (OSError, ConnectionError, pickle.UnpicklingError, ValueError, TypeError) as e:
                log.warning("a bad block request on %s: %s", self._dir, e)
                return
            try:
                reply: tuple[str, Any] = ("ok", self._columns(key, position, start, end))
            except Exception:
                reply = ("error", traceback.format_exc())
            with contextlib.suppress(OSError):
                send_frame(conn, reply)

    def _columns(self, key: str, position: int, start: int | None, end: int | None) -> dict[str, Any]:
        import ray
        from ray.data.block import BlockAccessor

        with self._held_changed:  # a hold() queued behind start() on a replacement may still be on its way
            self._held_changed.wait_for(lambda: key in self._held, timeout=HOLD_WAIT)
            refs = self._held.get(key)
        if refs is None:
            raise KeyError(f"this ray actor holds no from_ray dataset {key!r} (released, or never sent)")
        block = ray.get(refs[position])
        acc = BlockAccessor.for_block(block)
        if start is not None and end is not None:
            acc = BlockAccessor.for_block(acc.slice(start, end, copy=False))
        batch = acc.to_batch_format("numpy")
        return batch if isinstance(batch, dict) else {"data": batch}

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)
