"""The one-frame hello that opens every connection: the sender's peer id and incarnation.

Unix sockets in a private (0700) directory need no authentication; the hello
only tells the acceptor who is calling (-1: the driver, i >= 0: worker i) and
which incarnation of that worker it is (0, then 1 after its first replacement).
"""

from __future__ import annotations

import socket
import struct

_HELLO = struct.Struct("<4sqq")
#: SO_SNDBUF of every local socket. On a Unix stream socket the sender's buffer bounds the bytes in
#: flight (the receiver's is not used): at the default 208 KiB a 1 GiB result took ~4,600 reads, each
#: a wake-up of both processes; at 1 MiB ~500 (1 GiB return: 0.89x the time, paired rounds on this
#: 2-core machine). The kernel caps it at net.core.wmem_max.
SEND_BUFFER = 1 << 20


def tune(sock: socket.socket) -> None:
    """Give a local socket its send buffer (see ``SEND_BUFFER``); both ends of every connection call it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
_MAGIC = b"DZL2"
HELLO_TIMEOUT = 10.0


def socket_name(index: int, epoch: int) -> str:
    """The socket file of worker ``index``'s incarnation ``epoch``.

    Each incarnation listens on its own path, so a connection is made to the
    incarnation the caller means: a worker still sending for a group planned
    before its peer was replaced reaches the dead predecessor's path (refused:
    those blocks are stale anyway), never the replacement under the old name
    (``Hub.expect`` would then retire that connection as the predecessor's,
    and whatever the replacement queued on it was lost: a group that hung,
    1 run in ~1,000 of the kill-at-random property test).
    """
    return f"w{index}.{epoch}.sock"


def send_hello(sock: socket.socket, me: int, epoch: int = 0) -> None:
    sock.sendall(_HELLO.pack(_MAGIC, me, epoch))


def read_hello(sock: socket.socket) -> tuple[int, int]:
    tune(sock)
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
    tune(sock)
    try:
        sock.connect(path)
        send_hello(sock, me, epoch)
    except BaseException:
        sock.close()
        raise
    return sock
