"""Mini-batch and streaming k-means as ``ctx.iterate``'s functions (the workers' side; numpy and scipy only).

Both estimators keep, besides the centers, a weight per center (the rows it
has absorbed) and move each center to the weighted mean of what it had and
what it gets, with the old weight discounted by a decay factor ``a``::

    n_a    = a * n_k                          (a = 1: scikit-learn's MiniBatchKMeans)
    c_k   <- (c_k * n_a + sum of the rows assigned to k) / (n_a + m_k)      if m_k > 0
    n_k   <- n_a + m_k

``m_k`` the (weighted) count of the batch's rows nearest to ``c_k``. That is
scikit-learn's MiniBatchKMeans step (``_minibatch_update_dense``, the same
order of operations) with ``a = 1``, and Spark MLlib's StreamingKMeans
update with ``a`` its decay factor (per batch, or ``a ** m`` per point).

``local`` returns, for its partition, ``[sums (k*d) | counts (k) | inertia |
rows]`` at the current centers (ONE flat array: ``combine`` is ``a + b``),
over either the whole partition (a stream's batch, ``partial_fit``) or a
mini-batch drawn from a generator seeded by ``(seed, step, partition)``
(``MiniBatchKMeans.fit``: G steps per group with no driver between them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._lloyd import _assign, _labels_inertia, _row_norms_sq


@dataclass(frozen=True, slots=True)
class MiniBatchState:
    """What ``iterate`` carries between steps."""

    centers: np.ndarray         # (k, d)
    counts: np.ndarray          # (k,) the weight each center has absorbed (decayed)
    t: int                      # steps taken (the sampling key)
    center_shift: float         # sum ||new - old||^2 of the last step
    batch_inertia: float        # the last batch's inertia per row, at the centers before the step
    ewa_inertia: float          # scikit-learn's exponentially weighted average of batch_inertia
    ewa_min: float
    no_improvement: int
    done: bool


def initial_state(centers: np.ndarray, counts: np.ndarray, t: int = 0) -> MiniBatchState:
    return MiniBatchState(centers, counts, t, np.inf, np.nan, np.nan, np.inf, 0, False)


def batch_sums(X: Any, s: np.ndarray | None, centers: np.ndarray) -> np.ndarray:
    """``[sums (k*d) | counts (k) | inertia | rows]`` of rows ``X`` (weights ``s``) at ``centers``."""
    k, d = centers.shape
    n = X.shape[0]
    labels, best = _assign(X, centers)
    onehot = sp.csr_matrix((np.ones(n) if s is None else s, labels, np.arange(n + 1)), shape=(n, k))
    sums = onehot.T @ X
    out = np.empty(k * d + k + 2)
    out[:k * d] = (sums.toarray() if sp.issparse(sums) else sums).ravel()
    out[k * d:k * d + k] = np.bincount(labels, weights=s, minlength=k)
    dist = np.maximum(_row_norms_sq(X) + best, 0.0)
    out[-2] = dist.sum() if s is None else s @ dist
    out[-1] = n
    return out


class MiniBatchLocal:
    """``local``: the block's sums at the current centers, over a drawn mini-batch or (``seed`` None) all of it.

    The block is ``(X, s, partition index, m)``: rows, weights or None, and
    the rows this partition draws per step.
    """

    __slots__ = ("seed",)

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def __call__(self, partition: list[Any], state: MiniBatchState) -> np.ndarray:
        X, s, part, m = partition[0]
        if self.seed is None:
            return batch_sums(X, s, state.centers)
        k, d = state.centers.shape
        if m == 0:
            return np.zeros(k * d + k + 2)
        idx = np.random.default_rng((self.seed, state.t, part)).integers(0, X.shape[0], m)
        return batch_sums(X[idx], None if s is None else s[idx], state.centers)

    def __reduce__(self):
        return (MiniBatchLocal, (self.seed,))


def decayed_update(centers: np.ndarray, counts: np.ndarray, total: np.ndarray, a: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The rule of the module docstring: new centers and weights from the combined ``total``."""
    k, d = centers.shape
    sums = total[:k * d].reshape(k, d)
    m = total[k * d:k * d + k]
    n_a = counts * a
    new = centers.copy()
    hit = m > 0
    new[hit] = (centers[hit] * n_a[hit, None] + sums[hit]) / (n_a[hit] + m[hit])[:, None]
    return new, n_a + m


class MiniBatchUpdate:
    """``update``: the decayed rule, then scikit-learn's MiniBatchKMeans stopping bookkeeping.

    ``decay`` is ``a`` per batch; with ``per_point`` it is ``a ** rows``
    (Spark's ``timeUnit="points"``). ``ewa_alpha`` is scikit-learn's
    ``2 batch_size / (n + 1)`` (at most 1); ``tol`` is the center-shift
    threshold (0: unused), ``max_no_improvement`` the EWA-inertia patience
    (None: unused).
    """

    __slots__ = ("decay", "ewa_alpha", "max_no_improvement", "per_point", "tol")

    def __init__(self, decay: float = 1.0, per_point: bool = False, ewa_alpha: float = 1.0, tol: float = 0.0,
                 max_no_improvement: int | None = None) -> None:
        self.decay = decay
        self.per_point = per_point
        self.ewa_alpha = ewa_alpha
        self.tol = tol
        self.max_no_improvement = max_no_improvement

    def __call__(self, state: MiniBatchState, total: np.ndarray) -> MiniBatchState:
        rows = float(total[-1])
        a = self.decay ** rows if self.per_point else self.decay
        centers, counts = decayed_update(state.centers, state.counts, total, a)
        shift = float(((centers - state.centers) ** 2).sum())
        batch = float(total[-2]) / rows if rows else 0.0
        moved = replace(state, centers=centers, counts=counts, t=state.t + 1, center_shift=shift,
                        batch_inertia=batch)
        if state.t == 0:                   # scikit-learn ignores the first step: its inertia is the seeding's
            return moved
        ewa = batch if np.isnan(state.ewa_inertia) else \
            state.ewa_inertia * (1.0 - self.ewa_alpha) + batch * self.ewa_alpha
        if ewa < state.ewa_min:
            no_improvement, ewa_min = 0, ewa
        else:
            no_improvement, ewa_min = state.no_improvement + 1, state.ewa_min
        done = (self.tol > 0 and shift <= self.tol) or \
            (self.max_no_improvement is not None and no_improvement >= self.max_no_improvement)
        return replace(moved, ewa_inertia=ewa, ewa_min=ewa_min, no_improvement=no_improvement, done=bool(done))

    def __reduce__(self):
        return (MiniBatchUpdate, (self.decay, self.per_point, self.ewa_alpha, self.tol, self.max_no_improvement))


def stopped(state: MiniBatchState) -> bool:
    return state.done


def state_inertia(state: MiniBatchState) -> float:
    return state.ewa_inertia


def labels_and_inertia(partition: list[Any], state: MiniBatchState) -> tuple[np.ndarray, float]:
    """The final pass of ``fit``: every row's label at the final centers, and the block's inertia."""
    X, s, _, _ = partition[0]
    return _labels_inertia(X, state.centers, s)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b
