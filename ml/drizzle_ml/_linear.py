"""LinearRegression (least squares, optional L2) by full-batch gradient descent on ``ctx.iterate``.

The objective is scikit-learn's ``Ridge`` (``alpha=0``: ordinary least
squares) divided by ``2 n`` (same minimiser)::

    (1/2n) ||X w + b - y||^2 + alpha/(2n) ||w||^2

Per partition: ``r = X w + b - y`` and ``X' r`` (two passes over the block;
CSR @ dense for sparse blocks), and ``r.r / 2`` for the loss. Gradient
descent rather than a solve, so the data never leaves the workers and the
same machinery serves any smooth loss; the step and the stopping rule are in
:mod:`._gd`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import drizzle_core as dz

from . import _gd
from . import _problem as P
from ._base import (
    BaseEstimator,
    check_context,
    check_float,
    check_group_size,
    check_int,
    check_num_partitions,
    check_X,
    check_y,
    fit_context,
)


def squared_local(partition: list[Any], state: _gd.GDState) -> np.ndarray:
    """Summed squared-error gradient and loss of one block ``(X, y)``: ``[grad (p) | loss]``."""
    X, y = partition[0]
    theta = state.theta
    d = X.shape[1]
    r = X @ theta[:d]
    if theta.shape[0] > d:
        r += theta[d]
    r -= y
    out = np.empty(theta.shape[0] + 1)
    out[:d] = X.T @ r
    if theta.shape[0] > d:
        out[d] = r.sum()
    out[-1] = 0.5 * float(r @ r)
    return out


class LinearRegression(BaseEstimator):
    """Least squares (``alpha > 0``: ridge) by full-batch gradient descent, one ``ctx.iterate`` per fit.

    ``alpha`` is scikit-learn ``Ridge``'s L2 strength (0: plain least
    squares). ``learning_rate``, ``tol``, ``max_iter``, ``context``,
    ``group_size``, ``num_partitions`` and ``verbose`` are as in
    :class:`LogisticRegression`.

    Fitted: ``coef_`` (d,), ``intercept_`` (float), ``n_iter_``,
    ``loss_curve_`` (objective after each iteration), ``n_features_in_``,
    ``iterate_seconds_``.
    """

    def __init__(self, *, alpha: float = 0.0, fit_intercept: bool = True, max_iter: int = 1000,
                 tol: float = 1e-4, learning_rate: float | str = "auto", context: dz.Context | None = None,
                 group_size: int | str = "auto", num_partitions: int | None = None, verbose: bool = False) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    def _checked(self, X: Any, y: Any) -> tuple[Any, np.ndarray]:
        check_float(self.alpha, "alpha")
        check_int(self.max_iter, "max_iter")
        check_float(self.tol, "tol")
        if self.learning_rate != "auto":
            check_float(self.learning_rate, "learning_rate", positive=True)
        check_group_size(self.group_size)
        check_num_partitions(self.num_partitions)
        check_context(self.context)
        X = check_X(X)
        return X, check_y(y, X.shape[0], numeric=True)

    def make_problem(self, X: Any, y: Any, num_partitions: int) -> P.Problem:
        """The fit as a :class:`~drizzle_ml.Problem`: what ``fit`` runs, and what benchmarks time."""
        X, y = self._checked(X, y)
        return self._problem(X, y, check_int(num_partitions, "num_partitions"))

    def _problem(self, X: Any, y: np.ndarray, num_partitions: int) -> P.Problem:
        n, d = X.shape
        blocks = [(P.slice_rows(X, a, b), y[a:b].copy()) for a, b in P.row_blocks(n, num_partitions)]
        l2 = float(self.alpha) / n
        intercept = bool(self.fit_intercept)
        precond = _gd.Preconditioner.for_data(X, 1, intercept)
        if self.learning_rate == "auto":
            step = _gd.initial_step(X, precond, curvature=1.0, l2=l2)
        else:
            step = float(self.learning_rate)
        init = _gd.initial_state(d + (1 if intercept else 0), step)
        return P.Problem(blocks=blocks, init=init, local=squared_local, combine=_gd.add,
                         update=_gd.GDUpdate(n, d, l2, precond), until=_gd.GradientBelow(self.tol), loss=_gd.state_loss)

    def fit(self, X: Any, y: Any) -> LinearRegression:
        """Fit on ``X`` (dense array or CSR matrix) and targets ``y`` (1-D). Returns self."""
        X, y = self._checked(X, y)
        with fit_context(self.context) as ctx:
            problem = self._problem(X, y, self.num_partitions or ctx.num_workers)
            fit = P.run(problem, ctx, max_iter=int(self.max_iter), group_size=self.group_size,
                        verbose=bool(self.verbose), desc="LinearRegression")
        d = X.shape[1]
        theta = fit.state.best
        self.coef_ = theta[:d].copy()
        self.intercept_ = float(theta[d]) if self.fit_intercept else 0.0
        self._record_gd_fit(fit, d)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """``X @ coef_ + intercept_``."""
        self._check_fitted("coef_")
        X = check_X(X, n_features=self.n_features_in_)
        return np.asarray(X @ self.coef_) + self.intercept_

    def score(self, X: Any, y: Any) -> float:
        """Coefficient of determination R^2 on ``(X, y)``."""
        y = np.asarray(y, dtype=np.float64)
        resid = y - self.predict(X)
        total = y - y.mean()
        return float(1.0 - (resid @ resid) / (total @ total)) if total @ total > 0 else 0.0
