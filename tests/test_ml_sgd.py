"""SGDClassifier / SGDRegressor: against scikit-learn's and the exact optimum, reproducible, online from a stream.

SGD is stochastic: its results are compared with scikit-learn's by what a user
measures (accuracy, R^2), within stated margins over several seeds, and its
loss with the exact minimiser of the same objective. Between our own runs the
comparison is exact: the mini-batches are drawn from (seed, step, partition).
"""

from __future__ import annotations

import warnings

import drizzle_ml as dml
import ml_support
import numpy as np
import pytest
import scipy.sparse as sp
from drizzle_ml import LinearRegression, LogisticRegression, SGDClassifier, SGDRegressor, run_serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_support import close
from sklearn import datasets
from sklearn import linear_model as sklm
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

import drizzle_core as dz

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(300)

SEEDS = range(2)


def scaled(load):
    X, y = load(return_X_y=True)
    return StandardScaler().fit_transform(X), y


# Accuracy margins: the mean over SEEDS of ours may be this much below scikit-learn's mean (iris is the noisiest:
# 150 rows, one-vs-all on a class that is not linearly separable). Measured: iris hinge 0.960 vs 0.962, log_loss
# 0.947 vs 0.964; breast cancer 0.986 vs 0.982 and 0.983 vs 0.983 (five seeds, 2 workers).
MARGIN = {"iris": 0.04, "breast_cancer": 0.015}


@pytest.mark.parametrize("loss", ["hinge", "log_loss"])
@pytest.mark.parametrize("name", ["iris", "breast_cancer"])
def test_classifier_accuracy_is_sklearns(ctx, name, loss):
    X, y = scaled(getattr(datasets, f"load_{name}"))
    Xs = sp.csr_matrix(X)
    ours = [SGDClassifier(loss=loss, random_state=s, context=ctx).fit(X if s % 2 else Xs, y) for s in SEEDS]
    theirs = [sklm.SGDClassifier(loss=loss, random_state=s).fit(X, y) for s in SEEDS]
    a = np.mean([m.score(X, y) for m in ours])
    b = np.mean([m.score(X, y) for m in theirs])
    assert a >= b - MARGIN[name], (a, b)
    m = ours[0]
    k = len(np.unique(y))
    assert m.coef_.shape == ((1 if k == 2 else k), X.shape[1]) and m.n_iter_ < 1000
    assert hasattr(m, "predict_proba") == (loss == "log_loss")
    if loss == "log_loss":
        p = m.predict_proba(X)
        assert np.allclose(p.sum(axis=1), 1.0) and np.array_equal(m.classes_[p.argmax(axis=1)], m.predict(X))


@pytest.mark.parametrize(("learning_rate", "eta0"), [("constant", 0.01), ("invscaling", 0.05)])
def test_regressor_r2_is_sklearns_on_diabetes(ctx, learning_rate, eta0):
    X, y = scaled(datasets.load_diabetes)
    ours = [SGDRegressor(learning_rate=learning_rate, eta0=eta0, random_state=s, context=ctx)
            .fit(sp.csr_matrix(X) if s % 2 else X, y).score(X, y) for s in SEEDS]
    theirs = [sklm.SGDRegressor(learning_rate=learning_rate, eta0=eta0, random_state=s).fit(X, y).score(X, y)
              for s in SEEDS]
    # measured (five seeds): constant 0.482 vs 0.495, invscaling 0.496 vs 0.510; the best R^2 (OLS) is 0.518
    assert np.mean(ours) >= np.mean(theirs) - 0.03
    assert max(ours) <= LinearRegression(alpha=0.0, context=ctx).fit(X, y).score(X, y) + 1e-9


def test_the_loss_converges_to_the_exact_optimum(ctx):
    """log_loss and squared_error with a constant small step: the objective ends within 2% of its minimum.

    A constant rate is per row (it multiplies the batch's summed gradient): eta0 = 0.2 / 128 is a step of 0.2
    along the mean gradient of a batch of 128.

    The minimiser of mean loss + alpha/2 ||w||^2 is LogisticRegression with C = 1/(alpha n) (Newton), and
    Ridge-like LinearRegression with its alpha = alpha n.
    """
    X, y = scaled(datasets.load_breast_cancer)
    n, alpha = len(y), 1e-2
    sgd = SGDClassifier(loss="log_loss", alpha=alpha, learning_rate="constant", eta0=0.2 / 128, tol=None,
                        max_iter=60, batch_size=128, random_state=0, context=ctx).fit(X, y)
    exact = LogisticRegression(C=1.0 / (alpha * n), tol=1e-10, context=ctx).fit(X, y)

    def objective(coef, b):
        z = X @ coef.ravel() + b
        s = 2 * y - 1
        return np.mean(np.logaddexp(0, -s * z)) + alpha / 2 * coef.ravel() @ coef.ravel()

    best = objective(exact.coef_, exact.intercept_[0])
    assert objective(sgd.coef_, sgd.intercept_[0]) <= best * 1.02
    assert len(sgd.loss_curve_) == 60 and sgd.loss_curve_[-1] < 0.5 * sgd.loss_curve_[0]

    Xd, yd = scaled(datasets.load_diabetes)
    reg = SGDRegressor(alpha=alpha, learning_rate="constant", eta0=0.02 / 64, tol=None, max_iter=60, batch_size=64,
                       random_state=0, context=ctx).fit(Xd, yd)
    ridge = LinearRegression(alpha=alpha * len(yd), context=ctx).fit(Xd, yd)

    def sq(coef, b):
        r = Xd @ coef - yd + b
        return 0.5 * np.mean(r * r) + alpha / 2 * coef @ coef

    assert sq(reg.coef_, reg.intercept_[0]) <= sq(ridge.coef_, ridge.intercept_) * 1.02


def test_tol_stops_early_and_max_iter_warns(ctx):
    X, y = scaled(datasets.load_breast_cancer)
    m = SGDClassifier(random_state=0, context=ctx).fit(X, y)
    assert 5 < m.n_iter_ < 100 and len(m.loss_curve_) == m.n_iter_
    assert m.t_ == 1 + m.n_steps_ * 32 and m.n_steps_ == m.n_iter_ * -(-len(y) // 32)
    with pytest.warns(ConvergenceWarning, match="maximum number of iterations"):
        SGDClassifier(max_iter=2, n_iter_no_change=50, random_state=0, context=ctx).fit(X, y)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(20, 80), classes=st.sampled_from([2, 3]),
       sparse=st.booleans(), group_size=st.sampled_from([1, 7, "auto"]), partitions=st.sampled_from([1, 3, 5]),
       batch_size=st.sampled_from([3, 8, 500]))
def test_bit_for_bit_for_every_group_size_and_worker_count(contexts, seed, n, classes, sparse, group_size,
                                                            partitions, batch_size):
    """The mini-batches depend on (seed, step, partition) only: the same weights for any G, on 1-3 workers.

    For one worker count the result is bit for bit the same for every group size; across worker counts
    the partials are summed in another tree (partition p in slot p % workers), so the last bits may differ.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)
    Xin = sp.csr_matrix(X * (rng.random(X.shape) < 0.6)) if sparse else X
    params = dict(loss="log_loss", max_iter=3, tol=None, batch_size=batch_size, num_partitions=partitions,
                  random_state=seed)
    fits = {w: [SGDClassifier(**params, context=c, group_size=g).fit(Xin, y) for g in (1, group_size)]
            for w, c in contexts.items()}
    for a, b in fits.values():
        assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
        assert a.loss_curve_ == b.loss_curve_
    est = fits[1][0]
    for a, _ in fits.values():
        assert close(a.coef_, est.coef_, 1e-10) and close(a.intercept_, est.intercept_, 1e-10)
    zeros = np.zeros((5, 1 if classes == 2 else classes))
    problem, steps = est._problem(Xin, est._targets(y, est.classes_), None, partitions, zeros, 0, 0.0, seed, 3,
                                  False)
    ref = run_serial(problem, max_iter=steps).state
    # serial folds left to right, as the engine's tree does on one worker
    assert np.array_equal(ref.theta[:4].T, est.coef_)


def test_partial_fit_continues_and_equals_fit_stream(ctx):
    """A stream of micro-batches trains the model as partial_fit on the same batches by hand does."""
    X, y = scaled(datasets.load_breast_cancer)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    per, parts, batches = 20, 2, 10

    def rows(b):
        return [i for p in range(parts) for i in range((b * parts + p) * per, (b * parts + p + 1) * per)]

    class Source:
        def __call__(self, p, b, bt):
            a = (b * parts + p) * per
            return [(X[i], y[i]) for i in range(a, a + per)] if b < batches else []

    online = SGDClassifier(loss="log_loss", random_state=1, context=ctx)
    stream = ctx.stream(dz.GeneratorSource(Source(), parts), batch_interval=0.02)
    seen = []
    trainer = dml.fit_stream(online, stream, classes=[0, 1], on_batch=lambda m, _: seen.append(m.n_steps_))
    stream.run(batches=batches + 2)                          # two empty batches at the end: skipped
    assert trainer.batches == batches and trainer.rows == batches * per * parts
    assert seen == [2 * (b + 1) for b in range(batches)]     # 40 rows per batch: 2 steps of 32
    by_hand = SGDClassifier(loss="log_loss", random_state=1, context=ctx)
    for b in range(batches):
        by_hand.partial_fit(X[rows(b)], y[rows(b)], classes=[0, 1])
    # each batch of 40 rows is one epoch of ceil(40 / 32) = 2 steps of 32 rows drawn: t_ = 1 + rows drawn
    assert np.array_equal(online.coef_, by_hand.coef_) and online.t_ == by_hand.t_ == 1 + batches * 2 * 32
    assert online.score(X, y) > 0.95                          # 400 rows seen once: already a good model
    with pytest.raises(ValueError, match="classes must be passed"):
        SGDClassifier(context=ctx).partial_fit(X, y)
    with pytest.raises(ValueError, match=r"classes=.*not the same"):
        by_hand.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="X has 3 features"):
        by_hand.partial_fit(X[:, :3], y)

    reg = SGDRegressor(random_state=0, context=ctx)
    Xd, yd = scaled(datasets.load_diabetes)
    stream = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [(Xd[i], yd[i]) for i in range(b * 100 + p * 50,
                                                                                             b * 100 + p * 50 + 50)
                                                           if i < len(yd)], 2), batch_interval=0.02)
    dml.fit_stream(reg, stream)
    stream.run(batches=5)
    assert reg.coef_.shape == (10,) and reg.t_ == 1 + 4 * 4 * 32 + 2 * 32     # 4 batches of 100 rows, one of 42
    with pytest.raises(ValueError, match="DStream"):
        dml.fit_stream(reg, [1, 2])


def test_sample_weight_is_the_weighted_objective(ctx):
    """Two halves with other true coefficients, weighted 4:1: the fit finds the weighted least-squares optimum."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 3))
    y = np.where(np.arange(400) < 200, X @ [1.0, 2.0, -1.0], X @ [-1.0, 0.0, 3.0]) + 0.1 * rng.normal(size=400)
    w = np.where(np.arange(400) < 200, 4.0, 1.0)
    reg = SGDRegressor(penalty=None, learning_rate="constant", eta0=0.02 / 64, tol=None, max_iter=40, batch_size=64,
                       random_state=0, context=ctx).fit(X, y, sample_weight=w)
    exact = sklm.LinearRegression().fit(X, y, sample_weight=w)
    unweighted = sklm.LinearRegression().fit(X, y)
    assert np.abs(reg.coef_ - exact.coef_).max() < 0.1 * np.abs(exact.coef_ - unweighted.coef_).max()


def test_warm_start_and_bad_input(ctx):
    X, y = scaled(datasets.load_iris)
    m = SGDClassifier(random_state=0, context=ctx).fit(X, y)
    warm = SGDClassifier(random_state=0, warm_start=True, max_iter=1, tol=None, learning_rate="constant",
                         eta0=1e-9, context=ctx)
    warm.coef_, warm.intercept_, warm.classes_ = m.coef_, m.intercept_, m.classes_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm.fit(X, y)
    assert np.allclose(warm.coef_, m.coef_, atol=1e-5)          # started from m's weights, barely moved
    for bad, match in [(dict(loss="huber"), "loss must be one of"), (dict(batch_size=0), "batch_size"),
                       (dict(alpha=0.0), "learning_rate='optimal' needs"), (dict(eta0=-1.0), "eta0"),
                       (dict(learning_rate="adaptive"), "learning_rate must be one of")]:
        with pytest.raises(ValueError, match=match):
            SGDClassifier(**bad, context=ctx).fit(X, y)
    with pytest.raises(ValueError, match="loss must be one of 'squared_error'"):
        SGDRegressor(loss="hinge", context=ctx).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        SGDClassifier(context=ctx).fit(X, np.zeros(len(y)))
    ds = ctx.parallelize(range(ctx.num_workers), ctx.num_workers)
    assert ctx.run_jobs([(ds, ml_support.sklearn_loaded)], group_size=1)[0] == [False] * ctx.num_workers
