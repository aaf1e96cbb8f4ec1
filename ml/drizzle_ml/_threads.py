"""How many BLAS threads each worker runs: a check that workers do not oversubscribe the cores.

The local transport starts workers with OMP/OPENBLAS/MKL_NUM_THREADS=1, since
the workers are the parallelism. ``threadpoolctl`` (not a dependency) reads
what the BLAS library actually uses; without it the environment is reported.
"""

from __future__ import annotations

import os
from typing import Any

import drizzle_core as dz

_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads_here(_: Any = None) -> dict[str, Any]:
    """This process's BLAS thread pools (``threadpoolctl``) and thread variables."""
    info: dict[str, Any] = {"pid": os.getpid(), "env": {v: os.environ.get(v) for v in _VARS}}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["blas"] = None
    else:
        import numpy  # noqa: F401  (load the BLAS library so threadpoolctl sees it)

        info["blas"] = [{"api": p.get("internal_api"), "num_threads": p.get("num_threads")}
                        for p in threadpool_info() if p.get("user_api") == "blas"]
    return info


def worker_blas_threads(ctx: dz.Context) -> list[dict[str, Any]]:
    """:func:`blas_threads_here` as seen by one task on each partition of a one-partition-per-worker dataset.

    With ``threadpoolctl`` installed, ``info["blas"]`` lists each BLAS
    library's thread count; ``max_blas_threads`` summarises the result.
    """
    ds = ctx.parallelize(range(ctx.num_workers), ctx.num_workers)
    return ctx.run_jobs([(ds, blas_threads_here)], group_size=1)[0]


def max_blas_threads(infos: list[dict[str, Any]]) -> int | None:
    """The largest BLAS thread count among ``infos`` (None when threadpoolctl was not there)."""
    counts = [p["num_threads"] for info in infos if info["blas"] for p in info["blas"]]
    return max(counts) if counts else None
