"""The one-frame hello that opens every connection: the sender's peer id.

Unix sockets in a private (0700) directory need no authentication; the hello
only tells the acceptor who is calling (-1: the driver, i >= 0: worker i).
"""

from __future__ import annotations

import socket
import struct

_HELLO = struct.Struct("<4sq")
_MAGIC = b"DZL1"
HELLO_TIMEOUT = 10.0


def send_hello(sock: socket.socket, me: int) -> None:
    sock.sendall(_HELLO.pack(_MAGIC, me))


def read_hello(sock: socket.socket) -> int:
    sock.settimeout(HELLO_TIMEOUT)
    data = b""
    while len(data) < _HELLO.size:
        chunk = sock.recv(_HELLO.size - len(data))
        if not chunk:
            raise ConnectionError("peer closed before its hello")
        data += chunk
    magic, peer = _HELLO.unpack(data)
    if magic != _MAGIC:
        raise ConnectionError(f"bad hello {magic!r}")
    sock.settimeout(None)
    return peer


def connect(path: str, me: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        send_hello(sock, me)
    except BaseException:
        sock.close()
        raise
    return sock
