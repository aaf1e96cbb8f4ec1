"""LogisticRegression by full-batch gradient descent on ``ctx.iterate``.

The objective is scikit-learn's, divided by ``C * n`` (same minimiser)::

    (1/n) sum_i logloss_i + 1/(2 C n) ||coef||^2        (penalty="l2")

Two classes use the sigmoid (one coefficient vector); three or more use the
multinomial (softmax) loss with one vector per class, as scikit-learn does.
Per partition the kernel is two passes over the block: ``z = X w + b``, then
``X' (sigmoid(z) - y)``; the loss rides along at the cost of one
``logaddexp`` over n values. Sparse blocks use CSR @ dense for both passes.
The step and the stopping rule are in :mod:`._gd`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

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


# ------------------------------------------------------------------ kernels
def binary_local(partition: list[Any], state: _gd.GDState) -> np.ndarray:
    """Summed logistic-loss gradient and loss of one block: ``[grad (p) | loss]``.

    The block is ``(X, y)`` with y in {0, 1} (float64); theta is ``[w (d), b]``
    with an intercept, ``[w]`` without.
    """
    X, y = partition[0]
    theta = state.theta
    d = X.shape[1]
    z = X @ theta[:d]
    if theta.shape[0] > d:
        z += theta[d]
    r = expit(z)
    r -= y
    out = np.empty(theta.shape[0] + 1)
    out[:d] = X.T @ r
    if theta.shape[0] > d:
        out[d] = r.sum()
    out[-1] = np.logaddexp(0.0, z).sum() - y @ z
    return out


class SoftmaxLocal:
    """Summed multinomial-loss gradient and loss of one block, for ``n_classes`` classes.

    The block is ``(X, y)`` with y the class index (intp); theta is
    ``[W (d*K, row-major d x K), b (K)]`` with intercepts, ``[W]`` without.
    """

    __slots__ = ("n_classes",)

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes

    def __call__(self, partition: list[Any], state: _gd.GDState) -> np.ndarray:
        X, y = partition[0]
        theta = state.theta
        n, d = X.shape
        K = self.n_classes
        Z = np.asarray(X @ theta[:d * K].reshape(d, K))
        if theta.shape[0] > d * K:
            Z += theta[d * K:]
        rows = np.arange(n)
        top = Z.max(axis=1, keepdims=True)
        E = np.exp(Z - top)
        s = E.sum(axis=1)
        loss = float((np.log(s) + top[:, 0] - Z[rows, y]).sum())
        E /= s[:, None]
        E[rows, y] -= 1.0                     # softmax - onehot(y)
        out = np.empty(theta.shape[0] + 1)
        out[:d * K] = np.asarray(X.T @ E).ravel()
        if theta.shape[0] > d * K:
            out[d * K:-1] = E.sum(axis=0)
        out[-1] = loss
        return out

    def __reduce__(self):
        return (SoftmaxLocal, (self.n_classes,))


# -------------------------------------------------------------- estimator
class LogisticRegression(BaseEstimator):
    """Logistic regression fitted by full-batch gradient descent, one ``ctx.iterate`` per fit.

    ``penalty`` is ``"l2"`` (strength ``1/C``, as scikit-learn) or None;
    ``learning_rate`` is the first step size, or ``"auto"`` for ``1/L`` with
    the curvature ``L`` estimated from the data; a step that does not decrease
    the loss enough is halved (see ``drizzle_ml._gd``). The fit stops when
    every coordinate of the gradient of the mean objective is at most ``tol``,
    or after ``max_iter`` iterations (with a :class:`ConvergenceWarning`).
    ``context``, ``group_size``, ``num_partitions`` and ``verbose`` are as in
    :class:`KMeans`.

    Fitted: ``coef_`` (1, d) for two classes, (K, d) for K > 2; ``intercept_``;
    ``classes_``; ``n_iter_``; ``loss_curve_`` (objective after each
    iteration); ``n_features_in_``; ``iterate_seconds_``.
    """

    def __init__(self, *, penalty: str | None = "l2", C: float = 1.0, fit_intercept: bool = True,
                 max_iter: int = 1000, tol: float = 1e-4, learning_rate: float | str = "auto",
                 context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    def _checked(self, X: Any, y: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        if self.penalty not in ("l2", None):
            raise ValueError(f"penalty must be 'l2' or None, got {self.penalty!r}")
        check_float(self.C, "C", positive=True)
        check_int(self.max_iter, "max_iter")
        check_float(self.tol, "tol")
        if self.learning_rate != "auto":
            check_float(self.learning_rate, "learning_rate", positive=True)
        check_group_size(self.group_size)
        check_num_partitions(self.num_partitions)
        check_context(self.context)
        X = check_X(X)
        y = check_y(y, X.shape[0], numeric=False)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"LogisticRegression needs samples of at least 2 classes, got only {classes.tolist()}")
        return X, classes, y_index

    def make_problem(self, X: Any, y: Any, num_partitions: int) -> P.Problem:
        """The fit as a :class:`~drizzle_ml.Problem`: what ``fit`` runs, and what benchmarks time."""
        X, classes, y_index = self._checked(X, y)
        return self._problem(X, len(classes), y_index, check_int(num_partitions, "num_partitions"))

    def _problem(self, X: Any, n_classes: int, y_index: np.ndarray, num_partitions: int) -> P.Problem:
        n, d = X.shape
        K = 1 if n_classes == 2 else n_classes
        target = y_index.astype(np.float64) if K == 1 else y_index.astype(np.intp)
        blocks = [(P.slice_rows(X, a, b), target[a:b]) for a, b in P.row_blocks(n, num_partitions)]
        l2 = 1.0 / (self.C * n) if self.penalty == "l2" else 0.0
        intercept = bool(self.fit_intercept)
        precond = _gd.Preconditioner.for_data(X, K, intercept)
        if self.learning_rate == "auto":
            step = _gd.initial_step(X, precond, curvature=0.25 if K == 1 else 0.5, l2=l2)
        else:
            step = float(self.learning_rate)
        n_coef = d * K
        init = _gd.initial_state(n_coef + (K if intercept else 0), step)
        return P.Problem(blocks=blocks, init=init, local=binary_local if K == 1 else SoftmaxLocal(K),
                         combine=_gd.add, update=_gd.GDUpdate(n, n_coef, l2, precond),
                         until=_gd.GradientBelow(self.tol), loss=_gd.state_loss)

    def fit(self, X: Any, y: Any) -> LogisticRegression:
        """Fit on ``X`` (dense array or CSR matrix) and labels ``y``. Returns self."""
        X, classes, y_index = self._checked(X, y)
        with fit_context(self.context) as ctx:
            problem = self._problem(X, len(classes), y_index, self.num_partitions or ctx.num_workers)
            fit = P.run(problem, ctx, max_iter=int(self.max_iter), group_size=self.group_size,
                        verbose=bool(self.verbose), desc="LogisticRegression")
        d, K = X.shape[1], (1 if len(classes) == 2 else len(classes))
        theta = fit.state.best
        if K == 1:
            self.coef_ = theta[:d].reshape(1, d).copy()
        else:
            self.coef_ = theta[:d * K].reshape(d, K).T.copy()
        self.intercept_ = theta[d * K:].copy() if self.fit_intercept else np.zeros(K)
        self.classes_ = classes
        self._record_gd_fit(fit, d)
        return self

    # ------------------------------------------------------------ predicting
    def decision_function(self, X: Any) -> np.ndarray:
        """``X @ coef_.T + intercept_``: (n,) for two classes, (n, K) otherwise."""
        self._check_fitted("coef_")
        X = check_X(X, n_features=self.n_features_in_)
        scores = np.asarray(X @ self.coef_.T) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in ``classes_`` order."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of every row."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

