"""Launchers: who starts the tcp transport's worker daemons, and who tells when one dies.

The tcp transport speaks to ``drizzle worker`` daemons over its own
authenticated protocol; *where* those daemons run is a launcher's business.
The ``local`` launcher (here) starts them as child processes on this host
(``Context(transport="tcp", workers=N)``); the ``ray`` and ``dask`` plugins
give launchers that place them inside a cluster the user already runs (a Ray
actor, a long-running Dask task, each the daemon's parent), so that engine
places, watches and cleans them up, and Drizzle keeps its worker-to-worker
path (no engine on the per-task path).

The contract (every method is called from the driver's thread that holds the
scheduler's lock; none may block for long):

* ``open(spec)`` once: reach the engine, check it can host ``spec.workers``
  daemons (an error here names what is missing: resources, a Ray Client
  address, ...).
* ``launch(index, epoch)``: *start* a daemon for worker slot ``index``, its
  incarnation ``epoch`` (0, then 1 for its first replacement, ...); return
  at once. Its outcome comes from ``poll``.
* ``poll()``: what happened since the last call, as :class:`Started` (the
  daemon listens at ``address``), :class:`Failed` (it could not be started:
  the slot stays empty) and :class:`Lost` (the engine saw a daemon that had
  started die: its host process, node or worker is gone). A launcher reports
  an event once; ``Lost`` for an incarnation the transport already replaced
  is ignored there.
* ``exit_of(index, timeout)``: how the daemon in ``index``'s slot ended, if
  the launcher can tell (``describe_exit`` wording), else None.
* ``kill(index)``: end the daemon in that slot now (a fence: the worker was
  declared lost while silent); it must not come back.
* ``close()``: end every daemon it started and release the engine's
  resources, bounded in time; idempotent.

Each daemon is started by :func:`start_daemon` on the host that runs it:
``python -m drizzle_tcp._worker_main`` with the session's settings
(:class:`DaemonSpec`), listening on ``listen`` (the node's address, port 0),
dying with ``parent_pid`` (the actor's or task's process: PR_SET_PDEATHSIG),
serving one driver session and exiting if no driver connects within
``spec.connect_deadline`` seconds. The secret goes in the child's
environment (``DRIZZLE_SECRET``), never on its command line where ``ps``
shows it; a launcher passes it to the host through its engine's own channel
(an actor's constructor, a task's arguments).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from drizzle_core.transport import TransportError, describe_exit, spawn_process

#: a daemon no driver connected to within this many seconds exits (an orphan of a failed start)
CONNECT_DEADLINE = 120.0


@dataclass(frozen=True)
class DaemonSpec:
    """What every daemon of one session is started with (picklable: it travels to the hosts)."""

    workers: int                       # how many the session asks for at start
    secret: bytes = field(repr=False)  # fresh per session unless the user gave one; never in a repr (logs)
    args: tuple[str, ...] = ()         # ``drizzle worker`` options (frame size, timeouts, TLS, log level)
    env: dict[str, str] = field(default_factory=dict)  # PYTHONHASHSEED and the like (worker_env)
    connect_deadline: float = CONNECT_DEADLINE


@dataclass(frozen=True)
class Started:
    index: int
    epoch: int
    address: str                       # "host:port" every other worker and the driver can reach
    pid: int | None = None             # the daemon's pid on its host, for names and logs
    where: str = ""                    # e.g. "ray node 10.0.0.7", "dask worker tcp://10.0.0.7:40211"


@dataclass(frozen=True)
class Failed:
    index: int
    epoch: int
    reason: str


@dataclass(frozen=True)
class Lost:
    index: int
    epoch: int
    reason: str


LauncherEvent = Started | Failed | Lost


class Launcher(ABC):
    """Starts and watches the tcp transport's daemons; see the module docstring for the contract."""

    name = "launcher"

    @abstractmethod
    def open(self, spec: DaemonSpec) -> None:
        """Reach the engine and check it can host ``spec.workers`` daemons."""

    @abstractmethod
    def launch(self, index: int, epoch: int) -> None:
        """Begin starting a daemon for slot ``index`` (incarnation ``epoch``); the outcome comes from ``poll``."""

    @abstractmethod
    def poll(self) -> list[LauncherEvent]:
        """What happened since the last call (never blocks)."""

    def exit_of(self, index: int, timeout: float = 1.0) -> str | None:
        """How the daemon in ``index``'s slot ended, when the launcher can tell; None otherwise."""
        return None

    @abstractmethod
    def kill(self, index: int) -> None:
        """End the daemon in slot ``index`` now (it was declared lost)."""

    @abstractmethod
    def close(self) -> None:
        """End every daemon started and release the engine's resources (bounded; idempotent)."""


def daemon_command(spec: DaemonSpec, listen: str, parent_pid: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one daemon (the secret in the environment only)."""
    argv = [sys.executable, "-m", "drizzle_tcp._worker_main", "--listen", listen, "--parent-pid", str(parent_pid),
            "--one-session", "--connect-deadline", repr(float(spec.connect_deadline)), *spec.args]
    env = {**os.environ, **spec.env, "DRIZZLE_SECRET": spec.secret.decode()}
    here, theirs = os.environ.get("PYTHONPATH"), spec.env.get("PYTHONPATH")
    if here and theirs:
        # the host's own import path first (its environment, a runtime_env), then the driver's entries
        # that exist on this host (a project directory on a shared filesystem)
        mine = here.split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(mine + [p for p in theirs.split(os.pathsep)
                                                    if p not in mine and os.path.exists(p)])
    return argv, env


def start_daemon(spec: DaemonSpec, listen: str, *, timeout: float = 60.0,
                 parent_pid: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start one daemon on this host; wait (bounded) for the address it listens on.

    Called where the daemon runs: by the local launcher in the driver, by a
    Ray actor or a Dask task on its node. The daemon dies with this process.
    """
    argv, env = daemon_command(spec, listen, parent_pid if parent_pid is not None else os.getpid())
    # spawn_process, not Popen: the parent-death signal follows this process, not the calling thread
    proc = spawn_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True)
    try:
        return proc, read_address(proc, time.monotonic() + timeout)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise


#: the one line a daemon prints on stdout, once it listens: this, then HOST:PORT
ADDRESS_LINE = "drizzle worker listening on "


def address_of(proc: subprocess.Popen[bytes]) -> str | None:
    """The address in the daemon's one stdout line (readable now), or None: it printed none (it is exiting)."""
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace").strip()
    proc.stdout.close()
    return line[len(ADDRESS_LINE):] if line.startswith(ADDRESS_LINE) else None


def read_address(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """Wait (until ``deadline``) for the address the daemon prints once it listens."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if sel.select(timeout=0.05):
                address = address_of(proc)
                if address is not None:
                    return address
                code = proc.wait(timeout=5)
                raise TransportError(f"the worker daemon (pid {proc.pid}) {describe_exit(code)} while starting; "
                                     f"its error output is above")
            if time.monotonic() > deadline:
                raise TransportError(f"the worker daemon (pid {proc.pid}) did not start in time")
