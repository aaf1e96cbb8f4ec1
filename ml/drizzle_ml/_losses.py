"""The linear models' per-block kernels: what runs on the workers (numpy and scipy only, no scikit-learn).

Each is ``local(partition, state)`` for ``ctx.iterate``: the block's summed
gradient and loss at ``state.theta``, packed ``[grad (p) | loss (1)]``, and,
for Newton (``hessian=True``), the (p, p) Hessian after them, flattened, so
``combine`` is one vector add and a partial is one buffer on the wire.
Blocks are ``(X, y, s)``: rows (dense or CSR), targets, sample weights (or
None). Kept apart from the estimators so a worker unpickling a kernel
imports this module, not scikit-learn (~1 s per worker start).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _newton

#: exp's argument floor. ``exp(x)`` for x in (-745, -708) is subnormal, and subnormals are ~100x slower in
#: every later operation (the division, the sums, the BLAS product X' R): a softmax fit on digits spent
#: 10-40 ms instead of 2 ms per pass on them. exp(-690) = 2.6e-300 is a normal number (even divided by a
#: million classes) and the probability it stands for is as negligible as the true one: added to a row's
#: total of at least 1, it changes no bit of it.
EXP_FLOOR = -690.0


def softplus_sigmoid(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``softplus(Z) = log(1 + exp(Z))`` and ``sigmoid(Z)``, elementwise, as two new arrays.

    Why not ``np.logaddexp(0, Z)`` and scipy's ``expit``: those run a scalar
    libm call per element, 29 ns for logaddexp on 50,000 margins of a fitted
    model (it takes a fast path only at exactly 0, the zero initial point),
    against numpy's vectorized ``exp`` and ``log1p`` here: one logistic
    gradient pass on 50,000 x 20 went from 3.2 to about 1.6 ms. The forms are
    the stable ones, ``max(z, 0) + log1p(exp(-|z|))`` and ``1 / (1 + exp(-z))``,
    each argument kept above ``EXP_FLOOR`` (no overflow, no subnormal).
    """
    A = np.abs(Z)
    np.negative(A, out=A)
    np.maximum(A, EXP_FLOOR, out=A)
    np.exp(A, out=A)
    np.log1p(A, out=A)
    B = np.maximum(Z, 0.0)
    A += B
    R = np.negative(Z, out=B)
    np.minimum(R, -EXP_FLOOR, out=R)
    np.exp(R, out=R)
    R += 1.0
    np.reciprocal(R, out=R)
    return A, R


def _margin(X: Any, theta: np.ndarray, d: int, p: int) -> np.ndarray:
    """``X @ w (+ b)``: the linear part of both losses, as a new array (the callers update it in place)."""
    z = np.asarray(X @ theta[:d])
    if p > d:
        z += theta[d]
    return z

class BinaryLocal:
    """Summed logistic-loss gradient and loss of one block ``(X, y, s)`` (``[grad (p) | loss]``), and the Hessian.

    y in {0, 1} (float64), s the sample weights or None; theta is ``[w (d), b]``
    with an intercept, ``[w]`` without. With ``hessian`` the partial goes on
    with the (p, p) Hessian, flattened.
    """

    __slots__ = ("hessian",)

    def __init__(self, hessian: bool) -> None:
        self.hessian = hessian

    def __call__(self, partition: list[Any], state: Any) -> np.ndarray:
        X, y, s = partition[0]
        theta = state.theta
        d, p = X.shape[1], theta.shape[0]
        z = _margin(X, theta, d, p)
        losses, prob = softplus_sigmoid(z)
        r = prob - y
        losses -= y * z
        if s is not None:
            r *= s
        out = np.empty(p + 1 + (p * p if self.hessian else 0))
        out[:d] = X.T @ r
        if p > d:
            out[d] = r.sum()
        out[p] = losses.sum() if s is None else s @ losses
        if self.hessian:
            h = prob * (1.0 - prob)
            if s is not None:
                h *= s
            H = out[p + 1:].reshape(p, p)
            H[:d, :d] = _newton.weighted_gram(X, h)
            if p > d:
                xh = X.T @ h
                H[:d, d] = xh
                H[d, :d] = xh
                H[d, d] = h.sum()
        return out

    def __reduce__(self):
        return (BinaryLocal, (self.hessian,))


class SoftmaxLocal:
    """Summed multinomial-loss gradient and loss of one block, for ``n_classes`` classes (and the Hessian).

    The block is ``(X, y, s)`` with y the class index (intp); theta is
    ``[W (d*K, row-major d x K), b (K)]`` with intercepts, ``[W]`` without.
    """

    __slots__ = ("hessian", "n_classes")

    def __init__(self, n_classes: int, hessian: bool = False) -> None:
        self.n_classes = n_classes
        self.hessian = hessian

    def __call__(self, partition: list[Any], state: Any) -> np.ndarray:
        X, y, s = partition[0]
        theta = state.theta
        n, d = X.shape
        K = self.n_classes
        dK, p = d * K, theta.shape[0]
        Z = np.asarray(X @ theta[:dK].reshape(d, K))
        if p > dK:
            Z += theta[dK:]
        rows = np.arange(n)
        top = Z.max(axis=1, keepdims=True)
        E = Z - top
        np.maximum(E, EXP_FLOOR, out=E)       # no subnormal probabilities (see EXP_FLOOR)
        np.exp(E, out=E)
        tot = E.sum(axis=1)
        losses = np.log(tot) + top[:, 0] - Z[rows, y]
        E /= tot[:, None]                     # probabilities
        G = E.copy() if self.hessian else E
        G[rows, y] -= 1.0                     # softmax - onehot(y)
        if s is not None:
            G *= s[:, None]
        out = np.empty(p + 1 + (p * p if self.hessian else 0))
        out[:dK] = np.asarray(X.T @ G).ravel()
        if p > dK:
            out[dK:p] = G.sum(axis=0)
        out[p] = losses.sum() if s is None else s @ losses
        if self.hessian:
            self._hessian(X, E, s, out[p + 1:].reshape(p, p), d, K, p > dK)
        return out

    @staticmethod
    def _hessian(X: Any, prob: np.ndarray, s: np.ndarray | None, H: np.ndarray, d: int, K: int,
                 intercept: bool) -> None:
        """``H[(j,k),(i,l)] = sum_n s_n x_nj x_ni (delta_kl p_nk - p_nk p_nl)``, one product per class pair."""
        dK = d * K
        HW = H[:dK, :dK].reshape(d, K, d, K)
        HWb = H[:dK, dK:].reshape(d, K, K) if intercept else None
        for k in range(K):
            for m in range(k, K):
                c = -prob[:, k] * prob[:, m]
                if k == m:
                    c += prob[:, k]
                if s is not None:
                    c *= s
                A = _newton.weighted_gram(X, c)
                HW[:, k, :, m] = A
                HW[:, m, :, k] = A.T
                if HWb is not None:
                    xc = X.T @ c
                    HWb[:, m, k] = xc
                    HWb[:, k, m] = xc
                    H[dK + k, dK + m] = H[dK + m, dK + k] = c.sum()
        if intercept:
            H[dK:, :dK] = H[:dK, dK:].T

    def __reduce__(self):
        return (SoftmaxLocal, (self.n_classes, self.hessian))


# Module-level kernels of the gradient-descent solver (what benchmarks and older callers name).
binary_local = BinaryLocal(hessian=False)


class SquaredLocal:
    """Summed squared-error gradient and loss of one block ``(X, y, s)``: ``[grad (p) | loss]`` (+ the Hessian)."""

    __slots__ = ("hessian",)

    def __init__(self, hessian: bool) -> None:
        self.hessian = hessian

    def __call__(self, partition: list[Any], state: Any) -> np.ndarray:
        X, y, s = partition[0]
        theta = state.theta
        d, p = X.shape[1], theta.shape[0]
        r = _margin(X, theta, d, p)
        r -= y
        sr = r if s is None else r * s
        out = np.empty(p + 1 + (p * p if self.hessian else 0))
        out[:d] = X.T @ sr
        if p > d:
            out[d] = sr.sum()
        out[p] = 0.5 * float(r @ sr)
        if self.hessian:
            H = out[p + 1:].reshape(p, p)
            H[:d, :d] = _newton.weighted_gram(X, s)
            if p > d:
                xs = np.asarray(X.sum(axis=0)).ravel() if s is None else X.T @ s
                H[:d, d] = xs
                H[d, :d] = xs
                H[d, d] = X.shape[0] if s is None else s.sum()
        return out

    def __reduce__(self):
        return (SquaredLocal, (self.hessian,))


squared_local = SquaredLocal(hessian=False)
