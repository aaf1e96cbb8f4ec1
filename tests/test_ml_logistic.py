"""LogisticRegression: against scikit-learn, and itself across group sizes, workers, dense and sparse."""

from __future__ import annotations

import warnings

import ml_support
import numpy as np
import pytest
import scipy.sparse as sp
from drizzle_ml import ConvergenceWarning, LogisticRegression, run_serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_support import close, sparsify
from sklearn.linear_model import LogisticRegression as SKLogisticRegression

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(300)


def classification(seed: int, n: int, d: int, classes: int = 2):
    """A well-conditioned problem: standard normal features, labels drawn from a logistic model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, classes)) * 0.8
    logits = X @ W + rng.normal(size=classes) * 0.3
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return X, y


def sklearn_fit(X, y, penalty, C=1.0):
    # penalty=None is C=inf in scikit-learn >= 1.8 (its penalty argument is deprecated)
    return SKLogisticRegression(C=np.inf if penalty is None else C, tol=1e-12, max_iter=100_000).fit(X, y)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(("penalty", "C"), [("l2", 1.0), ("l2", 0.05), (None, 1.0)])
def test_binary_converges_to_sklearn(ctx, penalty, C, sparse):
    X, y = classification(seed=1, n=400, d=5)
    Xin = sparsify(X, 0.6, seed=1) if sparse else X
    labels = np.array(["no", "yes"])[y]
    lr = LogisticRegression(penalty=penalty, C=C, tol=1e-8, max_iter=5000, context=ctx).fit(Xin, labels)
    sk = sklearn_fit(Xin, labels, penalty, C)
    assert lr.coef_.shape == (1, 5) and lr.intercept_.shape == (1,)
    assert close(lr.coef_, sk.coef_, 1e-4)
    assert close(lr.intercept_, sk.intercept_, 1e-4)
    assert list(lr.classes_) == ["no", "yes"]
    assert np.array_equal(lr.predict(Xin), sk.predict(Xin))
    assert close(lr.predict_proba(Xin), sk.predict_proba(Xin), 1e-4)
    assert len(lr.loss_curve_) == lr.n_iter_
    assert all(b <= a for a, b in zip(lr.loss_curve_, lr.loss_curve_[1:]))   # accepted steps only


def test_without_intercept(ctx):
    X, y = classification(seed=2, n=300, d=4)
    lr = LogisticRegression(fit_intercept=False, tol=1e-8, context=ctx).fit(X, y)
    sk = SKLogisticRegression(fit_intercept=False, tol=1e-12, max_iter=10_000).fit(X, y)
    assert close(lr.coef_, sk.coef_, 1e-4)
    assert np.array_equal(lr.intercept_, [0.0])


def test_multinomial_converges_to_sklearn(ctx):
    X, y = classification(seed=3, n=500, d=4, classes=3)
    lr = LogisticRegression(tol=1e-8, max_iter=5000, context=ctx).fit(X, y)
    sk = sklearn_fit(X, y, "l2")
    assert lr.coef_.shape == (3, 4) and lr.intercept_.shape == (3,)
    assert close(lr.coef_, sk.coef_, 1e-4)
    assert close(lr.intercept_, sk.intercept_, 1e-4)
    assert close(lr.predict_proba(X), sk.predict_proba(X), 1e-4)
    assert np.array_equal(lr.predict(X), sk.predict(X))


def test_engine_matches_the_serial_reference(ctx):
    X, y = classification(seed=4, n=300, d=3)
    est = LogisticRegression(tol=1e-6, context=ctx)
    ref = run_serial(est.make_problem(X, y, num_partitions=ctx.num_workers), max_iter=1000)
    lr = est.fit(X, y)
    assert lr.n_iter_ == ref.iterations
    assert close(lr.coef_.ravel(), ref.state.best[:3], 1e-12)


def test_a_huge_learning_rate_is_halved_not_diverging(ctx):
    X, y = classification(seed=5, n=300, d=3)
    good = LogisticRegression(tol=1e-8, context=ctx).fit(X, y)
    wild = LogisticRegression(tol=1e-8, learning_rate=1e4, max_iter=5000, context=ctx).fit(X, y)
    assert close(wild.coef_, good.coef_, 1e-6)


def test_max_iter_reached_warns(ctx):
    X, y = classification(seed=6, n=100, d=3)
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations"):
        lr = LogisticRegression(tol=0.0, max_iter=3, context=ctx).fit(X, y)
    assert lr.n_iter_ == 3 and len(lr.loss_curve_) == 3


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(10, 150), d=st.integers(1, 5), classes=st.sampled_from([2, 3]),
       sparse=st.booleans(), penalty=st.sampled_from(["l2", None]), group_size=st.sampled_from([2, 5, "auto"]),
       num_partitions=st.sampled_from([None, 1, 4]))
def test_same_result_for_every_group_size_and_worker_count(contexts, seed, n, d, classes, sparse, penalty,
                                                           group_size, num_partitions):
    X, y = classification(seed, n, d, classes)
    if len(np.unique(y)) < 2:
        y[0] = 1 - y[0] if classes == 2 else (y[0] + 1) % classes
    Xin = sparsify(X, 0.5, seed) if sparse else X
    params = dict(penalty=penalty, tol=1e-5, max_iter=60, num_partitions=num_partitions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # 60 iterations may not be enough: no matter
        base = {w: LogisticRegression(**params, context=c, group_size=1).fit(Xin, y) for w, c in contexts.items()}
        other = {w: LogisticRegression(**params, context=c, group_size=group_size).fit(Xin, y)
                 for w, c in contexts.items()}
    for w in contexts:
        a, b = base[w], other[w]
        assert a.n_iter_ == b.n_iter_
        assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
        assert a.loss_curve_ == b.loss_curve_
    # Across worker counts the sums are combined in another order. Newton's solve amplifies that rounding by
    # the Hessian's condition number, large on tiny or (nearly) separable samples without a penalty; the
    # losses stay close.
    ref = base[1]
    rel = 1e-12 if penalty == "l2" and n >= 30 else 1e-7
    for w in contexts:
        assert base[w].n_iter_ == ref.n_iter_
        assert close(base[w].coef_, ref.coef_, rel) and close(base[w].intercept_, ref.intercept_, rel)
        assert close(base[w].loss_curve_, ref.loss_curve_, 1e-10)


def test_bad_input_is_a_value_error(ctx):
    X, y = classification(seed=7, n=50, d=3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegression(context=ctx).fit(X, np.ones(50))
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[50, 49\]"):
        LogisticRegression(context=ctx).fit(X, y[:49])
    with pytest.raises(ValueError, match="y should be a 1d array"):
        LogisticRegression(context=ctx).fit(X, np.c_[y, y])
    with pytest.raises(ValueError, match="penalty"):
        LogisticRegression(penalty="l1", context=ctx).fit(X, y)
    with pytest.raises(ValueError, match="C must be"):
        LogisticRegression(C=0.0, context=ctx).fit(X, y)
    with pytest.raises(ValueError, match="learning_rate"):
        LogisticRegression(learning_rate=-1.0, context=ctx).fit(X, y)
    with pytest.raises(ValueError, match="Input X contains infinity"):
        LogisticRegression(context=ctx).fit(sp.csr_matrix(np.where(X > 1.5, np.inf, X)), y)
    lr = LogisticRegression(context=ctx).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but LogisticRegression is expecting 3 features"):
        lr.predict(X[:, :2])
