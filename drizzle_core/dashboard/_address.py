"""Where the dashboard listens: ``Context(dashboard=...)`` checked, and whether the address needs a token.

``True`` is Dask's habit: 127.0.0.1:8787, or any free port when 8787 is
taken (a second Context on the machine still gets a dashboard). A string
``"host:port"`` (``"[::1]:8787"`` for IPv6) or an int port (on 127.0.0.1) is
taken as given: port 0 is any free port, a taken port an error. Only a
loopback address is served without a token: anything else (``0.0.0.0``, a
host's own name or address) can be reached from other machines, and what
the page shows (worker names, timings, the shape of the jobs) is the user's
business, so such a dashboard answers only requests carrying the token
generated when it starts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787


@dataclass(frozen=True, slots=True)
class Address:
    """A checked ``dashboard=`` value."""

    host: str
    port: int
    fallback: bool  # dashboard=True: any free port if ``port`` is taken

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect (no token needed)."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as reachable from elsewhere


def _port(text: Any, value: Any) -> int:
    try:
        port = int(text)
    except (TypeError, ValueError):
        port = -1
    if isinstance(text, bool) or not 0 <= port <= 65535:
        raise ValueError(f"dashboard: the port must be an int from 0 to 65535 (0: any free port), got {value!r}")
    return port


def parse(value: Any) -> Address:
    """``Context(dashboard=value)`` as an :class:`Address`; a clear ValueError (or TypeError) when it is not one."""
    if value is True:
        return Address(DEFAULT_HOST, DEFAULT_PORT, fallback=True)
    if isinstance(value, int) and not isinstance(value, bool):
        return Address(DEFAULT_HOST, _port(value, value), fallback=False)
    if not isinstance(value, str):
        raise TypeError(f"dashboard must be True, a 'host:port' string or a port number (None or False: no "
                        f"dashboard), got {type(value).__name__} {value!r}")
    text = value.strip()
    if text.startswith("["):  # [v6 address]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"dashboard: an IPv6 address is written '[addr]:port', got {value!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"dashboard: expected 'host:port' (e.g. '127.0.0.1:8787', port 0: any free port), "
                             f"got {value!r}")
        if ":" in host:
            raise ValueError(f"dashboard: write an IPv6 address in brackets, '[{host}]:{port_text}', got {value!r}")
    if not host:
        raise ValueError(f"dashboard: the host is missing in {value!r} (e.g. '127.0.0.1:8787')")
    return Address(host, _port(port_text, value), fallback=False)
