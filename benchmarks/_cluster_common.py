"""What the ``ray`` and ``dask`` cluster benchmarks share: the workloads' sizes, drizzle's side, paired rounds.

``_cluster_ray.py`` and ``_cluster_dask.py`` differ only in their engine's
cluster and in the peer (the same work as plain engine calls); the drizzle
runs and the pairing of rounds are these, so both tables measure alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import drizzle_core as dz

WORKERS = 2
G = 100
W1_GROUPS = 10     # groups per timed round (one group is ~10 ms: too short to time on a noisy machine)
PARTITIONS = 4
ROWS = 10_000
KM_SHAPE = (200_000, 10)
KM_K = 8
KM_ITER = 5


def _assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    S = X @ (-2.0 * centers.T)
    S += np.einsum("ij,ij->i", centers, centers)
    labels = S.argmin(axis=1)
    return labels, S[np.arange(S.shape[0]), labels]


# ---------------------------------------------------------------- drizzle
def _drizzle_w1(ctx: dz.Context) -> Callable[[], float]:
    data = np.random.default_rng(0).random(PARTITIONS * ROWS)
    ds = ctx.parallelize(data, PARTITIONS).cache()
    ds.count()
    ctx.run_jobs([(ds, np.sum)] * G, group_size=G)  # warm: program shipped

    def run() -> float:
        t = time.perf_counter()
        ctx.run_jobs([(ds, np.sum)] * (G * W1_GROUPS), group_size=G)
        return (time.perf_counter() - t) / (G * W1_GROUPS) * 1e3
    return run


def _drizzle_kmeans(ctx: dz.Context, X: np.ndarray, init: np.ndarray) -> Callable[[], float]:
    from drizzle_ml import KMeans

    def run() -> float:
        t = time.perf_counter()
        KMeans(KM_K, init=init, max_iter=KM_ITER, tol=0.0, context=ctx, group_size=KM_ITER).fit(X)
        return (time.perf_counter() - t) * 1e3
    return run


def _paired(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, Any]:
    for run in runs.values():
        run()  # warm each once, untimed
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(run())
    r_local = [a / b for a, b in zip(times["drizzle"], times["local"])]
    r_peer = [a / b for a, b in zip(times["drizzle"], times["peer"])]
    return {"drizzle_ms": statistics.median(times["drizzle"]), "local_ms": statistics.median(times["local"]),
            "peer_ms": statistics.median(times["peer"]), "ratio_local": statistics.median(r_local),
            "ratio_peer": statistics.median(r_peer), "spread": f"{min(r_local):.2f}-{max(r_local):.2f}",
            "spread_peer": f"{min(r_peer):.2f}-{max(r_peer):.2f}"}
