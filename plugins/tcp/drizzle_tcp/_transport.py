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

import os
import secrets
import selectors
import subprocess
import sys
import time
import uuid
from typing import Any

from drizzle_core.transport import (
    DEFAULT_MAX_FRAME,
    Disconnected,
    Hub,
    HubTransport,
    TransportError,
    describe_exit,
    spawn_process,
    worker_env,
)

from . import _handshake, _hashing, _net
from ._handshake import PEERS

START_TIMEOUT = 60.0


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
                 replace_lost: bool = True, frame_mac: bool = True) -> None:
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
        self.session = ""        # the id every worker of this driver's session knows it by
        self._hashing: dict[str, Any] | None = None  # how worker 0 hashes: every worker must hash alike

    # ---------------------------------------------------------------- start
    def _start_workers(self) -> None:
        if self.spawn:
            self._start_daemons()
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
        self._pids.append(pid)
        self._epochs.append(0)
        self._hub.add(sock, i, auth=auth)
        self._configure_worker(i)
        self._announce(i)
        return i

    def replace_worker(self, worker: int, epoch: int) -> bool:
        """Start a new daemon in the slot of a lost one this driver started (incarnation ``epoch``)."""
        if self._closed or not self.replace_lost or not 0 <= worker < len(self._procs):
            return False
        self._kill(self._procs[worker])
        proc = self._procs[worker] = self._spawn()
        address = self._read_address(worker, proc, time.monotonic() + self.start_timeout)
        peers = self._peer_table()
        peers[worker] = address
        sock, pid, auth = self._connect(worker, address, peers, epoch)
        self.addresses[worker], self._pids[worker], self._epochs[worker] = address, pid, epoch
        self._adopt(worker, sock, auth)
        self._announce(worker)
        return True

    def _start_daemons(self) -> None:
        env = worker_env()
        env["DRIZZLE_SECRET"] = self.secret.decode()  # not on the command line, where ps would show it
        args = ["--listen", "127.0.0.1:0", "--parent-pid", str(os.getpid()), "--one-session",
                "--max-frame", str(self.max_frame), "--handshake-timeout", str(self.handshake_timeout),
                "--keepalive", _net.format_keepalive(self.keepalive)]
        if self.tls:
            args += ["--tls-cert", self.tls.cert, "--tls-key", self.tls.key, "--tls-ca", self.tls.ca]
        if self.worker_log_level:
            args += ["--log-level", self.worker_log_level]
        if not self.frame_mac:
            args += ["--no-frame-mac"]
        self._spawn_args = (env, args)
        for _ in range(self.spawn):
            self._procs.append(self._spawn())
        deadline = time.monotonic() + self.start_timeout
        for i, proc in enumerate(self._procs):
            self.addresses.append(self._read_address(i, proc, deadline))

    def _spawn(self) -> subprocess.Popen:
        env, args = self._spawn_args
        # spawn_process, not Popen: the daemon's parent-death signal follows this process, not this thread
        return spawn_process([sys.executable, "-m", "drizzle_tcp._worker_main", *args],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True)

    def _read_address(self, i: int, proc: subprocess.Popen, deadline: float) -> str:
        """The daemon prints ``drizzle worker listening on HOST:PORT`` once it listens."""
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                if sel.select(timeout=0.05):
                    line = proc.stdout.readline().decode(errors="replace").strip()
                    proc.stdout.close()
                    if line.startswith("drizzle worker listening on "):
                        return line.rsplit(" ", 1)[1]
                    code = proc.wait(timeout=5)
                    raise TransportError(f"tcp worker {i} (pid {proc.pid}) {describe_exit(code)} while "
                                         f"starting; its error output is above")
                if time.monotonic() > deadline:
                    raise TransportError(f"tcp worker {i} (pid {proc.pid}) did not start within "
                                         f"{self.start_timeout:.0f}s")

    @property
    def worker_names(self) -> list[str]:
        return [f"tcp worker {i} ({a}" + (f", pid {p})" if p is not None else ")")
                for i, (a, p) in enumerate(zip(self.addresses, self._pids))]

    def _why_lost(self, worker: int, msg: Disconnected) -> str:
        address = self.addresses[worker]
        how = self._exit_of(worker)
        if how is not None:
            return f"the worker process at {address} {how}"
        if "timed out" in msg.reason and self.keepalive is not None:
            return (f"the connection to {address} ended: {msg.reason} (no answer to TCP keepalive probes: "
                    f"its host is unreachable or gone)")
        return f"the connection to {address} ended: {msg.reason}"
