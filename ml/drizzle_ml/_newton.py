"""Newton's method with a backtracking line search, as ``iterate``'s ``update``.

Same objective and parameter layout as :mod:`._gd` (a weighted mean loss plus
``l2/2 ||coef||^2``, ``theta = [coef.ravel(), intercepts]``). Each iteration
the workers evaluate at ``state.theta`` their blocks' summed gradient, loss
AND Hessian, packed as ``[grad (p) | loss (1) | hessian (p*p)]`` (one vector
add in ``combine``); ``update`` on the reducer solves ``H d = -g``. One pass
over the data per iteration, as for gradient descent, but a handful of
iterations instead of hundreds: the p x p Hessian is the price, so this is
the solver for p up to a few hundred (``solver="auto"`` picks it there).

Line search without an extra round trip, as in :mod:`._gd`: the step from
``best`` to ``theta`` is checked (Armijo, ``f(theta) <= f(best) + c step
g.d``) with the evaluation the next iteration makes anyway; a rejected step
is halved from ``best`` along the same direction. Near the optimum the unit
step is always accepted and convergence is quadratic.

The solve uses the eigen-decomposition of ``H`` and drops directions of
(relative) curvature below ``1e-12``: the multinomial loss is flat along
"add a constant to every class" (and, without a penalty, so are its
coefficients), and least squares on collinear columns is flat along their
null space. Gradients are orthogonal to those directions, so the step is
the minimum-norm one (scikit-learn's lstsq answer for least squares) and
fits from zero stay in the same subspace as scikit-learn's solvers.

Stopping: ``max |grad f(best)| <= tol`` (``_gd.GradientBelow``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_solve

from ._gd import ARMIJO_SLACK, objective

ARMIJO_C = 1e-4
EIGEN_CUTOFF = 1e-12           # relative curvature below which a direction is treated as flat


@dataclass(frozen=True, slots=True)
class NewtonState:
    """What ``iterate`` carries between iterations (broadcast to every worker)."""

    theta: np.ndarray       # (p,) the point the workers evaluate next
    best: np.ndarray        # (p,) the last accepted point: the fitted parameters
    loss: float             # f(best); inf before the first evaluation
    grad: np.ndarray        # (p,) grad f(best)
    direction: np.ndarray   # (p,) the Newton direction at best
    step: float             # theta = best + step * direction
    grad_max: float         # max |grad f(best)|: the stopping measure


def initial_state(theta0: np.ndarray) -> NewtonState:
    zeros = np.zeros_like(theta0)
    return NewtonState(theta0, theta0, np.inf, zeros, zeros, 1.0, np.inf)


def newton_direction(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``-H^+ g`` with ``H``'s flat directions dropped (see the module docstring).

    A Cholesky solve first (p^3/3 flops): when every pivot is well above the
    cutoff the matrix has no flat direction and that is the answer. Otherwise
    (softmax, collinear columns) the eigen-decomposition, ~10x the flops
    (201 x 201 with one BLAS thread: 7.6 ms against 53 ms, on the loaded 2-core dev machine).
    """
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        L = None
    if L is not None:
        pivots = np.diagonal(L) ** 2
        if pivots.min() > 1e3 * EIGEN_CUTOFF * float(np.abs(np.diagonal(H)).max()):
            return -cho_solve((L, True), g)
    w, V = np.linalg.eigh(H)
    top = float(np.abs(w).max(initial=0.0))
    keep = w > EIGEN_CUTOFF * top if top > 0 else np.zeros(w.shape, dtype=bool)
    Vk = V[:, keep]
    return -(Vk @ ((Vk.T @ g) / w[keep]))


class NewtonUpdate:
    """``update``: objective, gradient and Hessian from the combined partial, then a checked Newton step."""

    __slots__ = ("l2", "n", "n_coef")

    def __init__(self, n: float, n_coef: int, l2: float) -> None:
        self.n = n            # the total sample weight: partials are (weighted) sums
        self.n_coef = n_coef  # theta[:n_coef] is penalised; the rest are intercepts
        self.l2 = l2

    def __call__(self, state: NewtonState, total: np.ndarray) -> NewtonState:
        p = state.theta.shape[0]
        grad, loss = objective(total, state.theta, self.n, self.n_coef, self.l2)
        slope = float(state.grad @ state.direction)          # <= 0: the direction descends
        bound = state.loss + ARMIJO_C * state.step * slope + ARMIJO_SLACK * abs(state.loss)
        if loss <= bound or (np.isinf(state.loss) and np.isfinite(loss)):
            H = total[p + 1:].reshape(p, p) / self.n           # accepted: a new direction from here
            if self.l2:
                idx = np.arange(self.n_coef)
                H[idx, idx] += self.l2
            best, step, direction = state.theta, 1.0, newton_direction(H, grad)
        else:                                                  # backtrack along the same direction
            best, loss, grad = state.best, state.loss, state.grad
            direction, step = state.direction, state.step * 0.5
        return NewtonState(best + step * direction, best, loss, grad, direction, step, float(np.abs(grad).max()))

    def __reduce__(self):
        return (NewtonUpdate, (self.n, self.n_coef, self.l2))


# ------------------------------------------------------ kernels' Hessian pieces
def scale_rows(X: sp.csr_matrix, c: np.ndarray) -> sp.csr_matrix:
    """``diag(c) X`` for CSR ``X``: new values, the same index arrays (not copied)."""
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    return sp.csr_matrix((X.data * c[rows], X.indices, X.indptr), shape=X.shape, copy=False)


def weighted_gram(X: np.ndarray | sp.csr_matrix, c: np.ndarray | None) -> np.ndarray:
    """``X' diag(c) X`` (``X' X`` when ``c`` is None) as a dense (d, d) array."""
    if sp.issparse(X):
        G = X.T @ (X if c is None else scale_rows(X, c))
        return G.toarray()
    if c is None:
        return X.T @ X                     # numpy runs A.T @ A as one syrk
    return (X.T * c) @ X
