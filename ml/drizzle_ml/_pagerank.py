"""PageRank on ``Context.iterate_by_key``: networkx's definition, the ranks split by block across the workers.

Why blocks, not one key per vertex: a key is a Python call per iteration
(its ``send`` and ``update``). GraphX and Spark's ALS block their vertices for
the same reason. Here the vertices are cut into B contiguous blocks, one key
each; a block's value is its rank vector, and its data the transition
matrix's column block split by destination block. An iteration is then B
sparse matrix-vector products per worker and one vector per (source,
destination) block pair through the shuffle.

The update is networkx's ``pagerank`` (scipy version)::

    x = d * (M' x + sum(x[dangling]) * p) + (1 - d) * p

with M the out-weight-normalized adjacency, p the personalization (uniform by
default, also the dangling weights) and convergence when the L1 change is
below ``n * tol``. The dangling mass is ``iterate_by_key``'s aggregate, so no
iteration needs the driver; the driver receives one float per block per
iteration (the change) and, every ``checkpoint_interval`` iterations, the ranks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

import drizzle_core as dz

from . import _context
from . import _pagerank_kernels as K


@dataclass
class PageRankResult:
    """What :func:`pagerank` returns."""

    ranks: np.ndarray   # one rank per vertex, ids 0..n-1; they sum to 1
    n_iter: int         # iterations run
    converged: bool     # the L1 change fell below n * tol


def _adjacency(graph: Any, num_nodes: int | None) -> sp.csr_matrix:
    """An n x n CSR matrix of out-weights from a square sparse/dense matrix or an (m, 2) / (m, 3) edge array."""
    if sp.issparse(graph):
        A = sp.csr_matrix(graph, dtype=float)
    else:
        arr = np.asarray(graph)
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and num_nodes is None and arr.shape[1] not in (2, 3):
            A = sp.csr_matrix(arr.astype(float))
        elif arr.ndim == 2 and arr.shape[1] in (2, 3):
            if arr.size and (not np.all(np.isfinite(arr[:, :2].astype(float))) or (arr[:, :2] < 0).any() or
                             not np.array_equal(arr[:, :2], np.round(arr[:, :2]))):
                raise ValueError("pagerank: edge endpoints must be non-negative integer vertex ids")
            src, dst = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
            w = arr[:, 2].astype(float) if arr.shape[1] == 3 else np.ones(len(arr))
            n = int(max(src.max(initial=-1), dst.max(initial=-1)) + 1) if num_nodes is None else num_nodes
            if src.size and max(src.max(), dst.max()) >= n:
                raise ValueError(f"pagerank: an edge names vertex {max(src.max(), dst.max())}, but num_nodes={n}")
            A = sp.csr_matrix((w, (src, dst)), shape=(n, n))
        else:
            raise ValueError(f"pagerank: graph must be a square adjacency matrix or an (m, 2) or (m, 3) array of "
                             f"edges (source, destination[, weight]); got shape {arr.shape}")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"pagerank: the adjacency matrix must be square, got shape {A.shape}")
    if num_nodes is not None and A.shape[0] != num_nodes:
        raise ValueError(f"pagerank: num_nodes={num_nodes} but the adjacency matrix is {A.shape[0]} x {A.shape[0]}")
    if A.nnz and (not np.all(np.isfinite(A.data)) or (A.data < 0).any()):
        raise ValueError("pagerank: edge weights must be finite and non-negative")
    A.sum_duplicates()
    return A


def _personalization(personalization: Any, n: int) -> np.ndarray:
    if personalization is None:
        return np.full(n, 1.0 / n)
    p = np.asarray(personalization, dtype=float).ravel()
    if p.shape != (n,) or not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() == 0:
        raise ValueError(f"pagerank: personalization must be {n} finite non-negative weights, not all zero")
    return p / p.sum()


def _blocks(A: sp.csr_matrix, p: np.ndarray, num_blocks: int) -> tuple[list[Any], list[Any], np.ndarray]:
    """Per block b: its data (the column block of M' cut by destination block, its dangling mask) and state."""
    n = A.shape[0]
    out_weight = np.asarray(A.sum(axis=1)).ravel()
    inv = np.zeros(n)
    inv[out_weight != 0] = 1.0 / out_weight[out_weight != 0]
    MT = sp.csc_matrix((sp.diags(inv) @ A).T)  # M'[c, b]: the share of b's rank that goes to c
    bounds = np.linspace(0, n, num_blocks + 1).astype(np.int64)
    data, state = [], []
    for b in range(num_blocks):
        lo, hi = bounds[b], bounds[b + 1]
        column = sp.csr_matrix(MT[:, lo:hi])
        targets = []
        for c in range(num_blocks):
            S = column[bounds[c]:bounds[c + 1]]
            if S.nnz:
                targets.append((c, sp.csr_matrix(S)))
        data.append((b, (targets, out_weight[lo:hi] == 0)))
        state.append((b, (np.full(hi - lo, 1.0 / n), p[lo:hi].copy())))  # networkx's start: x = 1/n
    return data, state, bounds


def pagerank(graph: Any, *, damping: float = 0.85, max_iter: int = 100, tol: float = 1.0e-6,
             personalization: Any = None, num_nodes: int | None = None, context: dz.Context | None = None,
             num_partitions: int | None = None, group_size: int | str = "auto",
             checkpoint_interval: int = 10) -> PageRankResult:
    """PageRank of a directed graph, computed on the workers with no driver inside a group of iterations.

    ``graph``: an n x n adjacency matrix (scipy sparse or dense; entry
    (i, j) is the weight of the link i -> j) or an (m, 2) / (m, 3) array of
    edges ``(source, destination[, weight])`` over vertex ids ``0..n-1``.
    The result equals ``networkx.pagerank`` (same damping, personalization,
    dangling vertices spread by personalization, convergence when the L1
    change is below ``n * tol``; a ``ConvergenceWarning`` after ``max_iter``
    iterations) to rounding. ``num_partitions`` is the number of vertex blocks
    (default: one per worker); the ranks are the same for any block count to
    rounding, and bit for bit for any group size and worker count.
    """
    if not (isinstance(damping, (int, float)) and 0 <= damping < 1):
        raise ValueError(f"pagerank: damping must be in [0, 1), got {damping!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"pagerank: max_iter must be a positive int, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"pagerank: tol must be a non-negative number, got {tol!r}")
    A = _adjacency(graph, num_nodes)
    n = A.shape[0]
    if n == 0:
        return PageRankResult(np.zeros(0), 0, True)
    if num_partitions is not None and (isinstance(num_partitions, bool) or not isinstance(num_partitions, int)
                                       or num_partitions < 1):
        raise ValueError(f"pagerank: num_partitions must be a positive int, got {num_partitions!r}")
    ctx = _context.resolve(context)
    blocks = min(n, num_partitions if num_partitions is not None else max(1, ctx.num_workers))
    data, state, bounds = _blocks(A, _personalization(personalization, n), blocks)
    res = ctx.iterate_by_key(
        ctx.parallelize(state, blocks), data=ctx.parallelize(data, blocks), send=K.send, combine=K.add,
        aggregate=(K.dangling_mass, K.add), update=K.Update(float(damping)), measure=K.change,
        until=K.Below(n * tol), iterations=max_iter, num_partitions=blocks, group_size=group_size,
        checkpoint_interval=checkpoint_interval, copy_state=False)  # Update makes new ranks: no copy of the old
    ranks = np.empty(n)
    for b, (x, _) in res.state.collect():
        ranks[bounds[b]:bounds[b + 1]] = x
    if not res.converged:
        warnings.warn(f"pagerank did not converge in {max_iter} iterations (L1 change {res.metrics[-1]:.3g}, "
                      f"tolerance n * tol = {n * tol:.3g}); raise max_iter", ConvergenceWarning, stacklevel=2)
    return PageRankResult(ranks, res.iterations, res.converged)
