"""The one-frame hello that opens every connection: the sender's peer id and incarnation.

Unix sockets in a private (0700) directory need no authentication; the hello
only tells the acceptor who is calling (-1: the driver, i >= 0: worker i) and
which incarnation of that worker it is (0, then 1 after its first replacement).
"""

from __future__ import annotations

import socket
import struct

_HELLO = struct.Struct("<4sqq")
_MAGIC = b"DZL2"
HELLO_TIMEOUT = 10.0


def send_hello(sock: socket.socket, me: int, epoch: int = 0) -> None:
    sock.sendall(_HELLO.pack(_MAGIC, me, epoch))


def read_hello(sock: socket.socket) -> tuple[int, int]:
    sock.settimeout(HELLO_TIMEOUT)
    data = b""
    while len(data) < _HELLO.size:
        chunk = sock.recv(_HELLO.size - len(data))
        if not chunk:
            raise ConnectionError("peer closed before its hello")
        data += chunk
    magic, peer, epoch = _HELLO.unpack(data)
    if magic != _MAGIC:
        raise ConnectionError(f"bad hello {magic!r}")
    sock.settimeout(None)
    return peer, epoch


def connect(path: str, me: int, epoch: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        send_hello(sock, me, epoch)
    except BaseException:
        sock.close()
        raise
    return sock
