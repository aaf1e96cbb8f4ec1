"""KMeans: Lloyd's algorithm as one ``ctx.iterate`` (the kernels are :mod:`._lloyd`'s), seeded on the driver.

Seeding (k-means++ or random rows) runs on the driver, which holds X
already. Empty clusters keep their previous center (as Spark MLlib does)
rather than being relocated as scikit-learn does; with k-means++ seeding
this is rare, and it needs no extra data from the workers.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

import drizzle_core as dz

from . import _context
from . import _problem as P
from ._base import DrizzleEstimator, check_common, check_float, check_int, check_sample_weight
from ._lloyd import (
    CenterShiftBelow,
    KMeansState,
    _assign,
    _labels_inertia,
    _row_norms_sq,
    _scores,
    add,
    labels_and_inertia,
    lloyd_local,
    lloyd_update,
    state_inertia,
)


# --------------------------------------------------------------- seeding
def _sq_dist_to(X: np.ndarray | sp.csr_matrix, x_sq: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Squared distances (len(points), n) from each of ``points`` to every row of ``X``."""
    D = np.asarray(X @ (-2.0 * points.T)).T
    D += x_sq
    D += np.einsum("ij,ij->i", points, points)[:, None]
    return np.maximum(D, 0.0, out=D)


def _row(X: np.ndarray | sp.csr_matrix, i: Any) -> np.ndarray:
    r = X[i]
    return r.toarray() if sp.issparse(r) else np.array(r, dtype=np.float64)


def kmeans_plusplus(X: np.ndarray | sp.csr_matrix, k: int, rng: np.random.Generator,
                    sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; 2 + log k trials per center, as scikit-learn).

    Runs on the driver, which holds X already: k passes over the data, against
    a Lloyd iteration's one, so it costs a few iterations' worth of time.
    Points are drawn in proportion to weight x squared distance.
    """
    n = X.shape[0]
    s = sample_weight
    x_sq = _row_norms_sq(X)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, X.shape[1]))
    # Every draw is an inverse-CDF lookup of a uniform in the cumulative weights: weight 2 on a
    # point then draws exactly as two copies of it (scikit-learn's sample_weight equivalence).
    weights = np.ones(n) if s is None else s
    first = min(int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side="right")), n - 1)
    centers[0] = _row(X, first).ravel()
    closest = _sq_dist_to(X, x_sq, centers[:1])[0]
    potential = closest @ weights
    for c in range(1, k):
        ids = np.searchsorted(np.cumsum(closest * weights), rng.random(trials) * potential)
        np.clip(ids, None, n - 1, out=ids)
        cand = _sq_dist_to(X, x_sq, _row(X, ids).reshape(len(ids), -1))
        np.minimum(closest, cand, out=cand)
        pots = cand @ weights
        best = int(np.argmin(pots))
        potential, closest = pots[best], cand[best]
        centers[c] = _row(X, ids[best]).ravel()
    return centers


def _column_variance_mean(X: np.ndarray | sp.csr_matrix) -> float:
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        mean_sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        return float(np.mean(mean_sq - mean ** 2))
    return float(np.mean(np.var(X, axis=0)))


def _generator(random_state: Any) -> np.random.Generator:
    """A numpy Generator from scikit-learn's ``random_state`` (None, an int, a RandomState) or a Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(check_random_state(random_state).randint(2**32, dtype=np.uint64))
    return np.random.default_rng(check_int(random_state, "random_state", minimum=0))


# ------------------------------------------------------------ predicting
class CentersMixin:
    """What every k-means model does with its ``cluster_centers_``: numpy on the driver, no Context needed."""

    cluster_centers_: np.ndarray

    def _X(self, X: Any) -> Any:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64, order="C")

    def predict(self, X: Any) -> np.ndarray:
        """Index of the nearest fitted center for every row of ``X`` (numpy, in this process)."""
        return _assign(self._X(X), self.cluster_centers_)[0].astype(np.int32)

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """``fit(X).labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> np.ndarray:
        """Euclidean distance from every row to every center: (n, n_clusters)."""
        X = self._X(X)
        D = _scores(X, self.cluster_centers_)
        D += _row_norms_sq(X)[:, None]
        return np.sqrt(np.maximum(D, 0.0, out=D), out=D)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Minus the (weighted) inertia of ``X`` on the fitted centers (higher is better, as scikit-learn)."""
        X = self._X(X)
        s = check_sample_weight(sample_weight, X.shape[0])
        return -_labels_inertia(X, self.cluster_centers_, s)[1]


# -------------------------------------------------------------- estimator
class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, CentersMixin, DrizzleEstimator):
    """K-means clustering by Lloyd's algorithm, one ``ctx.iterate`` per fit.

    Parameters follow scikit-learn's ``KMeans(algorithm="lloyd", n_init=1)``:
    ``init`` is ``"k-means++"``, ``"random"`` or an (n_clusters, n_features)
    array; the fit stops after ``max_iter`` iterations or once the squared
    center shift is at most ``tol`` times the mean per-feature variance of X.
    ``random_state`` seeds the initialisation (an int, a RandomState, a numpy
    Generator, or None). ``context`` is the :class:`drizzle_core.Context` to
    fit on (None: the process's default, :func:`drizzle_ml.default_context`);
    ``group_size`` is how many iterations are scheduled as one group
    (``"auto"`` tunes it); ``num_partitions`` defaults to the number of
    workers; ``verbose`` draws a progress bar on stderr.

    Fitted: ``cluster_centers_``, ``labels_``, ``inertia_``, ``n_iter_``,
    ``loss_curve_`` (inertia of each iteration's assignment),
    ``n_features_in_`` (``feature_names_in_`` from a DataFrame),
    ``iterate_seconds_`` (wall time of the iteration loop).
    """

    def __init__(self, n_clusters: int = 8, *, init: str | np.ndarray = "k-means++", max_iter: int = 300,
                 tol: float = 1e-4, random_state: int | np.random.RandomState | np.random.Generator | None = None,
                 context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    # ---------------------------------------------------------- checking
    def _checked(self, X: Any, sample_weight: Any) -> tuple[Any, np.ndarray | None, int, float]:
        k = check_int(self.n_clusters, "n_clusters")
        check_int(self.max_iter, "max_iter")
        tol = check_float(self.tol, "tol")
        check_common(self)
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array, got {self.init!r}")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, order="C")
        if k > X.shape[0]:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={k}")
        if not isinstance(self.init, str):
            init = np.asarray(self.init, dtype=np.float64)
            if init.shape != (k, X.shape[1]):
                raise ValueError(f"init array must have shape (n_clusters, n_features) = {(k, X.shape[1])}, "
                                 f"got {init.shape}")
            if not np.isfinite(init).all():
                raise ValueError("init contains NaN or infinity")
        return X, check_sample_weight(sample_weight, X.shape[0]), k, tol

    def _initial_centers(self, X: np.ndarray | sp.csr_matrix, k: int, s: np.ndarray | None) -> np.ndarray:
        if not isinstance(self.init, str):
            return np.array(self.init, dtype=np.float64)
        rng = _generator(self.random_state)
        if self.init == "random":
            ids = rng.choice(X.shape[0], size=k, replace=False, p=None if s is None else s / s.sum())
            return _row(X, np.sort(ids)).reshape(k, -1)
        return kmeans_plusplus(X, k, rng, s)

    def make_problem(self, X: Any, num_partitions: int, sample_weight: Any = None) -> P.Problem:
        """The fit as a :class:`~drizzle_ml.Problem`: what ``fit`` runs, and what benchmarks time."""
        X, s, k, tol = self._checked(X, sample_weight)
        return self._problem(X, s, self._initial_centers(X, k, s), tol, check_int(num_partitions, "num_partitions"))

    def _problem(self, X: np.ndarray | sp.csr_matrix, s: np.ndarray | None, centers: np.ndarray, tol: float,
                 num_partitions: int) -> P.Problem:
        blocks = []
        for a, b in P.row_blocks(X.shape[0], num_partitions):
            rows = P.slice_rows(X, a, b)
            w = None if s is None else s[a:b]
            norms = _row_norms_sq(rows)
            blocks.append((rows, float(norms.sum() if w is None else w @ norms), w))
        init = KMeansState(centers, np.inf, np.nan)
        return P.Problem(blocks=blocks, init=init, local=lloyd_local, combine=add, update=lloyd_update,
                         until=CenterShiftBelow(tol * _column_variance_mean(X)), loss=state_inertia,
                         finish=labels_and_inertia)

    # ------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Cluster ``X`` (dense array or CSR matrix). ``y`` is ignored. Returns self."""
        X, s, k, tol = self._checked(X, sample_weight)
        centers = self._initial_centers(X, k, s)      # seeding on the driver, before any worker is asked
        ctx = _context.resolve(self.context)
        problem = self._problem(X, s, centers, tol, self.num_partitions or ctx.num_workers)
        fit = P.run(problem, ctx, max_iter=int(self.max_iter), group_size=self.group_size,
                    verbose=bool(self.verbose), desc="KMeans")
        self.cluster_centers_ = fit.state.centers
        self.labels_ = np.concatenate([labels for labels, _ in fit.finished])
        self.inertia_ = float(sum(inertia for _, inertia in fit.finished))
        self.n_iter_ = fit.iterations
        self.loss_curve_ = list(fit.records)
        self.iterate_seconds_ = fit.seconds
        self._n_features_out = k
        distinct = len(np.unique(self.labels_))
        if distinct < k:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                          "Possibly due to duplicate points in X.", ConvergenceWarning, stacklevel=2)
        return self
