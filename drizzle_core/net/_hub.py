"""Hub: many non-blocking framed socket connections behind one selector.

Both process transports (``local`` over Unix sockets, ``tcp`` over TCP) and
both ends (driver, worker) use it, so framing and flow control are written
once. A connection is handed to the hub *after* its transport-specific
handshake (hello, authentication), already bound to a peer id.

Why non-blocking with an output queue: two workers that push large shuffle
blocks to each other while each is busy running a task would deadlock with
blocking ``sendall`` once both socket buffers fill. Here a send queues the
buffers (no copy) and writes what the kernel takes; the rest goes out on the
next ``poll``. Each worker returns to ``poll`` between tasks, so every queue
drains.

Reading: small frames are parsed out of a receive buffer; a large body
(over ``_BIG``) is read with ``recv_into`` straight into the memory it will
live in (:class:`_BigBody`), so numpy arrays arrive with one copy (kernel to
user space), each out-of-band buffer at a 64-byte aligned address: the worker
runtime then never copies an array to align it (an array must not change its
alignment with the frame layout: SIMD reductions would change in the last
bits), and caching a 1 GB array costs 1 GB on the workers, not 2.

Authentication (optional, per connection: ``add(..., auth=FrameAuth)``; the
tcp transport without TLS): every frame written carries tags computed under
the write lock, so the implicit sequence numbers follow the write order even
when a second thread sends; every frame read is checked before it is decoded
(a large frame's header before its body is allocated, its body after
``recv_into`` filled it). A frame that fails ends the connection, reported as
``Disconnected`` with a reason saying so; nothing of it is unpickled. Layout
and costs: ``protocol._wire``. A connection without ``auth`` (local's Unix
sockets, TLS, the wake socket) pays one ``is None`` test per frame.

Events returned by :meth:`Hub.poll`: ``(peer, message)`` per frame, and
``(peer, Disconnected(reason))`` when a connection ends, cleanly or not.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..protocol import _wire

log = logging.getLogger("drizzle.hub")

_RECV = 1 << 18
_BIG = 1 << 20
_ALIGN = 64        # where out-of-band buffers of a large frame land (a cache line; AVX-512's width)
_MMAP = 1 << 25    # bodies from 32 MiB (glibc's largest mmap threshold) are fresh anonymous mappings
_HUGE = 1 << 22    # bodies from 4 MiB (numpy's own threshold) go to memory asked to be backed by huge pages
_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux only
_IOV_MAX = 512
_TLS_WRITE = 1 << 16  # small buffers are joined into one TLS write (ssl has no sendmsg)
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection to ``peer`` ended; ``clean`` is False when a frame was cut."""

    reason: str
    clean: bool


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame."""


class _Conn:
    __slots__ = ("auth", "big", "big_header", "big_lengths", "big_tag", "epoch", "out", "peer", "rbuf",
                 "sock", "tls", "writing")

    def __init__(self, sock: socket.socket, peer: Any, epoch: int | None = None,
                 auth: _wire.FrameAuth | None = None) -> None:
        self.sock = sock
        self.auth = auth
        self.big_header = b""   # a large frame being read: its header and tags, for the check after it
        self.big_tag = b""
        self.peer = peer
        self.epoch = epoch
        self.out: deque[memoryview] = deque()
        self.rbuf = bytearray()
        self.big: _BigBody | None = None
        self.big_lengths: tuple[int, ...] = ()
        self.writing = False
        self.tls = isinstance(sock, ssl.SSLSocket)


class _BigBody:
    """A large frame's body being received in place: the pickle first, then each buffer aligned.

    ``parts`` are the views of ``mem`` still to fill, in wire order; ``main``
    and ``buffers`` are what :func:`_wire.decode_parts` unpickles. With
    ``contiguous`` (an authenticated connection: its MAC runs over the body as
    one buffer, ``body``) the body is one region, shifted so that the most
    bytes of buffers are aligned (the launch's program comes before the
    partitions: aligning the first buffer would align the program, and the
    partitions, copied by the worker to align them, would then stay pinned
    with it); otherwise each buffer starts at the next aligned address (gaps
    of under 64 bytes). Memory: ``_HUGE`` bytes and up come from an anonymous
    mapping, whose zero pages the kernel provides as ``recv_into`` writes
    them, where ``bytearray(n)`` first writes n zeros (a pass over the memory
    before a byte is received: 0.1-0.35 s per GiB measured here), and which
    is asked for huge pages (see :func:`_alloc`).
    """

    __slots__ = ("body", "buffers", "main", "mem", "parts", "size")

    def __init__(self, body_len: int, lengths: tuple[int, ...], *, contiguous: bool) -> None:
        self.size = body_len
        main_len = body_len - sum(lengths)
        mem, view, base = _alloc(body_len + _ALIGN * (1 if contiguous else len(lengths) + 1))
        shift = -(base + main_len) % _ALIGN  # the first buffer aligned
        if contiguous and len(lengths) > 1:  # one shift for all: the one that aligns the most bytes
            aligned_bytes = [0] * _ALIGN
            offset = main_len
            for n in lengths:
                aligned_bytes[-(base + offset) % _ALIGN] += n
                offset += n
            shift = max(range(_ALIGN), key=aligned_bytes.__getitem__)
        offset = shift + main_len
        starts = []
        for n in lengths:
            if not contiguous:
                offset += -(base + offset) % _ALIGN
            starts.append(offset)
            offset += n
        self.mem = mem
        self.main = view[shift:shift + main_len]
        self.buffers = [view[a:a + n] for a, n in zip(starts, lengths)]
        self.body: memoryview | None = view[shift:shift + body_len] if contiguous else None
        self.parts = deque([self.body] if self.body is not None else
                           [part for part in (self.main, *self.buffers) if part.nbytes])

    def target(self) -> memoryview:
        """Where the next bytes of the body go."""
        return self.parts[0]

    def advance(self, n: int) -> bool:
        """``n`` bytes were written at :meth:`target`; True once the body is complete."""
        parts = self.parts
        head = parts[0]
        if n < head.nbytes:
            parts[0] = head[n:]
            return False
        parts.popleft()
        return not parts

    def fill(self, data: memoryview) -> None:
        """Copy ``data`` (the body's first bytes, read with the header) into place."""
        while data.nbytes:
            head = self.parts[0]
            k = min(head.nbytes, data.nbytes)
            head[:k] = data[:k]
            data = data[k:]
            self.advance(k)

    def decode(self) -> Any:
        return _wire.decode_parts(self.main, self.buffers)


def _alloc(size: int) -> tuple[Any, memoryview, int]:
    """``size`` writable bytes: (owner, a byte view of it, its address). See :class:`_BigBody`.

    From ``_HUGE`` bytes: an anonymous mapping madvised for transparent huge
    pages, the view starting on a 2 MiB boundary, as numpy does for its own
    arrays of 4 MiB and more. Why: a cached partition lives where its frame
    was received, and a kernel that streams over it misses the TLB on every
    4 KiB page. Measured here (2 workers, each alternating over two 8 MB
    blocks, the logistic gradient): 2.4-2.6 ms a block on 4 KiB pages, 1.3-1.5
    on huge pages, which is what the same kernel takes in a plain process.
    """
    if size >= _HUGE and _MADV_HUGEPAGE is not None:
        # private: a shared anonymous mapping is shmem, which THP leaves alone (shmem_enabled is its own knob)
        mem: Any = mmap.mmap(-1, size + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        address = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        skip = -address % _HUGE_PAGE
        with contextlib.suppress(OSError):  # THP off, or a kernel without it: 4 KiB pages, as before
            mem.madvise(_MADV_HUGEPAGE)
        return mem, memoryview(mem)[skip:skip + size], address + skip
    mem = mmap.mmap(-1, size) if size >= _MMAP else bytearray(size)
    address = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    return mem, memoryview(mem), address


class Hub:
    """Framed, non-blocking connections keyed by peer id (see module docstring)."""

    def __init__(self, *, max_frame: int = _wire.DEFAULT_MAX_FRAME,
                 connector: Callable[[Any], socket.socket | tuple[socket.socket, _wire.FrameAuth | None]]
                 | None = None) -> None:
        self.max_frame = max_frame
        self._connector = connector
        self._sel = selectors.DefaultSelector()
        self._out: dict[Any, _Conn] = {}       # peer -> connection used to send to it
        self._conns: set[_Conn] = set()
        self._listeners: dict[socket.socket, Callable[[socket.socket], Any]] = {}
        self._events: list[tuple[Any, Any]] = []
        self._expected: dict[Any, int] = {}     # peer -> incarnation to talk to
        self.bytes_sent = 0
        self.messages_sent = 0
        # Writes may come from a second thread (a worker's heartbeat thread sends while a long task
        # holds the loop): queueing a frame and writing a connection's queue happen under this lock,
        # so frames never interleave. Reads and the selector stay the polling thread's.
        self._wlock = threading.Lock()
        #: peer -> when bytes last arrived from it (time.monotonic()): a worker's liveness, frames or not
        self.heard: dict[Any, float] = {}

    # --------------------------------------------------------------- wiring
    def add(self, sock: socket.socket, peer: Any, *, send_to: bool = True, epoch: int | None = None,
            auth: _wire.FrameAuth | None = None) -> None:
        """Adopt a connected, handshaken socket to ``peer``.

        ``auth``: the connection's frame MAC state (its keys come from the
        handshake), or None for a channel that needs none (same-user Unix
        sockets, TLS).

        ``epoch`` is the incarnation of the peer process (how many times its
        worker slot was refilled), when the handshake tells it: a connection
        from an older incarnation than expected is refused, a newer one
        retires the older connections (see :meth:`expect`).
        """
        if epoch is not None:
            if epoch < self._expected.get(peer, 0):
                sock.close()
                return
            self.expect(peer, epoch)
        sock.setblocking(False)
        conn = _Conn(sock, peer, epoch, auth)
        self._conns.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)
        if send_to and peer not in self._out:
            self._out[peer] = conn

    def expect(self, peer: Any, epoch: int) -> None:
        """From now on ``peer`` is incarnation ``epoch``: close connections to older ones.

        A worker whose peer died and was replaced must not write into the
        connection to the dead predecessor (on a remote host its end may not
        have been noticed yet): the bytes would vanish.
        """
        if epoch <= self._expected.get(peer, 0) and peer in self._expected:
            return
        self._expected[peer] = epoch
        # Only connections known to reach an older incarnation go; untagged
        # ones (handshakes that do not tell) are left to end by themselves.
        for conn in [c for c in self._conns if c.peer == peer and c.epoch is not None and c.epoch < epoch]:
            self._drop(conn, f"peer {peer!r} was replaced", clean=True)

    def expected(self, peer: Any) -> int:
        """The incarnation of ``peer`` this hub knows of (0 until told otherwise)."""
        return self._expected.get(peer, 0)

    def listen(self, sock: socket.socket, accept: Callable[[socket.socket], Any]) -> None:
        """Accept connections on ``sock``; ``accept(conn)`` handshakes and returns the peer id
        (or None to drop the connection)."""
        sock.setblocking(False)
        self._listeners[sock] = accept
        self._sel.register(sock, selectors.EVENT_READ, None)

    def peers(self) -> list[Any]:
        return list(self._out)

    # -------------------------------------------------------------- sending
    def send(self, peer: Any, obj: Any) -> int:
        """Queue ``obj`` for ``peer`` and write what the socket takes now. Returns bytes."""
        return self.send_frame(peer, _wire.encode(obj))

    def send_frame(self, peer: Any, frame: list[Any]) -> int:
        """Queue an already encoded frame (the same bytes may go to several peers)."""
        conn = self._out.get(peer)
        if conn is None:
            if self._connector is None:
                raise KeyError(f"no connection to {peer!r}")
            made = self._connector(peer)  # a socket, or (socket, FrameAuth) for an authenticated channel
            sock, auth = made if isinstance(made, tuple) else (made, None)
            self.add(sock, peer, epoch=self._expected.get(peer, 0), auth=auth)
            conn = self._out[peer]
        views = []
        n = 0
        for part in frame:
            view = part if isinstance(part, memoryview) else memoryview(part)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            if view.nbytes:  # an empty buffer (a zero-row array) has nothing to write; queued, sendmsg
                n += view.nbytes  # would report 0 bytes sent forever and _write would spin
                views.append(view)
        with self._wlock:
            if conn.auth is None:
                conn.out.extend(views)
            else:  # sealed here, under the lock: sequence numbers in write order
                head = views[0]
                conn.out.append(head)
                conn.out.append(memoryview(conn.auth.seal(head, views[1:], n - head.nbytes)))
                conn.out.extend(views[1:])
            self.bytes_sent += n
            self.messages_sent += 1
            self._write_locked(conn)
        return n

    def _write(self, conn: _Conn) -> None:
        with self._wlock:
            self._write_locked(conn)

    def _write_locked(self, conn: _Conn) -> None:
        out = conn.out
        try:
            while out:
                if conn.tls:
                    sent = conn.sock.send(_tls_chunk(out))
                else:
                    batch = [out[i] for i in range(min(len(out), _IOV_MAX))]
                    sent = conn.sock.sendmsg(batch)
                while sent:
                    head = out[0]
                    if sent >= head.nbytes:
                        sent -= head.nbytes
                        out.popleft()
                    else:
                        out[0] = head[sent:]
                        sent = 0
        except _WOULD_BLOCK:
            pass
        except OSError as e:
            self._drop(conn, f"send failed: {e}", clean=False)
            return
        want = bool(out)
        if want != conn.writing:
            conn.writing = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self._sel.modify(conn.sock, events, conn)

    def pending_output(self) -> bool:
        return any(c.out for c in self._conns)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every queued byte is written (or ``timeout``). Used before exit."""
        deadline = time.monotonic() + timeout
        while self.pending_output():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 0.05))
        return True

    # -------------------------------------------------------------- polling
    def poll(self, timeout: float | None) -> list[tuple[Any, Any]]:
        """Wait up to ``timeout`` seconds (None: forever) for frames; return events."""
        if not self._events:
            ready = self._sel.select(timeout)
            now = time.monotonic() if ready else 0.0
            for key, mask in ready:
                conn = key.data
                if conn is None:
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                    continue
                if mask & selectors.EVENT_WRITE and conn in self._conns:
                    self._write(conn)
                if mask & selectors.EVENT_READ and conn in self._conns:
                    self.heard[conn.peer] = now
                    self._read(conn)
                    # TLS may hold decrypted bytes the selector cannot see
                    while conn.tls and conn in self._conns and conn.sock.pending():
                        self._read(conn)
        events, self._events = self._events, []
        if len(events) > 1 and any(isinstance(e[1], Disconnected) for e in events):
            # Ends first: a message read in the same round (say, a launch that
            # pushes to that peer) must see the peer as gone, not write into a
            # dead connection.
            events.sort(key=lambda e: not isinstance(e[1], Disconnected))
        return events

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            sock.setblocking(True)
            peer = self._listeners[listener](sock)
        except Exception as e:  # a bad client must not take the hub down
            log.warning("dropped an incoming connection during its handshake: %s", e)
            sock.close()
            return
        if peer is None:
            sock.close()
            return
        if isinstance(peer, tuple):  # (peer, epoch) from handshakes that tell the incarnation
            self.add(sock, peer[0], epoch=peer[1])
        else:
            self.add(sock, peer)

    def _read(self, conn: _Conn) -> None:
        try:
            big = conn.big
            if big is not None:
                n = conn.sock.recv_into(big.target())
                if n == 0:
                    self._drop(conn, "connection closed in the middle of a frame", clean=False)
                    return
                if big.advance(n):
                    body, lengths = big, conn.big_lengths
                    conn.big = None
                    if conn.auth is not None:
                        assert big.body is not None  # authenticated: received contiguous
                        try:
                            conn.auth.check_body(conn.big_header, conn.big_tag, big.body, big.size)
                        except _wire.AuthError as e:
                            self._drop(conn, _auth_failed(e), clean=False)
                            return
                    self._deliver(conn, body, lengths)
                return
            data = conn.sock.recv(_RECV)
        except _WOULD_BLOCK:
            return
        except OSError as e:
            self._drop(conn, f"receive failed: {e}", clean=False)
            return
        if not data:
            if conn.rbuf:
                self._drop(conn, "connection closed in the middle of a frame", clean=False)
            else:
                self._drop(conn, "connection closed", clean=True)
            return
        buf = conn.rbuf
        buf += data
        try:
            self._parse(conn)
        except ProtocolError as e:
            self._drop(conn, f"protocol error: {e}", clean=False)
        except _wire.AuthError as e:
            self._drop(conn, _auth_failed(e), clean=False)

    def _parse(self, conn: _Conn) -> None:
        buf = conn.rbuf
        auth = conn.auth
        pos = 0
        n = len(buf)
        while n - pos >= 12:
            body_len, nbuf = _wire.HEADER.unpack_from(buf, pos)
            if body_len > self.max_frame:
                raise ProtocolError(f"frame of {body_len} bytes is over the maximum of {self.max_frame}")
            if nbuf > 1 << 16:
                raise ProtocolError(f"frame claims {nbuf} buffers")
            head = 12 + 8 * nbuf
            hdr = head if auth is None else head + auth.tag_size(body_len)
            if n - pos < hdr:
                break
            lengths = struct.unpack_from(f"<{nbuf}Q", buf, pos + 12) if nbuf else ()
            if sum(lengths) > body_len:
                raise ProtocolError("buffer lengths exceed the frame length")
            start = pos + hdr
            end = start + body_len
            if auth is not None:  # copies of a few bytes: no view may pin buf, which is resized below
                header, tag = bytes(buf[pos:pos + head]), bytes(buf[pos + head:start])
                if body_len >= _wire.SPLIT:
                    auth.check_head(header, tag)  # before anything is allocated for the body
            if end <= n:
                body = bytes(buf[start:end]) if not nbuf else bytearray(buf[start:end])
                if auth is not None:
                    auth.check_body(header, tag, body, body_len)
                self._deliver(conn, body, lengths)
                pos = end
                continue
            if body_len >= _BIG:
                big = _BigBody(body_len, lengths, contiguous=auth is not None)
                with memoryview(buf) as view:  # released before buf is resized below
                    big.fill(view[start:n])
                conn.big, conn.big_lengths = big, lengths
                if auth is not None:
                    conn.big_header, conn.big_tag = header, tag
                pos = n
            break
        if pos:
            del buf[:pos]

    def _deliver(self, conn: _Conn, body: Any, lengths: tuple[int, ...]) -> None:
        try:
            msg = body.decode() if type(body) is _BigBody else _wire.decode(body, lengths)
        except Exception as e:
            self._drop(conn, f"could not decode a frame: {e!r}", clean=False)
            return
        self._events.append((conn.peer, msg))

    # -------------------------------------------------------------- closing
    def _drop(self, conn: _Conn, reason: str, *, clean: bool) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        if self._out.get(conn.peer) is conn:
            del self._out[conn.peer]
        self._events.append((conn.peer, Disconnected(reason, clean)))

    def disconnect(self, peer: Any) -> None:
        conn = self._out.get(peer)
        if conn is not None:
            self._drop(conn, "closed locally", clean=True)
            self._events = [e for e in self._events if e[0] != peer or not isinstance(e[1], Disconnected)]

    def close(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            conn.sock.close()
        self._conns.clear()
        self._out.clear()
        for sock in list(self._listeners):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
            sock.close()
        self._listeners.clear()
        self._sel.close()


def _auth_failed(e: Exception) -> str:
    return (f"frame authentication failed ({e}: modified, injected, replayed or reordered on the way, or a "
            f"frame was dropped); connection closed, nothing of that frame was unpickled")


def _tls_chunk(out: deque[memoryview]) -> Any:
    """The head of ``out`` for one TLS write: a large buffer as is, small ones joined."""
    head = out[0]
    if head.nbytes >= _TLS_WRITE or len(out) == 1:
        return head
    parts: list[memoryview] = []
    n = 0
    for view in out:
        if n + view.nbytes > _TLS_WRITE and parts:
            break
        parts.append(view)
        n += view.nbytes
    return b"".join(parts)


def is_connection_refused(e: OSError) -> bool:
    return e.errno in (errno.ECONNREFUSED, errno.ENOENT)
