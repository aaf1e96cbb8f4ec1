"""SGDClassifier and SGDRegressor: mini-batch SGD, one ``ctx.iterate`` per fit (kernels in :mod:`._sgd_kernels`).

``fit`` runs up to ``max_iter`` epochs of ``ceil(n / batch_size)`` steps;
each step's mini-batch is drawn on the workers from their cached rows, so
iterations carry only the weights. ``partial_fit`` runs one epoch over the
data it is given, continuing the step count (the learning-rate schedule and
the sampling key) from the previous call: that is online learning, and
:func:`drizzle_ml.fit_stream` calls it once per micro-batch of a stream.

What scikit-learn has and these do not: ``penalty="l1"``/``"elasticnet"``,
``average``, ``early_stopping`` on a validation split, ``class_weight``, the
epsilon-insensitive and huber losses, ``shuffle`` (rows are drawn with
replacement each step, so there is nothing to shuffle). Multi-class
classification is one-vs-all as scikit-learn's, with the K binary problems
stepped together and stopped by one rule on their summed loss.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

import drizzle_core as dz

from . import _context
from . import _problem as P
from . import _sgd_kernels as K
from ._base import DrizzleEstimator, check_choice, check_common, check_float, check_int, check_sample_weight


def seed_of(random_state: Any) -> int:
    """An int sampling seed from scikit-learn's ``random_state`` (None, an int, a RandomState, a Generator)."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if random_state is None or isinstance(random_state, np.random.RandomState):
        rs = random_state if random_state is not None else np.random.mtrand._rand
        return int(rs.randint(2**31))
    return check_int(random_state, "random_state", minimum=0)



def _epoch_record(state: K.SGDState) -> tuple[bool, float]:
    """What a fit keeps of each step: whether it ended an epoch, and the last epoch's loss (``loss_curve_``)."""
    return state.epoch_steps == 0, float(state.loss)

class _BaseSGD(DrizzleEstimator):
    """What the two SGD estimators share: parameters, the Problem, fit / partial_fit."""

    _losses: tuple[str, ...] = K.LOSSES

    # ---------------------------------------------------------- checking
    def _check_params(self) -> None:
        check_choice(self.loss, "loss", self._losses)
        check_choice(self.penalty, "penalty", ("l2", None))
        check_float(self.alpha, "alpha")
        check_int(self.max_iter, "max_iter")
        if self.tol is not None:
            check_float(self.tol, "tol")
        check_int(self.n_iter_no_change, "n_iter_no_change")
        check_choice(self.learning_rate, "learning_rate", K.LEARNING_RATES)
        check_float(self.eta0, "eta0", positive=self.learning_rate != "optimal")
        check_float(self.power_t, "power_t")
        check_int(self.batch_size, "batch_size")
        if self.learning_rate == "optimal" and not (self.penalty == "l2" and self.alpha > 0):
            raise ValueError("learning_rate='optimal' needs penalty='l2' and alpha > 0 (eta = 1 / (alpha t)); "
                             "use learning_rate='constant' or 'invscaling'")
        check_common(self)

    def _problem(self, X: Any, Y: np.ndarray, s: np.ndarray | None, num_partitions: int, theta: np.ndarray,
                 t: int, seen: float, seed: int, epochs: int, stop: bool) -> tuple[P.Problem, int]:
        n = X.shape[0]
        ranges = P.row_blocks(n, num_partitions)
        shares = K.split_batch([b - a for a, b in ranges], int(self.batch_size))
        blocks = [(P.slice_rows(X, a, b), np.ascontiguousarray(Y[a:b]), None if s is None else s[a:b], i, m)
                  for i, ((a, b), m) in enumerate(zip(ranges, shares))]
        steps = -(-n // int(self.batch_size))
        alpha = float(self.alpha) if self.penalty == "l2" else 0.0
        update = K.SGDUpdate(alpha=alpha, learning_rate=str(self.learning_rate), eta0=float(self.eta0),
                             power_t=float(self.power_t),
                             init_t=K.optimal_init(str(self.loss), alpha) if alpha else 1.0,
                             intercept=bool(self.fit_intercept), steps_per_epoch=steps,
                             tol=None if not stop or self.tol is None else float(self.tol),
                             n_iter_no_change=int(self.n_iter_no_change))
        problem = P.Problem(blocks=blocks, init=K.initial_state(theta, t, seen),
                            local=K.SGDLocal(str(self.loss), bool(self.fit_intercept), seed), combine=K.add,
                            update=update, until=K.stopped if stop else None, loss=K.epoch_loss,
                            record=_epoch_record)
        return problem, steps * epochs

    def make_problem(self, X: Any, y: Any, num_partitions: int) -> tuple[P.Problem, int]:
        """The fit from zero as a :class:`~drizzle_ml.Problem` and its step count: what benchmarks time."""
        self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, order="C")
        Y = self._make_targets(y)
        return self._problem(X, Y, None, check_int(num_partitions, "num_partitions"),
                             np.zeros((X.shape[1] + (1 if self.fit_intercept else 0), Y.shape[1])), 0, 0.0,
                             seed_of(self.random_state), int(self.max_iter), stop=True)

    def _make_targets(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float64)[:, None]

    def _run(self, X: Any, Y: np.ndarray, s: np.ndarray | None, start: tuple[np.ndarray, int, float], *,
             partial: bool) -> P.Fit:
        ctx = _context.resolve(self.context)
        if not partial or not hasattr(self, "_seed"):
            self._seed = seed_of(self.random_state)
        epochs = 1 if partial else int(self.max_iter)
        problem, steps = self._problem(X, Y, s, self.num_partitions or ctx.num_workers, *start, self._seed,
                                       epochs, stop=not partial)
        fit = P.run(problem, ctx, max_iter=steps, group_size=self.group_size, verbose=bool(self.verbose),
                    desc=type(self).__name__)
        st = fit.state
        d = X.shape[1]
        self.coef_ = st.theta[:d].T.copy()
        self.intercept_ = st.theta[d].copy() if self.fit_intercept else np.zeros(st.theta.shape[1])
        self.t_ = 1.0 + st.seen                           # scikit-learn's t_: 1 + samples seen
        self.n_steps_ = st.t                              # SGD steps, over every fit / partial_fit since reset
        self.n_iter_ = st.epochs
        self.loss_curve_ = [loss for epoch_end, loss in fit.records if epoch_end]
        self.iterate_seconds_ = fit.seconds
        if not partial and not st.done and self.tol is not None:
            warnings.warn(f"{type(self).__name__}: maximum number of iterations ({self.max_iter} epochs) reached "
                          "before convergence; consider increasing max_iter", ConvergenceWarning, stacklevel=3)
        return fit

    def _theta0(self, d: int, k: int, warm: bool, partial: bool = False) -> tuple[np.ndarray, int, float]:
        """Initial weights (d [+1], k), steps and rows seen: zeros, or the fitted ones (warm start, partial_fit).

        ``fit`` restarts the schedule (scikit-learn's warm start does too); ``partial_fit`` continues it.
        """
        rows = d + (1 if self.fit_intercept else 0)
        if warm and hasattr(self, "coef_"):
            coef = np.atleast_2d(self.coef_)               # SGDRegressor's coef_ is (d,)
            if coef.shape != (k, d):
                raise ValueError(f"warm start / partial_fit: the model has {coef.shape[1]} features, "
                                 f"the data {d}")
            theta = np.zeros((rows, k))
            theta[:d] = coef.T
            if self.fit_intercept:
                theta[d] = self.intercept_
            return (theta, int(self.n_steps_), float(self.t_) - 1.0) if partial else (theta, 0, 0.0)
        return np.zeros((rows, k)), 0, 0.0


def _log_loss(est: Any) -> bool:
    """``predict_proba`` exists for ``loss="log_loss"`` only (scikit-learn's rule: hasattr says so)."""
    if est.loss != "log_loss":
        raise AttributeError(f"probability estimates are not available for loss={est.loss!r}")
    return True


class SGDClassifier(ClassifierMixin, _BaseSGD):
    """A linear classifier by mini-batch SGD (hinge: a linear SVM; log_loss: logistic regression).

    Parameters are scikit-learn's ``SGDClassifier``'s where they exist:
    ``loss`` ("hinge" or "log_loss"), ``penalty`` ("l2" or None), ``alpha``,
    ``fit_intercept``, ``max_iter`` (epochs), ``tol`` and ``n_iter_no_change``
    (stop once the epoch's mean loss has not improved by ``tol`` for that
    many epochs; ``tol=None``: run ``max_iter`` epochs), ``learning_rate``
    ("optimal", "constant", "invscaling") with ``eta0`` and ``power_t``,
    ``random_state`` (the mini-batch draws), ``warm_start``. ``batch_size``
    is the mini-batch: one step averages the gradient over that many rows
    drawn on the workers (an epoch is ``ceil(n / batch_size)`` steps).
    ``context``, ``group_size``, ``num_partitions``, ``verbose`` as every
    drizzle_ml estimator.

    Fitted: ``coef_`` (1, d) or (K, d), ``intercept_``, ``classes_``,
    ``n_iter_`` (epochs), ``t_`` (1 + rows seen), ``n_steps_``, ``loss_curve_`` (each epoch's
    mean mini-batch loss), ``iterate_seconds_``.
    """

    _losses = ("hinge", "log_loss")

    def __init__(self, loss: str = "hinge", *, penalty: str | None = "l2", alpha: float = 1e-4,
                 fit_intercept: bool = True, max_iter: int = 1000, tol: float | None = 1e-3,
                 n_iter_no_change: int = 5, learning_rate: str = "optimal", eta0: float = 0.01,
                 power_t: float = 0.5, batch_size: int = 32, random_state: Any = None, warm_start: bool = False,
                 context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.batch_size = batch_size
        self.random_state = random_state
        self.warm_start = warm_start
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags

    def _make_targets(self, y: np.ndarray) -> np.ndarray:
        return self._targets(y, np.unique(y))

    def _targets(self, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(n, K) targets in {-1, +1}: one column for two classes (+1 is classes[1]), one per class otherwise."""
        index = np.searchsorted(classes, y)
        if not (index < len(classes)).all() or not np.array_equal(classes[np.minimum(index, len(classes) - 1)], y):
            unknown = sorted(set(np.asarray(y).tolist()) - set(classes.tolist()))
            raise ValueError(f"y has labels {unknown} that are not in classes {classes.tolist()}")
        if len(classes) == 2:
            return np.where(index == 1, 1.0, -1.0)[:, None]
        Y = -np.ones((len(y), len(classes)))
        Y[np.arange(len(y)), index] = 1.0
        return Y

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SGDClassifier:
        """Fit on ``X`` (dense or CSR) and labels ``y``: up to ``max_iter`` epochs. Returns self."""
        self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, order="C")
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"SGDClassifier needs samples of at least 2 classes; got {len(classes)} class: "
                             f"{classes.tolist()}")
        s = check_sample_weight(sample_weight, X.shape[0])
        k = 1 if len(classes) == 2 else len(classes)
        warm = bool(self.warm_start) and hasattr(self, "classes_") and np.array_equal(self.classes_, classes)
        start = self._theta0(X.shape[1], k, warm)
        self.classes_ = classes
        self._run(X, self._targets(y, classes), s, start, partial=False)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None) -> SGDClassifier:
        """One epoch of SGD over ``X, y``, from the current weights; ``classes`` is needed on the first call."""
        self._check_params()
        first = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, reset=first, accept_sparse="csr", dtype=np.float64, order="C")
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"classes must hold at least 2 classes, got {self.classes_.tolist()}")
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={np.unique(np.asarray(classes)).tolist()} is not the same as on the "
                             f"previous partial_fit: {self.classes_.tolist()}")
        s = check_sample_weight(sample_weight, X.shape[0])
        k = 1 if len(self.classes_) == 2 else len(self.classes_)
        start = self._theta0(X.shape[1], k, warm=True, partial=True)
        self._run(X, self._targets(y, self.classes_), s, start, partial=True)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """``X @ coef_.T + intercept_``: (n,) for two classes, (n, K) otherwise."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64)
        scores = np.asarray(X @ self.coef_.T) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: Any) -> np.ndarray:
        scores = self.decision_function(X)
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]

    @available_if(_log_loss)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (``loss="log_loss"`` only): the sigmoid, one-vs-all normalised as scikit-learn."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        P_ = expit(scores)
        total = P_.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(total == 0, 1.0 / P_.shape[1], P_ / np.where(total == 0, 1.0, total))
        return out

    @available_if(_log_loss)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))


class SGDRegressor(RegressorMixin, _BaseSGD):
    """A linear regressor by mini-batch SGD on the squared error (scikit-learn's ``SGDRegressor``).

    Parameters as :class:`SGDClassifier` (``loss="squared_error"`` only;
    ``learning_rate="invscaling"``, ``eta0=0.01``, ``power_t=0.25`` by
    default, as scikit-learn). Fitted: ``coef_`` (d,), ``intercept_`` (1,),
    ``n_iter_``, ``t_``, ``n_steps_``, ``loss_curve_``, ``iterate_seconds_``.
    """

    _losses = ("squared_error",)

    def __init__(self, loss: str = "squared_error", *, penalty: str | None = "l2", alpha: float = 1e-4,
                 fit_intercept: bool = True, max_iter: int = 1000, tol: float | None = 1e-3,
                 n_iter_no_change: int = 5, learning_rate: str = "invscaling", eta0: float = 0.01,
                 power_t: float = 0.25, batch_size: int = 32, random_state: Any = None, warm_start: bool = False,
                 context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.batch_size = batch_size
        self.random_state = random_state
        self.warm_start = warm_start
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    def _fitted_1d(self) -> None:
        self.coef_ = self.coef_[0]

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SGDRegressor:
        """Fit on ``X`` (dense or CSR) and targets ``y``: up to ``max_iter`` epochs. Returns self."""
        self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, order="C", y_numeric=True)
        s = check_sample_weight(sample_weight, X.shape[0])
        start = self._theta0(X.shape[1], 1, bool(self.warm_start))
        self._run(X, y[:, None], s, start, partial=False)
        self._fitted_1d()
        return self

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> SGDRegressor:
        """One epoch of SGD over ``X, y``, from the current weights."""
        self._check_params()
        first = not hasattr(self, "coef_")
        X, y = validate_data(self, X, y, reset=first, accept_sparse="csr", dtype=np.float64, order="C",
                             y_numeric=True)
        s = check_sample_weight(sample_weight, X.shape[0])
        start = self._theta0(X.shape[1], 1, warm=True, partial=True)
        self._run(X, y[:, None], s, start, partial=True)
        self._fitted_1d()
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64)
        return np.asarray(X @ self.coef_).ravel() + self.intercept_[0]
