"""A local worker process: ``python -m drizzle_local._worker_main INDEX DIR PARENT_PID [EPOCH]``.

Listens on ``DIR/w{INDEX}.{EPOCH}.sock`` (``_hello.socket_name``); the driver and the other workers connect
to it. Exits when the driver says STOP, when the driver's connection drops,
or (Linux) the moment its parent dies (PR_SET_PDEATHSIG), so that no worker
outlives a driver killed with kill -9.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from drizzle_core.transport import DRIVER, Disconnected, Hub, WorkerRuntime, die_with_parent

from . import _hello

log = logging.getLogger("drizzle.local.worker")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    index_s, directory, parent_s = args[:3]
    index, parent_pid = int(index_s), int(parent_s)
    epoch = int(args[3]) if len(args) > 3 else 0
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    logging.basicConfig(level=os.environ.get("DRIZZLE_LOG_LEVEL", "WARNING"),
                        format=f"%(asctime)s worker {index} %(levelname)s %(name)s: %(message)s")

    def connect_peer(peer: int) -> socket.socket:
        # the incarnation of the peer this worker knows of (from the driver's launches)
        return _hello.connect(os.path.join(directory, _hello.socket_name(peer, hub.expected(peer))), index, epoch)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(directory, _hello.socket_name(index, epoch))
    listener.bind(path + ".tmp")
    os.rename(path + ".tmp", path)  # appears only once bound: the driver never sees a half-made socket
    listener.listen(64)
    hub = Hub(connector=connect_peer)
    hub.listen(listener, _hello.read_hello)

    def send(dest: int, msg: object) -> None:
        try:
            hub.send(dest, msg)
        except OSError as e:  # a dead peer: the driver hears of it and aborts the group
            log.warning("could not send to %s: %s", "driver" if dest == DRIVER else f"worker {dest}", e)

    # A task that ran past task_timeout and ignored the interrupt has been reported by the liveness
    # thread: this process is wedged, so it exits and the driver starts a fresh one in its slot.
    runtime = WorkerRuntime(index, send, expect_peer=hub.expect, bytes_sent=lambda: hub.bytes_sent,
                            on_stuck=lambda: os._exit(3))
    # kill -USR1 <pid>: log what this worker is waiting for (a stuck group's first clue)
    signal.signal(signal.SIGUSR1, lambda *_: log.warning("worker %d state: %s", index, runtime.describe()))

    def on_event(src: int, msg: object) -> bool:
        if isinstance(msg, Disconnected):
            if src == DRIVER:
                runtime.stopped = True
            else:
                log.info("connection to worker %s ended: %s", src, msg.reason)
            return True
        return False

    try:
        runtime.serve(hub.poll, on_event)
        hub.flush(timeout=2.0)
    finally:
        hub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
