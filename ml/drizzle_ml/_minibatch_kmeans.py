"""MiniBatchKMeans and StreamingKMeans: per-center weights, a decayed update (kernels in :mod:`._minibatch`).

``MiniBatchKMeans.fit`` is one ``ctx.iterate``: each step the workers draw
their share of a mini-batch from their cached rows, by ``(seed, step,
partition)``, and the reducer applies scikit-learn's update; G steps per
group with no driver between them. ``partial_fit`` (both estimators) is one
update with all the rows given: a micro-batch of a stream, through
:func:`drizzle_ml.fit_stream`.

Left out, against scikit-learn's MiniBatchKMeans: the random reassignment of
centers with few rows (``reassignment_ratio``) and ``n_init`` > 1 (a center
that gets no rows keeps its place, as in :class:`KMeans`); against Spark's
StreamingKMeans: splitting the heaviest cluster when one's weight decays to
nothing.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

import drizzle_core as dz

from . import _context
from . import _minibatch as MB
from . import _problem as P
from ._base import (
    DrizzleEstimator,
    check_choice,
    check_common,
    check_context,
    check_float,
    check_int,
    check_num_partitions,
    check_sample_weight,
)
from ._kmeans import CentersMixin, _column_variance_mean, _generator, _row, kmeans_plusplus
from ._sgd_kernels import split_batch


def _init_centers(X: Any, k: int, init: Any, rng: np.random.Generator, s: np.ndarray | None,
                  init_size: int | None) -> np.ndarray:
    if not isinstance(init, str):
        return np.array(init, dtype=np.float64)
    n = X.shape[0]
    if init_size is not None and init_size < n:           # seed on a sample, as scikit-learn (init_size)
        ids = np.sort(rng.choice(n, size=max(init_size, k), replace=False))
        X, s = X[ids], None if s is None else s[ids]
    if init == "random":
        ids = rng.choice(X.shape[0], size=k, replace=False, p=None if s is None else s / s.sum())
        return _row(X, np.sort(ids)).reshape(k, -1)
    return kmeans_plusplus(X, k, rng, s)


def _check_init(init: Any, k: int, d: int) -> None:
    if isinstance(init, str):
        if init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
        return
    a = np.asarray(init, dtype=np.float64)
    if a.shape != (k, d):
        raise ValueError(f"init array must have shape (n_clusters, n_features) = {(k, d)}, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("init contains NaN or infinity")


class _Decayed(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, CentersMixin, DrizzleEstimator):
    """predict/transform/score of every k-means model, plus the one-update ``partial_fit`` both estimators share."""

    def _decay(self) -> tuple[float, bool]:
        return 1.0, False

    def _first_centers(self, X: Any, s: np.ndarray | None) -> None:
        k = check_int(self.n_clusters, "n_clusters")
        if k > X.shape[0]:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={k}")
        _check_init(self.init, k, X.shape[1])
        self.cluster_centers_ = _init_centers(X, k, self.init, _generator(self.random_state), s, None)
        self.counts_ = np.zeros(k)
        self.n_steps_ = 0
        self._n_features_out = k

    def _one_update(self, X: Any, s: np.ndarray | None) -> MB.MiniBatchState:
        ctx = _context.resolve(self.context)
        a, per_point = self._decay()
        blocks = [(P.slice_rows(X, lo, hi), None if s is None else s[lo:hi], i, 0)
                  for i, (lo, hi) in enumerate(P.row_blocks(X.shape[0], self.num_partitions or ctx.num_workers))]
        problem = P.Problem(blocks=blocks, init=MB.initial_state(self.cluster_centers_, self.counts_, self.n_steps_),
                            local=MB.MiniBatchLocal(None), combine=MB.add,
                            update=MB.MiniBatchUpdate(a, per_point), until=None, loss=MB.state_inertia)
        st = P.run(problem, ctx, max_iter=1, group_size=1).state
        self.cluster_centers_, self.counts_, self.n_steps_ = st.centers, st.counts, st.t
        return st

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """One update with every row of ``X`` (a micro-batch); the first call also seeds the centers from ``X``."""
        self._check_params()
        first = not hasattr(self, "cluster_centers_")
        X = validate_data(self, X, reset=first, accept_sparse="csr", dtype=np.float64, order="C")
        s = check_sample_weight(sample_weight, X.shape[0])
        if first:
            self._first_centers(X, s)
        self._one_update(X, s)
        return self

    @property
    def cluster_weights_(self) -> np.ndarray:
        """The (decayed) weight of rows each center stands for (Spark's clusterWeights)."""
        check_is_fitted(self, "counts_")
        return self.counts_


class MiniBatchKMeans(_Decayed):
    """K-means on mini-batches drawn on the workers (scikit-learn's ``MiniBatchKMeans`` update and stopping).

    ``fit`` runs up to ``max_iter`` epochs of ``ceil(n / batch_size)`` steps;
    each step draws ``batch_size`` rows (with replacement, as scikit-learn)
    over the partitions, assigns them to the nearest center, and moves each
    center to the weighted mean of its old position (weight: the rows it has
    absorbed) and its new rows. It stops once the squared center shift is at
    most ``tol`` times the mean feature variance (``tol > 0``), or when the
    smoothed batch inertia has not improved for ``max_no_improvement`` steps.
    ``init``, ``init_size`` (seeding on a sample of that many rows; default
    ``3 * batch_size``), ``random_state`` as scikit-learn; ``context``,
    ``group_size``, ``num_partitions``, ``verbose`` as every drizzle_ml
    estimator. Fitted: ``cluster_centers_``, ``counts_`` (rows absorbed per
    center), ``labels_``, ``inertia_`` (of all of X, after the fit),
    ``n_iter_`` (epochs, rounded up), ``n_steps_``, ``iterate_seconds_``.
    """

    def __init__(self, n_clusters: int = 8, *, init: str | np.ndarray = "k-means++", max_iter: int = 100,
                 batch_size: int = 1024, tol: float = 0.0, max_no_improvement: int | None = 10,
                 init_size: int | None = None, random_state: Any = None, context: dz.Context | None = None,
                 group_size: int | str = "auto", num_partitions: int | None = None, verbose: bool = False) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.random_state = random_state
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    def _check_params(self) -> None:
        check_int(self.n_clusters, "n_clusters")
        check_int(self.max_iter, "max_iter")
        check_int(self.batch_size, "batch_size")
        check_float(self.tol, "tol")
        if self.max_no_improvement is not None:
            check_int(self.max_no_improvement, "max_no_improvement", minimum=0)
        if self.init_size is not None:
            check_int(self.init_size, "init_size")
        check_common(self)

    def make_problem(self, X: Any, num_partitions: int, sample_weight: Any = None) -> tuple[P.Problem, int]:
        """The fit as a :class:`~drizzle_ml.Problem` and its number of steps: what ``fit`` runs, benchmarks time."""
        self._check_params()
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, order="C")
        return self._problem(X, check_sample_weight(sample_weight, X.shape[0]), num_partitions)

    def _problem(self, X: Any, s: np.ndarray | None, num_partitions: int) -> tuple[P.Problem, int]:
        k = check_int(self.n_clusters, "n_clusters")
        n = X.shape[0]
        if k > n:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
        _check_init(self.init, k, X.shape[1])
        rng = _generator(self.random_state)
        batch = min(int(self.batch_size), n)
        init_size = 3 * batch if self.init_size is None else int(self.init_size)
        centers = _init_centers(X, k, self.init, rng, s, init_size)
        seed = int(rng.integers(2**63))
        ranges = P.row_blocks(n, num_partitions)
        shares = split_batch([b - a for a, b in ranges], batch)
        blocks = [(P.slice_rows(X, a, b), None if s is None else s[a:b], i, m)
                  for i, ((a, b), m) in enumerate(zip(ranges, shares))]
        update = MB.MiniBatchUpdate(1.0, False, min(1.0, batch * 2.0 / (n + 1)),
                                    float(self.tol) * _column_variance_mean(X), self.max_no_improvement)
        steps = int(self.max_iter) * math.ceil(n / batch)
        problem = P.Problem(blocks=blocks, init=MB.initial_state(centers, np.zeros(k)),
                            local=MB.MiniBatchLocal(seed), combine=MB.add, update=update, until=MB.stopped,
                            loss=MB.state_inertia, finish=MB.labels_and_inertia)
        return problem, steps

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Cluster ``X`` (dense or CSR) by mini-batch steps. ``y`` is ignored. Returns self."""
        self._check_params()
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, order="C")
        s = check_sample_weight(sample_weight, X.shape[0])
        ctx = _context.resolve(self.context)
        problem, steps = self._problem(X, s, self.num_partitions or ctx.num_workers)
        fit = P.run(problem, ctx, max_iter=steps, group_size=self.group_size, verbose=bool(self.verbose),
                    desc="MiniBatchKMeans")
        st = fit.state
        self.cluster_centers_, self.counts_, self.n_steps_ = st.centers, st.counts, st.t
        self.n_iter_ = math.ceil(st.t / math.ceil(X.shape[0] / min(int(self.batch_size), X.shape[0])))
        self.labels_ = np.concatenate([labels for labels, _ in fit.finished])
        self.inertia_ = float(sum(inertia for _, inertia in fit.finished))
        self.loss_curve_ = list(fit.records)
        self.iterate_seconds_ = fit.seconds
        self._n_features_out = self.cluster_centers_.shape[0]
        distinct = len(np.unique(self.labels_))
        if distinct < self.cluster_centers_.shape[0]:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                          f"({self.cluster_centers_.shape[0]}). Possibly due to duplicate points in X.",
                          ConvergenceWarning, stacklevel=2)
        return self


class StreamingKMeans(_Decayed):
    """K-means on a stream with forgetting: Spark MLlib's StreamingKMeans update, one per micro-batch.

    Every ``partial_fit(X)`` (a micro-batch; :func:`drizzle_ml.fit_stream`
    calls it per batch of a stream) assigns the batch's rows to the nearest
    center on the workers and updates ``c <- (c n a + x_sum) / (n a + m)``,
    ``n <- n a + m`` per center, ``a`` the ``decay_factor`` (1: every row
    counts forever; 0: only the last batch), or ``0.5 ** (1 / half_life)``
    when ``half_life`` is given (the weight of old data halves every
    ``half_life`` batches, or rows with ``time_unit="points"``, where the
    discount is ``a ** rows``). The first call seeds the centers from its
    batch (``init``: "k-means++", "random" or an array, with weight 0).
    ``fit(X)`` starts over: seeds, then one update with all of X.
    Fitted: ``cluster_centers_``, ``cluster_weights_``, ``n_steps_``.
    """

    def __init__(self, n_clusters: int = 8, *, decay_factor: float = 1.0, half_life: float | None = None,
                 time_unit: str = "batches", init: str | np.ndarray = "k-means++", random_state: Any = None,
                 context: dz.Context | None = None, num_partitions: int | None = None) -> None:
        self.n_clusters = n_clusters
        self.decay_factor = decay_factor
        self.half_life = half_life
        self.time_unit = time_unit
        self.init = init
        self.random_state = random_state
        self.context = context
        self.num_partitions = num_partitions

    def _check_params(self) -> None:
        check_int(self.n_clusters, "n_clusters")
        a = check_float(self.decay_factor, "decay_factor")
        if a > 1:
            raise ValueError(f"decay_factor must be in [0, 1], got {self.decay_factor!r}")
        if self.half_life is not None:
            check_float(self.half_life, "half_life", positive=True)
        check_choice(self.time_unit, "time_unit", ("batches", "points"))
        check_num_partitions(self.num_partitions)
        check_context(self.context)

    def _decay(self) -> tuple[float, bool]:
        a = float(self.decay_factor) if self.half_life is None else math.exp(math.log(0.5) / float(self.half_life))
        return a, self.time_unit == "points"

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StreamingKMeans:
        """Start over on ``X``: seed the centers from it, then one update with all its rows. Returns self."""
        self._check_params()
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, order="C")
        s = check_sample_weight(sample_weight, X.shape[0])
        self._first_centers(X, s)
        self._one_update(X, s)
        self.labels_ = self.predict(X)
        return self
