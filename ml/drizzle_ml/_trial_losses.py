"""L-BFGS's kernels: the loss and gradient at several points of one line, in one pass over a block.

``local(partition, state)`` for ``ctx.iterate`` with an :class:`~._lbfgs.LBFGSState`:
for every trial step ``a_k`` in ``state.steps`` the block's summed loss and
gradient at ``theta_k = state.best + a_k * state.direction``, packed
``[grad_1 (p) | loss_1 | ... | grad_T (p) | loss_T]`` so ``combine`` stays
one vector add (:func:`._gd.add`) and a partial is one buffer on the wire.

Why this costs about one pass and not T: the margins are linear in the step,
``X theta_k + b_k = (X w + b) + a_k (X dw + db)``, so ONE product ``X @ [w dw]``
(two columns; softmax: 2K) gives the margins at every trial, and ONE product
``X' R`` with the T residual columns side by side gives every gradient. The
block is read twice, as for a single gradient; what grows with T is the
elementwise work (one ``exp`` and one ``log1p`` per row and trial, binary; K
``exp`` per row and trial, softmax) and the T-column product's flops. CSR
blocks use CSR products (``X.T`` is a CSC view of the same arrays): nothing is
densified or copied.

Same losses as :mod:`._losses` (whose kernels evaluate one point): binary
logistic on ``[w (d), b]``, multinomial on ``[W (d*K, row-major), b (K)]``,
weighted by ``s`` when the block has sample weights. Kept apart from the
estimators so a worker unpickling a kernel imports numpy only, not
scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._losses import EXP_FLOOR, softplus_sigmoid


def _times(R: np.ndarray, X: Any) -> np.ndarray:
    """``R @ X`` for a (rows, n) array ``R``: one BLAS product for dense ``X``; for CSR, ``X.T`` (a CSC view of
    the same arrays) times ``R.T``, so the block is neither densified nor copied."""
    if sp.issparse(X):
        return np.asarray(X.T @ R.T).T
    return R @ X


class BinaryTrials:
    """Summed logistic loss and gradient of one block ``(X, y, s)`` at every trial point: (T * (p + 1),).

    Per row and trial: ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` and
    ``sigmoid(z) = 1 / (1 + exp(-z))``, each argument kept above ``EXP_FLOOR``
    (no overflow, no subnormal). The loss's ``- y z`` part is linear in the
    step, so it is two dot products per block, not a (T, n) array:
    ``sum s y z_k = (s y) . z0 + a_k (s y) . zd``. Measured on 50,000 x 20
    (dense, one BLAS thread, the loaded 2-core dev machine): T = 1, 2, 3, 4
    trials cost 0.56, 1.03, 1.33, 1.97 times a one-point pass with scipy's
    ``expit`` and ``logaddexp`` (what :data:`._losses.binary_local` used until it
    took these forms too, :func:`._losses.softplus_sigmoid`).
    """

    __slots__ = ()

    def __call__(self, partition: list[Any], state: Any) -> np.ndarray:
        X, y, s = partition[0]
        x, direction, steps = state.best, state.direction, state.steps
        d = X.shape[1]
        p, T = x.shape[0], steps.shape[0]
        z0 = np.asarray(X @ x[:d])
        zd = np.asarray(X @ direction[:d])
        if p > d:
            z0 += x[d]
            zd += direction[d]
        Z = np.multiply.outer(steps, zd)                 # (T, n): the margins at every trial
        Z += z0
        A, R = softplus_sigmoid(Z)
        R -= y                                           # sigmoid(z) - y, in place
        sy = y if s is None else s * y
        if s is not None:
            R *= s
        out = np.empty((T, p + 1))
        out[:, :d] = _times(R, X)
        if p > d:
            out[:, d] = R.sum(axis=1)
        out[:, p] = (A.sum(axis=1) if s is None else A @ s) - (sy @ z0 + steps * (sy @ zd))
        return out.ravel()

    def __reduce__(self):
        return (BinaryTrials, ())


class SoftmaxTrials:
    """Summed multinomial loss and gradient of one block at every trial point, for ``n_classes`` classes.

    The margins are laid out (T, K, n), classes outermost but one, so the
    per-row max and sum over classes are K - 1 elementwise operations on
    contiguous (T, n) slices rather than reductions along a short last axis,
    and the gradient is one product ``(T K, n) @ X``. The loss's ``- z_y``
    part is linear in the step (two sums per block), as in :class:`BinaryTrials`.
    """

    __slots__ = ("n_classes",)

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes

    def __call__(self, partition: list[Any], state: Any) -> np.ndarray:
        X, y, s = partition[0]
        x, direction, steps = state.best, state.direction, state.steps
        n, d = X.shape
        K = self.n_classes
        dK, p, T = d * K, x.shape[0], steps.shape[0]
        M = np.asarray(X @ np.hstack((x[:dK].reshape(d, K), direction[:dK].reshape(d, K)))).T   # (2K, n)
        Z0, ZD = M[:K].copy(), M[K:].copy()
        if p > dK:
            Z0 += x[dK:, None]
            ZD += direction[dK:, None]
        rows = np.arange(n)
        zy0, zyd = Z0[y, rows], ZD[y, rows]              # the true class's margin at 0, and its slope
        Z = np.multiply.outer(steps, ZD)                 # (T, K, n)
        Z += Z0
        top = Z.max(axis=1)                              # (T, n)
        E = Z - top[:, None, :]
        np.maximum(E, EXP_FLOOR, out=E)
        np.exp(E, out=E)
        tot = E.sum(axis=1)
        lse = np.log(tot)
        lse += top                                       # log sum_k exp(z_k): the loss is lse - z_y
        E /= tot[:, None, :]                             # probabilities
        E[:, y, rows] -= 1.0                             # softmax - onehot(y)
        if s is not None:
            E *= s
        out = np.empty((T, p + 1))
        G = _times(E.reshape(T * K, n), X)               # (T K, d)
        out[:, :dK] = G.reshape(T, K, d).transpose(0, 2, 1).reshape(T, dK)
        if p > dK:
            out[:, dK:p] = E.sum(axis=2)
        if s is None:
            out[:, p] = lse.sum(axis=1) - (zy0.sum() + steps * zyd.sum())
        else:
            out[:, p] = lse @ s - (s @ zy0 + steps * (s @ zyd))
        return out.ravel()

    def __reduce__(self):
        return (SoftmaxTrials, (self.n_classes,))
