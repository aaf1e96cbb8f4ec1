"""ALS (blocked alternating least squares on ``iterate_by_key``) against a plain numpy ALS.

The reference below solves one row at a time with dense numpy, from the same
random start: the fitted factors must equal it to 1e-10 relative, explicit
and implicit, dense and sparse, on generated low-rank data and on digits.
The blocked fit is then the same bits for any group size and worker count
(and, explicit feedback, any block count), and after a worker is SIGKILLed.
"""

from __future__ import annotations

import itertools
import os
import pickle
import warnings

import ml_support
import numpy as np
import pytest
import scipy.sparse as sp
from bookkeeping import assert_no_bookkeeping
from drizzle_ml import ALS
from drizzle_ml._als_kernels import Send
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_support import close
from sklearn import datasets
from sklearn.base import clone
from sklearn.cluster import KMeans as SKKMeans
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import make_pipeline
from support import count_call, kill_self_once, recovered, wait_all_live

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(180)


# ------------------------------------------------------------------ the reference
def reference(X, k, alpha=0.1, iters=6, implicit=False, confidence=1.0, seed=0):
    """Plain ALS, row by row: (user factors, item factors, objective after each iteration)."""
    R = _observed(X)
    n, m = R.shape
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n, k))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    V = np.zeros((m, k))
    Rt = R.T.tocsr()
    losses = []
    for _ in range(iters):
        V = _half(Rt, U, k, alpha, implicit, confidence)
        U = _half(R, V, k, alpha, implicit, confidence)
        losses.append(_objective(R, U, V, alpha, implicit, confidence))
    return U, V, losses


def _observed(X):
    if sp.issparse(X):
        R = sp.csr_matrix(X, dtype=np.float64, copy=True)
        R.sum_duplicates()
        return R
    n, m = X.shape
    rows, cols = np.divmod(np.arange(n * m), m)
    return sp.csr_matrix((np.asarray(X, dtype=np.float64).ravel(), (rows, cols)), shape=(n, m))


def _half(R, Y, k, alpha, implicit, confidence):
    out = np.zeros((R.shape[0], k))
    YtY = Y.T @ Y
    for u in range(R.shape[0]):
        cols = R.indices[R.indptr[u]:R.indptr[u + 1]]
        r = R.data[R.indptr[u]:R.indptr[u + 1]]
        Yu = Y[cols]
        if implicit:
            pos = r > 0
            if not pos.any():
                continue
            c1 = confidence * np.abs(r)
            A = YtY + (Yu * c1[:, None]).T @ Yu + alpha * pos.sum() * np.eye(k)
            b = Yu.T @ ((1 + c1) * pos)
        else:
            if len(cols) == 0:
                continue
            A = Yu.T @ Yu + alpha * len(cols) * np.eye(k)
            b = Yu.T @ r
        out[u] = np.linalg.solve(A, b)
    return out


def _objective(R, U, V, alpha, implicit, confidence):
    counts = (R.data > 0) if implicit else np.ones(R.nnz, dtype=bool)
    n_u = np.bincount(np.repeat(np.arange(R.shape[0]), np.diff(R.indptr)), weights=counts, minlength=R.shape[0])
    n_i = np.bincount(R.indices, weights=counts, minlength=R.shape[1])
    reg = alpha * (n_u @ (U * U).sum(axis=1) + n_i @ (V * V).sum(axis=1))
    P = U @ V.T
    if not implicit:
        rows = np.repeat(np.arange(R.shape[0]), np.diff(R.indptr))
        return float(((R.data - P[rows, R.indices]) ** 2).sum() + reg)
    C = np.ones_like(P)
    Pref = np.zeros_like(P)
    rows = np.repeat(np.arange(R.shape[0]), np.diff(R.indptr))
    C[rows, R.indices] += confidence * np.abs(R.data)
    Pref[rows, R.indices] = R.data > 0
    return float((C * (Pref - P) ** 2).sum() + reg)


# --------------------------------------------------------------------- data
def low_rank(seed, n=90, m=70, k=4, density=0.25, implicit=False):
    """Ratings of rank ``k`` plus noise, observed at random (implicit: counts from the same scores)."""
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n, k)) @ rng.normal(size=(k, m))
    mask = rng.random((n, m)) < density
    if implicit:
        S = np.floor(np.maximum(S, 0) * 2)          # counts; zeros where the taste is negative
        S[rng.random((n, m)) < 0.05] = -1.0         # a few dislikes: observed, negative preference
    else:
        S = S + 0.1 * rng.normal(size=(n, m))
    return S, mask


def as_input(S, mask, dense):
    """The observed ratings: a dense matrix (every entry observed) or CSR of the masked entries."""
    if dense:
        return S.copy()
    rows, cols = np.nonzero(mask)
    return sp.csr_matrix((S[rows, cols], (rows, cols)), shape=S.shape)  # explicit zeros kept: observed


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_equals_the_numpy_reference_and_the_objective_decreases(ctx, implicit, dense):
    S, mask = low_rank(1, implicit=implicit)
    X = as_input(S[:40] if dense else S, mask[:40] if dense else mask, dense)
    als = ALS(5, alpha=0.05, max_iter=6, implicit=implicit, confidence=2.0, random_state=3, context=ctx).fit(X)
    U, V, losses = reference(X, 5, alpha=0.05, iters=6, implicit=implicit, confidence=2.0, seed=3)
    assert close(als.user_factors_, U, 1e-10) and close(als.item_factors_, V, 1e-10)
    assert als.components_.shape == (5, X.shape[1]) and np.array_equal(als.components_, als.item_factors_.T)
    assert np.allclose(als.loss_curve_, losses, rtol=1e-9)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(als.loss_curve_, als.loss_curve_[1:]))
    assert als.loss_curve_[-1] < 0.8 * als.loss_curve_[0] and als.n_iter_ == 6
    assert np.array_equal(als.transform(X), als.user_factors_)          # fold-in: the fit's last user solve
    assert_no_bookkeeping(ctx)


def test_digits_as_ratings_and_tol_stops_where_the_reference_does(ctx):
    """digits' pixels as CSR ratings (blank pixels unobserved): a scikit-learn data set, both feedback kinds."""
    X = sp.csr_matrix(datasets.load_digits(return_X_y=True)[0][:300])
    for implicit in (False, True):
        losses = reference(X, 8, alpha=0.1, iters=20, implicit=implicit, confidence=0.5, seed=0)[2]
        rel = [(a - b) / a for a, b in itertools.pairwise(losses)]
        tol = sorted(rel)[len(rel) // 2]                               # a tol the reference meets mid-way
        stop = next(i for i, r in enumerate(rel) if r <= tol) + 2      # iterations run when it is first met
        als = ALS(8, implicit=implicit, confidence=0.5, max_iter=20, tol=tol, random_state=0, context=ctx).fit(X)
        assert als.n_iter_ == stop < 20
        Us, Vs, _ = reference(X, 8, alpha=0.1, iters=stop, implicit=implicit, confidence=0.5, seed=0)
        assert close(als.user_factors_, Us, 1e-10) and close(als.item_factors_, Vs, 1e-10)
        assert als.loss_ == pytest.approx(losses[stop - 1], rel=1e-9)
    assert_no_bookkeeping(ctx)


def test_reconstruction_error_and_prediction_helpers(ctx):
    S, mask = low_rank(2)
    X = as_input(S, mask, dense=False)
    als = ALS(4, alpha=0.01, max_iter=15, random_state=0, context=ctx).fit(X)
    P = als.user_factors_ @ als.item_factors_.T
    rows, cols = X.nonzero()
    err = np.sqrt(((X.data - P[rows, cols]) ** 2).sum())
    assert als.reconstruction_err_ == pytest.approx(err, rel=1e-8)
    assert err < 0.2 * np.linalg.norm(X.data)                           # rank 4 + noise: well explained
    assert np.allclose(als.predict_pairs(rows, cols), P[rows, cols], rtol=1e-12, atol=1e-12)
    assert np.allclose(als.inverse_transform(als.user_factors_), P, rtol=1e-12, atol=1e-12)
    items, scores = als.recommend([0, 5], n=7, exclude=X[[0, 5]])
    for row, u in enumerate((0, 5)):
        allowed = np.setdiff1d(np.arange(X.shape[1]), X[u].indices)
        best = allowed[np.argsort(-P[u, allowed], kind="stable")[:7]]
        assert np.array_equal(items[row], best) and np.allclose(scores[row], P[u, best])
    one, s = als.recommend(3, n=2)
    assert one.shape == (2,) and np.array_equal(one, np.argsort(-P[3])[:2]) and s[0] >= s[1]
    with pytest.raises(ValueError, match="users must be in"):
        als.predict_pairs([X.shape[0]], [0])
    assert_no_bookkeeping(ctx)


def test_users_and_items_without_ratings_have_zero_factors(ctx):
    S, mask = low_rank(3, n=30, m=20)
    mask[4] = False                                  # a user with no rating
    mask[:, 7] = False                               # an item with none
    X = as_input(S, mask, dense=False)
    for implicit in (False, True):
        als = ALS(3, implicit=implicit, max_iter=3, random_state=0, context=ctx, num_partitions=7).fit(X)
        assert not als.user_factors_[4].any() and not als.item_factors_[7].any()
        assert not als.transform(X[4]).any() and np.array_equal(als.predict_pairs([4, 0], [0, 7]), [0.0, 0.0])
        U, V, _ = reference(X, 3, iters=3, implicit=implicit, seed=0)
        assert close(als.user_factors_, U, 1e-10) and close(als.item_factors_, V, 1e-10)
    tiny = ALS(2, max_iter=2, random_state=0, context=ctx, num_partitions=9).fit(X[:3, :4])  # empty blocks
    assert tiny.user_factors_.shape == (3, 2) and tiny.item_factors_.shape == (4, 2)
    assert_no_bookkeeping(ctx)


def test_unregularised_rows_with_few_ratings_take_the_least_norm_solution(ctx):
    X = sp.csr_matrix(np.array([[1.0, 0, 2.0], [0, 3.0, 0], [4.0, 0, 0]]))
    als = ALS(3, alpha=0.0, max_iter=2, random_state=0, context=ctx).fit(X)   # 1-2 ratings for 3 unknowns
    assert np.isfinite(als.user_factors_).all()
    assert np.allclose(als.predict_pairs(*X.nonzero()), X.data, atol=1e-8)   # a perfect fit exists
    assert_no_bookkeeping(ctx)


# ------------------------------------------------------- the engine's invariants
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), implicit=st.booleans(), group_size=st.sampled_from([1, 3, "auto"]),
       blocks=st.sampled_from([1, 2, 5]), n=st.integers(5, 40), m=st.integers(3, 30))
def test_the_same_bits_for_any_group_size_and_worker_count(contexts, seed, implicit, group_size, blocks, n, m):
    S, mask = low_rank(seed, n=n, m=m, k=2, density=0.4, implicit=implicit)
    X = as_input(S, mask, dense=False)
    fits = {w: ALS(3, implicit=implicit, max_iter=4, random_state=seed, context=c, num_partitions=blocks,
                   group_size=group_size).fit(X) for w, c in contexts.items()}
    one = ALS(3, implicit=implicit, max_iter=4, random_state=seed, context=contexts[2], num_partitions=3,
              group_size=1).fit(X)
    ref = fits[1]
    for f in fits.values():
        assert np.array_equal(f.user_factors_, ref.user_factors_) and np.array_equal(f.item_factors_, ref.item_factors_)
    if implicit:   # Y'Y is summed block by block: another block count rounds differently
        assert close(one.user_factors_, ref.user_factors_, 1e-12) and close(one.item_factors_, ref.item_factors_, 1e-12)
    else:          # each row's sums run in its column order, whatever the blocks
        assert np.array_equal(one.user_factors_, ref.user_factors_)
    for c in contexts.values():
        assert_no_bookkeeping(c)


class KillingALS(ALS):
    """ALS whose send SIGKILLs its worker at the n-th call for user block 0 (once, in any process)."""

    def _send(self):
        return KillAtCall(self.kill_dir, self.kill_at)


class KillAtCall(Send):
    __slots__ = ("directory", "n")

    def __init__(self, directory: str, n: int) -> None:
        self.directory, self.n = directory, n

    def __reduce__(self):
        return (KillAtCall, (self.directory, self.n))

    def __call__(self, key, value, values):
        if key == 0 and count_call(self.directory) >= self.n:
            kill_self_once(self.directory)
        return super().__call__(key, value, values)


@pytest.mark.parametrize("kill_at", [3, 14])
def test_a_worker_killed_mid_fit_changes_no_bit(contexts, tmp_path, kill_at):
    c = contexts[3]
    wait_all_live(c)
    S, mask = low_rank(4, implicit=True)
    X = as_input(S, mask, dense=False)
    params = dict(n_components=4, implicit=True, max_iter=9, random_state=0, context=c, num_partitions=4,
                  group_size=3)
    clean = ALS(**params).fit(X)
    since = len(c.metrics)
    killing = KillingALS(**params)
    killing.kill_dir, killing.kill_at = str(tmp_path), kill_at
    killing.fit(X)
    assert os.path.exists(tmp_path / "killed") and recovered(c.metrics[since:]) >= 1
    assert np.array_equal(killing.user_factors_, clean.user_factors_)
    assert np.array_equal(killing.item_factors_, clean.item_factors_)
    assert killing.loss_curve_ == clean.loss_curve_
    wait_all_live(c)
    assert_no_bookkeeping(c)


# ------------------------------------------------------------ scikit-learn's side
def test_pickle_clone_and_a_pipeline(ctx):
    S, mask = low_rank(5)
    X = as_input(S, mask, dense=False)
    als = ALS(4, random_state=0, context=ctx).fit(X)
    loaded = pickle.loads(pickle.dumps(als))
    assert loaded.context is None and np.array_equal(loaded.transform(X[:10]), als.transform(X[:10]))
    assert np.array_equal(loaded.predict_pairs([1, 2], [3, 4]), als.predict_pairs([1, 2], [3, 4]))
    assert clone(als).context is ctx and not hasattr(clone(als), "user_factors_")
    pipe = make_pipeline(ALS(4, random_state=0, context=ctx), SKKMeans(3, n_init=1, random_state=0)).fit(X)
    assert pipe.predict(X).shape == (X.shape[0],)
    assert np.array_equal(pipe[0].user_factors_, als.user_factors_)
    assert list(als.get_feature_names_out()) == [f"als{i}" for i in range(4)]
    assert_no_bookkeeping(ctx)


def test_not_fitted_bad_input_and_convergence_warning(ctx):
    X = sp.random(20, 10, density=0.3, random_state=0, format="csr")
    with pytest.raises(NotFittedError):
        ALS(context=ctx).transform(X)
    for bad, match in [(dict(n_components=0), "n_components must be an int >= 1"),
                       (dict(alpha=-1.0), "alpha must be a finite number >= 0"),
                       (dict(max_iter=0), "max_iter must be an int >= 1"),
                       (dict(implicit="yes"), "implicit must be True or False"),
                       (dict(confidence=float("nan")), "confidence must be a finite number"),
                       (dict(tol=-1.0), "tol must be a finite number >= 0"),
                       (dict(num_partitions=0), "num_partitions must be an int >= 1")]:
        with pytest.raises(ValueError, match=match):
            ALS(context=ctx, **bad).fit(X)
    Xn = X.toarray()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ALS(context=ctx).fit(Xn)
    als = ALS(3, random_state=0, context=ctx).fit(X)
    with pytest.raises(ValueError, match="10 features"):
        als.transform(X[:, :5])
    with pytest.raises(ValueError, match="integer"):
        als.predict_pairs([0.5], [1])
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        ALS(3, max_iter=2, tol=1e-12, random_state=0, context=ctx).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ALS(3, max_iter=2, random_state=0, context=ctx).fit(X)         # tol=None: max_iter is the plan, no warning
    assert_no_bookkeeping(ctx)
