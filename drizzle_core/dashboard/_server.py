"""The dashboard's web server: one page, its state as JSON, and the same state pushed as server-sent events.

Why the standard library (``http.server``): the page makes three kinds of
request (the page, ``/api/state``, ``/events``), one browser or a few at a
time, on loopback; a framework (aiohttp, tornado, bokeh's server) would be a
dependency and an event loop for that, and ``ThreadingHTTPServer`` plus one
thread per open page is small enough to close for sure. Server-sent events
rather than polling: the page gets each new state once, the moment it is
built, over one connection, and ``EventSource`` reconnects by itself.

Threads (all named ``drizzle-dashboard-<port>-...``): the server's accept loop, the
collector (every ``refresh`` seconds: fold in what was recorded; build and
publish the state while a page is open or a request came lately), and one
per connection while it is served. :meth:`Dashboard.close` ends them all
and closes every socket before it returns: the open pages' connections are
shut down, the accept loop stopped, every thread joined.

Access. On a loopback address the server answers requests whose ``Host``
header names a loopback host (so that a web page elsewhere cannot read it
through a DNS name rebound to 127.0.0.1). On any other address it answers
only requests carrying the token generated at start (``?token=...``,
compared in constant time); the URL with the token is logged once.
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from importlib import resources
from typing import Any

from ..driver import GroupScheduler
from ._address import DEFAULT_HOST, Address, is_loopback
from ._recorder import Recorder
from ._snapshot import Collector
from ._watch import IterateWatch, StreamLike, StreamWatch

log = logging.getLogger("drizzle.dashboard")

REFRESH = 0.5   # seconds between two states pushed to open pages
WANTED = 5.0    # seconds after a /api/state request during which states are still built without an open page
KEEPALIVE = 15.0  # seconds of no new state after which an event stream gets a comment (finds closed pages)


def _page() -> bytes:
    """The page, with its script and style inlined: one request, and nothing to fetch from elsewhere."""
    static = resources.files(__package__) / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    css = (static / "dashboard.css").read_text(encoding="utf-8")
    js = (static / "dashboard.js").read_text(encoding="utf-8")
    return html.replace("/*STYLE*/", css).replace("/*SCRIPT*/", js).encode("utf-8")


def _program() -> str:
    """The running program's name (``python -m pkg``: the package's), to tell dashboards apart."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(path)
    if name == "__main__.py":
        name = os.path.basename(os.path.dirname(path))
    return name or "python"


class _Server(http.server.ThreadingHTTPServer):
    # Daemon threads (a page left open must not keep the interpreter from exiting), which socketserver does
    # not join: close() joins them itself (``threads``).
    daemon_threads = True

    def __init__(self, address: tuple[str, int], board: Dashboard, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.board = board
        self.connections: set[socket.socket] = set()   # open connections (shut down at close)
        self.threads: set[threading.Thread] = set()    # their threads (joined at close)
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """ThreadingMixIn's, with the thread and the connection recorded before the thread starts."""
        t = threading.Thread(target=self._serve_one, args=(request, client_address), daemon=True,
                             name=f"drizzle-dashboard-{self.server_address[1]}-connection")
        with self.connections_lock:
            self.connections.add(request)
            self.threads.add(t)
        t.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.threads.discard(threading.current_thread())

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard: error serving %s", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive thread to wait for
    timeout = 30.0                 # a connection that never sends its request does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard: %s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        board = self.server.board
        url = urllib.parse.urlsplit(self.path)
        refused = board._refusal(urllib.parse.parse_qs(url.query).get("token", [""])[0], self.headers.get("Host"))
        if refused:
            self._send(403, refused.encode(), "text/plain; charset=utf-8")
            return
        if url.path in ("/", "/index.html"):
            self._send(200, board._page, "text/html; charset=utf-8")
        elif url.path == "/api/state":
            self._send(200, board._state_bytes(), "application/json")
        elif url.path == "/events":
            self._events(board)
        elif url.path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._send(404, b"not found: the dashboard serves /, /api/state and /events\n",
                       "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # the page is self-contained: it may load nothing from anywhere, and talk only to this server
        self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; connect-src 'self'; img-src data:")

    def _events(self, board: Dashboard) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self._common_headers()
        self.end_headers()
        sent = -1
        board._viewers_changed(+1)
        try:
            while not board.closed:
                version, data = board._wait_for_state(sent, KEEPALIVE)
                if board.closed:
                    break
                if version != sent and version > 0:  # 0: no state built yet
                    self.wfile.write(b"data: " + data + b"\n\n")
                    sent = version
                else:
                    self.wfile.write(b": still here\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the page was closed (or the dashboard shut the connection down)
        finally:
            board._viewers_changed(-1)


class Dashboard:
    """A live web page of one Context's workers, groups, task timeline, streams and iterate loops.

    Made by ``Context(dashboard=...)``; the Context closes it when it stops.
    It reads what the scheduler records anyway, from a thread of its own,
    and never takes the scheduler's lock; the only work on the scheduler's
    side is the trace hook's (:class:`~drizzle_core.dashboard.Recorder`) and
    the workers' recording of their task spans.
    """

    def __init__(self, address: Address, scheduler: GroupScheduler, *, title: str | None = None,
                 transport: str = "", refresh: float = REFRESH) -> None:
        if title is None:  # the program's name: which of several dashboards this is
            title = _program()
        self.refresh = refresh
        self.closed = False
        self.token: str | None = None if address.loopback else secrets.token_urlsafe(24)
        self._page = _page()
        self._cond = threading.Condition()
        self._version = 0
        self._state = b"{}"
        self._built_at = 0.0
        self._viewers = 0
        self._wanted_until = 0.0
        self._stream_numbers = 0
        self._scheduler = scheduler
        self.recorder = Recorder(scheduler.trace, lambda: scheduler.transport.worker_names)
        self.collector = Collector(scheduler, self.recorder, title=title, transport=transport)
        self._server = self._bind(address)  # last but starting: nothing after it can fail and leave it open
        host, port = self._server.server_address[:2]
        self.host, self.port = str(host), int(port)
        shown = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")
        scheduler.trace = self.recorder  # from now on workers record task spans, and the hook keeps them
        self._stop = threading.Event()
        self._wake = threading.Event()  # the collector's: a first page opened, or closing
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                             name=f"drizzle-dashboard-{self.port}-server", daemon=True),
            threading.Thread(target=self._collect, name=f"drizzle-dashboard-{self.port}-collector", daemon=True),
        ]
        for t in self._threads:
            t.start()
        if self.token:
            log.warning("dashboard at %s (listening on %s:%d, reachable from other hosts: only requests with this "
                        "token are answered)", self.url, self.host, self.port)
        else:
            log.info("dashboard at %s", self.url)

    def _bind(self, address: Address) -> _Server:
        try:
            infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ValueError(f"dashboard: cannot resolve the host {address.host!r}: {e}") from None
        family, _, _, _, sockaddr = infos[0]
        try:
            return _Server((str(sockaddr[0]), int(sockaddr[1])), self, family)
        except OSError as e:
            if address.fallback:  # dashboard=True and 8787 is taken: any free port, as Dask does
                log.info("dashboard: port %d is taken (%s); using a free one", address.port, e.strerror)
                return _Server((DEFAULT_HOST, 0), self, socket.AF_INET)
            raise OSError(e.errno, f"dashboard: cannot listen on {address.host}:{address.port}: {e.strerror}") \
                from None

    # ------------------------------------------------------------ the Context's calls
    def watch_stream(self, stream: StreamLike) -> None:
        """Show ``stream`` (made by ``ctx.stream``): its batches' latency, events per second, lag."""
        self._stream_numbers += 1
        self.collector.streams.append(StreamWatch(self._stream_numbers, stream))

    def watch_iterate(self, iterations: int, on_iteration: Any = None) -> IterateWatch:
        """The ``on_iteration`` callback of one ``ctx.iterate`` loop (calls ``on_iteration`` too): use as
        ``with board.watch_iterate(n, cb) as hook: ...``."""
        watch = IterateWatch(len(self.collector.iterates) + 1, iterations, on_iteration)
        self.collector.iterates.append(watch)
        return watch

    def snapshot(self) -> dict[str, Any]:
        """What the page shows now, as the JSON ``/api/state`` returns."""
        return json.loads(self._state_bytes())  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop serving: every connection shut, the threads joined, the socket closed. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.recorder.recording = False
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()  # ends serve_forever
        with self._server.connections_lock:
            open_now = list(self._server.connections)
        for sock in open_now:  # pages still connected: their threads see the end of the stream
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # the listening socket
        with self._server.connections_lock:
            serving = list(self._server.threads)
        for t in [*self._threads, *serving]:
            t.join()

    def __repr__(self) -> str:
        return f"<drizzle Dashboard {self.url} {'closed' if self.closed else 'serving'}>"

    # ------------------------------------------------------------ inside
    def _refusal(self, token: str, host: str | None) -> str:
        """Why a request is refused ("" when it is not)."""
        if self.token is not None:
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                return ("403: this dashboard listens beyond loopback and answers only requests with its token: "
                        "open the address with ?token=... that the Context logged when it started\n")
            return ""
        name = urllib.parse.urlsplit(f"//{host}").hostname if host else None
        if name is None or not (name == "localhost" or is_loopback(name)):
            return f"403: unexpected Host header {host!r}: open the dashboard as {self.url}\n"
        return ""

    def _viewers_changed(self, delta: int) -> None:
        with self._cond:
            self._viewers += delta
        if delta > 0:
            self._wake.set()  # a page opened: the collector builds a state at once

    def _wait_for_state(self, after: int, timeout: float) -> tuple[int, bytes]:
        with self._cond:
            if self._version in (after, 0) and not self.closed:
                self._cond.wait(timeout)
            return self._version, self._state

    def _state_bytes(self) -> bytes:
        self._wanted_until = time.monotonic() + WANTED
        if time.monotonic() - self._built_at >= self.refresh or self._version == 0:
            self._publish()
        with self._cond:
            return self._state

    def _publish(self) -> None:
        data = json.dumps(self.collector.build(), separators=(",", ":"), allow_nan=False).encode()
        with self._cond:
            self._built_at = time.monotonic()
            if data != self._state:
                self._state = data
                self._version += 1
                self._cond.notify_all()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                wanted = self._viewers > 0 or time.monotonic() < self._wanted_until
                if wanted:
                    self._publish()
                else:
                    with self.collector.lock:
                        self.collector.drain(False)
            except Exception:  # a bug here must not end the dashboard quietly, nor touch the scheduler
                log.exception("dashboard: building the state failed")
            self._wake.wait(self.refresh)
            self._wake.clear()
