"""LinearRegression: least squares and ridge against scikit-learn; invariance across group sizes and workers."""

from __future__ import annotations

import ml_support
import numpy as np
import pytest
from drizzle_ml import LinearRegression
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_support import close, sparsify
from sklearn.linear_model import LinearRegression as SKLinearRegression
from sklearn.linear_model import Ridge

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(300)


def regression(seed: int, n: int, d: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + 1.0
    y = X @ rng.normal(size=d) + 2.0 + 0.1 * rng.normal(size=n)
    return X, y


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("alpha", [0.0, 5.0])
def test_converges_to_sklearn(ctx, alpha, sparse):
    X, y = regression(seed=1, n=300, d=4)
    Xin = sparsify(X, 0.7, seed=1) if sparse else X
    lr = LinearRegression(alpha=alpha, tol=1e-10, max_iter=20_000, context=ctx).fit(Xin, y)
    sk = (Ridge(alpha=alpha, tol=1e-12) if alpha else SKLinearRegression()).fit(Xin, y)
    assert lr.coef_.shape == (4,) and isinstance(lr.intercept_, float)
    assert close(lr.coef_, sk.coef_, 1e-6)
    assert lr.intercept_ == pytest.approx(sk.intercept_, abs=1e-6)
    assert close(lr.predict(Xin), sk.predict(Xin), 1e-6)
    assert lr.score(Xin, y) == pytest.approx(sk.score(Xin, y), abs=1e-9)
    assert len(lr.loss_curve_) == lr.n_iter_


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(5, 150), d=st.integers(1, 5), sparse=st.booleans(),
       alpha=st.sampled_from([0.0, 1.0]), group_size=st.sampled_from([2, 4, "auto"]))
def test_same_result_for_every_group_size_and_worker_count(contexts, seed, n, d, sparse, alpha, group_size):
    X, y = regression(seed, n, d)
    Xin = sparsify(X, 0.6, seed) if sparse else X
    params = dict(alpha=alpha, tol=1e-6, max_iter=40)
    import warnings

    from drizzle_ml import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        base = {w: LinearRegression(**params, context=c, group_size=1).fit(Xin, y) for w, c in contexts.items()}
        other = {w: LinearRegression(**params, context=c, group_size=group_size).fit(Xin, y)
                 for w, c in contexts.items()}
    for w in contexts:
        assert base[w].n_iter_ == other[w].n_iter_
        assert np.array_equal(base[w].coef_, other[w].coef_) and base[w].intercept_ == other[w].intercept_
    # across worker counts the sums are combined in another order; the solve (the normal equations)
    # amplifies that rounding by the condition number of the Hessian
    A = np.c_[Xin.toarray() if sparse else X, np.ones(n)]
    rel = 1e-14 * max(100.0, float(np.linalg.cond(A.T @ A + alpha * np.eye(d + 1))))
    for w in contexts:
        assert base[w].n_iter_ == base[1].n_iter_
        assert close(base[w].coef_, base[1].coef_, rel)
        assert base[w].intercept_ == pytest.approx(base[1].intercept_, rel=rel, abs=rel)


def test_bad_input_is_a_value_error(ctx):
    X, y = regression(seed=2, n=20, d=2)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        LinearRegression(context=ctx).fit(X[:, 0], y)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        LinearRegression(context=ctx).fit(X, np.where(y > 2, np.nan, y))
    with pytest.raises(ValueError, match="alpha"):
        LinearRegression(alpha=-1.0, context=ctx).fit(X, y)
