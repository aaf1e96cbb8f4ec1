"""Addresses, TLS contexts, and the authenticated connect used by the driver and the workers."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass

from drizzle_core.protocol._wire import FrameAuth
from drizzle_core.transport import TransportError

from . import _handshake
from ._handshake import HandshakeError

CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 5.0
# TCP keepalive (idle seconds, seconds between probes, unanswered probes): a peer whose host
# vanished (powered off, cable pulled, partitioned) while the connection was idle is noticed
# about idle + interval * count = 5 s after the last byte it sent.
KEEPALIVE = (2.0, 1.0, 3)


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``":port"`` → ``(host, port)``."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"a worker address is HOST:PORT, got {text!r}")
    host, _, port_s = text.rpartition(":")
    host = host.strip("[]") or default_host
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"a worker address is HOST:PORT, got {text!r} (the port is not a number)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TLS:
    """TLS settings shared by every node: its certificate and key, and the CA that signs its peers'.

    Every node presents the same kind of certificate whether it accepts or
    connects (workers do both), and verifies the other side's against
    ``ca``. Host names are not checked (workers are addressed by IP); the
    CA signature plus the HMAC handshake are the identity checks.
    """

    cert: str
    key: str
    ca: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(self.ca)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def make_tls(cert: str | None, key: str | None, ca: str | None) -> TLS | None:
    given = [x is not None for x in (cert, key, ca)]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("TLS needs all three of tls_cert, tls_key and tls_ca (certificate, key, CA file)")
    for what, path in (("certificate", cert), ("key", key), ("CA", ca)):
        if not os.path.exists(path):  # type: ignore[arg-type]
            raise ValueError(f"TLS {what} file {path!r} does not exist")
    return TLS(cert, key, ca)  # type: ignore[arg-type]


def parse_keepalive(value: object) -> tuple[float, float, int] | None:
    """``(idle, interval, count)``, ``"IDLE,INTERVAL,COUNT"``, or None/False/"off" (no keepalive)."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none", "")):
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        idle, interval, count = parts  # type: ignore[misc]
        out = (float(idle), float(interval), int(count))
    except (TypeError, ValueError):
        raise ValueError(f"keepalive is (idle seconds, interval seconds, probe count) or 'off', "
                         f"got {value!r}") from None
    if out[0] < 1 or out[1] < 1 or out[2] < 1:
        raise ValueError(f"keepalive times are whole seconds >= 1 and the count >= 1, got {value!r}")
    return out


def format_keepalive(keepalive: tuple[float, float, int] | None) -> str:
    return "off" if keepalive is None else ",".join(f"{x:g}" for x in keepalive)


def tune(sock: socket.socket, keepalive: tuple[float, float, int] | None = KEEPALIVE,
         user_timeout: float | None = None) -> None:
    """TCP_NODELAY: a frame is written by one ``sendmsg`` (header and body together), so
    Nagle would only delay the small control messages that follow a large block.

    ``keepalive``: the kernel probes a connection idle for ``idle`` seconds every
    ``interval`` seconds and resets it after ``count`` unanswered probes; the Hub then
    reports the peer as disconnected (the driver: WorkerLost). It costs no thread and
    never fires for a peer whose kernel answers (a worker busy in a long task, or even
    stopped), only for a host that is gone. Probes are sent only while nothing is
    unacknowledged; ``user_timeout`` (TCP_USER_TIMEOUT, seconds; off by default) bounds
    how long sent data may stay unacknowledged — note that it also fires when the peer
    is alive but does not read (a zero receive window) for that long.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive is not None:
        idle, interval, count = keepalive
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPALIVE", idle),  # TCP_KEEPALIVE: macOS
                            ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
            opt = getattr(socket, name, None)
            if opt is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, opt, max(1, int(value)))
    if user_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(user_timeout * 1000)))


def open_connection(address: str, secret: bytes, hello: dict, *, tls: ssl.SSLContext | None = None,
                    connect_timeout: float = CONNECT_TIMEOUT, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                    keepalive: tuple[float, float, int] | None = KEEPALIVE,
                    user_timeout: float | None = None) -> tuple[socket.socket, dict, FrameAuth | None]:
    """Connect to the worker at ``address`` and handshake; TransportError names the address on failure.

    Returns the socket, the worker's reply and the connection's frame MAC state
    (None when the reply turned it off: TLS, no secret, or both sides agreed).
    """
    host, port = parse_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except ConnectionRefusedError:
        raise TransportError(f"connection refused by tcp worker {address} "
                             f"(is `drizzle worker --listen {address}` running there?)") from None
    except TimeoutError:
        raise TransportError(f"timed out connecting to tcp worker {address} after {connect_timeout:g}s") from None
    except OSError as e:
        raise TransportError(f"could not connect to tcp worker {address}: {e.strerror or e}") from None
    try:
        tune(sock, keepalive, user_timeout)
        if tls is not None:
            sock.settimeout(handshake_timeout)
            sock = tls.wrap_socket(sock, server_side=False)
        reply, auth = _handshake.connect(sock, secret, handshake_timeout, hello)
    except HandshakeError as e:
        sock.close()
        hint = ""
        if e.kind in ("closed", "timeout", "garbage") and tls is None:
            hint = " (if that worker uses TLS, pass tls_cert, tls_key and tls_ca; its log says why it dropped us)"
        raise TransportError(f"tcp worker {address}: {e}{hint}") from None
    except ssl.SSLError as e:
        sock.close()
        raise TransportError(f"TLS handshake with tcp worker {address} failed: {e.reason or e}") from None
    except OSError as e:
        sock.close()
        raise TransportError(f"tcp worker {address} dropped the connection during the handshake: "
                             f"{e.strerror or e} (does it use TLS, or another secret?)") from None
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock, reply, auth
