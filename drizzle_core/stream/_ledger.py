"""What each batch of a source read, kept on the driver so that a recomputed batch reads it again.

Why. A batch's source tasks run on the workers, and a worker lost with a
batch's partitions (or with state computed from them) has them recomputed
from lineage: the source is read again. A generator is a function of
``(partition, batch, time)``, so reading again gives the same records. A
directory is not (a file that appears later with a back-dated mtime, or is
removed, changes what a second listing sees) and a socket certainly is not
(its lines are gone once read). So a *ledger* records, at the first read of
each ``(batch, partition)``, what was read — the directory's file list, the
socket's lines — and every later read of that partition gets the record:
the record is part of the batch's lineage. It lives on the driver, the
stream's reliable store (as for checkpoints), so losing any worker loses no
record.

A record is kept while a dataset that may read it again is alive on the
driver (the raw dataset of its batch, held by every dataset computed from
it: weak references tell when the last one goes) and, for sources that ask
it, until the batch was delivered (a batch rolled back is read again by
the next run). Then it is forgotten (:class:`Holds`).

The request channel (``ask`` on the workers, :class:`LedgerServer` on the
driver): one TCP connection per request, on the address the source carries
in its pickled task (loopback by default). The table is the protocol:

  step  who     what
  1     worker  connects to the source's ledger address
  2     worker  frame: the source's token (random per source; travels only inside
                tasks, over the transport's authenticated channel)
  3     driver  compares it (``hmac.compare_digest``); a wrong one closes the connection
  4     worker  frame: the request, JSON (``{"op": ..., ...}``)
  5     driver  frame: the answer, JSON; ``{"error": message}`` when it failed
  6     both    close

A frame is a 4-byte big-endian length and that many bytes; the token frame
is capped at 64 bytes (nothing else is read before it matches), the others
at ``MAX_FRAME``. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import struct
import threading
import weakref
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger("drizzle.stream.ledger")

MAX_FRAME = 1 << 30  # an answer holds one batch partition's records
_TOKEN_FRAME = 64
_HEADER = struct.Struct(">I")
_TIMEOUT = 60.0  # a request the driver does not answer in this long fails its task (the driver is gone)


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the ledger connection closed in the middle of a frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, cap: int) -> bytes:
    (n,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    if n > cap:
        raise ConnectionError(f"a ledger frame of {n} bytes is over the cap of {cap}")
    return _recv_exactly(sock, n)


def ask(address: tuple[str, int], token: str, request: dict[str, Any], who: str) -> Any:
    """Worker side: send ``request`` to the ledger at ``address``; its answer, or an error naming ``who``."""
    try:
        with socket.create_connection(address, timeout=_TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _send(sock, token.encode("ascii"))
            _send(sock, json.dumps(request).encode("utf-8"))
            answer = json.loads(_recv(sock, MAX_FRAME))
    except OSError as e:
        raise ConnectionError(f"{who}: cannot reach its ledger on the driver at {address[0]}:{address[1]} "
                              f"({e}); across hosts, give the source driver_host= an address of the driver "
                              f"that the workers can reach") from e
    if "error" in answer:
        raise RuntimeError(f"{who}: {answer['error']}")
    return answer


class LedgerServer:
    """Driver side: answers ledger requests with ``handle(request)`` (see the module docstring).

    Threads: one accepts; each connection (one request) is served by a
    thread of its own, which only calls ``handle`` (the source's lock
    guards the records). ``close`` stops accepting and joins them all.
    """

    def __init__(self, host: str, token: str, handle: Callable[[dict[str, Any]], Any], name: str) -> None:
        self.token = token.encode("ascii")
        self.handle = handle
        self.name = name
        self.sock = socket.create_server((host, 0))
        self.address: tuple[str, int] = (host, self.sock.getsockname()[1])
        self._closed = False
        self._lock = threading.Lock()
        self._serving: set[threading.Thread] = set()  # under _lock
        self._accepter = threading.Thread(target=self._accept, name=f"drizzle ledger {name}", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            t = threading.Thread(target=self._serve, args=(conn,), name=f"drizzle ledger {self.name} request",
                                 daemon=True)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._serving.add(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(_TIMEOUT)
                if not hmac.compare_digest(_recv(conn, _TOKEN_FRAME), self.token):
                    log.warning("%s: a ledger request with a wrong token was refused", self.name)
                    return
                request = json.loads(_recv(conn, MAX_FRAME))
                try:
                    answer = self.handle(request)
                except Exception as e:  # the worker's task fails with it; the driver carries on
                    answer = {"error": f"{type(e).__name__}: {e}"}
                _send(conn, json.dumps(answer).encode("utf-8"))
        except (OSError, ValueError) as e:
            log.debug("%s: a ledger request failed: %s", self.name, e)
        finally:
            with self._lock:
                self._serving.discard(threading.current_thread())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            serving = list(self._serving)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.sock.close()
        self._accepter.join(timeout=5.0)
        for t in serving:
            t.join(timeout=5.0)


class Holds:
    """How many datasets that may read each batch again are alive on the driver.

    ``hold(key, ds)`` counts one more (the raw dataset of a batch, made for
    a run; a batch rolled back is built again, so a key may have several);
    a weak reference's callback counts it off when ``ds`` is collected. The
    callback may run on any thread, in the middle of anything (a garbage
    collection), so it only appends to ``dead``; :meth:`released` does the
    counting, under the source's lock.

    State: ``live: {key: datasets alive}``, ``dead: deque[key]`` (collected,
    not counted yet).
    """

    def __init__(self) -> None:
        self.live: dict[Hashable, int] = {}
        self.dead: deque[Hashable] = deque()

    def hold(self, key: Hashable, ds: Any) -> None:
        self.live[key] = self.live.get(key, 0) + 1
        weakref.finalize(ds, self.dead.append, key)

    def released(self) -> list[Hashable]:
        """The keys whose last dataset was collected since the last call."""
        out = []
        while self.dead:
            key = self.dead.popleft()
            n = self.live.get(key, 0) - 1
            if n > 0:
                self.live[key] = n
            else:
                self.live.pop(key, None)
                out.append(key)
        return out

    def alive(self, key: Hashable) -> bool:
        return key in self.live
