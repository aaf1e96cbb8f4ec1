"""Shared helpers for the drizzle_ml tests: contexts shared per module, data, comparisons."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import child_pids, wait_no_children

import drizzle_core as dz

WORKER_COUNTS = (1, 2, 3)


@pytest.fixture(scope="module")
def contexts():
    """``{workers: Context}`` for 1, 2 and 3 local workers, shared by a module; reaped at its end."""
    before = child_pids()
    made = {}
    try:
        for w in WORKER_COUNTS:
            made[w] = dz.Context(transport="local", workers=w, group_size="auto")
        yield made
    finally:
        for c in made.values():
            c.stop()
    left = wait_no_children(before)
    assert not left, f"processes left running: {sorted(left)}"


@pytest.fixture(scope="module")
def ctx(contexts):
    """The 2-worker context."""
    return contexts[2]


def blobs(seed: int, n: int, d: int, k: int, spread: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``k`` well-separated Gaussian blobs, and the first point of each blob."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    labels = np.arange(n) % k
    X = centers[labels] + rng.normal(size=(n, d))
    return X, X[:k] + 0.1


def sparsify(X: np.ndarray, density: float, seed: int) -> sp.csr_matrix:
    """``X`` with a random ``1 - density`` share of its entries set to zero, as CSR."""
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(X * (rng.random(X.shape) < density))


def close(a: np.ndarray, b: np.ndarray, rel: float) -> bool:
    """Equal up to ``rel`` relative to the larger magnitude (absolute near zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0.0)) <= rel * scale


def sklearn_loaded(_partition) -> bool:
    """A job's function: whether this process (a worker) has imported scikit-learn."""
    import sys

    return "sklearn" in sys.modules
