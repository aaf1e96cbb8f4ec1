"""The handshake that opens every TCP connection, before any frame is unpickled.

Every connection (driver to worker, worker to worker) starts with this
exchange; only when it succeeds is the socket handed to a
:class:`drizzle_core.transport.Hub`, which speaks length-prefixed pickle-5
frames (``drizzle_core.protocol._wire``) from then on. S is the side that accepted
(a worker daemon), C the side that connected (the driver or another worker).

Step table (all integers little-endian; steps 1-3 are fixed-size structs,
steps 4-5 are length-prefixed JSON capped at ``MAX_HELLO`` bytes and followed
by a MAC; nothing in the handshake is ever unpickled)::

  step  dir   bytes                                             the receiver checks
  ----  ----  ------------------------------------------------  -------------------------------------------
  0     C→S   (TLS handshake first, when TLS is configured)     certificates, against the CA file
  1     S→C   MAGIC(8) | u16 version_s | nonce_s(32)            MAGIC, else "not a drizzle worker"
  2     C→S   MAGIC(8) | u16 version_c | nonce_c(32) | mac_c(32)
                mac_c = HMAC-SHA256(secret, "client" | nonce_s | nonce_c | version_c)
                                                                MAGIC, else drop ("garbage");
                                                                mac_c (compare_digest), else status AUTH;
                                                                then version_c == VERSION, else status VERSION
  3     S→C   u8 status | u16 version_s | mac_s(32)             mac_s, else "worker failed authentication";
                mac_s = HMAC-SHA256(secret, "server" | nonce_c | nonce_s | version_s | status)
                (all zeros when status is AUTH: S cannot prove anything to a client it could not verify)
                                                                status OK and version_s == VERSION
  4     C→S   u32 n | JSON(n) hello | HMAC-SHA256(k_cs, "hello" | JSON)
                                                                size cap, MAC, JSON object, role known;
                driver: {"role": "driver", "index": i, "peers": ["host:port" | null, ...], "session": s,
                         "epoch": e, "hash": H0}                 S hashes like H0, else error "hash"
                worker: {"role": "worker", "index": i, "session": s, "epoch": e}
                both may say "mac": false (ask for frames without MAC)
  5     S→C   u32 n | JSON(n) reply | HMAC-SHA256(k_sc, "reply" | JSON)
                                                                size cap, MAC; C checks H like S did
                {"ok": true, "pid": p, "hash": H, "mac": true | false}
                or {"ok": false, "error": "busy" | "session" | "hash" | ..., "message": m}
  then  both  drizzle_core frames (pickle 5, out-of-band buffers), via Hub;
              when the reply says "mac": true, each frame carries tags keyed by
              k_cs (C→S) or k_sc (S→C) with implicit sequence numbers
              (``drizzle_core.protocol._wire.FrameAuth``)
  later D→W   frame (PEERS, [[address | null, epoch] per index])  consumed by the daemon, not the runtime

``H`` says how a process hashes (``_hashing.describe``: its PYTHONHASHSEED,
the hash of a fixed string, its Python version); ``H0`` is that of the
session's worker 0 plus its name, and is absent from the hello to worker 0
itself. Every worker of a session must hash alike (see ``_hashing``).

``peers`` is the session's peer table: worker index -> address (null for a
worker the driver has lost); ``epoch`` is the incarnation of the worker in
that slot (0, then 1, 2, ... each time the driver refills it with a new
daemon). A worker connects to a peer lazily, the first time it sends to it,
and says its own index and epoch; the acceptor's Hub tags the connection
with that epoch, so connections to a dead predecessor are retired (see
``Hub.expect``). When a worker joins (``add_worker``: the next index) or a
lost one is replaced (``replace_worker``: same index, next epoch), the
driver sends every other live worker a PEERS frame with the new table,
before that worker's next LAUNCH on the same connection, so a peer that
appears mid-session is reachable from the first group that uses it.

Frame keys: ``k_cs, k_sc = derive_frame_keys(secret, nonce_s, nonce_c)``
(HKDF-SHA256 style, one key per direction, new for every connection). Why a
MAC on every frame: without TLS only steps 1-3 would prove anything, and a
relay on the path (which cannot answer the challenge) could wait for them
and then inject or alter a frame, a pickle the daemon would run. Steps 4-5
are authenticated the same way, so the relay cannot rewrite a hello's peer
table or turn the MAC off either. When it is off: with TLS (TLS already
authenticates and orders every record; a second MAC would only cost), with
no secret (loopback only: keys derived from an empty secret and nonces sent
in the clear prove nothing), and when both the driver (``frame_mac=False``)
and the daemon (``--no-frame-mac``) agree, for a trusted network. The
daemon decides and says so in the reply; both ends follow the reply.

The nonces are fresh random bytes (``secrets.token_bytes``) from each side,
so a recorded exchange cannot be replayed, and the "client"/"server" labels
stop a MAC from being reflected back to its maker. Every read has a
deadline (``timeout``; step 2, which proves the secret, a shorter one:
``preauth_timeout``) and a size cap, so a silent or garbage-sending client
costs the worker one thread for at most that; ``on_authenticated`` tells the
daemon the moment step 2 verified, when the connection leaves its bounded
pre-auth slots (``_daemon``).

A worker without a secret (allowed on loopback only) uses the empty key:
the same exchange, proving only that both ends speak this protocol.

Both ends get their key from :func:`read_secret` (the driver's ``secret=``,
``secret_file=`` or ``$DRIZZLE_SECRET``; the daemon's ``--secret-file`` or
``$DRIZZLE_SECRET``), which strips surrounding whitespace: a secret file
written by ``echo`` ends in a newline that ``--secret-file`` and
``open(path).read()`` would otherwise disagree about.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from drizzle_core.protocol._wire import FrameAuth, derive_frame_keys

MAGIC = b"DRIZZLE\x01"
VERSION = 3  # 2: the hello and reply carry how each side hashes; 3: hello, reply and frames carry MACs
MAX_HELLO = 1 << 20   # a hello lists every worker's address; a million bytes is plenty
NONCE = 32

OK, AUTH, VERSION_MISMATCH = 0, 1, 2

#: driver -> worker, transport level (after the handshake): (PEERS, [[address | None, epoch] per worker index])
PEERS = "tcp.peers"

_STEP1 = struct.Struct("<8sH32s")
_STEP2 = struct.Struct("<8sH32s32s")
_STEP3 = struct.Struct("<BH32s")
_LEN = struct.Struct("<I")


class HandshakeError(Exception):
    """The handshake failed; ``kind`` is one of: garbage, auth, version, busy, hash, refused, closed, timeout."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def normalize_secret(secret: str | bytes, source: str = "the secret") -> bytes:
    """The HMAC key for ``secret`` (str or bytes): its bytes (UTF-8 for a str) without surrounding whitespace.

    The one normalization every side applies, so the key never depends on
    how the secret was read (a file with or without its final newline, text
    or binary). An empty result is an error, not "no secret": a blank file
    usually means the wrong file, and an empty key would authenticate anyone.
    ``source`` names where the secret came from, for that error.
    """
    if isinstance(secret, str):
        key = secret.encode()
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        key = bytes(secret)
    else:
        raise TypeError(f"{source} must be str or bytes, got {type(secret).__name__} "
                        f"(to read the secret from a file, pass its path as secret_file=)")
    key = key.strip()
    if not key:
        raise ValueError(f"{source} is empty (or only whitespace); a shared secret must have content")
    return key


def read_secret(secret: str | bytes | None = None, secret_file: str | os.PathLike | None = None) -> bytes:
    """The HMAC key: ``secret``, else the contents of ``secret_file``, else ``$DRIZZLE_SECRET``, else ``b""``.

    Used by the driver (``secret=``/``secret_file=`` options) and by the
    daemon (``--secret-file``), so both normalize alike (:func:`normalize_secret`).
    ``b""`` (no secret anywhere; an empty ``$DRIZZLE_SECRET`` counts as unset)
    is the no-secret key, which a daemon accepts on loopback only.
    """
    if secret is not None and secret_file is not None:
        raise ValueError("give the tcp transport secret= or secret_file=, not both")
    if secret is not None:
        return normalize_secret(secret, "secret=")
    if secret_file is not None:
        path = os.fspath(secret_file)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"cannot read the secret file {path!r}: {e.strerror or e}") from None
        return normalize_secret(data, f"the secret file {path!r}")
    env = os.environ.get("DRIZZLE_SECRET")
    return normalize_secret(env, "$DRIZZLE_SECRET") if env else b""


#: how to find out why two secrets differ; every authentication error on the driver ends with it
SECRET_HINT = ("the secrets differ (both sides compare them after stripping surrounding whitespace); check that "
               "the driver's secret_file=, secret= or $DRIZZLE_SECRET and the worker's --secret-file or "
               "$DRIZZLE_SECRET hold the same secret, e.g. that both name the same file")


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, n: int, deadline: float, during: str) -> bytes:
    """Exactly ``n`` bytes before ``deadline`` (monotonic), or HandshakeError."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HandshakeError("timeout", f"timed out waiting for {during}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise HandshakeError("timeout", f"timed out waiting for {during}") from None
        if not chunk:
            if buf:
                raise HandshakeError("closed", f"connection closed in the middle of {during} "
                                               f"({len(buf)} of {n} bytes)")
            raise HandshakeError("closed", f"connection closed before {during}")
        buf += chunk
    return bytes(buf)


def _send_json(sock: socket.socket, obj: dict, key: bytes, label: bytes) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(_LEN.pack(len(data)) + data + _mac(key, label, data))


def _recv_json(sock: socket.socket, deadline: float, during: str, key: bytes, label: bytes) -> dict:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size, deadline, during))
    if n > MAX_HELLO:
        raise HandshakeError("garbage", f"{during} claims {n} bytes, over the cap of {MAX_HELLO}")
    data = _recv_exact(sock, n + 32, deadline, during)
    if not hmac.compare_digest(data[n:], _mac(key, label, data[:n])):
        raise HandshakeError("auth", f"{during} failed authentication (altered on the way?)")
    try:
        obj = json.loads(data[:n])
    except ValueError as e:
        raise HandshakeError("garbage", f"{during} is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise HandshakeError("garbage", f"{during} is not a JSON object")
    return obj


# ------------------------------------------------------------------ server side
def accept(sock: socket.socket, secret: bytes, timeout: float, decide: Any, *, preauth_timeout: float | None = None,
           on_authenticated: Callable[[], object] | None = None) -> tuple[dict, FrameAuth | None]:
    """Run steps 1-5 as S. ``decide(hello) -> reply`` admits or refuses the caller.

    Returns the caller's hello and the connection's frame MAC state (None when
    the reply says ``"mac": false``) when admitted; raises HandshakeError
    otherwise (after telling the caller why, where the protocol allows).
    ``preauth_timeout`` bounds the wait for step 2 (default ``timeout``);
    ``on_authenticated()`` is called once step 2's MAC verified.
    """
    start = time.monotonic()
    deadline = start + timeout
    nonce_s = secrets.token_bytes(NONCE)
    sock.sendall(_STEP1.pack(MAGIC, VERSION, nonce_s))
    first = min(deadline, start + preauth_timeout) if preauth_timeout is not None else deadline
    magic, version_c, nonce_c, mac_c = _STEP2.unpack(_recv_exact(sock, _STEP2.size, first, "the client's answer"))
    if magic != MAGIC:
        raise HandshakeError("garbage", f"not a drizzle client (its first bytes are {magic!r})")
    if not hmac.compare_digest(mac_c, _mac(secret, b"client", nonce_s, nonce_c, struct.pack("<H", version_c))):
        sock.sendall(_STEP3.pack(AUTH, VERSION, bytes(32)))
        raise HandshakeError("auth", "authentication failed (wrong or missing secret)")
    if on_authenticated is not None:
        on_authenticated()
    k_cs, k_sc = derive_frame_keys(secret, nonce_s, nonce_c)
    status = OK if version_c == VERSION else VERSION_MISMATCH
    mac_s = _mac(secret, b"server", nonce_c, nonce_s, struct.pack("<HB", VERSION, status))
    sock.sendall(_STEP3.pack(status, VERSION, mac_s))
    if status != OK:
        raise HandshakeError("version", f"protocol version mismatch: the client speaks {version_c}, "
                                        f"this worker {VERSION}")
    hello = _recv_json(sock, deadline, "the hello", k_cs, b"hello")
    if hello.get("role") not in ("driver", "worker") or not isinstance(hello.get("index"), int):
        _send_json(sock, {"ok": False, "error": "hello", "message": "malformed hello"}, k_sc, b"reply")
        raise HandshakeError("garbage", f"malformed hello {str(hello)[:200]}")
    reply = decide(hello)
    _send_json(sock, reply, k_sc, b"reply")
    if not reply.get("ok"):
        raise HandshakeError(reply.get("error", "refused"), reply.get("message", "refused"))
    return hello, (FrameAuth(k_sc, k_cs) if reply.get("mac") else None)


# ------------------------------------------------------------------ client side
def connect(sock: socket.socket, secret: bytes, timeout: float, hello: dict) -> tuple[dict, FrameAuth | None]:
    """Run steps 1-5 as C on a connected socket; return S's reply (``ok`` is true) and the
    connection's frame MAC state (None when the reply says ``"mac": false``)."""
    deadline = time.monotonic() + timeout
    magic, version_s, nonce_s = _STEP1.unpack(_recv_exact(sock, _STEP1.size, deadline, "the worker's greeting"))
    if magic != MAGIC:
        raise HandshakeError("garbage", f"not a drizzle worker (its first bytes are {magic!r})")
    nonce_c = secrets.token_bytes(NONCE)
    mac_c = _mac(secret, b"client", nonce_s, nonce_c, struct.pack("<H", VERSION))
    sock.sendall(_STEP2.pack(MAGIC, VERSION, nonce_c, mac_c))
    status, version_s, mac_s = _STEP3.unpack(_recv_exact(sock, _STEP3.size, deadline, "the worker's answer"))
    if status == AUTH:
        if not secret:
            raise HandshakeError("auth", "authentication failed: the worker rejected this driver, which has no "
                                         "secret (pass secret_file= or secret=, or set DRIZZLE_SECRET)")
        raise HandshakeError("auth", f"authentication failed: the worker rejected our secret: {SECRET_HINT}")
    expected = _mac(secret, b"server", nonce_c, nonce_s, struct.pack("<HB", version_s, status))
    if not hmac.compare_digest(mac_s, expected):
        raise HandshakeError("auth", f"authentication failed: the worker could not prove it knows our secret: "
                                     f"{SECRET_HINT}")
    if status == VERSION_MISMATCH or version_s != VERSION:
        raise HandshakeError("version", f"protocol version mismatch: the worker speaks {version_s}, "
                                        f"this side {VERSION} (install the same drizzle-core on both)")
    if status != OK:
        raise HandshakeError("garbage", f"unknown handshake status {status}")
    k_cs, k_sc = derive_frame_keys(secret, nonce_s, nonce_c)
    _send_json(sock, hello, k_cs, b"hello")
    reply = _recv_json(sock, deadline, "the worker's reply to our hello", k_sc, b"reply")
    if not reply.get("ok"):
        raise HandshakeError(str(reply.get("error", "refused")), str(reply.get("message", "refused")))
    if hello.get("mac", True) and not reply.get("mac") and secret and not isinstance(sock, ssl.SSLSocket):
        raise HandshakeError("mac", "the worker turned frame authentication off although we asked for it "
                                    "(is it another drizzle-core version?)")
    sock.settimeout(None)
    return reply, (FrameAuth(k_cs, k_sc) if reply.get("mac") else None)
