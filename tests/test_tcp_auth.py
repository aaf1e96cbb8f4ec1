"""Every frame after the tcp handshake is authenticated (without TLS): a relay on the path cannot run code.

Two levels. The Hub with ``FrameAuth`` on a socket pair, where a test can
record, alter, replay, reorder and drop frames byte for byte; and a real
``drizzle worker`` behind a loopback relay that forwards the handshake
faithfully and then tampers with the stream. In every case the connection is
dropped with a reason saying why, the injected pickle (which would create a
file) never runs, and the driver gets a clear error, not a hang. One control
test shows the relay's pickle does run when both sides turn the MAC off, so
the others could fail.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_tcp import SECRET, Daemon, tls_files  # noqa: F401 (a fixture)

import drizzle_core as dz
from drizzle_core.net._hub import Disconnected, Hub
from drizzle_core.protocol import _wire
from drizzle_core.protocol._wire import FrameAuth, derive_frame_keys

pytestmark = pytest.mark.timeout(60)


class Plant:
    """Unpickling this creates ``path``: the stand-in for code a relay gets run on the daemon."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _evil_frame(path: Path, tags: bytes = b"\0" * _wire.TAG) -> bytes:
    """A well-formed frame whose body is a pickle that creates ``path``, with made-up tags."""
    body = pickle.dumps(Plant(str(path)), protocol=5)
    return _wire.HEADER.pack(len(body), 0) + tags + body


# ------------------------------------------------------------------ hub level
def _pair() -> tuple[FrameAuth, FrameAuth]:
    c2s, s2c = derive_frame_keys(b"secret", os.urandom(32), os.urandom(32))
    return FrameAuth(c2s, s2c), FrameAuth(s2c, c2s)


def _drain(hub: Hub, want: int, *, sender: Hub | None = None, timeout: float = 5.0) -> list:
    """Events of ``hub`` until there are ``want`` (polling ``sender`` too, so its queue drains)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if sender is not None:
            sender.poll(0)
        got += hub.poll(0.01)
    return got


def _frames(raw: bytes) -> list[bytes]:
    """Split an authenticated byte stream into its frames (header, tags, body each)."""
    out, pos = [], 0
    while pos < len(raw):
        body_len, nbuf = _wire.HEADER.unpack_from(raw, pos)
        end = pos + 12 + 8 * nbuf + FrameAuth.tag_size(body_len) + body_len
        out.append(raw[pos:end])
        pos = end
    assert pos == len(raw)
    return out


def _record(messages: list) -> tuple[list[bytes], FrameAuth]:
    """The frames a sending Hub writes for ``messages``, read raw off the other end of its socket, and the
    receiving side's MAC state for them."""
    a, b = socket.socketpair()
    hub = Hub()
    send, _recv = _pair()
    hub.add(a, "peer", auth=send)
    raw = bytearray()

    def read() -> None:
        b.settimeout(10)
        while chunk := b.recv(1 << 20):
            raw.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    for m in messages:
        hub.send("peer", m)
    assert hub.flush(5)
    hub.close()
    reader.join(10)
    b.close()
    return _frames(bytes(raw)), _recv


def _receive(stream: bytes, recv_auth: FrameAuth, want: int) -> list:
    a, b = socket.socketpair()
    hub = Hub()
    hub.add(b, "sender", auth=recv_auth)

    def write() -> None:
        with contextlib.suppress(OSError):  # the hub may drop the connection before it took everything
            a.sendall(stream)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        return _drain(hub, want)
    finally:
        hub.close()
        writer.join(10)
        a.close()


def test_authenticated_frames_arrive_whole_both_ways_and_from_two_threads():
    """Small, large (out of band, read with recv_into) and empty buffers, both directions; and two
    threads sending at once (a heartbeat beside the loop): sequence numbers follow the write order."""
    a, b = socket.socketpair()
    left, right = Hub(), Hub()
    ka, kb = _pair()
    left.add(a, "R", auth=ka)
    right.add(b, "L", auth=kb)
    big = np.arange(3 << 18, dtype=np.float64)  # 6 MB: a body past SPLIT, header and body tags
    left.send("R", ("small", 1))
    left.send("R", ("big", big))
    left.send("R", ("empty", np.zeros(0)))
    got = _drain(right, 3, sender=left)
    assert [m[0] for _p, m in got] == ["small", "big", "empty"]
    assert np.array_equal(got[1][1][1], big) and got[2][1][1].size == 0
    right.send("L", ("back", big[:10]))
    back = _drain(left, 1, sender=right)
    assert back[0][1][0] == "back" and np.array_equal(back[0][1][1], big[:10])

    def beat():
        for i in range(200):
            left.send("R", ("beat", i))

    t = threading.Thread(target=beat)
    t.start()
    for i in range(200):
        left.send("R", ("loop", i))
        left.poll(0)
    t.join()
    got = _drain(right, 400, sender=left)
    assert not any(isinstance(m, Disconnected) for _p, m in got), got[-1]
    for kind in ("beat", "loop"):
        assert [m[1] for _p, m in got if m[0] == kind] == list(range(200))
    left.close()
    right.close()


@pytest.mark.parametrize("attack", ["inject", "replay", "reorder", "drop", "modify", "modify-large",
                                    "forge-large-length", "splice-body"])
def test_a_tampered_stream_is_dropped_before_anything_is_unpickled(attack, tmp_path):
    planted = tmp_path / "planted"
    big = np.ones(1 << 18)  # 2 MB
    frames, recv = _record([("a", 1), ("b", 2), ("c", big), ("d", big + 1)])
    good = 0  # frames that arrive intact before the bad one
    if attack == "inject":
        stream = frames[0] + _evil_frame(planted) + frames[1]
        good = 1
    elif attack == "replay":
        stream = frames[0] + frames[1] + frames[0]
        good = 2
    elif attack == "reorder":
        stream = frames[1] + frames[0]
    elif attack == "drop":
        stream = frames[0] + frames[2]
        good = 1
    elif attack == "modify":  # the last byte of the second frame's pickle
        f = bytearray(frames[1])
        f[-1] ^= 1
        stream = frames[0] + bytes(f)
        good = 1
    elif attack == "modify-large":  # a byte deep in the out-of-band buffer of a large frame
        f = bytearray(frames[2])
        f[len(f) // 2] ^= 0x40
        stream = frames[0] + frames[1] + bytes(f)
        good = 2
    elif attack == "forge-large-length":  # a header claiming 8 GB: refused before allocating anything
        f = bytearray(frames[2])
        struct.pack_into("<Q", f, 0, 1 << 33)
        stream = frames[0] + frames[1] + bytes(f)
        good = 2
    else:  # splice-body: frame 3's header and tags with frame 2's body (same length)
        h = len(frames[2]) - big.nbytes
        stream = frames[0] + frames[1] + frames[3][:h] + frames[2][h:]
        good = 2
    got = _receive(stream, recv, good + 1)
    ends = [m for _p, m in got if isinstance(m, Disconnected)]
    assert [m[0] for _p, m in got if not isinstance(m, Disconnected)] == list("abcd"[:good])
    assert len(ends) == 1 and not ends[0].clean
    end = ends[0]
    assert "frame authentication failed" in end.reason and "nothing of that frame was unpickled" in end.reason
    if attack == "forge-large-length":
        assert "header" in end.reason
    assert not planted.exists()


def test_the_same_injection_runs_without_frame_auth(tmp_path):
    """The control: without FrameAuth the injected frame's pickle runs, so the test above can fail."""
    planted = tmp_path / "planted"
    body = pickle.dumps(Plant(str(planted)), protocol=5)
    a, b = socket.socketpair()
    hub = Hub()
    hub.add(b, "sender")
    a.sendall(_wire.HEADER.pack(len(body), 0) + body)
    _drain(hub, 1)
    hub.close()
    a.close()
    assert planted.exists()


# ------------------------------------------------------------ a relay on the path
class Relay:
    """A loopback man in the middle: forwards both ways, parses the driver -> daemon stream (the handshake's
    fixed steps, then frames), and on request injects, replays or alters what goes to the daemon, or alters
    what goes back to the driver."""

    def __init__(self, upstream: str, *, frames_have_tags: bool = True) -> None:
        host, port = upstream.rsplit(":", 1)
        self.frames_have_tags = frames_have_tags
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.to_daemon: list[bytes] = []        # frames the driver sent, after the handshake
        self.pending: list[bytes] = []          # bytes to inject towards the daemon at the next chance
        self.alter_next_to_daemon = False
        self.alter_next_to_driver = False
        self.lock = threading.Lock()
        self.daemon_side: socket.socket | None = None
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.socks: list[socket.socket] = []
        self.threads[0].start()

    def _serve(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(self.upstream)
        self.socks += [client, server]
        self.daemon_side = server
        for pump, args in ((self._pump_up, (client, server)), (self._pump_down, (server, client))):
            self.threads.append(threading.Thread(target=pump, args=args, daemon=True))
            self.threads[-1].start()

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _pump_up(self, client: socket.socket, server: socket.socket) -> None:
        """driver -> daemon: step 2 (74 bytes), step 4 (u32 n, JSON, MAC), then frames one by one."""
        try:
            server.sendall(self._read(client, 74))
            n = struct.unpack("<I", hello := self._read(client, 4))[0]
            server.sendall(hello + self._read(client, n + 32))
            while not self.frames_have_tags:  # frames without MAC: forward as they come
                chunk = client.recv(1 << 16)
                if not chunk:
                    raise EOFError
                server.sendall(chunk)
            while True:
                head = self._read(client, 12)
                body_len, nbuf = _wire.HEADER.unpack(head)
                frame = head + self._read(client, 8 * nbuf + FrameAuth.tag_size(body_len) + body_len)
                with self.lock:
                    self.to_daemon.append(frame)
                    if self.alter_next_to_daemon:
                        self.alter_next_to_daemon = False
                        frame = frame[:-1] + bytes([frame[-1] ^ 1])
                    pending, self.pending = self.pending, []
                server.sendall(b"".join(pending) + frame)
        except (EOFError, OSError):
            pass
        finally:
            for s in (client, server):
                with _suppress():
                    s.shutdown(socket.SHUT_RDWR)

    def _pump_down(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := server.recv(1 << 16):
                with self.lock:
                    if self.alter_next_to_driver:  # the next frame (or part of one) the daemon sends
                        self.alter_next_to_driver = False
                        chunk = chunk[:-1] + bytes([chunk[-1] ^ 1])
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (client, server):
                with _suppress():
                    s.shutdown(socket.SHUT_RDWR)

    def inject_now(self, data: bytes) -> None:
        assert self.daemon_side is not None
        with self.lock:
            self.daemon_side.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            with _suppress():
                s.shutdown(socket.SHUT_RDWR)
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            s.close()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _ping(ctx: dz.Context) -> int:
    return ctx.parallelize(range(10), 2).map(lambda x: x * 2).sum()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.close()


@pytest.mark.parametrize("attack", ["inject", "replay", "modify", "modify-result"])
def test_a_relay_that_tampers_after_the_handshake_gets_the_connection_dropped(attack, daemon, tmp_path):
    planted = tmp_path / "planted"
    relay = Relay(daemon.address)
    try:
        ctx = dz.Context(transport="tcp", workers=[relay.address], secret=SECRET)
        try:
            assert _ping(ctx) == 90  # the relay forwards faithfully: the handshake passed through it
            if attack == "inject":
                relay.inject_now(_evil_frame(planted))
            elif attack == "replay":
                with relay.lock:
                    relay.pending.append(relay.to_daemon[-1])  # resent before the next frame
            elif attack == "modify":
                relay.alter_next_to_daemon = True
            else:
                relay.alter_next_to_driver = True
            with pytest.raises(dz.DrizzleError) as info:
                for _ in range(3):  # the tampered frame is read by the time these jobs run
                    _ping(ctx)
                    time.sleep(0.05)
        finally:
            ctx.stop()
        assert relay.address in str(info.value)
        if attack == "modify-result":  # the driver's Hub dropped the worker
            assert "frame authentication failed" in str(info.value), info.value
        else:  # the daemon dropped the session, with one clear line
            new = daemon.new_lines(0)
            assert any("frame authentication failed" in line and "dropped the session" in line for line in new), new
        assert not planted.exists()
        # The relay goes first: with "modify-result" the driver dropped its side, but the relay's connection
        # to the daemon (the session driver's socket, to the daemon) stays open until the relay closes it,
        # and the daemon rightly refuses a second driver as busy while it does.
        relay.close()
        with dz.Context(transport="tcp", workers=[daemon.address], secret=SECRET) as ctx:  # still serving
            assert _ping(ctx) == 90
    finally:
        relay.close()  # again, when the test failed before that (closing twice is harmless)


def test_the_relay_runs_its_pickle_when_both_sides_turn_the_mac_off(tmp_path):
    """The control for the test above: --no-frame-mac on the daemon and frame_mac=False on the driver."""
    planted = tmp_path / "planted"
    daemon = Daemon(tmp_path, "--no-frame-mac")
    relay = Relay(daemon.address, frames_have_tags=False)
    try:
        with dz.Context(transport="tcp", workers=[relay.address], secret=SECRET, frame_mac=False) as ctx:
            assert _ping(ctx) == 90
            body = pickle.dumps(Plant(str(planted)), protocol=5)
            relay.inject_now(_wire.HEADER.pack(len(body), 0) + body)
            deadline = time.monotonic() + 10
            while not planted.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        assert planted.exists()
    finally:
        relay.close()
        daemon.close()


def test_frame_mac_off_needs_both_sides(daemon):
    """A driver asking for no MAC from a daemon that does not allow it still gets MACs (and works)."""
    with dz.Context(transport="tcp", workers=[daemon.address], secret=SECRET, frame_mac=False) as ctx:
        assert _ping(ctx) == 90
        conns = list(ctx._transport._hub._conns)
        assert [c.auth is not None for c in conns] == [True]


def test_no_mac_with_tls(tls_files):  # noqa: F811 (the fixture imported above)
    """TLS authenticates and orders every record already: no second MAC on the driver's connections."""
    with dz.Context(transport="tcp", workers=2, **tls_files) as ctx:
        out = ctx.parallelize(range(100), 4).map(lambda x: (x % 3, x)).reduce_by_key(lambda a, b: a + b, 2)
        assert dict(out.collect()) == {k: sum(range(k, 100, 3)) for k in range(3)}  # worker to worker too
        assert [c.auth for c in ctx._transport._hub._conns] == [None, None]
