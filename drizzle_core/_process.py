"""What every transport that starts worker processes on this host needs.

* :func:`worker_env` — the environment for a worker process: one BLAS thread
  (the workers are the parallelism; N workers each running N BLAS threads on
  N cores oversubscribe them), and the driver's import path, as
  multiprocessing's spawn passes it (functions from the user's own modules
  pickle by reference and must import on the workers too).
* :func:`die_with_parent` — called first thing in a worker: the kernel kills
  it when its parent (the driver) dies, even by kill -9 (Linux).
* :func:`describe_exit` — "was killed by signal 9 (SIGKILL)" from a return code.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (the driver's environment) fit for a worker process."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARS:
        env.setdefault(var, "1")
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
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


def describe_exit(code: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
