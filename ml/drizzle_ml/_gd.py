"""Full-batch gradient descent with backtracking, as ``iterate``'s ``update``.

Both linear models minimise a mean loss plus an L2 penalty on the coefficients
(not the intercepts)::

    f(theta) = (1/n) sum_i loss_i(theta) + (l2 / 2) ||coef||^2

over a flat parameter vector ``theta = [coef.ravel(), intercepts]``. Each
iteration the workers evaluate, at ``state.theta``, their blocks' summed
gradient and summed loss, packed as ``[grad (p) | loss (1)]`` (so ``combine``
is one vector add); ``update`` on the reducer turns the total into ``f`` and
its gradient and takes one step.

Step size. A fixed step ``1/L`` needs the curvature ``L``, which is only
estimated (:func:`initial_step`). So the step is checked with Armijo's rule,
with the evaluation the next iteration makes anyway: a step from ``best`` to
``theta`` is accepted when ``f(theta) <= f(best) - step/2 ||grad||^2``; if it
is not, the next iteration restarts from ``best`` with half the step. No
extra round trip, one gradient evaluation per iteration, and a too-large
learning rate costs a few halvings instead of divergence. A relative slack of
``1e-12 |f|`` keeps rounding noise in ``f`` (sums over n rows, in an order
that depends on the workers) from rejecting good steps near the optimum,
where the true decrease is below the noise.

Standardization. Plain gradient descent is as slow as the data is badly
scaled: features with means far from 0 or very different spreads make the
condition number, and so the iteration count, explode (a blob data set took
over 1000 iterations). So, as Spark MLlib does, the descent runs on
standardized features ``(x - mean) / std`` -- implicitly: it is the change of
variables ``theta = T theta_std``, and a gradient step in ``theta_std`` is the
*preconditioned* step ``theta -= step * T T' grad`` in the original
coordinates (:class:`Preconditioner`, O(p) per iteration). The data is never
copied or centered (a CSR matrix stays sparse), and the minimiser is the same
(the penalty stays on the original coefficients, as in scikit-learn).
Without an intercept there is no centering, only scaling.

Stopping: ``max |grad f(best)| <= tol`` (the gradient in the original
coordinates, as scikit-learn's ``tol``), checked by ``until`` on the reducer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

ARMIJO_SLACK = 1e-12      # relative rounding noise in f (sums over n rows, combined in any order)
POWER_ROWS = 20_000       # rows sampled (strided) to estimate the curvature
POWER_ITERATIONS = 30


class Preconditioner:
    """``P = T T'`` for the change of variables to standardized features (see the module docstring).

    ``theta = [W (d x K, row-major), b (K)]``; ``T`` maps standardized
    parameters to original ones: ``W = S W_std``, ``b = b_std - mean' S W_std``
    with ``S = diag(1 / std)``. Applying ``P`` costs O(d K).
    """

    __slots__ = ("d", "inv_var", "mean", "n_outputs")

    def __init__(self, mean: np.ndarray | None, std: np.ndarray, n_outputs: int) -> None:
        self.mean = mean                  # (d,) or None without an intercept (then no centering)
        self.inv_var = 1.0 / std ** 2     # (d,)
        self.d = std.shape[0]
        self.n_outputs = n_outputs        # K: columns of W

    @classmethod
    def for_data(cls, X: np.ndarray | sp.csr_matrix, n_outputs: int, intercept: bool,
                 sample_weight: np.ndarray | None = None) -> Preconditioner:
        """Column (weighted) means and standard deviations of X (a constant column gets std 1)."""
        w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
        total = float(w.sum())
        mean = np.asarray(X.T @ w).ravel() / total
        if sp.issparse(X):
            var = np.asarray(X.multiply(X).T @ w).ravel() / total - mean ** 2
        else:
            centered = X - mean                  # two passes: E[x^2] - mean^2 cancels for large means
            var = np.einsum("ij,ij,i->j", centered, centered, w) / total
        std = np.sqrt(np.maximum(var, 0.0))
        std[std <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        return cls(mean if intercept else None, std, n_outputs)

    def apply(self, g: np.ndarray) -> np.ndarray:
        """``P g``: the descent direction for gradient ``g``."""
        d, K = self.d, self.n_outputs
        out = np.empty_like(g)
        gw = g[:d * K].reshape(d, K)
        if self.mean is None:
            out[:d * K] = (self.inv_var[:, None] * gw).ravel()
            out[d * K:] = g[d * K:]
            return out
        gb = g[d * K:]
        dw = self.inv_var[:, None] * (gw - self.mean[:, None] * gb)
        out[:d * K] = dw.ravel()
        out[d * K:] = gb - self.mean @ dw
        return out

    def __reduce__(self):
        return (_rebuild_preconditioner, (self.mean, self.inv_var, self.n_outputs))


def _rebuild_preconditioner(mean: np.ndarray | None, inv_var: np.ndarray, n_outputs: int) -> Preconditioner:
    p = Preconditioner.__new__(Preconditioner)
    p.mean, p.inv_var, p.d, p.n_outputs = mean, inv_var, inv_var.shape[0], n_outputs
    return p


@dataclass(frozen=True, slots=True)
class GDState:
    """What ``iterate`` carries between iterations (broadcast to every worker)."""

    theta: np.ndarray       # (p,) the point the workers evaluate next
    best: np.ndarray        # (p,) the last accepted point: the fitted parameters
    loss: float             # f(best); inf before the first evaluation
    grad: np.ndarray        # (p,) grad f(best)
    step: float             # current step size
    grad_max: float         # max |grad f(best)|: the stopping measure


def initial_state(theta0: np.ndarray, step: float) -> GDState:
    zeros = np.zeros_like(theta0)
    return GDState(theta0, theta0, np.inf, zeros, step, np.inf)


def objective(total: np.ndarray, theta: np.ndarray, n: float, n_coef: int,
              l2: float) -> tuple[np.ndarray, float]:
    """The mean gradient and loss at ``theta`` from a combined partial ``[grad (p) | loss | ...]`` (sums over
    rows of total weight ``n``), with the L2 penalty on ``theta[:n_coef]`` (the rest are intercepts).
    Shared by the gradient-descent and Newton updates."""
    p = theta.shape[0]
    grad = total[:p] / n
    loss = float(total[p]) / n
    if l2:
        coef = theta[:n_coef]
        grad[:n_coef] += l2 * coef
        loss += 0.5 * l2 * float(coef @ coef)
    return grad, loss


class GDUpdate:
    """``update``: objective and gradient from the combined partial, then an Armijo-checked step."""

    __slots__ = ("l2", "n", "n_coef", "precond")

    def __init__(self, n: float, n_coef: int, l2: float, precond: Preconditioner) -> None:
        self.n = n            # the total sample weight: partials are (weighted) sums
        self.n_coef = n_coef  # theta[:n_coef] is penalised; the rest are intercepts
        self.l2 = l2
        self.precond = precond

    def __call__(self, state: GDState, total: np.ndarray) -> GDState:
        grad, loss = objective(total, state.theta, self.n, self.n_coef, self.l2)
        decrease = 0.5 * state.step * float(state.grad @ self.precond.apply(state.grad))
        bound = state.loss - decrease + ARMIJO_SLACK * abs(state.loss)
        if loss <= bound or (np.isinf(state.loss) and np.isfinite(loss)):
            best, step = state.theta, state.step                       # accepted
        else:
            best, loss, grad, step = state.best, state.loss, state.grad, state.step * 0.5   # backtrack
        theta = best - step * self.precond.apply(grad)
        return GDState(theta, best, loss, grad, step, float(np.abs(grad).max()))

    def __reduce__(self):
        return (GDUpdate, (self.n, self.n_coef, self.l2, self.precond))


class GradientBelow:
    """``until``: the gradient at the accepted point is at most ``tol`` in every coordinate."""

    __slots__ = ("tol",)

    def __init__(self, tol: float) -> None:
        self.tol = tol

    def __call__(self, state: GDState) -> bool:
        return state.grad_max <= self.tol

    def __reduce__(self):
        return (GradientBelow, (self.tol,))


def state_loss(state: GDState) -> float:
    return state.loss


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``combine`` for flat partials: elementwise sum."""
    return a + b


def initial_step(X: np.ndarray | sp.csr_matrix, precond: Preconditioner, *, curvature: float, l2: float) -> float:
    """``1 / L`` in standardized coordinates, estimated on the driver.

    ``L = curvature * lambda_max(Z' Z / n) + l2 * max(1 / std^2)`` with
    ``Z = [X 1] T`` the standardized design. ``curvature`` bounds the loss's
    second derivative (1 for squared error, 1/4 logistic, 1/2 softmax).
    ``lambda_max`` comes from a power iteration on at most ``POWER_ROWS``
    evenly strided rows: deterministic (no seed) and milliseconds even for
    millions of rows; an underestimate only costs an Armijo halving or two.
    """
    stride = max(1, X.shape[0] // POWER_ROWS)
    S = X[::stride]
    m, d = S.shape
    scale = np.sqrt(precond.inv_var)
    mean = precond.mean
    v = np.ones(d + 1)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(POWER_ITERATIONS):
        w = scale * v[:d]                                  # T v: coefficients ...
        b = v[d] - (mean @ w if mean is not None else 0.0)   # ... and intercept (0 without one)
        u = np.asarray(S @ w) + (b if mean is not None else 0.0)
        xu, su = np.asarray(S.T @ u), u.sum()
        nv = np.empty_like(v)
        nv[:d] = scale * (xu - (mean * su if mean is not None else 0.0))   # T' [X'u; 1'u]
        nv[d] = su if mean is not None else 0.0
        nv /= m
        lam = float(np.linalg.norm(nv))
        if lam == 0.0:
            break
        v = nv / lam
    L = curvature * lam + l2 * float(precond.inv_var.max())
    return 1.0 / L if L > 0 else 1.0
