"""ALS: matrix factorisation by alternating least squares, explicit and implicit feedback, on ``iterate_by_key``.

The ratings matrix is cut into user blocks and item blocks, Spark's layout
(the kernels and the state are :mod:`._als_kernels`'s); the factor matrices
stay on the workers, split by block, and each iteration ships only the factor
rows a block's ratings touch. The driver holds X already; it draws the random
start and cuts the blocks, so a fit is reproducible from ``random_state`` for
any group size and worker count. ``transform`` (new users against the fitted
items, "fold-in") is the same kernel on the driver, in numpy: a fitted model
needs no Context.
"""

from __future__ import annotations

import numbers
import time
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

import drizzle_core as dz

from . import _als_kernels as K
from . import _context
from ._base import ConvergenceWarning, DrizzleEstimator, check_common, check_float, check_int
from ._kmeans import _generator


def ratings(X: Any) -> sp.csr_matrix:
    """Canonical CSR of observed ratings: a sparse matrix's stored entries (duplicates summed), or every entry
    of a dense one (zeros included). A canonical CSR is used as it is, not copied."""
    if sp.issparse(X):
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        return X
    n, m = X.shape
    idx = np.int32 if n * m < 2**31 - 1 else np.int64
    return sp.csr_matrix((X.ravel(), np.tile(np.arange(m, dtype=idx), n), np.arange(0, n * m + 1, m, dtype=idx)),
                         shape=(n, m))


def _transposed(R: sp.csr_matrix) -> sp.csr_matrix:
    """``R.T`` as canonical CSR (the item-major copy of the ratings, as Spark keeps both)."""
    C = R.tocsc()
    return sp.csr_matrix((C.data, C.indices, C.indptr), shape=(R.shape[1], R.shape[0]))


def _init_user_factors(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Gaussian rows scaled to unit length (Spark's ALS start); only the users': the first solve is the items'."""
    U = rng.standard_normal((n, k))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return U


class _Stop:
    """``until`` for ``tol``: the relative decrease of the objective over one ALS iteration (two half-steps)."""

    def __init__(self, tol: float) -> None:
        self.tol, self.calls, self.item_reg, self.prev = tol, 0, 0.0, None

    def __call__(self, metric: np.ndarray) -> bool:
        self.calls += 1
        if self.calls % 2:            # an item solve: keep its regularisation term
            self.item_reg = float(metric[1])
            return False
        loss = float(metric[0] + metric[1]) + self.item_reg
        prev, self.prev = self.prev, loss
        return prev is not None and prev - loss <= self.tol * abs(prev)


class ALS(ClassNamePrefixFeaturesOutMixin, TransformerMixin, DrizzleEstimator):
    """Alternating least squares matrix factorisation (explicit or implicit feedback), one ``iterate_by_key`` per fit.

    ``X`` is a users x items rating matrix. A scipy sparse matrix's stored
    entries are the observed ratings (explicit zeros included); a dense
    matrix observes every entry. The factors minimise, with ALS-WR's
    regularisation (each row's term scaled by its number of ratings, as
    Spark's ``regParam``)::

        explicit:  sum_observed (r_ui - x_u.y_i)^2 + alpha (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)
        implicit:  sum_all c_ui (p_ui - x_u.y_i)^2 + alpha (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)

    Implicit feedback is Hu, Koren & Volinsky's (2008), as Spark's
    ``implicitPrefs``: preference ``p = (r > 0)``, confidence
    ``c = 1 + confidence * |r|`` (1 for unobserved entries), ``n`` the
    positive entries. Each iteration solves every item exactly given the
    users, then every user given the items, so the objective never increases.

    Parameters: ``n_components`` (k), ``alpha`` (the regularisation),
    ``max_iter`` (ALS iterations), ``implicit``, ``confidence`` (Spark's
    ``alpha``), ``tol`` (None: run ``max_iter`` iterations, as Spark; a number:
    stop when an iteration lowers the objective by less than ``tol`` of it),
    ``random_state`` (the Gaussian start of the user factors), and the engine
    parameters of :class:`KMeans`; ``num_partitions`` is the number of blocks
    per side (default: the workers).

    A user or item with no rating (implicit: no positive one) has a zero
    factor: it predicts 0 everywhere, and ``transform`` gives a zero row for
    it too.

    Fitted: ``user_factors_`` (n_users, k), ``item_factors_`` (n_items, k),
    ``components_`` (k, n_items, the item factors transposed, as
    ``sklearn.decomposition.NMF``), ``n_components_``, ``n_iter_``, ``loss_``
    (the objective), ``loss_curve_`` (per iteration), ``reconstruction_err_``
    (the square root of its error term), ``iterate_seconds_``.

    ``transform(X)`` solves users (rows of X, with the fitted items) on the
    driver, so ``transform`` of the training matrix is ``user_factors_``;
    ``inverse_transform(W)`` is ``W @ components_``; ``predict_pairs(users,
    items)`` the predicted ratings of (user, item) pairs; ``recommend(users,
    n)`` each user's top items.
    """

    def __init__(self, n_components: int = 10, *, alpha: float = 0.1, max_iter: int = 10, implicit: bool = False,
                 confidence: float = 1.0, tol: float | None = None, random_state: Any = None,
                 context: dz.Context | None = None, group_size: int | str = "auto", num_partitions: int | None = None,
                 verbose: bool = False) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.implicit = implicit
        self.confidence = confidence
        self.tol = tol
        self.random_state = random_state
        self.context = context
        self.group_size = group_size
        self.num_partitions = num_partitions
        self.verbose = verbose

    # ------------------------------------------------------------- checks
    def _params(self) -> tuple[int, float, int, bool, float, float | None]:
        check_common(self)
        k = check_int(self.n_components, "n_components")
        alpha = check_float(self.alpha, "alpha")
        max_iter = check_int(self.max_iter, "max_iter")
        if not isinstance(self.implicit, (bool, np.bool_)):
            raise ValueError(f"implicit must be True or False, got {self.implicit!r}")
        confidence = check_float(self.confidence, "confidence")
        tol = None if self.tol is None else check_float(self.tol, "tol")
        return k, alpha, max_iter, bool(self.implicit), confidence, tol

    def _weights(self, R: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, v, counted = K.weights_of(R.data, bool(self.implicit), float(self.confidence))
        cs = np.concatenate([[0], np.cumsum(counted, dtype=np.int64)])
        return w, v, (cs[R.indptr[1:]] - cs[R.indptr[:-1]]).astype(np.float64)

    # ---------------------------------------------------------------- fit
    def make_problem(self, X: Any, num_partitions: int) -> K.BlockedProblem:
        """The fit as ``iterate_by_key``'s arguments over ``num_partitions`` blocks per side (what ``fit`` runs)."""
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64)
        return self._problem(ratings(X), check_int(num_partitions, "num_partitions"))

    def _problem(self, R: sp.csr_matrix, B: int) -> K.BlockedProblem:
        k, alpha, max_iter, implicit, confidence, _ = self._params()
        Rt = _transposed(R)
        ub = K.bounds(np.diff(R.indptr) + 1.0, B)
        ib = K.bounds(np.diff(Rt.indptr) + 1.0, B)
        user_in, item_out = K.layout(R, K.USERS, ub, ib, implicit, confidence, lambda b: b)
        item_in, user_out = K.layout(Rt, K.ITEMS, ib, ub, implicit, confidence, lambda b: B + b)
        U0 = _init_user_factors(_generator(self.random_state), R.shape[0], k)
        zero = np.zeros(2)
        state = []
        for b in range(B):
            Ub = U0[ub[b]:ub[b + 1]]
            Ib = np.zeros((ib[b + 1] - ib[b], k))
            state.append((b, K.Factors(K.USERS, Ub, zero, K.gram(K.USERS, Ub) if implicit else None)))
            state.append((B + b, K.Factors(K.ITEMS, Ib, zero, K.gram(K.ITEMS, Ib) if implicit else None)))
        # odd iterations: users send, items solve; even: items send, users solve
        odd = [(b, user_out[b]) for b in range(B)] + [(B + b, item_in[b]) for b in range(B)]
        even = [(B + b, item_out[b]) for b in range(B)] + [(b, user_in[b]) for b in range(B)]
        return K.BlockedProblem(B, state, (odd, even), self._send(), K.Update(alpha, implicit, k),
                                (K.block_gram, np.add) if implicit else None, 2 * max_iter)

    def fit(self, X: Any, y: Any = None) -> ALS:
        """Fit the user and item factors to the ratings ``X`` (dense or sparse). ``y`` is ignored. Returns self."""
        k, _, max_iter, implicit, _, tol = self._params()
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64)
        ctx = _context.resolve(self.context)
        B = self.num_partitions or ctx.num_workers
        p = self._problem(ratings(X), B)
        start = time.perf_counter()
        res = ctx.iterate_by_key(
            ctx.parallelize(p.state, B), data=[ctx.parallelize(d, B) for d in p.data], send=p.send, update=p.update,
            iterations=p.iterations, aggregate=p.aggregate, measure=K.block_metric,
            until=None if tol is None else _Stop(tol), num_partitions=B, group_size=self.group_size,
            progress=bool(self.verbose), copy_state=False)  # Update returns new factors: no copy of the old
        try:
            blocks = dict(res.state.collect())
        finally:
            for parent in res.state.parents:
                parent.unpersist()
        self.iterate_seconds_ = time.perf_counter() - start
        users = [blocks[b] for b in range(B)]
        items = [blocks[B + b] for b in range(B)]
        self.user_factors_ = np.concatenate([f.X for f in users])
        self.item_factors_ = np.concatenate([f.X for f in items])
        self.components_ = self.item_factors_.T
        self.n_components_ = k
        self._n_features_out = k
        # Y'Y as the fit's aggregate summed it (block by block, in block order): transform's users are the fit's bits
        self._item_gram = None
        if implicit:
            total = items[0].gram[K.ITEMS]
            for f in items[1:]:
                total = total + f.gram[K.ITEMS]
            self._item_gram = total
        m = res.metrics
        self.n_iter_ = res.iterations // 2
        self.loss_curve_ = [float(m[2 * t + 1][0] + m[2 * t + 1][1] + m[2 * t][1]) for t in range(self.n_iter_)]
        self.loss_ = self.loss_curve_[-1]
        self.reconstruction_err_ = float(np.sqrt(max(float(m[-1][0]), 0.0)))
        if tol is not None and not res.converged:
            warnings.warn(f"ALS did not converge in {max_iter} iterations (tol={tol}); raise max_iter or tol",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _send(self) -> Any:
        """``iterate_by_key``'s send (a method, so a test can wrap it)."""
        return K.Send()

    def fit_transform(self, X: Any, y: Any = None, **params: Any) -> np.ndarray:
        """Fit, and return ``user_factors_`` (which ``transform(X)`` would give again)."""
        return self.fit(X, y).user_factors_.copy()

    # --------------------------------------------------------- using the model
    def transform(self, X: Any) -> np.ndarray:
        """User factors for the rows of ``X`` (ratings of the fitted items), solved against ``item_factors_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64)
        R = ratings(X)
        w, v, n_reg = self._weights(R)
        U, _ = K.solve(R.indptr, R.indices, w, v, n_reg, self.item_factors_, check_float(self.alpha, "alpha"),
                       self._item_gram if self.implicit else None)
        return U

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Predicted ratings of every item for user factors ``X``: ``X @ components_``."""
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_components_:
            raise ValueError(f"inverse_transform needs an (n, {self.n_components_}) array of user factors, "
                             f"got shape {X.shape}")
        return X @ self.components_

    def predict_pairs(self, users: Any, items: Any) -> np.ndarray:
        """The predicted rating (implicit: preference) ``x_u . y_i`` of each (user, item) pair of the training
        matrix's row and column numbers."""
        check_is_fitted(self)
        u = self._indices(users, self.user_factors_.shape[0], "users")
        i = self._indices(items, self.item_factors_.shape[0], "items")
        if u.shape != i.shape:
            raise ValueError(f"users and items must have one shape, got {u.shape} and {i.shape}")
        return np.einsum("...j,...j->...", self.user_factors_[u], self.item_factors_[i])

    def recommend(self, users: Any, n: int = 10, *, exclude: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Each user's ``n`` best items: (item numbers, predicted ratings), best first, one row per user.

        ``exclude`` (optional): a sparse or dense matrix with a row per user
        given (e.g. ``X[users]``); its stored (dense: nonzero) entries are left
        out, as the items a user has seen already.
        """
        check_is_fitted(self)
        one = isinstance(users, numbers.Integral)
        u = self._indices(np.atleast_1d(users), self.user_factors_.shape[0], "users")
        n_items = self.item_factors_.shape[0]
        n = min(check_int(n, "n"), n_items)
        S = self.user_factors_[u] @ self.item_factors_.T
        if exclude is not None:
            E = sp.csr_matrix(exclude)
            if E.shape != S.shape:
                raise ValueError(f"exclude must have one row per user and {n_items} columns: shape {S.shape}, "
                                 f"got {E.shape}")
            rows = np.repeat(np.arange(E.shape[0]), np.diff(E.indptr))
            S[rows, E.indices] = -np.inf
        top = np.argpartition(-S, n - 1, axis=1)[:, :n] if n < n_items else np.tile(np.arange(n_items), (len(u), 1))
        order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable")
        items = np.take_along_axis(top, order, axis=1)
        scores = np.take_along_axis(S, items, axis=1)
        return (items[0], scores[0]) if one else (items, scores)

    @staticmethod
    def _indices(a: Any, n: int, name: str) -> np.ndarray:
        idx = np.asarray(a)
        if idx.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integer row/column numbers, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{name} must be in [0, {n}); got values from {idx.min()} to {idx.max()}")
        return idx
