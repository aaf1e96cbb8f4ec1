"""Blocked alternating least squares as ``ctx.iterate_by_key``'s functions: what runs on the workers for ALS.

The layout is Spark's ALS (``InBlock``/``OutBlock``), not one key per user:
per-key Python would cost more than the arithmetic. Users are cut into B
contiguous blocks and items into B contiguous blocks (balanced by ratings);
the state has one key per block, its value the block's factor matrix:

    user block b -> key b         item block b -> key B + b

Integer keys hash to themselves, so with B partitions user block b and item
block b both live in partition b (``b % B``): every partition solves one
block per half-step, and the two sides of one partition sit on one worker.

One ALS iteration is two ``iterate_by_key`` iterations; odd ones solve the
items from the users, even ones the users from the items (as Spark: the
item factors of the first solve come from the random user factors, and the
last solve of a fit is the users', so ``transform`` of the training matrix
is ``user_factors_``). ``data[0]`` (odd) and ``data[1]`` (even) hold, per key:

* for a *sending* block, an :class:`OutBlock`: which of its factor rows each
  destination block needs (the rows its ratings touch, ascending). ``send``
  yields ``(destination key, (this block, F[rows]))``: only those rows cross
  the network.
* for a *solving* block, its :class:`InBlock`: its ratings as CSR whose
  columns number the rows it receives, concatenated in source block order
  (which is the other side's global order). ``send`` yields it to its own key,
  so the ratings reach ``update`` without leaving the worker (a shuffle piece
  for the same worker is handed over in memory, not pickled), and the state
  carries only what changes: a checkpoint brings the factors to the driver,
  never the ratings.

``update`` solves the block's rows at once: the normal equations of every row
are built by ONE sparse-dense product per chunk of the packed k(k+1)/2 upper
triangle -- ``G = W @ Z`` with ``Z[j] = triu(y_j y_j')`` of the received rows
and ``W`` the ratings' weights -- so no (nnz, k, k) array is ever made, and
the CSR arrays are used as they are (no copy per iteration). Then one batched
``np.linalg.solve``. Sums run in each row's stored column order, which does not
depend on B: the factors are the same bits for any group size, worker count
and (explicit feedback) block count.

The normal equations of a row u with observed columns J (ALS-WR, Zhou et
al. 2008, the regularisation scaled by the row's count n_u, as Spark)::

    explicit:  (Y_J' Y_J + alpha n_u I) x = Y_J' r_J
    implicit:  (Y'Y + Y_J' diag(c1) Y_J + alpha n_u I) x = Y_J' diag(1 + c1) p_J

with implicit feedback as Hu, Koren & Volinsky (2008) and Spark: preference
p = (r > 0), confidence 1 + c1, c1 = confidence * |r|, n_u the positive
entries. ``Y'Y`` over all the other side's factors is iterate_by_key's
aggregate: each block's value carries its own Gram matrix.

A row with no observation (implicit: no positive one) gets the zero factor:
it predicts 0, and it does not move the other side's solve.

The objective is known after the solve without another pass over the
ratings: with ``A x = b``, a row's part ``sum c (p - x.y)^2 + alpha n |x|^2``
(explicit: ``sum (r - x.y)^2 + ...``) equals ``const_u - x.b``, where
``const_u`` is ``sum r^2`` (explicit) or ``sum (1 + c1) p`` (implicit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

USERS, ITEMS = 0, 1

#: the packed triangle is multiplied in column chunks of at most this many doubles (rows x columns): a bound on
#: the memory of Z, which does not change a bit of G (each column of W @ Z is summed on its own)
_Z_DOUBLES = 1 << 22


# ------------------------------------------------------------------ the blocks
@dataclass(frozen=True, slots=True)
class InBlock:
    """A solving block's ratings: CSR (rows of the block x rows it receives), and what the solve needs."""

    side: int                  # USERS or ITEMS: the side this block solves
    sources: np.ndarray        # (s,) int: the other side's blocks that send rows here, ascending
    counts: np.ndarray         # (s,) int: how many rows each sends
    indptr: np.ndarray         # (n + 1,) CSR of the block's ratings
    indices: np.ndarray        # (nnz,) positions in the received rows, concatenated in source order
    w: np.ndarray              # (nnz,) Gram weights: explicit 1, implicit c1 = confidence * |r|
    v: np.ndarray              # (nnz,) right-hand side weights: explicit r, implicit (1 + c1) * (r > 0)
    n_reg: np.ndarray          # (n,) float: the count the regularisation is scaled by (explicit nnz, implicit r > 0)
    const: float               # sum over the block of v * r (explicit) or v (implicit): the objective's constant

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1


@dataclass(frozen=True, slots=True)
class OutBlock:
    """A sending block's routing: for each destination key, the (ascending) local rows it needs."""

    block: int                 # this block's number on its side
    dests: tuple[int, ...]     # destination keys
    rows: tuple[np.ndarray, ...]  # per destination: local row indices of this block's factor matrix


@dataclass(frozen=True, slots=True)
class Factors:
    """A block's state value: its factor matrix, what its last solve measured, and its Gram matrix."""

    side: int
    X: np.ndarray              # (n_rows, k)
    metric: np.ndarray         # [squared error part, regularisation part] of the objective, from the last solve
    gram: np.ndarray | None    # implicit only: (2, k, k), X'X in slot ``side``, zeros in the other (the aggregate)


@dataclass(frozen=True)
class BlockedProblem:
    """A fit as ``iterate_by_key``'s arguments: B blocks per side, user block b keyed b, item block b keyed B + b."""

    blocks: int
    state: list[tuple[int, Factors]]                 # the initial state: every block's factors
    data: tuple[list[tuple[int, Any]], list[tuple[int, Any]]]   # odd iterations' (items solve), even ones'
    send: Any
    update: Any
    aggregate: tuple[Any, Any] | None                # implicit: (block_gram, np.add), Y'Y for every update
    iterations: int                                  # two per ALS iteration


def bounds(weights: np.ndarray, n_blocks: int) -> np.ndarray:
    """``n_blocks + 1`` boundaries cutting rows 0..len(weights) into contiguous blocks of about equal weight."""
    n = len(weights)
    cum = np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])
    targets = cum[-1] * np.arange(1, n_blocks) / n_blocks
    inner = np.searchsorted(cum, targets, side="left")
    out = np.concatenate([[0], np.clip(inner, 0, n), [n]]).astype(np.int64)
    return np.maximum.accumulate(out)


def weights_of(r: np.ndarray, implicit: bool, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stored rating: (Gram weight w, right-hand side weight v, counts toward the regularisation)."""
    if not implicit:
        return np.ones_like(r), r, np.ones(r.shape, dtype=bool)
    c1 = confidence * np.abs(r)
    pos = r > 0
    return c1, np.where(pos, 1.0 + c1, 0.0), pos


def layout(R: sp.csr_matrix, side: int, row_bounds: np.ndarray, col_bounds: np.ndarray, implicit: bool,
           confidence: float, dest_key: Any) -> tuple[list[InBlock], list[OutBlock]]:
    """The InBlocks of the side whose rows are ``R``'s, and the OutBlocks of the other side that feed them.

    ``R`` is canonical CSR (sorted, unique columns). ``dest_key(b)`` is the
    state key of this side's block b. The other side's block s sends to block
    b the rows ``uniq[src == s]`` of the columns b's ratings touch.
    """
    n_src = len(col_bounds) - 1
    routes: list[tuple[list[int], list[np.ndarray]]] = [([], []) for _ in range(n_src)]
    inblocks = []
    for b in range(len(row_bounds) - 1):
        r0, r1 = int(row_bounds[b]), int(row_bounds[b + 1])
        lo, hi = int(R.indptr[r0]), int(R.indptr[r1])
        cols = R.indices[lo:hi]
        r = R.data[lo:hi]
        uniq = np.unique(cols)
        # one index dtype for indices and indptr, the smallest that holds them: scipy then wraps them as they are
        idx = np.int32 if max(hi - lo, len(uniq)) < 2**31 - 1 else np.int64
        local = np.searchsorted(uniq, cols).astype(idx)
        src = np.searchsorted(col_bounds, uniq, side="right") - 1
        sources, counts = np.unique(src, return_counts=True)
        for s, c0, c1 in zip(sources, np.cumsum(counts) - counts, np.cumsum(counts)):
            routes[s][0].append(dest_key(b))
            routes[s][1].append((uniq[c0:c1] - col_bounds[s]).astype(np.int64))
        w, v, counted = weights_of(r, implicit, confidence)
        indptr = (R.indptr[r0:r1 + 1] - lo).astype(idx)
        cs = np.concatenate([[0], np.cumsum(counted, dtype=np.int64)])
        n_reg = (cs[indptr[1:]] - cs[indptr[:-1]]).astype(np.float64)
        const = float(v.sum()) if implicit else float(v @ r)
        inblocks.append(InBlock(side, sources.astype(np.int64), counts.astype(np.int64), indptr, local,
                                np.ascontiguousarray(w), np.ascontiguousarray(v), n_reg, const))
    outblocks = [OutBlock(s, tuple(d), tuple(rows)) for s, (d, rows) in enumerate(routes)]
    return inblocks, outblocks


# --------------------------------------------------------------- the kernel
def solve(indptr: np.ndarray, indices: np.ndarray, w: np.ndarray, v: np.ndarray, n_reg: np.ndarray,
          Y: np.ndarray, alpha: float, YtY: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every row's normal equations solved at once: (factors (n, k), per-row ``x.b``).

    ``Y`` (m, k) are the rows the CSR's columns index. Rows with ``n_reg == 0``
    get the zero factor. Singular systems (``alpha = 0`` and too few
    ratings) fall back to the pseudo-inverse: the least-norm solution.
    """
    n, k = len(indptr) - 1, Y.shape[1]
    if n == 0:
        return np.zeros((0, k)), np.zeros(0)
    shape = (n, Y.shape[0])
    W = sp.csr_matrix((w, indices, indptr), shape=shape, copy=False)
    V = sp.csr_matrix((v, indices, indptr), shape=shape, copy=False)
    iu, ju = np.triu_indices(k)
    t = len(iu)
    G = np.empty((n, t))
    step = max(1, min(t, _Z_DOUBLES // max(1, Y.shape[0])))
    for c0 in range(0, t, step):
        c = slice(c0, c0 + step)
        G[:, c] = W @ (Y[:, iu[c]] * Y[:, ju[c]])
    A = G[:, _symmetric(k)].reshape(n, k, k)      # one gather unpacks the triangle (not two scatters)
    if YtY is not None:
        A += YtY
    A.reshape(n, k * k)[:, ::k + 1] += alpha * n_reg[:, None]
    b = np.asarray(V @ Y)
    empty = n_reg == 0
    if empty.any():
        A[empty] = np.eye(k)
        b[empty] = 0.0
    try:
        X = np.linalg.solve(A, b[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        X = (np.linalg.pinv(A, hermitian=True) @ b[:, :, None])[:, :, 0]
    return X, np.einsum("ij,ij->i", X, b)


def _symmetric(k: int) -> np.ndarray:
    """For each entry (i, j) of a k x k matrix, row-major, its position in the packed upper triangle."""
    pos = np.zeros((k, k), dtype=np.int64)
    pos[np.triu_indices(k)] = np.arange(k * (k + 1) // 2)
    return np.maximum(pos, pos.T).ravel()


def solve_block(inb: InBlock, Y: np.ndarray, alpha: float, YtY: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A block's factors and its ``[squared error, regularisation]`` part of the objective."""
    X, xb = solve(inb.indptr, inb.indices, inb.w, inb.v, inb.n_reg, Y, alpha, YtY)
    reg = alpha * float(np.einsum("i,ij,ij->", inb.n_reg, X, X))
    return X, np.array([inb.const - float(xb.sum()) - reg, reg])


def gram(side: int, X: np.ndarray) -> np.ndarray:
    """``X'X`` in slot ``side`` of a (2, k, k) array: summed over the blocks, both sides' Y'Y at once."""
    out = np.zeros((2, X.shape[1], X.shape[1]))
    out[side] = X.T @ X
    return out


# ------------------------------------------------- iterate_by_key's functions
class Send:
    """A sending block's rows to each block that needs them; a solving block's ratings to itself."""

    __slots__ = ()

    def __call__(self, key: int, value: Factors, values: list[Any]) -> Any:
        blk = values[0]
        if type(blk) is InBlock:
            return ((key, blk),)
        X = value.X
        return [(d, (blk.block, X[rows])) for d, rows in zip(blk.dests, blk.rows)]


class Update:
    """A solving block's new factors from the rows it received (sorted by source block) and its ratings."""

    __slots__ = ("alpha", "implicit", "k")

    def __init__(self, alpha: float, implicit: bool, k: int) -> None:
        self.alpha, self.implicit, self.k = alpha, implicit, k

    def __reduce__(self) -> tuple[Any, ...]:
        return (Update, (self.alpha, self.implicit, self.k))

    def __call__(self, key: int, old: Factors, msgs: list[Any], total: np.ndarray | None = None) -> Factors:
        inb: InBlock | None = None
        parts = []
        for m in msgs:
            if type(m) is InBlock:
                inb = m
            else:
                parts.append(m)
        if inb is None:
            raise RuntimeError(f"ALS block {key} received factors but not its ratings")
        parts.sort(key=_source)
        got = np.array([p[0] for p in parts], dtype=np.int64)
        if not np.array_equal(got, inb.sources) or any(len(p[1]) != c for p, c in zip(parts, inb.counts)):
            raise RuntimeError(f"ALS block {key} received rows from blocks {got.tolist()}, expected "
                               f"{inb.sources.tolist()}")
        Y = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, self.k))
        YtY = total[1 - inb.side] if self.implicit and total is not None else None
        X, metric = solve_block(inb, Y, self.alpha, YtY)
        return Factors(inb.side, X, metric, gram(inb.side, X) if self.implicit else None)


def _source(part: tuple[int, np.ndarray]) -> int:
    return part[0]


def block_gram(key: int, value: Factors, values: Any = None) -> np.ndarray:
    """The aggregate's ``seq`` (called as ``send`` is: with the block's data): its Gram matrix in its side's slot."""
    return value.gram  # type: ignore[return-value]


def block_metric(key: int, old: Factors, new: Factors) -> np.ndarray:
    """The ``measure``: the solve's [squared error, regularisation] (summed over the solving blocks)."""
    return new.metric
