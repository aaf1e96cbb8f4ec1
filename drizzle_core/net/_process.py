"""What every transport that starts worker processes on this host needs.

* :func:`worker_env` — the environment for a worker process: one BLAS thread
  (the workers are the parallelism; N workers each running N BLAS threads on
  N cores oversubscribe them), and the driver's import path, as
  multiprocessing's spawn passes it (functions from the user's own modules
  pickle by reference and must import on the workers too), and one hash
  seed (:func:`hash_seed`).
* :func:`hash_seed` — the PYTHONHASHSEED of every worker this driver starts.
  ``portable_hash`` hashes the usual keys the same in every process, but a
  key of a class with its own ``__hash__`` falls back to Python's ``hash``,
  salted per process: two workers with different seeds would send equal
  keys to different reducers. The seed is the driver's own PYTHONHASHSEED
  when it sets one, else one drawn at random once per driver process (so
  hash randomization, a defence against keys chosen to collide, stays on;
  the driver itself does not bucket keys, so its own salt does not matter).
* :func:`die_with_parent` — called first thing in a worker: the kernel kills
  it when its parent (the driver) dies, even by kill -9 (Linux).
* :func:`spawn_process` — ``subprocess.Popen`` run on one long-lived thread of
  this process. Why: Linux sends the parent-death signal when the *thread*
  that forked the child ends, not the process (prctl(2): "the parent" is the
  creating thread). A Context made in a short-lived thread lost every worker
  the moment that thread returned. Started from a thread that lives as long
  as the process, a worker still dies with the driver (kill -9 included) and
  with nothing else. (Checking the parent pid in a watchdog instead would
  poll, and a worker blocked in a long task does not notice its driver's
  connection closing; the spawner thread keeps the kernel doing the work.)
* :func:`describe_exit` — "was killed by signal 9 (SIGKILL)" from a return code.
"""

from __future__ import annotations

import ctypes
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")

MAX_HASH_SEED = 4294967295  # Python's bound for PYTHONHASHSEED
#: this driver process's seed when its environment names none: drawn once, so every worker and
#: replacement of every session of this process hashes alike
_OWN_HASH_SEED = str(secrets.randbelow(MAX_HASH_SEED) + 1)


def hash_seed(environ: dict[str, str] | None = None) -> str:
    """The PYTHONHASHSEED for workers: ``environ``'s (default ``os.environ``), else this process's own pick.

    "random" or unset means no seed was chosen; anything else must be what Python accepts, an
    integer in [0, 4294967295], or every worker would fail to start.
    """
    value = (os.environ if environ is None else environ).get("PYTHONHASHSEED", "").strip()
    if not value or value == "random":
        return _OWN_HASH_SEED
    if not value.isdigit() or int(value) > MAX_HASH_SEED:
        raise ValueError(f"PYTHONHASHSEED={value!r}: it must be \"random\" or an integer in [0, {MAX_HASH_SEED}]")
    return value


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (the driver's environment) fit for a worker process (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARS:
        env.setdefault(var, "1")
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    env["PYTHONHASHSEED"] = hash_seed(env)
    return env


def die_with_parent(parent_pid: int) -> None:
    """Make this process die with ``parent_pid`` (PR_SET_PDEATHSIG); exit now if it is gone already."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


class _Spawner:
    """The one thread of this process that starts worker processes (see :func:`spawn_process`).

    State, under ``_lock``: ``_thread`` (the spawner thread, started on first
    need, a daemon so it never holds up exit) and ``_requests`` (its queue of
    ``_Request``). After a fork both are forgotten: the child has no such
    thread and starts its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._requests = queue.SimpleQueue()

    def popen(self, args: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
        request = _Request(args, kwargs)
        with self._lock:
            if threading.current_thread() is self._thread:
                return subprocess.Popen(args, **kwargs)
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._serve, args=(self._requests,), name="drizzle-spawner",
                                          daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # interpreter shutdown: no new threads; this thread lives till exit
                    return subprocess.Popen(args, **kwargs)
                self._thread = thread
            self._requests.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.proc is not None
        return request.proc

    @staticmethod
    def _serve(requests: queue.SimpleQueue[_Request]) -> None:
        while True:
            request = requests.get()
            try:
                request.proc = subprocess.Popen(request.args, **request.kwargs)
            except BaseException as e:  # the caller raises it, with its own traceback
                request.error = e
            finally:
                request.done.set()


class _Request:
    """One process to start: the Popen arguments in, the process (or the error) out."""

    __slots__ = ("args", "done", "error", "kwargs", "proc")

    def __init__(self, args: list[str], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs
        self.done = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: BaseException | None = None


_SPAWNER = _Spawner()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SPAWNER.reset)


def spawn_process(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **kwargs)``, started from this process's spawner thread.

    Use it for every worker process that calls :func:`die_with_parent`: the
    parent-death signal is tied to the thread that started the child, and the
    spawner thread lives as long as the process, whichever thread (a
    short-lived one included) made the Context. Errors of Popen (say, a
    missing executable) are raised here, in the calling thread.
    """
    return _SPAWNER.popen(args, kwargs)


def describe_exit(code: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
