"""LogisticRegression on ``ctx.iterate``: Newton's method, L-BFGS, or gradient descent.

The objective is scikit-learn's, divided by ``C * sum(sample_weight)`` (same minimiser)::

    (1/sum s) sum_i s_i logloss_i + 1/(2 C sum s) ||coef||^2        (penalty="l2")

Two classes use the sigmoid (one coefficient vector); three or more use the
multinomial (softmax) loss with one vector per class, as scikit-learn does.

Per partition the kernel is one pass over the block: ``z = X w + b``, then
``X' (s (sigmoid(z) - y))`` and the loss; with ``solver="newton"`` also the
Hessian ``X' diag(s p (1 - p)) X`` (softmax: one such product per pair of
classes); with ``solver="lbfgs"`` the loss and gradient at the line search's
three trial steps at once (:mod:`._trial_losses`). Sparse blocks use CSR
products throughout (the Hessian's scaled rows share the block's index
arrays). The step and the stopping rule are in :mod:`._newton`,
:mod:`._lbfgs` and :mod:`._gd`.

``solver="auto"``: Newton up to ``NEWTON_MAX_PARAMS`` parameters, L-BFGS
above. Above, it was gradient descent, which L-BFGS beats by 2-11x in time
and 4-20x in iterations (20,000-50,000 rows, 1,500-5,000 parameters, dense
and CSR: the numbers are in ``ml/README.md``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.special import log_expit
from sklearn.base import ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

import drizzle_core as dz

from . import _context, _gd, _lbfgs, _newton
from . import _problem as P
from ._base import (
    DrizzleEstimator,
    check_choice,
    check_common,
    check_float,
    check_int,
    check_sample_weight,
    weight_sum,
)
from ._losses import BinaryLocal, SoftmaxLocal, binary_local
from ._trial_losses import BinaryTrials, SoftmaxTrials

#: ``solver="auto"`` uses Newton up to this many parameters (its p x p Hessian), L-BFGS above
NEWTON_MAX_PARAMS = 1000


# -------------------------------------------------------------- estimator
class LogisticRegression(ClassifierMixin, DrizzleEstimator):
    """Logistic regression (binary or multinomial), one ``ctx.iterate`` per fit.

    ``penalty`` is ``"l2"`` (strength ``1/C``, as scikit-learn) or None.
    ``solver``: ``"newton"`` (gradient and Hessian in one pass; a few
    iterations; p x p memory and p^2 work per row), ``"lbfgs"`` (scikit-learn's
    default algorithm: memory 10, strong Wolfe line search whose trial steps
    are evaluated together, one pass per iteration; tens of iterations on
    well-scaled data, like scikit-learn's), ``"gd"`` (preconditioned gradient
    descent with backtracking), or ``"auto"``: Newton up to
    ``NEWTON_MAX_PARAMS`` parameters, L-BFGS above. ``learning_rate`` is
    gradient descent's first step (``"auto"``: ``1/L``, the curvature
    estimated from the data); the other solvers ignore it. The fit stops when
    every coordinate of the gradient of the mean objective is at most ``tol``
    (L-BFGS also when the loss stops moving at machine precision, as
    scikit-learn's lbfgs), or after ``max_iter`` iterations (with a
    scikit-learn ``ConvergenceWarning``). ``n_iter_`` counts iterations, each
    one pass over the data (for L-BFGS the first evaluates the start point,
    and a line search that needs a second look costs one more).
    ``warm_start`` starts from the previous fit's coefficients (same classes
    and features). ``context`` is the :class:`drizzle_core.Context` to fit on
    (None: the process's default, :func:`drizzle_ml.default_context`);
    ``group_size`` is how many iterations are scheduled as one group;
    ``num_partitions`` defaults to the number of workers; ``verbose`` draws a
    progress bar on stderr.

    Fitted: ``coef_`` (1, d) for two classes, (K, d) for K > 2; ``intercept_``;
    ``classes_``; ``n_iter_``; ``loss_curve_`` (objective after each
    iteration); ``n_features_in_`` (``feature_names_in_`` from a DataFrame);
    ``iterate_seconds_``.
    """

    def __init__(self, *, penalty: str | None = "l2", C: float = 1.0, fit_intercept: bool = True,
                 solver: str = "auto", max_iter: int = 100, tol: float = 1e-4, learning_rate: float | str = "auto",
                 warm_start: bool = False, context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        self.penalty = penalty
        self.C = C
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

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags

    # ---------------------------------------------------------- checking
    def _check_params(self) -> None:
        check_choice(self.penalty, "penalty", ("l2", None))
        check_float(self.C, "C", positive=True)
        check_choice(self.solver, "solver", ("auto", "newton", "lbfgs", "gd"))
        check_int(self.max_iter, "max_iter")
        check_float(self.tol, "tol")
        if self.learning_rate != "auto":
            check_float(self.learning_rate, "learning_rate", positive=True)
        check_common(self)

    def _checked(self, X: Any, y: Any, sample_weight: Any, reset: bool = True
                 ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
        self._check_params()
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=np.float64, order="C")
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        s = check_sample_weight(sample_weight, X.shape[0])
        present = classes if s is None else np.unique(y[s > 0])
        if len(present) < 2:
            raise ValueError(f"LogisticRegression needs samples of at least 2 classes"
                             f"{' with a positive sample_weight' if s is not None else ''}; "
                             f"got {len(present)} class: {present.tolist()}")
        return X, classes, y_index, s

    def _solver(self, n_params: int) -> str:
        if self.solver == "auto":
            return "newton" if n_params <= NEWTON_MAX_PARAMS else "lbfgs"
        return str(self.solver)

    def make_problem(self, X: Any, y: Any, num_partitions: int, sample_weight: Any = None) -> P.Problem:
        """The fit as a :class:`~drizzle_ml.Problem`: what ``fit`` runs, and what benchmarks time."""
        X, classes, y_index, s = self._checked(X, y, sample_weight)
        return self._problem(X, len(classes), y_index, s, check_int(num_partitions, "num_partitions"), None)

    def _problem(self, X: Any, n_classes: int, y_index: np.ndarray, s: np.ndarray | None, num_partitions: int,
                 theta0: np.ndarray | None) -> P.Problem:
        n, d = X.shape
        K = 1 if n_classes == 2 else n_classes
        intercept = bool(self.fit_intercept)
        n_coef = d * K
        n_params = n_coef + (K if intercept else 0)
        target = y_index.astype(np.float64) if K == 1 else y_index.astype(np.intp)
        blocks = [(P.slice_rows(X, a, b), target[a:b], None if s is None else s[a:b])
                  for a, b in P.row_blocks(n, num_partitions)]
        total = weight_sum(s, n)
        l2 = 1.0 / (self.C * total) if self.penalty == "l2" else 0.0
        theta0 = np.zeros(n_params) if theta0 is None else theta0
        solver = self._solver(n_params)
        if solver == "lbfgs":
            return P.Problem(blocks=blocks, init=_lbfgs.initial_state(theta0),
                             local=BinaryTrials() if K == 1 else SoftmaxTrials(K), combine=_gd.add,
                             update=_lbfgs.LBFGSUpdate(total, n_coef, l2), until=_lbfgs.LBFGSUntil(self.tol),
                             loss=_gd.state_loss)
        if solver == "newton":
            local: Any = BinaryLocal(True) if K == 1 else SoftmaxLocal(K, True)
            return P.Problem(blocks=blocks, init=_newton.initial_state(theta0), local=local, combine=_gd.add,
                             update=_newton.NewtonUpdate(total, n_coef, l2), until=_gd.GradientBelow(self.tol),
                             loss=_gd.state_loss)
        precond = _gd.Preconditioner.for_data(X, K, intercept, s)
        if self.learning_rate == "auto":
            step = _gd.initial_step(X, precond, curvature=0.25 if K == 1 else 0.5, l2=l2)
        else:
            step = float(self.learning_rate)
        return P.Problem(blocks=blocks, init=_gd.initial_state(theta0, step),
                         local=binary_local if K == 1 else SoftmaxLocal(K), combine=_gd.add,
                         update=_gd.GDUpdate(total, n_coef, l2, precond), until=_gd.GradientBelow(self.tol),
                         loss=_gd.state_loss)

    def _warm_theta(self, classes: np.ndarray, d: int) -> np.ndarray | None:
        if not self.warm_start or not hasattr(self, "coef_"):
            return None
        if not np.array_equal(self.classes_, classes) or self.coef_.shape[1] != d:
            raise ValueError(f"warm_start: the data has classes {classes.tolist()} and {d} features, the previous "
                             f"fit {self.classes_.tolist()} and {self.coef_.shape[1]}; refit with warm_start=False")
        W = self.coef_[0] if self.coef_.shape[0] == 1 else self.coef_.T.ravel()
        return np.concatenate([W, self.intercept_]) if self.fit_intercept else W.copy()

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LogisticRegression:
        """Fit on ``X`` (dense array or CSR matrix) and labels ``y`` (any hashable labels). Returns self."""
        X, classes, y_index, s = self._checked(X, y, sample_weight)
        d = X.shape[1]
        K = 1 if len(classes) == 2 else len(classes)
        theta0 = self._warm_theta(classes, d)
        ctx = _context.resolve(self.context)
        problem = self._problem(X, len(classes), y_index, s, self.num_partitions or ctx.num_workers, theta0)
        fit = P.run(problem, ctx, max_iter=int(self.max_iter), group_size=self.group_size,
                    verbose=bool(self.verbose), desc="LogisticRegression")
        theta = fit.state.best
        self.coef_ = theta[:d].reshape(1, d).copy() if K == 1 else theta[:d * K].reshape(d, K).T.copy()
        self.intercept_ = theta[d * K:].copy() if self.fit_intercept else np.zeros(K)
        self.classes_ = classes
        record_fit(self, fit)
        return self

    # ------------------------------------------------------------ predicting
    def decision_function(self, X: Any) -> np.ndarray:
        """``X @ coef_.T + intercept_``: (n,) for two classes, (n, K) otherwise."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64)
        scores = np.asarray(X @ self.coef_.T) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log class probabilities, (n, n_classes), computed stably (no log of an underflowed 0)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return np.column_stack([log_expit(-scores), log_expit(scores)])
        scores = scores - scores.max(axis=1, keepdims=True)
        return scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in ``classes_`` order."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of every row."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]


def record_fit(est: Any, fit: P.Fit) -> None:
    """The fitted attributes every iterative linear model sets, and its convergence warning."""
    est.n_iter_ = fit.iterations
    est.loss_curve_ = list(fit.records)
    est.iterate_seconds_ = fit.seconds
    if not fit.converged:
        warnings.warn(f"{type(est).__name__} did not converge in {fit.iterations} iterations "
                      f"(max |gradient| {fit.state.grad_max:.3g} > tol {est.tol}); raise max_iter or tol",
                      ConvergenceWarning, stacklevel=3)
    elif getattr(fit.state, "status", "") == "stalled" and fit.state.grad_max > est.tol:
        warnings.warn(f"{type(est).__name__} stopped after {fit.iterations} iterations: no step along the "
                      f"search direction or the gradient lowers the loss any more (max |gradient| "
                      f"{fit.state.grad_max:.3g} > tol {est.tol}: the loss is at its floating-point floor); "
                      f"the coefficients are the best point found. Scaling the features helps",
                      ConvergenceWarning, stacklevel=3)
