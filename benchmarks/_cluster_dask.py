"""The dask transport beside local and beside plain Dask futures (issue 12); ``bench_cluster.py`` imports it.

    python benchmarks/_cluster_dask.py            # about a minute: a table
    python benchmarks/_cluster_dask.py --rounds 3 --scheduler tcp://host:8786

Workloads, each on 2 workers:

* **W1** - single stage: 4 cached partitions of 10,000 float64, ``np.sum``
  of each, G=100 jobs per group, 10 groups per round; figure: ms per job.
* **k-means** - ``drizzle_ml.KMeans`` (k=8, fixed initial centers, 5
  Lloyd iterations, ``tol=0``) on 200,000 x 10 float64; figure: ms per fit
  (shipping the data to the workers, the iterations and the final labels).

Columns: ``drizzle_ms`` on ``transport="dask"``; ``local_ms`` on
``transport="local"``, same worker count; ``peer_ms`` the same work as plain
Dask futures: the 4 partitions scattered to the 2 workers once, W1 as a
group's 100 x 4 ``client.submit(np.sum, part)`` at once, then one
``client.gather`` per group (Dask's best case for many small jobs: one
gather per job would pay a round trip each), k-means as the rows scattered
in 2 shards per fit, one ``submit(step, shard, centers)`` per shard per
iteration gathered by the driver, which updates the centers as Drizzle's
does (``step`` is the arithmetic of ``drizzle_ml``'s ``lloyd_local``), and a
final ``labels`` call per shard.
Rounds are paired and interleaved (drizzle, local, peer in turn); the ratios
are medians of the per-round ratios, ``spread`` the min-max of
``ratio_local`` over the rounds (``spread_peer`` the same for ``ratio_peer``).

Dask: the scheduler given (``--scheduler`` or ``$DASK_SCHEDULER_ADDRESS``),
else a ``LocalCluster`` of 2 worker processes with 1 thread each, started
here and closed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import drizzle_core as dz

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cluster_common import (
    KM_ITER,
    KM_K,
    KM_SHAPE,
    PARTITIONS,
    ROWS,
    W1_GROUPS,
    WORKERS,
    G,
    _assign,
    _drizzle_kmeans,
    _drizzle_w1,
    _paired,
)


@contextlib.contextmanager
def _dask(address: str | None) -> Iterator[Any]:
    """A client of the given scheduler, else of a LocalCluster started (and closed) here."""
    from distributed import Client, LocalCluster

    if address:
        with Client(address, set_as_default=False) as client:
            yield client
        return
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client


# ------------------------------------------------------------------- peer
def _sum(part: np.ndarray) -> float:
    return float(np.sum(part))


def _step(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The same arithmetic as ``drizzle_ml``'s ``lloyd_local`` (scores, argmin, one-hot sums)."""
    import scipy.sparse as sp

    k = centers.shape[0]
    n = X.shape[0]
    labels, best = _assign(X, centers)
    onehot = sp.csr_matrix((np.ones(n), labels, np.arange(n + 1)), shape=(n, k))
    xx = float(np.einsum("ij,ij->", X, X))
    return np.concatenate([np.asarray(onehot.T @ X).ravel(), np.bincount(labels, minlength=k), [xx + best.sum()]])


def _labels(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return _assign(X, centers)[0]


def _peer_w1(client: Any, parts: list[Any]) -> Callable[[], float]:
    def run() -> float:
        t = time.perf_counter()
        for _ in range(W1_GROUPS):
            futures = [client.submit(_sum, p, pure=False) for _ in range(G) for p in parts]
            out = client.gather(futures)
            assert len(out) == G * len(parts)
        return (time.perf_counter() - t) / (G * W1_GROUPS) * 1e3
    return run


def _peer_kmeans(client: Any, workers: list[str], X: np.ndarray, init: np.ndarray) -> Callable[[], float]:
    k, d = init.shape

    def run() -> float:
        t = time.perf_counter()
        shards = [client.scatter(np.ascontiguousarray(part), workers=[w])
                  for w, part in zip(workers, np.array_split(X, len(workers)))]
        centers = init
        for _ in range(KM_ITER):
            total = sum(client.gather([client.submit(_step, s, centers, pure=False) for s in shards]))
            counts = total[k * d:k * d + k]
            sums = total[:k * d].reshape(k, d)
            centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        labels = np.concatenate(client.gather([client.submit(_labels, s, centers, pure=False) for s in shards]))
        assert len(labels) == len(X)
        for s in shards:
            s.release()
        return (time.perf_counter() - t) * 1e3
    return run


# ---------------------------------------------------------------- rounds
def rows(rounds: int = 5, address: str | None = None) -> list[dict]:
    """W1 and k-means on ``transport="dask"`` vs ``"local"`` vs plain Dask futures (see the docstring)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=KM_SHAPE)
    init = X[rng.choice(len(X), KM_K, replace=False)].copy()
    out = []
    with _dask(address or os.environ.get("DASK_SCHEDULER_ADDRESS")) as client, \
            dz.Context(transport="dask", workers=WORKERS, client=client) as dctx, \
            dz.Context(transport="local", workers=WORKERS) as lctx:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])[:WORKERS]
        data = np.array_split(np.random.default_rng(0).random(PARTITIONS * ROWS), PARTITIONS)
        parts = [client.scatter(p, workers=[workers[i % len(workers)]]) for i, p in enumerate(data)]
        w1 = _paired({"drizzle": _drizzle_w1(dctx), "local": _drizzle_w1(lctx), "peer": _peer_w1(client, parts)},
                     rounds)
        out.append({"engine": "dask", "workload": f"W1 single stage, G={G} (ms/job)", **w1})
        km = _paired({"drizzle": _drizzle_kmeans(dctx, X, init), "local": _drizzle_kmeans(lctx, X, init),
                      "peer": _peer_kmeans(client, workers, X, init)}, rounds)
        out.append({"engine": "dask", "workload": f"k-means {KM_SHAPE[0] // 1000}k x {KM_SHAPE[1]}, k={KM_K}, "
                                                  f"{KM_ITER} iter (ms/fit)", **km})
    return out


def main(argv: list[str] | None = None) -> int:
    from _tables import table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scheduler", default=None, help="a running Dask scheduler (default: a LocalCluster)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = rows(args.rounds, args.scheduler)
    cols = ["engine", "workload", "drizzle_ms", "local_ms", "peer_ms", "ratio_local", "ratio_peer", "spread",
            "spread_peer"]
    print(f"dask transport vs local vs plain Dask futures, {WORKERS} workers, {args.rounds} paired rounds "
          f"(medians; ratios are drizzle/other per round)\n")
    print(table(cols, [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
