"""PCA and TruncatedSVD by randomized power iteration over cached blocks (the kernels are :mod:`._power`'s).

The data goes to the workers once; each of the ``n_iter + 1`` iterations
sends only the (d, l) basis and returns one (d, l) sum per worker. The
column means (PCA) and the total variance (for ``explained_variance_ratio_``)
are computed on the driver, which holds X already; the random start is drawn
there too, so a fit is reproducible from ``random_state`` for any group size
and worker count.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

import drizzle_core as dz

from . import _context, _power
from . import _problem as P
from ._base import DrizzleEstimator, check_common, check_int
from ._kmeans import _generator


def _column_mean_var(X: Any) -> tuple[np.ndarray, np.ndarray]:
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        return mean, np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
    return X.mean(axis=0), X.var(axis=0)


def _flip_signs(V: np.ndarray) -> np.ndarray:
    """Each row's largest-magnitude entry made positive (scikit-learn's ``svd_flip(u_based_decision=False)``)."""
    signs = np.sign(V[np.arange(V.shape[0]), np.argmax(np.abs(V), axis=1)])
    signs[signs == 0] = 1.0
    return V * signs[:, None]


class _RandomizedDecomposition(ClassNamePrefixFeaturesOutMixin, TransformerMixin, DrizzleEstimator):
    """What PCA and TruncatedSVD share: the power iteration, the fitted attributes, transform."""

    _center: bool = True

    def __init__(self, n_components: int | None = None, *, n_oversamples: int = 10, n_iter: int | str = "auto",
                 random_state: Any = None, context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        self.n_components = n_components
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.random_state = random_state
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    def _checked(self, X: Any) -> tuple[Any, int, int, int]:
        check_common(self)
        oversamples = check_int(self.n_oversamples, "n_oversamples", minimum=0)
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, order="C", ensure_min_samples=2)
        n, d = X.shape
        limit = min(n, d) if self._center else d
        k = limit if self.n_components is None else check_int(self.n_components, "n_components")
        if k > limit:
            what = "min(n_samples, n_features)" if self._center else "n_features"
            raise ValueError(f"n_components={k} must be <= {what} = {limit}")
        if self.n_iter == "auto":
            n_iter = 7 if k < 0.1 * min(n, d) else 4          # scikit-learn's randomized_svd rule
        elif isinstance(self.n_iter, numbers.Integral) and not isinstance(self.n_iter, bool) and self.n_iter >= 0:
            n_iter = int(self.n_iter)
        else:
            raise ValueError(f"n_iter must be 'auto' or an int >= 0, got {self.n_iter!r}")
        return X, k, min(d, k + oversamples), n_iter

    def make_problem(self, X: Any, num_partitions: int) -> P.Problem:
        """The fit as a :class:`~drizzle_ml.Problem` (what ``fit`` runs; ``n_iter + 1`` iterations)."""
        X, _, width, n_iter = self._checked(X)
        return self._problem(X, width, n_iter, check_int(num_partitions, "num_partitions"))[0]

    def _problem(self, X: Any, width: int, n_iter: int,
                 num_partitions: int) -> tuple[P.Problem, np.ndarray, np.ndarray]:
        mean, var = _column_mean_var(X)
        rng = _generator(self.random_state)
        Q0, _ = np.linalg.qr(rng.standard_normal((X.shape[1], width)))
        blocks = [P.slice_rows(X, a, b) for a, b in P.row_blocks(X.shape[0], num_partitions)]
        problem = P.Problem(blocks=blocks, init=_power.PowerState(Q0, None, 0),
                            local=_power.GramTimes(mean if self._center else None), combine=_power.add,
                            update=_power.PowerUpdate(n_iter), until=None, loss=_power.state_top_value)
        return problem, mean, var

    def fit(self, X: Any, y: Any = None) -> _RandomizedDecomposition:
        """Fit the components on ``X`` (dense or CSR). ``y`` is ignored. Returns self."""
        X, k, width, n_iter = self._checked(X)
        n = X.shape[0]
        ctx = _context.resolve(self.context)
        problem, mean, var = self._problem(X, width, n_iter, self.num_partitions or ctx.num_workers)
        fit = P.run(problem, ctx, max_iter=n_iter + 1, group_size=self.group_size, verbose=bool(self.verbose),
                    desc=type(self).__name__)
        state = fit.state
        V = _flip_signs(state.Q[:, :k].T.copy())
        values = state.values[:k]
        self.components_ = V
        self.n_components_ = k
        self.n_iter_ = fit.iterations
        self.iterate_seconds_ = fit.seconds
        self._n_features_out = k
        if self._center:
            self.mean_ = mean
            self.singular_values_ = np.sqrt(values)
            self.explained_variance_ = values / (n - 1)
            total = var.sum() * n / (n - 1)
        else:
            # scikit-learn's TruncatedSVD: the variance of each transformed column, of the total variance of X
            T = np.asarray(X @ V.T)
            self.singular_values_ = np.linalg.norm(T, axis=0)
            self.explained_variance_ = T.var(axis=0)
            total = var.sum()
        self.explained_variance_ratio_ = self.explained_variance_ / total if total > 0 else \
            np.zeros_like(self.explained_variance_)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``X`` in the components' coordinates: (n, n_components)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64)
        T = np.asarray(X @ self.components_.T)
        if self._center:
            T -= self.mean_ @ self.components_.T
        return T

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Back to the input space: ``X @ components_`` (+ ``mean_`` for PCA)."""
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float64)
        out = X @ self.components_
        return out + self.mean_ if self._center else out


class PCA(_RandomizedDecomposition):
    """Principal component analysis by randomized power iteration, one ``ctx.iterate`` per fit.

    As scikit-learn's ``PCA(svd_solver="randomized")``: ``n_components``
    (default ``min(n_samples, n_features)``), ``n_oversamples`` extra basis
    vectors, ``n_iter`` power iterations (``"auto"``: 7 when ``n_components``
    is under a tenth of the smaller dimension, else 4), ``random_state``.
    The data is centered implicitly: a CSR matrix stays sparse. ``context``,
    ``group_size``, ``num_partitions`` and ``verbose`` are as in
    :class:`KMeans`.

    Fitted: ``components_`` (k, d), ``explained_variance_``,
    ``explained_variance_ratio_``, ``singular_values_``, ``mean_``,
    ``n_components_``, ``n_iter_`` (data passes), ``iterate_seconds_``.
    """

    _center = True


class TruncatedSVD(_RandomizedDecomposition):
    """Truncated SVD (no centering: LSA on CSR term matrices) by randomized power iteration.

    Parameters and fitted attributes as :class:`PCA`, without ``mean_``;
    ``explained_variance_`` is the variance of each transformed column, as
    scikit-learn's ``TruncatedSVD``; ``n_components`` defaults to 2, as there.
    """

    _center = False

    def __init__(self, n_components: int | None = 2, *, n_oversamples: int = 10, n_iter: int | str = "auto",
                 random_state: Any = None, context: dz.Context | None = None, group_size: int | str = "auto",
                 num_partitions: int | None = None, verbose: bool = False) -> None:
        super().__init__(n_components, n_oversamples=n_oversamples, n_iter=n_iter, random_state=random_state,
                         context=context, group_size=group_size, num_partitions=num_partitions, verbose=verbose)
