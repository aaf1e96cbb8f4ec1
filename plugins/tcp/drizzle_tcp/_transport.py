"""Driver side of the ``tcp`` transport: connect to worker daemons (or start them on loopback).

``workers`` is a list of ``"host:port"`` addresses of running
``drizzle worker`` daemons, or a number N: start N daemons on 127.0.0.1 with
a fresh random secret, owned by this transport (they die with the driver:
PR_SET_PDEATHSIG, and they leave after their one session).

The driver connects to every worker and handshakes (``_handshake``): HMAC
both ways, protocol version, then a hello giving the worker its index, the
session id and every worker's address, so workers connect to each other
directly for shuffles; the driver is not on that path. (So list addresses
that every worker can reach, not 127.0.0.1, when the workers are on several
machines.)

Every worker of a session must hash keys alike (``portable_hash`` falls back
to Python's salted ``hash`` for classes with their own ``__hash__``). Daemons
started here get the driver's PYTHONHASHSEED (or one random seed per driver
process when it has none); a daemon started by hand must hash like the
session's worker 0, else it is refused with a ``TransportError`` that says
to start every ``drizzle worker`` with the same PYTHONHASHSEED — at start,
in ``add_worker`` and in ``replace_worker`` alike (policy: ``_hashing``).

Options (keyword arguments of ``Context(transport="tcp", ...)``): ``secret``
or ``secret_file`` (a path; not both), default ``$DRIZZLE_SECRET``, fresh and
random for ``workers=N``; surrounding whitespace is stripped, as the daemon's
``--secret-file`` does (``_handshake.read_secret``),
``max_frame`` (bytes), ``connect_timeout`` and ``handshake_timeout``
(seconds: a worker that does not answer is an error naming it, never a
hang), ``tls_cert``/``tls_key``/``tls_ca`` (PEM files; all three or none),
``start_timeout`` and ``worker_log_level`` (for daemons started here),
``keepalive`` (``(idle, interval, count)`` seconds/probes, default
``(2, 1, 3)``, or None: TCP keepalive on every connection, so a worker
whose host vanishes without closing its sockets is lost after about
idle + interval * count seconds), ``user_timeout`` (seconds, default None:
TCP_USER_TIMEOUT on the driver's connections, bounding how long data sent
to a worker may stay unacknowledged — it also fires on a live worker that
does not read for that long), ``replace_lost`` (default True: a lost daemon
started here is replaced by a new one in its slot), ``frame_mac`` (default
True: without TLS every frame after the handshake carries a MAC with a
per-connection key and sequence number, so a relay on the path can neither
inject nor alter a pickle; False asks for frames without it, granted only by
daemons started with ``--no-frame-mac`` (those started here with
``workers=N`` are), for a network you trust: see ``_handshake``).
A lost connection is reported as ``WorkerLost`` naming the address (and how
the process ended, for daemons started here).

Capacity comes back (``drizzle_core`` calls these when present):
``add_worker("host:port")`` handshakes a running daemon, gives it the next
index and sends the other workers the new peer table (a ``PEERS`` frame, see
``_handshake``); it takes tasks from the next group on. A daemon that
restarts at the same address is added again the same way (a new index).
``replace_worker(index, epoch)`` starts a fresh daemon in the slot of a lost
one this driver started (``workers=N``), with the next epoch.

What is noticed, and how fast: a daemon that exits or is killed (its
kernel closes the sockets) at once; a host that vanishes (power, cable,
partition) within the keepalive time while its connection is idle — during
a group the driver only listens, so that is the usual case — but, while data
the driver sent to it is unacknowledged, only by TCP's retransmission
timeout (about 15 minutes on Linux) unless ``user_timeout`` is set. A worker
process that is alive but stuck (SIGSTOP, a task that never returns) is not
noticed: its kernel still answers, and the transport cannot tell it from a
long task.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from typing import Any

from drizzle_core.transport import (
    DEFAULT_MAX_FRAME,
    THREAD_VARS,
    Disconnected,
    Hub,
    HubTransport,
    TransportError,
    WorkerJoined,
    WorkerLost,
    worker_env,
)

from . import _handshake, _hashing, _net
from ._handshake import PEERS
from ._launcher import CONNECT_DEADLINE, DaemonSpec, Failed, Launcher, Started
from ._local_launcher import START_TIMEOUT, LocalLauncher

#: how often the driver asks the launcher what its engine saw (a daemon's host gone), while it listens
LAUNCHER_WATCH = 0.05


class TcpTransport(HubTransport):
    """Workers reached over TCP; see the module docstring.

    What is tcp's here: addresses, the handshake (and the session's hashing),
    daemons started on loopback, peer tables for the workers. The rest (sends,
    losses, close) is :class:`~drizzle_core.transport.HubTransport`'s.
    """

    name = "tcp"

    def __init__(self, workers: Any = None, *, secret: str | bytes | None = None,
                 secret_file: str | os.PathLike | None = None, max_frame: int | None = None,
                 connect_timeout: float = _net.CONNECT_TIMEOUT, handshake_timeout: float = _net.HANDSHAKE_TIMEOUT,
                 start_timeout: float = START_TIMEOUT, tls_cert: str | None = None, tls_key: str | None = None,
                 tls_ca: str | None = None, worker_log_level: str | None = None,
                 keepalive: Any = _net.KEEPALIVE, user_timeout: float | None = None,
                 replace_lost: bool = True, frame_mac: bool = True, launcher: Launcher | None = None,
                 connect_deadline: float = CONNECT_DEADLINE) -> None:
        if workers is None:
            workers = os.cpu_count() or 1  # daemons started here, one per core
        if isinstance(workers, str):
            workers = [w.strip() for w in workers.split(",") if w.strip()]
        if isinstance(workers, (list, tuple)):
            if not workers:
                raise ValueError("the tcp transport needs at least one worker address")
            for w in workers:
                _net.parse_address(w)
            self.addresses: list[str] = list(workers)
            self.spawn = 0
        elif isinstance(workers, int) and not isinstance(workers, bool) and workers > 0:
            self.addresses = []
            self.spawn = workers
        else:
            raise ValueError(f"the tcp transport takes a list of worker addresses ('host:port') or a number of "
                             f"workers to start on this host, got {workers!r}")
        if launcher is not None and not self.spawn:
            raise ValueError(f"a launcher starts workers: give their number (workers=N), not addresses {workers!r}")
        #: who starts the ``spawn`` daemons and reports their deaths (``_launcher``): local processes by default
        self.launcher: Launcher | None = None
        if self.spawn:
            self.launcher = launcher or LocalLauncher(start_timeout=start_timeout)
        self.connect_deadline = connect_deadline
        if self.spawn and secret is None and secret_file is None:
            secret = secrets.token_hex(32)  # fresh for daemons we start: nobody else can join them
        self.secret = _handshake.read_secret(secret, secret_file)
        self.max_frame = max_frame or DEFAULT_MAX_FRAME
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.start_timeout = start_timeout
        self.tls = _net.make_tls(tls_cert, tls_key, tls_ca)
        self.worker_log_level = worker_log_level
        self.keepalive = _net.parse_keepalive(keepalive)
        self.user_timeout = user_timeout
        self.replace_lost = replace_lost
        self.frame_mac = bool(frame_mac)
        self._client_tls = self.tls.client_context() if self.tls else None
        super().__init__(Hub(max_frame=self.max_frame))
        self._pids: list[int | None] = []
        self._epochs: list[int] = []  # incarnation of the daemon in each slot
        self._where: list[str] = []   # where the launcher placed each daemon ("" for one added by address)
        self._replacing: dict[int, int] = {}  # slot -> the epoch of the replacement asked of the launcher
        self._next_watch = 0.0        # when to ask the launcher for news next
        self.session = ""        # the id every worker of this driver's session knows it by
        self._hashing: dict[str, Any] | None = None  # how worker 0 hashes: every worker must hash alike

    # ---------------------------------------------------------------- start
    def _start_workers(self) -> None:
        if self.spawn:
            self._start_daemons()
        else:
            self._where = [""] * len(self.addresses)
        self.session = uuid.uuid4().hex
        for i, address in enumerate(self.addresses):
            sock, pid, auth = self._connect(i, address, self.addresses, 0)
            self._pids.append(pid)
            self._epochs.append(0)
            self._hub.add(sock, i, auth=auth)

    def _connect(self, i: int, address: str, peers: list[str | None], epoch: int) -> tuple[Any, int | None, Any]:
        """Handshake the daemon at ``address`` as worker ``i`` (incarnation ``epoch``) of this session:
        its socket, its pid and the connection's frame MAC state (None: off).

        Worker 0 of the session sets how the session hashes; every later one must hash alike (the
        daemon refuses otherwise, and the driver checks its reply too: see ``_hashing``).
        """
        hello: dict[str, Any] = {"role": "driver", "index": i, "peers": peers, "session": self.session,
                                 "epoch": epoch, "mac": self.frame_mac}
        if self._hashing is not None:
            hello["hash"] = self._hashing
        sock, reply, auth = _net.open_connection(address, self.secret, hello, tls=self._client_tls,
                                           connect_timeout=self.connect_timeout,
                                           handshake_timeout=self.handshake_timeout,
                                           keepalive=self.keepalive, user_timeout=self.user_timeout)
        hashing = reply.get("hash")
        why = _hashing.mismatch(hashing, self._hashing or hashing)
        if why is not None:
            sock.close()
            raise TransportError(f"tcp worker {address}: {why}")
        if self._hashing is None:
            self._hashing = {**hashing, "worker": f"tcp worker {i} ({address})"}
        pid = reply.get("pid")
        return sock, pid if isinstance(pid, int) else None, auth

    def _peer_table(self) -> list[str | None]:
        """Worker index -> address, None for a worker lost (and not replaced)."""
        return [None if i in self._lost else a for i, a in enumerate(self.addresses)]

    def _announce(self, changed: int) -> None:
        """Send every other live worker the new peer table (before its next LAUNCH)."""
        table = [[a, e] for a, e in zip(self._peer_table(), self._epochs)]
        for i in range(len(self.addresses)):
            if i != changed and i not in self._lost:
                self.send(i, (PEERS, table))

    def add_worker(self, spec: Any = None) -> int:
        """Join the running daemon at ``spec`` ("host:port") to the session; returns its index."""
        if not isinstance(spec, str):
            raise ValueError(f"the tcp transport adds a running worker daemon: add_worker('host:port'), "
                             f"got {spec!r}")
        _net.parse_address(spec)
        self._check_open()
        i = len(self.addresses)
        sock, pid, auth = self._connect(i, spec, [*self._peer_table(), spec], 0)
        self.addresses.append(spec)
        self._where.append("")
        self._pids.append(pid)
        self._epochs.append(0)
        self._hub.add(sock, i, auth=auth)
        self._configure_worker(i)
        self._announce(i)
        return i

    def _daemon_spec(self) -> DaemonSpec:
        """The settings every daemon of this session starts with (see ``_launcher``)."""
        args = ["--max-frame", str(self.max_frame), "--handshake-timeout", str(self.handshake_timeout),
                "--keepalive", _net.format_keepalive(self.keepalive)]
        if self.tls:
            args += ["--tls-cert", self.tls.cert, "--tls-key", self.tls.key, "--tls-ca", self.tls.ca]
        if self.worker_log_level:
            args += ["--log-level", self.worker_log_level]
        if not self.frame_mac:
            args += ["--no-frame-mac"]
        # Only what the driver decides travels: the hash seed, thread counts, its import path, the log level.
        # The rest of its environment (PATH, HOME, a virtualenv, CUDA_VISIBLE_DEVICES Ray sets for GPU
        # actors) belongs to the host the daemon runs on.
        env = {k: v for k, v in worker_env().items()
               if k in ("PYTHONHASHSEED", "PYTHONPATH", "DRIZZLE_LOG_LEVEL") or k in THREAD_VARS}
        return DaemonSpec(self.spawn, self.secret, tuple(args), env, self.connect_deadline)

    def _start_daemons(self) -> None:
        """Have the launcher start ``spawn`` daemons; wait (bounded) until each listens."""
        launcher = self.launcher
        assert launcher is not None
        launcher.open(self._daemon_spec())
        for i in range(self.spawn):
            launcher.launch(i, 0)
        started: dict[int, Started] = {}
        deadline = time.monotonic() + self.start_timeout
        while len(started) < self.spawn:
            for ev in launcher.poll():
                if isinstance(ev, Started):
                    started[ev.index] = ev
                else:
                    raise TransportError(f"{self.name} worker {ev.index} could not be started: {ev.reason}")
            if len(started) < self.spawn:
                if time.monotonic() > deadline:
                    missing = sorted(set(range(self.spawn)) - set(started))
                    raise TransportError(f"{self.name} workers {missing} did not start within "
                                         f"{self.start_timeout:.0f}s ({launcher.name} launcher)")
                time.sleep(0.002)
        self.addresses = [started[i].address for i in range(self.spawn)]
        self._where = [started[i].where for i in range(self.spawn)]

    def replace_worker(self, worker: int, epoch: int) -> bool | None:
        """Have the launcher start a new daemon in the slot of a lost one it started (incarnation ``epoch``);
        it joins from ``poll`` (``WorkerJoined``) while the survivors carry on."""
        if self._closed or not self.replace_lost or self.launcher is None or not 0 <= worker < self.spawn:
            return False
        self.launcher.kill(worker)
        self.launcher.launch(worker, epoch)
        self._replacing[worker] = epoch
        self._starting[worker] = time.monotonic() + self.start_timeout
        return None

    def poll(self, timeout: float | None) -> list[tuple[int, Any]]:
        if self.launcher is None:
            return super().poll(timeout)
        # The launcher reports what its engine saw (a node gone before any socket noticed): look often.
        events = super().poll(LAUNCHER_WATCH if timeout is None else min(timeout, LAUNCHER_WATCH))
        if not self._starting and time.monotonic() >= self._next_watch:
            events.extend(self._joined())
        return events

    def _joined(self) -> list[tuple[int, Any]]:
        """The launcher's news: replacements that listen now are handshaken and joined; losses the engine saw
        are reported (and fenced) before any socket may notice them."""
        events: list[tuple[int, Any]] = []
        if self.launcher is None:
            return events
        self._next_watch = time.monotonic() + LAUNCHER_WATCH
        log = logging.getLogger(f"drizzle.{self.name}")
        for ev in self.launcher.poll():
            i = ev.index
            if isinstance(ev, Started):
                if self._replacing.get(i) != ev.epoch or i not in self._starting:
                    self.launcher.kill(i)  # late for a slot given up on
                    continue
                del self._starting[i]
                try:
                    self._join(i, ev)
                except (TransportError, OSError) as e:
                    log.warning("the replacement for %s worker %d at %s could not be joined: %s", self.name, i,
                                ev.address, e)
                    self.launcher.kill(i)
                    continue
                events.append((i, WorkerJoined()))
            elif isinstance(ev, Failed):
                if self._starting.pop(i, None) is not None:
                    log.warning("the replacement for %s worker %d did not start: %s", self.name, i, ev.reason)
            elif ev.epoch == self._epochs[i] and i not in self._lost:
                log.warning("%s worker %d: %s", self.name, i, ev.reason)
                self._fence(i)  # gone for the engine: whatever is left of it must deliver nothing late
                self._lost.add(i)
                events.append((i, WorkerLost(ev.reason)))
        now = time.monotonic()
        for i, deadline in list(self._starting.items()):
            if now > deadline:
                del self._starting[i]
                self.launcher.kill(i)
                log.warning("the replacement for %s worker %d did not start within %.0fs", self.name, i,
                            self.start_timeout)
        return events

    def _join(self, worker: int, ev: Started) -> None:
        peers = self._peer_table()
        peers[worker] = ev.address
        sock, pid, auth = self._connect(worker, ev.address, peers, ev.epoch)
        self.addresses[worker], self._pids[worker], self._epochs[worker] = ev.address, pid, ev.epoch
        self._where[worker] = ev.where
        self._adopt(worker, sock, auth)
        self._announce(worker)

    def _exit_of(self, worker: int, timeout: float = 1.0) -> str | None:
        if self.launcher is None or worker >= self.spawn:
            return None
        return self.launcher.exit_of(worker, timeout)

    def _fence(self, worker: int) -> None:
        if self.launcher is not None and worker < self.spawn:
            self.launcher.kill(worker)
        self._hub.disconnect(worker)

    def _cleanup(self) -> None:
        if self.launcher is not None:
            self.launcher.close()

    @property
    def worker_names(self) -> list[str]:
        return [f"{self.name} worker {i} ({a}" + (f", pid {p}" if p is not None else "")
                + (f", {w})" if w else ")") for i, (a, p, w) in enumerate(zip(self.addresses, self._pids, self._where))]

    def _why_lost(self, worker: int, msg: Disconnected) -> str:
        address = self.addresses[worker]
        how = self._exit_of(worker)
        if how is not None:
            return f"the worker process at {address} {how}"
        if "timed out" in msg.reason and self.keepalive is not None:
            return (f"the connection to {address} ended: {msg.reason} (no answer to TCP keepalive probes: "
                    f"its host is unreachable or gone)")
        return f"the connection to {address} ended: {msg.reason}"
