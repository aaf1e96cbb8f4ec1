"""The TCP worker daemon: a supervisor that never runs user code, and one forked process per driver session.

Why a process per session: a task runs user code, which may sleep for a
minute, call ``os._exit``, or leave the interpreter in a state nobody should
inherit. A daemon that ran it itself could not cancel the work of a driver
that left (the next driver was refused as "busy" until the task ended), and
every such fault would be the daemon's. Here the **supervisor** (the
``drizzle worker`` process) only accepts connections and hands them on; each
session runs in a **session process** forked from it, and a session whose
driver leaves is cancelled by killing that process, at once. Why fork, not
spawn: the supervisor is single-threaded (forking it is safe) and has
``drizzle_core`` and numpy imported already, so a session process costs a
fork (milliseconds), where a fresh interpreter costs its imports (0.4 s
measured here); and one is always forked ahead (the **standby**), so a
driver never waits for it. Every session process dies with the supervisor
(PR_SET_PDEATHSIG, ``die_with_parent``), and the supervisor reaps each one.

Processes, and what each owns::

    supervisor (main thread only)      session process (standby, then a session's)
    ---------------------------------  ------------------------------------------------
    the listening socket               the handshakes of the connections it is handed
    accept, hand each connection on    (threads, bounded pre-auth slots: _PreAuth)
      over a Unix socket (SCM_RIGHTS)  the first driver it admits: the session (Hub,
    a copy of the session driver's       WorkerRuntime, peer connections) on its main
      socket: its hang-up ends the       thread; every later driver is "busy"
      session (POLLRDHUP)
    the session log lines              tells the supervisor: "session" (with the
                                         driver's socket) and "ended" (STOP, or why)

Connections go to the session process while a session runs (its peers must
reach it; a second driver is refused as busy by it) and to the standby
otherwise. The moment a session ends — the driver said STOP, or its
connection closed (seen by the supervisor without reading a byte, even while
the session process runs a task), or the process died — the standby takes
the connections: the next driver is served at once, whatever the old
session was doing. Before it hands a new connection on, the supervisor looks
at the session driver's socket once more, so a driver that closed an instant
before the next one connects (back-to-back drivers) is never mistaken for a
live one. A connection handed to a session process that has just ended is
handed back (``returned``) and goes to the standby.

Control messages (SOCK_SEQPACKET, one JSON object each, file descriptors
alongside)::

    supervisor -> child   {"conn": "host:port"} + fd       a new connection, not yet handshaken
    child -> supervisor   {"event": "session", "session": s, "driver": addr} + fd of its socket
                          {"event": "ended", "why": w, "stop": bool, "warn": bool}
                          {"event": "returned", "conn": addr} + fd     (handed on after "ended")

Pre-auth connections (accepted, not yet proven to know the secret, i.e.
before step 2 of ``_handshake`` verified) are bounded per source address
(``max_preauth_per_source``) and in total (``max_preauth``) and must send
step 2 within ``preauth_timeout`` seconds. When a bound is reached the
*oldest* pre-auth connection (of that source, else of all) is evicted, never
the newcomer: idle connections cannot lock a driver out, since a driver
proves itself within one round trip of connecting. Refused and dropped
connections are logged one line each up to ``LOG_BURST`` per
``LOG_WINDOW`` seconds, then as one summary line with counts per reason.

The session's peer table (``peers``: worker index -> address, None for a
worker the driver lost) comes in the driver's hello and is replaced by each
``(PEERS, [[address | None, epoch], ...])`` message the driver sends when a
worker joins or is replaced; the session consumes that message in its
``on_event`` (the runtime never sees it), calls ``hub.expect`` for every
peer's epoch (connections to a dead predecessor close at once), and
connects lazily to a peer the first time the runtime sends to it. Every
worker-to-worker hello carries the caller's epoch, so the accepting Hub
tags (and, for an older incarnation, refuses) that connection too.

Shared state of a session process, under ``_lock``: ``claimed`` — the
session id of the driver admitted (set by the handshake thread that admits
it, so a second driver is refused as busy even before the main thread sees
the first) and ``claimed_by`` (its address); ``ended`` — the session is
over (connections still arriving are handed back).

Every bad input (wrong or missing secret, version mismatch, garbage, an
oversized, truncated or unauthenticated frame, silence, a peer or driver
that vanishes) costs one log line (rate-limited) and that one connection;
the daemon keeps serving.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from drizzle_core.transport import (
    DEFAULT_MAX_FRAME,
    DRIVER,
    STOP,
    Disconnected,
    Hub,
    TransportError,
    WorkerRuntime,
    describe_exit,
    die_with_parent,
    encode,
)

from . import _handshake, _hashing, _net
from ._handshake import PEERS, HandshakeError
from ._net import TLS

log = logging.getLogger("drizzle.tcp.worker")

#: pre-auth bounds (connections that have not proven the secret yet) and the deadline for that proof
MAX_PREAUTH = 64
MAX_PREAUTH_PER_SOURCE = 16
PREAUTH_TIMEOUT = 2.0
#: refused/dropped connections: this many log lines per window, then one summary line per window
LOG_BURST = 20
LOG_WINDOW = 10.0
#: a session process that said STOP may flush (2 s) and finish its pending handshakes (the handshake
#: timeout) for this long past that before it is killed
END_GRACE = 3.0
#: a driver hung up: if its session process does not report a STOP within this, it runs a task for nobody
STOP_WAIT = 0.25
#: fork the next standby this long after a session started, not during its first job (both would compete
#: for the cores: connect -> first result 28 ms with the fork at once, measured on 2 cores)
STANDBY_DELAY = 0.2
#: how long the supervisor waits for a session process to take a connection (its control queue is full)
SEND_TIMEOUT = 2.0
_WAKE = "wake"
_CTL_MAX = 1 << 16
_RDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer's FIN, seen without reading its data


class WorkerDaemon:
    """A worker listening on ``listen`` (HOST:PORT; port 0 picks a free one): the supervisor."""

    def __init__(self, listen: str = "127.0.0.1:7078", secret: bytes = b"", *, max_frame: int = DEFAULT_MAX_FRAME,
                 handshake_timeout: float = _net.HANDSHAKE_TIMEOUT, connect_timeout: float = _net.CONNECT_TIMEOUT,
                 tls: TLS | None = None, one_session: bool = False, connect_deadline: float | None = None,
                 keepalive: tuple[float, float, int] | None = _net.KEEPALIVE,
                 preauth_timeout: float = PREAUTH_TIMEOUT, max_preauth: int = MAX_PREAUTH,
                 max_preauth_per_source: int = MAX_PREAUTH_PER_SOURCE, allow_no_frame_mac: bool = False,
                 log_window: float = LOG_WINDOW) -> None:
        host, port = _net.parse_address(listen)
        if not secret and not _net.is_loopback(host):
            raise ValueError(f"refusing to listen on {listen} without a secret: anyone who can reach it could "
                             f"run code here (give --secret-file or set DRIZZLE_SECRET, or listen on 127.0.0.1)")
        if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
            raise ValueError("the tcp worker daemon needs os.fork and socket.send_fds (a POSIX system)")
        self.host, self.port = host, port
        self.secret = secret
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.one_session = one_session
        #: with ``one_session``: leave if no driver has connected this many seconds after listening (a daemon
        #: placed by a launcher whose driver went away before connecting must not wait forever)
        self.connect_deadline = connect_deadline
        self.keepalive = keepalive
        self.preauth_timeout = preauth_timeout
        self.max_preauth = max_preauth
        self.max_preauth_per_source = max_preauth_per_source
        self.allow_no_frame_mac = allow_no_frame_mac
        self.log_window = log_window
        self.tls = tls
        self._listener: socket.socket | None = None
        self._stopping = False
        self.sessions = 0
        # supervisor state (main thread only)
        self._children: dict[int, _Child] = {}   # pid -> child, until reaped
        self._standby: _Child | None = None       # handshakes while no session runs
        self._session: _Child | None = None       # the child serving a session, with its driver's socket
        self._poller = select.poll()
        self._fds: dict[int, tuple[str, Any]] = {}  # fd -> ("listener" | "ctl" | "driver", object)
        #: the exit status of a session process that ended by itself (not killed here), e.g. -9
        self.session_exit: int | None = None
        self._standby_due = 0.0  # while a session runs: fork the next standby then
        self._in_hand: socket.socket | None = None  # a connection being handed on (see _hand_on)
        self._refusals = _RefusalLog(window=log_window, timer=False)

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
        listener = self._listener
        assert listener is not None
        listener.setblocking(False)
        self._watch(listener.fileno(), select.POLLIN, "listener", listener)
        _warm_up()
        log.info("listening on %s", self.address)
        give_up = time.monotonic() + self.connect_deadline if self.connect_deadline else None
        try:
            while not self._stopping:
                if give_up is not None and not self.sessions and time.monotonic() > give_up:
                    log.warning("no driver connected within %g s; exiting", self.connect_deadline)
                    break
                if self._standby is None and not (self.one_session and self.sessions) and (
                        self._session is None or time.monotonic() >= self._standby_due):
                    self._standby = self._fork()
                if self.one_session and self.sessions and self._session is None and not self._ending():
                    break  # the one session ended
                accept = False
                for fd, _mask in self._poller.poll(self._poll_timeout()):
                    kind, obj = self._fds.get(fd, ("", None))
                    if kind == "ctl":
                        self._on_control(obj)
                    elif kind == "driver" and obj is self._session and self._driver_gone(obj):
                        self._driver_hung_up(obj)
                    elif kind == "listener":
                        accept = True  # after the control messages: a session that just ended is seen ended
                if accept:
                    self._accept_all(listener)
                self._kill_late()
                self._refusals.tick()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stopping = True

    def _ending(self) -> bool:
        return any(c.session and not c.finished for c in self._children.values())

    def _poll_timeout(self) -> int:
        late = [c.kill_at for c in self._children.values() if c.kill_at]
        if self._refusals.pending():
            late.append(time.monotonic() + 0.5)
        if self._standby is None and self._session is not None and not (self.one_session and self.sessions):
            late.append(self._standby_due)  # (a one-session daemon forks no standby: no wake-up for it)
        if not late:
            return 500
        return max(0, min(500, int((min(late) - time.monotonic()) * 1000) + 1))

    def _watch(self, fd: int, events: int, kind: str, obj: Any) -> None:
        self._poller.register(fd, events)
        self._fds[fd] = (kind, obj)

    def _unwatch(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._poller.unregister(fd)
        self._fds.pop(fd, None)

    # ------------------------------------------------------------ children
    def _fork(self) -> _Child:
        """Fork a session process (see the module docstring); the supervisor keeps one end of its control socket."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the supervisor's stack
            code = 1
            try:
                mine.close()
                self._close_inherited()
                die_with_parent(supervisor)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's; we die with it
                code = _SessionProcess(self, theirs).run()
            except BaseException:
                log.exception("session process failed")
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                os._exit(code)
        theirs.close()
        mine.setblocking(False)
        child = _Child(pid, mine)
        self._children[pid] = child
        self._watch(mine.fileno(), select.POLLIN, "ctl", child)
        return child

    def _close_inherited(self) -> None:
        """In a fresh child: close what belongs to the supervisor (else a dead child's EOF never shows)."""
        if self._listener is not None:
            self._listener.close()
        if self._in_hand is not None:
            self._in_hand.close()
        for child in self._children.values():
            child.ctl.close()
            if child.driver is not None:
                child.driver.close()
        self._poller = select.poll()
        self._fds = {}
        self._children = {}

    def _send_conn(self, child: _Child, sock: socket.socket, addr: str) -> bool:
        # Blocking, bounded: when a flood outruns the session process, the supervisor waits for it (and the
        # kernel's accept backlog pushes back on the clients) rather than dropping connections it accepted.
        child.ctl.settimeout(SEND_TIMEOUT)
        try:
            socket.send_fds(child.ctl, [json.dumps({"conn": addr}).encode()], [sock.fileno()])
        except OSError as e:  # still full after that (the child is stuck) or a dead child
            self._refusals.refused("not taken", "dropped connection from %s: the session process (pid %d) "
                                   "did not take it: %s", addr, child.pid, e.strerror or e)
            return False
        finally:
            child.ctl.setblocking(False)
        return True

    def _target(self) -> _Child | None:
        """Who takes a new connection: the session process while its driver is there, else the standby."""
        if self._session is not None and self._driver_gone(self._session):
            self._driver_hung_up(self._session)
        if self._session is None and self._standby is None and not (self.one_session and self.sessions):
            self._standby = self._fork()  # a session ended before the next standby was due
        return self._session or self._standby

    def _accept_all(self, listener: socket.socket) -> None:
        for _ in range(256):  # then let the control sockets have a turn
            try:
                sock, raw = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. EMFILE
                log.warning("accept failed: %s", e.strerror or e)
                time.sleep(0.01)
                return
            addr = _net.format_address(raw[0], raw[1]) if isinstance(raw, tuple) else str(raw)
            self._hand_on(sock, addr)

    def _hand_on(self, sock: socket.socket, addr: str) -> None:
        # _target may fork a standby while we hold ``sock``: the child must not keep a copy of it (the client
        # would never see its connection close), so _close_inherited closes what is in hand.
        self._in_hand = sock
        try:
            target = self._target()
        finally:
            self._in_hand = None
        if target is None:
            log.warning("dropped connection from %s: no session process to take it", addr)
        else:
            self._send_conn(target, sock, addr)
        sock.close()  # the session process has its own copy now

    def _on_control(self, child: _Child) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(child.ctl, _CTL_MAX, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self._reap(child)
                return
            msg = json.loads(data)
            sock = socket.socket(fileno=fds[0]) if fds else None
            event = msg.get("event")
            if event == "session" and sock is not None:
                self._start_session(child, sock, msg)
            elif event == "ended":
                self._end_session(child, msg["why"], warn=msg.get("warn", False), kill=not msg.get("stop"))
            elif event == "returned" and sock is not None:
                self._hand_on(sock, msg.get("conn", "?"))
            elif sock is not None:
                sock.close()

    def _start_session(self, child: _Child, driver: socket.socket, msg: dict) -> None:
        if child is self._standby:
            self._standby = None
        child.session, child.driver_addr, child.driver = msg["session"], msg["driver"], driver
        self._session = child
        self.sessions += 1
        self._standby_due = time.monotonic() + STANDBY_DELAY
        self._watch(driver.fileno(), _RDHUP, "driver", child)  # POLLHUP/POLLERR always count

    @staticmethod
    def _driver_gone(child: _Child) -> bool:
        """Has the driver of ``child``'s session closed its end (FIN or reset)? Reads nothing."""
        if child.driver is None:
            return False
        p = select.poll()
        p.register(child.driver.fileno(), _RDHUP)
        return bool(p.poll(0))

    def _driver_hung_up(self, child: _Child) -> None:
        """The driver closed its end: new connections go to the standby now. Whether it said STOP first is the
        session process's to tell (it may not have read it yet); one that does not within ``STOP_WAIT`` is
        running a task for nobody, and is killed."""
        self._release(child)
        if not child.finished:
            child.kill_at = time.monotonic() + STOP_WAIT

    def _release(self, child: _Child) -> None:
        """``child`` no longer serves a live session: the standby takes the connections from now on."""
        if child is not self._session:
            return
        self._session = None
        if child.driver is not None:
            self._unwatch(child.driver.fileno())
            child.driver.close()  # the session process's copy is the last: the driver sees the end now
            child.driver = None

    def _end_session(self, child: _Child, why: str, *, warn: bool, kill: bool) -> None:
        """``child``'s session is over: log it once, cancel its work (kill) or let it flush; the standby takes over."""
        self._release(child)
        if child.finished or not child.session:
            return
        child.finished = True
        if warn:
            log.warning("dropped the session of driver %s: %s", child.driver_addr, why)
        log.info("session %s of driver %s ended (%s); ready for the next driver", child.session[:8],
                 child.driver_addr, why)
        if kill:
            self._kill(child)
        else:
            child.kill_at = time.monotonic() + END_GRACE + self.handshake_timeout

    def _kill(self, child: _Child) -> None:
        if child.pid in self._children:  # not reaped yet: the pid cannot be another process's
            child.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        child.kill_at = 0.0

    def _kill_late(self) -> None:
        now = time.monotonic()
        for child in list(self._children.values()):
            if child.kill_at and now >= child.kill_at:
                if child.finished:
                    self._kill(child)
                else:  # its driver hung up and it did not say STOP in time
                    self._end_session(child, "connection closed without STOP", warn=True, kill=True)

    def _reap(self, child: _Child) -> None:
        """``child``'s control socket closed: it exited (or is exiting); reap it."""
        self._unwatch(child.ctl.fileno())
        child.ctl.close()
        try:
            _pid, status = os.waitpid(child.pid, 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        except ChildProcessError:
            code = 0
        how = describe_exit(code)
        self._children.pop(child.pid, None)
        if child.session and not child.killed:
            self.session_exit = code  # how the session process ended by itself (one_session mirrors it)
        if child is self._session:
            self._end_session(child, f"its session process (pid {child.pid}) {how}", warn=True, kill=False)
        if child is self._standby:
            self._standby = None
            if not self._stopping:
                log.warning("the standby session process (pid %d) %s; starting another", child.pid, how)

    def _shutdown(self) -> None:
        self._stopping = True
        if self._listener is not None:
            self._listener.close()
        for child in list(self._children.values()):
            self._kill(child)
        for child in list(self._children.values()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
            child.ctl.close()
            if child.driver is not None:
                child.driver.close()
        self._children.clear()


@dataclass(eq=False)
class _Child:
    """A session process, seen from the supervisor."""

    pid: int
    ctl: socket.socket                 # our end of its control socket
    session: str = ""                  # the session it serves ("" while it is the standby)
    driver_addr: str = ""
    driver: socket.socket | None = None  # our copy of its driver's socket, watched for a hang-up
    kill_at: float = 0.0               # kill it then (it said STOP and may flush until then)
    killed: bool = False               # by the supervisor (its session was over)
    finished: bool = False             # its session's end is logged


# ====================================================================== the session process
class _PreAuth:
    """Bounded slots for connections that have not proven the secret yet (see the module docstring).

    ``slots``: socket -> source host, oldest first; ``evicted``: sockets pushed out, so their
    handshake thread words its log line accordingly. Under ``_lock`` (handshake threads).
    """

    def __init__(self, total: int, per_source: int) -> None:
        self.total = max(1, total)
        self.per_source = max(1, per_source)
        self._lock = threading.Lock()
        self.slots: collections.OrderedDict[socket.socket, str] = collections.OrderedDict()
        self.evicted: set[socket.socket] = set()

    def enter(self, sock: socket.socket, source: str) -> None:
        """Take a slot for ``sock``, evicting the oldest of its source, else of all, when full."""
        victims = []
        with self._lock:
            same = [s for s, src in self.slots.items() if src == source]
            if len(same) >= self.per_source:
                victims.append(same[0])
            elif len(self.slots) >= self.total:
                victims.append(next(iter(self.slots)))
            for v in victims:
                del self.slots[v]
                self.evicted.add(v)
            self.slots[sock] = source
        for v in victims:
            with contextlib.suppress(OSError):
                v.shutdown(socket.SHUT_RDWR)  # its handshake thread's recv returns at once

    def leave(self, sock: socket.socket) -> bool:
        """``sock`` proved itself, or its handshake ended; True if it had been evicted."""
        with self._lock:
            self.slots.pop(sock, None)
            if sock in self.evicted:
                self.evicted.discard(sock)
                return True
            return False


class _RefusalLog:
    """Refused and dropped connections: ``LOG_BURST`` lines per ``LOG_WINDOW`` s, then one summary with counts.

    Why: 20,000 refused connections wrote 2.8 MB of log before; a flood must not fill a disk, and the
    first lines (what went wrong, from where) stay as informative as ever.
    """

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW, *, timer: bool = True) -> None:
        self.burst, self.window = burst, window
        self.timer = timer  # False in the supervisor, which must stay single-threaded: it calls tick()
        self._lock = threading.Lock()
        self._start = 0.0
        self._logged = 0
        self._suppressed: collections.Counter[str] = collections.Counter()
        self._timer: threading.Timer | None = None

    def refused(self, kind: str, fmt: str, *args: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._start >= self.window and not self._suppressed:
                self._start, self._logged = now, 0
            if self._logged < self.burst:
                self._logged += 1
                log.warning(fmt, *args)
                return
            self._suppressed[kind] += 1
            if self._timer is None and self.timer:
                self._timer = threading.Timer(max(0.0, self._start + self.window - now), self.flush)
                self._timer.daemon = True
                self._timer.start()

    def pending(self) -> bool:
        return bool(self._suppressed)

    def tick(self) -> None:
        """Write the summary if its window has passed (for the supervisor's loop)."""
        if self._suppressed and time.monotonic() - self._start >= self.window:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._timer = None
            if not self._suppressed:
                return
            counts = ", ".join(f"{k}: {n}" for k, n in self._suppressed.most_common())
            total = sum(self._suppressed.values())
            log.warning("%d more connections refused or dropped in the last %.0f s, not logged one by one (%s)",
                        total, self.window, counts)
            self._suppressed.clear()
            self._start, self._logged = time.monotonic(), 0


class _SessionProcess:
    """One forked session process: handshakes what the supervisor hands it, serves the first driver it admits."""

    def __init__(self, daemon: WorkerDaemon, ctl: socket.socket) -> None:
        self.d = daemon
        self.ctl = ctl
        self._ctl_lock = threading.Lock()
        self._hashing = _hashing.describe()  # how this process hashes, for the driver's check
        self._server_tls = daemon.tls.server_context() if daemon.tls else None
        self._client_tls = daemon.tls.client_context() if daemon.tls else None
        self._lock = threading.Lock()
        self._claimed: str | None = None
        self._claimed_by = ""
        self._ended = False
        self._mac = False  # does the session authenticate frames (decided with its driver)
        self._wake_w: socket.socket | None = None
        self._wake_pending = False
        self._incoming: queue.SimpleQueue[tuple[socket.socket, dict, str, Any]] = queue.SimpleQueue()
        self._preauth = _PreAuth(daemon.max_preauth, daemon.max_preauth_per_source)
        self._active = 0  # handshake threads running, under _active_cv
        self._active_cv = threading.Condition()
        self._refusals = _RefusalLog(window=daemon.log_window)

    def run(self) -> int:
        threading.Thread(target=self._control_loop, name="drizzle-tcp-control", daemon=True).start()
        early: list[tuple[socket.socket, dict, str, Any]] = []  # peer connections that beat their driver's
        while True:
            sock, hello, addr, auth = self._incoming.get()
            if hello["role"] == "worker":
                early.append((sock, hello, addr, auth))
                continue
            self._run_session(sock, hello, addr, auth, early)
            # Handshakes still under way (clients that connected during the session: refused, or timing
            # out) end as they would have, each with its log line; bounded by the handshake timeout.
            with self._active_cv:
                self._active_cv.wait_for(lambda: self._active == 0, timeout=self.d.handshake_timeout + 0.5)
            self._refusals.flush()  # the counts of a window still open
            return 0

    def _tell(self, msg: dict, fd: int | None = None) -> None:
        with self._ctl_lock, contextlib.suppress(OSError):
            socket.send_fds(self.ctl, [json.dumps(msg).encode()], [fd] if fd is not None else [])

    # ------------------------------------------------------------ connections from the supervisor
    def _control_loop(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.ctl, _CTL_MAX, 1)
            except OSError:
                data, fds = b"", []
            if not data:  # the supervisor is gone: so are we
                os._exit(0)
            if not fds:
                continue
            addr = json.loads(data).get("conn", "?")
            with self._lock:
                ended = self._ended
            if ended:  # our session is over: the standby takes it
                self._tell({"event": "returned", "conn": addr}, fds[0])
                os.close(fds[0])
                continue
            sock = socket.socket(fileno=fds[0])
            with self._active_cv:
                self._active += 1
            threading.Thread(target=self._handshake, args=(sock, addr), name=f"drizzle-tcp-handshake {addr}",
                             daemon=True).start()

    def _handshake(self, sock: socket.socket, addr: str) -> None:
        try:
            self._handshake_one(sock, addr)
        finally:
            with self._active_cv:
                self._active -= 1
                self._active_cv.notify_all()

    def _handshake_one(self, sock: socket.socket, addr: str) -> None:
        claimed_here: list[str] = []
        source = addr.rpartition(":")[0]
        self._preauth.enter(sock, source)

        def decide(hello: dict) -> dict:
            return self._decide(hello, addr, claimed_here)

        try:
            _net.tune(sock, self.d.keepalive)
            if self._server_tls is not None:
                sock = self._wrap_tls(sock)
            hello, auth = _handshake.accept(sock, self.d.secret, self.d.handshake_timeout, decide,
                                            preauth_timeout=self.d.preauth_timeout,
                                            on_authenticated=lambda: self._preauth.leave(sock))
            sock.settimeout(None)
        except Exception as e:
            evicted = self._preauth.leave(sock)
            self._unclaim(claimed_here)
            if evicted:
                self._refusals.refused("evicted", "dropped connection from %s before it authenticated: %s",
                                       addr, "evicted by newer connections (too many unauthenticated ones)")
            elif isinstance(e, HandshakeError):
                self._refusals.refused(e.kind, "refused connection from %s: %s", addr, e)
            elif isinstance(e, OSError):
                self._refusals.refused("os", "dropped connection from %s during the handshake: %s", addr,
                                       e.strerror or e)
            else:
                self._refusals.refused("error", "dropped connection from %s during the handshake: %r", addr, e)
            with contextlib.suppress(OSError):
                sock.close()
            return
        if hello["role"] == "driver":
            self._tell({"event": "session", "session": hello["session"], "driver": addr}, sock.fileno())
        self._incoming.put((sock, hello, addr, auth))
        self._wake()

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(min(self.d.handshake_timeout, self.d.preauth_timeout))
        try:
            return self._server_tls.wrap_socket(sock, server_side=True)  # type: ignore[union-attr]
        except TimeoutError:
            raise HandshakeError("tls", "TLS handshake failed: timed out (is the client using TLS?)") from None
        except ssl.SSLError as e:
            raise HandshakeError("tls", f"TLS handshake failed: {e.reason or e}") from None

    def _frame_mac(self, hello: dict) -> bool:
        """Frames of this connection carry MACs unless TLS or no secret makes them pointless, or both agree
        to go without (the caller asks, this daemon allows it)."""
        if self._server_tls is not None or not self.d.secret:
            return False
        return hello.get("mac", True) is not False or not self.d.allow_no_frame_mac

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
                if self._claimed is not None or self._ended:
                    return {"ok": False, "error": "busy",
                            "message": f"busy serving another driver ({self._claimed_by}); "
                                       f"a worker serves one driver at a time"}
                if "hash" in hello:  # absent for the session's worker 0, which the others must match
                    why = _hashing.mismatch(self._hashing, hello["hash"])
                    if why is not None:
                        return {"ok": False, "error": "hash", "message": why}
                self._claimed, self._claimed_by = session, addr
                self._mac = self._frame_mac(hello)
                claimed_here.append(session)
                return {"ok": True, "pid": os.getpid(), "hash": self._hashing, "mac": self._mac}
            if session != self._claimed:
                return {"ok": False, "error": "session",
                        "message": "this worker is not serving that session (its driver has gone?)"}
            return {"ok": True, "pid": os.getpid(), "mac": self._frame_mac(hello)}

    def _unclaim(self, claimed_here: list[str]) -> None:
        """A driver admitted by this thread failed before it was handed on: free the worker."""
        if claimed_here:
            with self._lock:
                if self._claimed == claimed_here[0]:
                    self._claimed = None

    def _end(self, why: str, *, stop: bool, warn: bool) -> None:
        """Tell the supervisor, once, that the session is over (it logs it and routes to the standby)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._tell({"event": "ended", "why": why, "stop": stop, "warn": warn})

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w is None or self._wake_pending:
                return
            self._wake_pending = True
            with contextlib.suppress(OSError):
                self._wake_w.sendall(b"".join(bytes(p) for p in encode(None)))

    # -------------------------------------------------------------- session
    def _run_session(self, driver_sock: socket.socket, hello: dict, driver_addr: str, driver_auth: Any,
                     early: list[tuple[socket.socket, dict, str, Any]]) -> None:
        index: int = hello["index"]
        peers: list[str | None] = list(hello["peers"])
        session: str = hello["session"]
        epoch = _epoch_of(hello)
        d = self.d
        log.info("serving driver %s as worker %d of %d (session %s, epoch %d, pid %d)", driver_addr, index,
                 len(peers), session[:8], epoch, os.getpid())
        peer_hello = {"role": "worker", "index": index, "session": session, "epoch": epoch, "mac": self._mac}

        def connect_peer(peer: Any) -> tuple[socket.socket, Any]:
            address = peers[peer] if isinstance(peer, int) and 0 <= peer < len(peers) else None
            if address is None:
                raise ConnectionError(f"no connection to {'the driver' if peer == DRIVER else peer!r}")
            sock, _reply, auth = _net.open_connection(address, d.secret, peer_hello, tls=self._client_tls,
                                                      connect_timeout=d.connect_timeout,
                                                      handshake_timeout=d.handshake_timeout, keepalive=d.keepalive)
            return sock, auth

        hub = Hub(max_frame=d.max_frame, connector=connect_peer)
        wake_r, wake_w = socket.socketpair()
        hub.add(wake_r, _WAKE, send_to=False)
        hub.add(driver_sock, DRIVER, auth=driver_auth)
        peer_addrs: dict[int, str] = {}
        for sock, h, addr, auth in early:
            if h["session"] == session:
                hub.add(sock, h["index"], send_to=True, epoch=_epoch_of(h), auth=auth)
                peer_addrs[h["index"]] = addr
            else:
                sock.close()
        with self._lock:
            self._wake_w = wake_w
            self._wake_pending = False

        def send(dest: int, msg: object) -> None:
            if dest == DRIVER and runtime.stopped:
                return  # results of a session being dropped: nobody to read them
            try:
                hub.send(dest, msg)
            except (OSError, KeyError, TransportError) as e:  # a dead peer: the driver hears of it and recovers
                # (TransportError: it died during the connection's handshake; an unpicklable value is not
                # caught here: the runtime turns it into the task's failure)
                log.warning("could not send to %s: %s", "the driver" if dest == DRIVER else f"worker {dest}", e)

        # A task that ignores its task_timeout: this process is disposable, so it exits (the supervisor
        # ends the session, the driver recovers) instead of leaving the daemon wedged.
        runtime = WorkerRuntime(index, send, expect_peer=hub.expect, bytes_sent=lambda: hub.bytes_sent,
                                on_stuck=lambda: os._exit(3))

        def poll(timeout: float | None) -> list:
            with self._lock:
                self._wake_pending = False
            while True:
                try:
                    sock, h, addr, auth = self._incoming.get_nowait()
                except queue.Empty:
                    break
                if h["session"] == session and h["role"] == "worker":
                    hub.add(sock, h["index"], epoch=_epoch_of(h), auth=auth)
                    peer_addrs[h["index"]] = addr
                else:
                    sock.close()
            events = hub.poll(timeout)
            if len(events) > 1 and any(src == DRIVER and isinstance(m, Disconnected) for src, m in events) and any(
                    src == DRIVER and type(m) is tuple and m and m[0] == STOP for src, m in events):
                # The hub puts ends first; a driver that said STOP and closed, read in one round, said STOP.
                events = [e for e in events if not (e[0] == DRIVER and isinstance(e[1], Disconnected))]
            return events

        def on_event(src: Any, msg: Any) -> bool:
            if src == _WAKE:
                return True
            if isinstance(msg, Disconnected):
                if src == DRIVER:
                    runtime.stopped = True
                    # one wording for a driver that went away, whether its kernel sent FIN or a reset (a
                    # killed driver with unread heartbeats); a frame that failed its MAC says so instead
                    why = msg.reason if "authentication" in msg.reason else "connection closed without STOP" + (
                        "" if msg.clean else f" ({msg.reason})")
                    self._end(why, stop=False, warn=True)
                elif msg.clean:
                    log.info("connection with worker %s ended", src)
                else:
                    log.warning("connection with worker %s (%s) ended: %s", src,
                                peer_addrs.get(src, peers[src] if 0 <= src < len(peers) else "?"), msg.reason)
                return True
            if src == DRIVER and type(msg) is tuple and msg and msg[0] == STOP:
                runtime.stopped = True
                self._end("the driver said STOP", stop=True, warn=False)
                return True
            if src == DRIVER and type(msg) is tuple and msg and msg[0] == PEERS:
                self._update_peers(hub, peers, msg[1], index)
                return True
            return False

        try:
            runtime.serve(poll, on_event)
            hub.flush(timeout=2.0)
        except Exception as e:  # e.g. an authenticated driver sending nonsense: drop it
            self._end(f"error: {e!r}", stop=False, warn=True)
        finally:
            self._end("the session ended", stop=True, warn=False)
            hub.close()
            wake_w.close()

    @staticmethod
    def _update_peers(hub: Hub, peers: list[str | None], table: list, me: int) -> None:
        """A worker joined or was replaced: new addresses (connected to lazily) and epochs."""
        peers[:] = [address for address, _epoch in table]
        for peer, (address, epoch) in enumerate(table):
            if peer != me and address is not None:
                hub.expect(peer, epoch)  # connections to an older incarnation close now
        log.info("peer table updated: %s", peers)


def _warm_up() -> None:
    """Import, once in the supervisor, what nearly every session imports on its first job, so that a forked
    session process starts warm. Nearly every job's pickled lineage names functions of
    ``drizzle_core.api`` (and so loads the driver modules): imported per session, that was 50-110 ms of
    the first job (measured: connect -> first result, one daemon on loopback). Only engine modules: the
    supervisor still runs no user code. ``gc.freeze`` keeps those objects out of every child's
    collections, so children do not write to (copy) their pages just by collecting."""
    import gc
    import importlib

    importlib.import_module("drizzle_core.api")
    gc.collect()
    gc.freeze()


def _epoch_of(hello: dict) -> int:
    epoch = hello.get("epoch", 0)
    return epoch if isinstance(epoch, int) and epoch >= 0 else 0
