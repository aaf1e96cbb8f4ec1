"""The ray transport beside local and beside plain Ray actor calls (issue 12); ``bench_cluster.py`` imports it.

    python benchmarks/_cluster_ray.py            # about a minute: a table
    python benchmarks/_cluster_ray.py --rounds 3

Workloads, each on 2 workers:

* **W1** - single stage: 4 cached partitions of 10,000 float64, ``np.sum``
  of each, G=100 jobs per group, 10 groups per round; figure: ms per job.
* **k-means** - ``drizzle_ml.KMeans`` (k=8, fixed initial centers, 5
  Lloyd iterations, ``tol=0``) on 200,000 x 10 float64; figure: ms per fit
  (shipping the data to the workers, the iterations and the final labels).

Columns: ``drizzle_ms`` on ``transport="ray"``; ``local_ms`` on
``transport="local"``, same worker count; ``peer_ms`` the same work as plain
Ray: 2 actors holding the partitions, W1 as 100 x 2 actor calls submitted at
once then gathered per group (Ray's best case for many small jobs), k-means
as ``load`` then one ``step`` call per actor per iteration (the arithmetic
of ``drizzle_ml``'s ``lloyd_local``) and a final ``labels`` call, the
driver updating the centers as Drizzle's does.
Rounds are paired and interleaved (drizzle, local, peer in turn); the
ratios are medians of the per-round ratios, ``spread`` the min-max of
``ratio_local`` over the rounds (``spread_peer`` the same for
``ratio_peer``).

Ray: the driver's cluster if it has one (``ray.init`` called, or
``RAY_ADDRESS`` set), else a one-node cluster started here (``ray.cluster_utils.
Cluster``: no dashboard, 200 MB object store) and ended at the end.
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
def _ray() -> Iterator[None]:
    """Ray for this run: the caller's cluster, else one started (and ended) here."""
    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING, log_to_driver=False)
        yield
        return
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=4, include_dashboard=False,
                                                                object_store_memory=200 * 2**20))
    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        cluster.shutdown()


# ------------------------------------------------------------------- peer
class _Shards:
    """A Ray actor's share of the data (W1 partitions or k-means rows)."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.X: np.ndarray | None = None

    def set_parts(self, parts: list[np.ndarray]) -> None:
        self.parts = parts

    def sums(self) -> list[float]:
        return [float(np.sum(p)) for p in self.parts]

    def load(self, X: np.ndarray) -> int:
        self.X = np.ascontiguousarray(X)
        self.xx = float(np.einsum("ij,ij->", self.X, self.X))
        return len(self.X)

    def step(self, centers: np.ndarray) -> np.ndarray:
        """The same arithmetic as ``drizzle_ml``'s ``lloyd_local`` (scores, argmin, one-hot sums)."""
        import scipy.sparse as sp

        X = self.X
        assert X is not None
        k = centers.shape[0]
        n = X.shape[0]
        labels, best = _assign(X, centers)
        onehot = sp.csr_matrix((np.ones(n), labels, np.arange(n + 1)), shape=(n, k))
        return np.concatenate([np.asarray(onehot.T @ X).ravel(), np.bincount(labels, minlength=k),
                               [self.xx + best.sum()]])

    def labels(self, centers: np.ndarray) -> np.ndarray:
        assert self.X is not None
        return _assign(self.X, centers)[0]


def _peer_w1(actors: list[Any]) -> Callable[[], float]:
    import ray

    def run() -> float:
        t = time.perf_counter()
        for _ in range(W1_GROUPS):
            out = ray.get([a.sums.remote() for _ in range(G) for a in actors])
            assert len(out) == G * len(actors)
        return (time.perf_counter() - t) / (G * W1_GROUPS) * 1e3
    return run


def _peer_kmeans(actors: list[Any], X: np.ndarray, init: np.ndarray) -> Callable[[], float]:
    import ray

    k, d = init.shape

    def run() -> float:
        t = time.perf_counter()
        ray.get([a.load.remote(part) for a, part in zip(actors, np.array_split(X, len(actors)))])
        centers = init
        for _ in range(KM_ITER):
            total = sum(ray.get([a.step.remote(centers) for a in actors]))
            counts = total[k * d:k * d + k]
            sums = total[:k * d].reshape(k, d)
            centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        labels = np.concatenate(ray.get([a.labels.remote(centers) for a in actors]))
        assert len(labels) == len(X)
        return (time.perf_counter() - t) * 1e3
    return run


# ---------------------------------------------------------------- rounds
def rows(rounds: int = 5) -> list[dict]:
    """W1 and k-means on ``transport="ray"`` vs ``"local"`` vs plain Ray actor calls (see the docstring)."""
    import ray

    rng = np.random.default_rng(1)
    X = rng.normal(size=KM_SHAPE)
    init = X[rng.choice(len(X), KM_K, replace=False)].copy()
    out = []
    with _ray(), dz.Context(transport="ray", workers=WORKERS) as rctx, \
            dz.Context(transport="local", workers=WORKERS) as lctx:
        Shards = ray.remote(num_cpus=1)(_Shards)
        actors = [Shards.remote() for _ in range(WORKERS)]
        try:
            parts = np.array_split(np.random.default_rng(0).random(PARTITIONS * ROWS), PARTITIONS)
            ray.get([a.set_parts.remote(parts[i::WORKERS]) for i, a in enumerate(actors)])
            w1 = _paired({"drizzle": _drizzle_w1(rctx), "local": _drizzle_w1(lctx), "peer": _peer_w1(actors)},
                         rounds)
            out.append({"engine": "ray", "workload": f"W1 single stage, G={G} (ms/job)", **w1})
            km = _paired({"drizzle": _drizzle_kmeans(rctx, X, init), "local": _drizzle_kmeans(lctx, X, init),
                          "peer": _peer_kmeans(actors, X, init)}, rounds)
            out.append({"engine": "ray", "workload": f"k-means {KM_SHAPE[0] // 1000}k x {KM_SHAPE[1]}, k={KM_K}, "
                                                     f"{KM_ITER} iter (ms/fit)", **km})
        finally:
            for a in actors:
                ray.kill(a)
    return out


def main(argv: list[str] | None = None) -> int:
    from _tables import table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = rows(args.rounds)
    cols = ["engine", "workload", "drizzle_ms", "local_ms", "peer_ms", "ratio_local", "ratio_peer", "spread",
            "spread_peer"]
    print(f"ray transport vs local vs plain Ray actors, {WORKERS} workers, {args.rounds} paired rounds "
          f"(medians; ratios are drizzle/other per round)\n")
    print(table(cols, [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
