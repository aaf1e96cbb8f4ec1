"""The TCP worker daemon: serves one driver session at a time, forever.

Threads and state (one logic thread decides; the others only hand it sockets):

* the **acceptor** thread accepts connections and starts one **handshake**
  thread per connection (at most ``MAX_HANDSHAKES`` at once), so a client
  that connects and says nothing costs a thread for ``handshake_timeout``
  seconds and never blocks the serving loop;
* a handshake thread runs the exchange of ``_handshake`` (HMAC both ways,
  version, hello) and, when the caller is admitted, puts
  ``(socket, hello, address)`` on ``incoming`` and wakes the main thread;
* the **main** thread waits for a driver, then runs its session: a fresh
  :class:`~drizzle_core.transport.WorkerRuntime` and a fresh
  :class:`~drizzle_core.transport.Hub` (driver connection, peer workers'
  connections, the wake socket). When the driver says STOP or its
  connection ends, the session is dropped whole (cached partitions,
  shuffle blocks, peer connections) and the daemon waits for the next.

The session's peer table (``peers``: worker index -> address, None for a
worker the driver lost) comes in the driver's hello and is replaced by each
``(PEERS, [[address | None, epoch], ...])`` message the driver sends when a
worker joins or is replaced; the daemon consumes that message in its
``on_event`` (the runtime never sees it), calls ``hub.expect`` for every
peer's epoch (connections to a dead predecessor close at once), and
connects lazily to a peer the first time the runtime sends to it. Every
worker-to-worker hello carries the caller's epoch, so the accepting Hub
tags (and, for an older incarnation, refuses) that connection too.

Shared state, under ``_lock``: ``claimed`` — the session id of the driver
being served (set by the handshake thread that admits it, so a second
driver is refused as busy even before the main thread sees the first; cleared
by the main thread the moment that driver says STOP or disconnects) and
``claimed_by`` (its address). Main-thread only: ``later`` — connections
admitted while a session was ending (the next driver, its workers), served
once it has been torn down.

Every bad input (wrong or missing secret, version mismatch, garbage, an
oversized or truncated frame, silence, a peer or driver that vanishes) costs
one log line and that one connection; the daemon keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import ssl
import threading
import time
from typing import Any

from drizzle_core.transport import DEFAULT_MAX_FRAME, DRIVER, STOP, Disconnected, Hub, WorkerRuntime, encode

from . import _handshake, _hashing, _net
from ._handshake import PEERS, HandshakeError
from ._net import TLS

log = logging.getLogger("drizzle.tcp.worker")

MAX_HANDSHAKES = 64
_WAKE = "wake"


class WorkerDaemon:
    """A worker listening on ``listen`` (HOST:PORT; port 0 picks a free one)."""

    def __init__(self, listen: str = "127.0.0.1:7078", secret: bytes = b"", *, max_frame: int = DEFAULT_MAX_FRAME,
                 handshake_timeout: float = _net.HANDSHAKE_TIMEOUT, connect_timeout: float = _net.CONNECT_TIMEOUT,
                 tls: TLS | None = None, one_session: bool = False,
                 keepalive: tuple[float, float, int] | None = _net.KEEPALIVE) -> None:
        host, port = _net.parse_address(listen)
        if not secret and not _net.is_loopback(host):
            raise ValueError(f"refusing to listen on {listen} without a secret: anyone who can reach it could "
                             f"run code here (give --secret-file or set DRIZZLE_SECRET, or listen on 127.0.0.1)")
        self.host, self.port = host, port
        self.secret = secret
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.one_session = one_session
        self.keepalive = keepalive
        self._hashing = _hashing.describe()  # how this process hashes, for the driver's check
        self._server_tls = tls.server_context() if tls else None
        self._client_tls = tls.client_context() if tls else None
        self._lock = threading.Lock()
        self._claimed: str | None = None
        self._claimed_by = ""
        self._wake_w: socket.socket | None = None
        self._wake_pending = False
        self._handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self._incoming: queue.SimpleQueue[tuple[socket.socket, dict, str]] = queue.SimpleQueue()
        self._later: list[tuple[socket.socket, dict, str]] = []  # admitted during a session, for after it
        self._listener: socket.socket | None = None
        self._stopping = False
        self.sessions = 0

    # ------------------------------------------------------------ listening
    def bind(self) -> str:
        """Bind and listen; return the address actually bound (HOST:PORT)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self.port = sock.getsockname()[1]
        return self.address

    @property
    def address(self) -> str:
        return _net.format_address(self.host, self.port)

    def serve_forever(self) -> None:
        """Serve driver sessions until :meth:`stop` (or, with ``one_session``, the first one ends)."""
        if self._listener is None:
            self.bind()
        acceptor = threading.Thread(target=self._accept_loop, name="drizzle-tcp-acceptor", daemon=True)
        acceptor.start()
        log.info("listening on %s", self.address)
        early: list[tuple[socket.socket, dict, str]] = []  # peer connections that beat their driver's
        try:
            while not self._stopping:
                if self._later:
                    sock, hello, addr = self._later.pop(0)
                else:
                    try:
                        sock, hello, addr = self._incoming.get(timeout=0.5)
                    except queue.Empty:
                        continue
                with self._lock:
                    claimed = self._claimed
                if hello["session"] != claimed:
                    sock.close()  # from a session that already ended
                    continue
                if hello["role"] == "worker":
                    early.append((sock, hello, addr))
                    continue
                self._run_session(sock, hello, addr, early)
                early = []
                if self.one_session:
                    break
        finally:
            self.stop()
            for sock, _h, _a in early + self._later:
                sock.close()

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the acceptor's accept()
            self._listener.close()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping:
            try:
                sock, raw = listener.accept()
            except OSError:
                if self._stopping:
                    return
                time.sleep(0.01)  # e.g. EMFILE: don't spin
                continue
            addr = _net.format_address(raw[0], raw[1]) if isinstance(raw, tuple) else str(raw)
            if not self._handshakes.acquire(blocking=False):
                log.warning("refused %s: %d handshakes already in progress", addr, MAX_HANDSHAKES)
                sock.close()
                continue
            threading.Thread(target=self._handshake, args=(sock, addr), name=f"drizzle-tcp-handshake {addr}",
                             daemon=True).start()

    # ------------------------------------------------------------ handshake
    def _handshake(self, sock: socket.socket, addr: str) -> None:
        claimed_here: list[str] = []

        def decide(hello: dict) -> dict:
            return self._decide(hello, addr, claimed_here)

        try:
            _net.tune(sock, self.keepalive)
            if self._server_tls is not None:
                sock = self._wrap_tls(sock)
            hello = _handshake.accept(sock, self.secret, self.handshake_timeout, decide)
            sock.settimeout(None)
        except Exception as e:
            self._unclaim(claimed_here)
            if isinstance(e, HandshakeError):
                log.warning("refused connection from %s: %s", addr, e)
            elif isinstance(e, OSError):
                log.warning("dropped connection from %s during the handshake: %s", addr, e.strerror or e)
            else:
                log.warning("dropped connection from %s during the handshake: %r", addr, e)
            with contextlib.suppress(OSError):
                sock.close()
            return
        finally:
            self._handshakes.release()
        self._incoming.put((sock, hello, addr))
        self._wake()

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(self.handshake_timeout)
        try:
            return self._server_tls.wrap_socket(sock, server_side=True)  # type: ignore[union-attr]
        except TimeoutError:
            raise HandshakeError("tls", "TLS handshake failed: timed out (is the client using TLS?)") from None
        except ssl.SSLError as e:
            raise HandshakeError("tls", f"TLS handshake failed: {e.reason or e}") from None

    def _decide(self, hello: dict, addr: str, claimed_here: list[str]) -> dict:
        session = hello.get("session")
        if not isinstance(session, str):
            return {"ok": False, "error": "hello", "message": "the hello has no session id"}
        with self._lock:
            if hello["role"] == "driver":
                peers = hello.get("peers")
                if not (isinstance(peers, list) and all(p is None or isinstance(p, str) for p in peers)
                        and 0 <= hello["index"] < len(peers)):
                    return {"ok": False, "error": "hello", "message": "the driver's hello has no valid peer list"}
                if self._claimed is not None:
                    return {"ok": False, "error": "busy",
                            "message": f"busy serving another driver ({self._claimed_by}); "
                                       f"a worker serves one driver at a time"}
                if "hash" in hello:  # absent for the session's worker 0, which the others must match
                    why = _hashing.mismatch(self._hashing, hello["hash"])
                    if why is not None:
                        return {"ok": False, "error": "hash", "message": why}
                self._claimed, self._claimed_by = session, addr
                claimed_here.append(session)
                return {"ok": True, "pid": os.getpid(), "hash": self._hashing}
            if session != self._claimed:
                return {"ok": False, "error": "session",
                        "message": "this worker is not serving that session (its driver has gone?)"}
            return {"ok": True, "pid": os.getpid()}

    def _release(self, session: str) -> None:
        """The driver of ``session`` has left: the next one may connect (its session starts
        once this one is torn down)."""
        with self._lock:
            if self._claimed == session:
                self._claimed = None

    def _unclaim(self, claimed_here: list[str]) -> None:
        """A driver admitted by this thread failed before the main thread got it: free the worker."""
        if claimed_here:
            with self._lock:
                if self._claimed == claimed_here[0]:
                    self._claimed = None

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w is None or self._wake_pending:
                return
            self._wake_pending = True
            with contextlib.suppress(OSError):
                self._wake_w.sendall(b"".join(bytes(p) for p in encode(None)))

    # -------------------------------------------------------------- session
    def _run_session(self, driver_sock: socket.socket, hello: dict, driver_addr: str,
                     early: list[tuple[socket.socket, dict, str]]) -> None:
        index: int = hello["index"]
        peers: list[str | None] = list(hello["peers"])
        session: str = hello["session"]
        epoch = hello.get("epoch", 0)
        epoch = epoch if isinstance(epoch, int) else 0
        self.sessions += 1
        log.info("serving driver %s as worker %d of %d (session %s, epoch %d)", driver_addr, index, len(peers),
                 session[:8], epoch)
        peer_hello = {"role": "worker", "index": index, "session": session, "epoch": epoch}

        def connect_peer(peer: Any) -> socket.socket:
            address = peers[peer] if isinstance(peer, int) and 0 <= peer < len(peers) else None
            if address is None:
                raise ConnectionError(f"no connection to {'the driver' if peer == DRIVER else peer!r}")
            sock, _reply = _net.open_connection(address, self.secret, peer_hello, tls=self._client_tls,
                                                connect_timeout=self.connect_timeout,
                                                handshake_timeout=self.handshake_timeout, keepalive=self.keepalive)
            return sock

        hub = Hub(max_frame=self.max_frame, connector=connect_peer)
        wake_r, wake_w = socket.socketpair()
        hub.add(wake_r, _WAKE, send_to=False)
        hub.add(driver_sock, DRIVER)
        peer_addrs: dict[int, str] = {}
        for sock, h, addr in early:
            hub.add(sock, h["index"], send_to=True, epoch=_epoch_of(h))
            peer_addrs[h["index"]] = addr
        with self._lock:
            self._wake_w = wake_w
            self._wake_pending = False

        def send(dest: int, msg: object) -> None:
            if dest == DRIVER and runtime.stopped:
                return  # results of a session being dropped: nobody to read them
            try:
                hub.send(dest, msg)
            except (OSError, KeyError) as e:  # a dead peer: the driver hears of it and aborts the group
                # (an unpicklable value is not caught here: the runtime turns it into the task's failure)
                log.warning("could not send to %s: %s", "the driver" if dest == DRIVER else f"worker {dest}", e)

        runtime = WorkerRuntime(index, send, expect_peer=hub.expect, bytes_sent=lambda: hub.bytes_sent)
        why = ["the driver said STOP"]

        def poll(timeout: float | None) -> list:
            with self._lock:
                self._wake_pending = False
            while True:
                try:
                    sock, h, addr = self._incoming.get_nowait()
                except queue.Empty:
                    break
                if h["session"] == session and h["role"] == "worker":
                    hub.add(sock, h["index"], epoch=_epoch_of(h))
                    peer_addrs[h["index"]] = addr
                else:  # the next driver (admitted once this one left) or its workers
                    self._later.append((sock, h, addr))
            return hub.poll(timeout)

        def on_event(src: Any, msg: Any) -> bool:
            if src == _WAKE:
                return True
            if isinstance(msg, Disconnected):
                if src == DRIVER:
                    runtime.stopped = True
                    self._release(session)
                    why[0] = f"{msg.reason} without STOP" if msg.clean else msg.reason
                    log.warning("dropped the session of driver %s: %s", driver_addr, why[0])
                elif msg.clean:
                    log.info("connection with worker %s ended", src)
                else:
                    log.warning("connection with worker %s (%s) ended: %s", src,
                                peer_addrs.get(src, peers[src] if 0 <= src < len(peers) else "?"), msg.reason)
                return True
            if src == DRIVER and type(msg) is tuple and msg and msg[0] == STOP:
                runtime.stopped = True
                self._release(session)
                return True
            if src == DRIVER and type(msg) is tuple and msg and msg[0] == PEERS:
                self._update_peers(hub, peers, msg[1], index)
                return True
            return False

        try:
            runtime.serve(poll, on_event)
            if why[0] == "the driver said STOP":
                hub.flush(timeout=2.0)
        except Exception as e:  # e.g. an authenticated driver sending nonsense: drop it, keep serving
            why[0] = f"error: {e!r}"
            log.warning("dropped the session of driver %s after an error: %r", driver_addr, e)
        finally:
            with self._lock:
                self._wake_w = None
            self._release(session)
            hub.close()
            wake_w.close()
        log.info("session %s of driver %s ended (%s); ready for the next driver", session[:8], driver_addr, why[0])

    @staticmethod
    def _update_peers(hub: Hub, peers: list[str | None], table: list, me: int) -> None:
        """A worker joined or was replaced: new addresses (connected to lazily) and epochs."""
        peers[:] = [address for address, _epoch in table]
        for peer, (address, epoch) in enumerate(table):
            if peer != me and address is not None:
                hub.expect(peer, epoch)  # connections to an older incarnation close now
        log.info("peer table updated: %s", peers)


def _epoch_of(hello: dict) -> int:
    epoch = hello.get("epoch", 0)
    return epoch if isinstance(epoch, int) and epoch >= 0 else 0
