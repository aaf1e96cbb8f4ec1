"""LinearRegression (least squares, optional L2) on ``ctx.iterate``.

The objective is scikit-learn's ``Ridge`` (``alpha=0``: ordinary least
squares) divided by ``2 sum(sample_weight)`` (same minimiser)::

    (1/2 sum s) sum_i s_i (x_i w + b - y_i)^2 + alpha/(2 sum s) ||w||^2

Per partition: ``r = X w + b - y``, ``X' (s r)`` and ``r.(s r) / 2`` (one
pass; CSR @ dense for sparse blocks). With ``solver="newton"`` the block
adds ``X' diag(s) X``: the loss is quadratic, so the first Newton step is
the exact (minimum-norm) least-squares solution and the second iteration
only confirms it -- the normal equations, summed on the workers and solved
on the reducer, with the data never leaving them. ``solver="gd"`` is
preconditioned gradient descent (:mod:`._gd`), for many features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

import drizzle_core as dz

from . import _context, _gd, _newton
from . import _problem as P
from ._base import DrizzleEstimator, check_choice, check_common, check_float, check_int, check_sample_weight, weight_sum
from ._logistic import NEWTON_MAX_PARAMS, record_fit
from ._losses import SquaredLocal, squared_local


class LinearRegression(RegressorMixin, DrizzleEstimator):
    """Least squares (``alpha > 0``: ridge), one ``ctx.iterate`` per fit.

    ``alpha`` is scikit-learn ``Ridge``'s L2 strength (0: plain least
    squares). ``solver``: ``"newton"`` (the normal equations: two
    iterations), ``"gd"`` or ``"auto"`` (Newton up to ``NEWTON_MAX_PARAMS``
    parameters). ``learning_rate``, ``tol``, ``max_iter``, ``warm_start``,
    ``context``, ``group_size``, ``num_partitions`` and ``verbose`` are as
    in :class:`LogisticRegression`.

    Fitted: ``coef_`` (d,), ``intercept_`` (float), ``n_iter_``,
    ``loss_curve_`` (objective after each iteration), ``n_features_in_``,
    ``iterate_seconds_``.
    """

    def __init__(self, *, alpha: float = 0.0, fit_intercept: bool = True, solver: str = "auto",
                 max_iter: int = 1000, tol: float = 1e-4, learning_rate: float | str = "auto",
                 warm_start: bool = False, context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.warm_start = warm_start
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    def _checked(self, X: Any, y: Any, sample_weight: Any) -> tuple[Any, np.ndarray, np.ndarray | None]:
        check_float(self.alpha, "alpha")
        check_choice(self.solver, "solver", ("auto", "newton", "gd"))
        check_int(self.max_iter, "max_iter")
        check_float(self.tol, "tol")
        if self.learning_rate != "auto":
            check_float(self.learning_rate, "learning_rate", positive=True)
        check_common(self)
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, order="C", y_numeric=True)
        return X, y.astype(np.float64, copy=False), check_sample_weight(sample_weight, X.shape[0])

    def make_problem(self, X: Any, y: Any, num_partitions: int, sample_weight: Any = None) -> P.Problem:
        """The fit as a :class:`~drizzle_ml.Problem`: what ``fit`` runs, and what benchmarks time."""
        X, y, s = self._checked(X, y, sample_weight)
        return self._problem(X, y, s, check_int(num_partitions, "num_partitions"), None)

    def _problem(self, X: Any, y: np.ndarray, s: np.ndarray | None, num_partitions: int,
                 theta0: np.ndarray | None) -> P.Problem:
        n, d = X.shape
        blocks = [(P.slice_rows(X, a, b), y[a:b].copy(), None if s is None else s[a:b])
                  for a, b in P.row_blocks(n, num_partitions)]
        total = weight_sum(s, n)
        l2 = float(self.alpha) / total
        intercept = bool(self.fit_intercept)
        n_params = d + (1 if intercept else 0)
        theta0 = np.zeros(n_params) if theta0 is None else theta0
        solver = self.solver if self.solver != "auto" else ("newton" if n_params <= NEWTON_MAX_PARAMS else "gd")
        if solver == "newton":
            return P.Problem(blocks=blocks, init=_newton.initial_state(theta0), local=SquaredLocal(True),
                             combine=_gd.add, update=_newton.NewtonUpdate(total, d, l2),
                             until=_gd.GradientBelow(self.tol), loss=_gd.state_loss)
        precond = _gd.Preconditioner.for_data(X, 1, intercept, s)
        if self.learning_rate == "auto":
            step = _gd.initial_step(X, precond, curvature=1.0, l2=l2)
        else:
            step = float(self.learning_rate)
        return P.Problem(blocks=blocks, init=_gd.initial_state(theta0, step), local=squared_local, combine=_gd.add,
                         update=_gd.GDUpdate(total, d, l2, precond), until=_gd.GradientBelow(self.tol),
                         loss=_gd.state_loss)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegression:
        """Fit on ``X`` (dense array or CSR matrix) and targets ``y`` (1-D). Returns self."""
        X, y, s = self._checked(X, y, sample_weight)
        d = X.shape[1]
        theta0 = None
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (d,):
            theta0 = np.append(self.coef_, self.intercept_) if self.fit_intercept else self.coef_.copy()
        ctx = _context.resolve(self.context)
        problem = self._problem(X, y, s, self.num_partitions or ctx.num_workers, theta0)
        fit = P.run(problem, ctx, max_iter=int(self.max_iter), group_size=self.group_size,
                    verbose=bool(self.verbose), desc="LinearRegression")
        theta = fit.state.best
        self.coef_ = theta[:d].copy()
        self.intercept_ = float(theta[d]) if self.fit_intercept else 0.0
        record_fit(self, fit)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """``X @ coef_ + intercept_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64)
        return np.asarray(X @ self.coef_) + self.intercept_
