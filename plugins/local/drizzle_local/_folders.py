"""The local transport's socket folders in the temp dir, and the removal of those a killed driver left behind.

Each driver's workers listen on Unix sockets in one private folder (``mkdtemp``, mode 0700, so no other user can
reach them). A driver that closes removes its folder; one killed with ``kill -9`` cannot, and its workers die
with it (SIGKILL on Linux, ``PR_SET_PDEATHSIG``), so nobody is left to. So the folder's name says whose it is,
and the next local transport to start, in any process of this user, removes the folders of drivers that are gone:

    drizzle-local-{PID}-{START}-{random}      PID: the driver's pid; START: its start time (/proc, clock ticks
                                              since boot), or ``x`` where there is no /proc

A folder is an orphan when no process has that pid, or (Linux) the process with that pid started at another time
(the pid was reused), or is a zombie (dead, not yet reaped). A live driver's folder is never an orphan, so it is
never touched; a folder of another user is not ours to remove. Folders without that name shape (another program's,
or older versions') are left alone. Without /proc (not Linux) a reused pid keeps a dead driver's folder until that
process exits too: the safe way to be wrong.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

log = logging.getLogger("drizzle.local")

PREFIX = "drizzle-local-"
_NAME = re.compile(r"^drizzle-local-(?P<pid>\d+)-(?P<start>\d+|x)-[A-Za-z0-9_]+$")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), ``"Z"`` for a zombie, None if no such
    process; ``"x"`` where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else "x"
    except OSError:
        return "x"
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return "Z" if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_folder() -> str:
    """A new private socket folder for this driver process, named after it (see the module docstring)."""
    start = _start_time(os.getpid()) or "x"
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{start}-")


def is_orphan(name: str) -> bool:
    """Whether the folder ``name`` (a base name) belongs to a driver process that is gone."""
    m = _NAME.match(name)
    if not m:
        return False
    pid, start = int(m["pid"]), m["start"]
    if pid == os.getpid():
        return False  # this process: its own transports remove their folders when they close
    now = _start_time(pid)
    if now is None or now == "Z":
        return True
    if now == "x" or start == "x":  # no /proc: only whether the pid is taken
        return not _alive(pid)
    return now != start


def remove_orphans(directory: str | None = None) -> list[str]:
    """Remove the socket folders of gone drivers in the temp dir (or ``directory``); the paths removed."""
    directory = directory or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(directory) if n.startswith(PREFIX)]
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue  # removed by someone else meanwhile
        if st.st_uid != uid or not os.path.isdir(path) or os.path.islink(path) or not is_orphan(name):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    if removed:
        log.info("removed %d socket folder(s) of local drivers that are gone: %s", len(removed), ", ".join(removed))
    return removed
