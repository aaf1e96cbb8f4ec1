"""LogisticRegression(solver="lbfgs"): against scikit-learn's lbfgs, against itself across group sizes and workers,
and the optimizer's own rules (line search, history, stopping) on functions with known answers."""

from __future__ import annotations

import warnings

import ml_support
import numpy as np
import pytest
import scipy.sparse as sp
from drizzle_ml import ConvergenceWarning, Fit, LogisticRegression, Problem, run_serial
from drizzle_ml import _lbfgs as L
from drizzle_ml._logistic import NEWTON_MAX_PARAMS, record_fit
from drizzle_ml._losses import SoftmaxLocal, binary_local
from drizzle_ml._trial_losses import BinaryTrials, SoftmaxTrials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_support import close, sparsify
from scipy.optimize import minimize, rosen, rosen_der
from sklearn import datasets
from sklearn.linear_model import LogisticRegression as SKLogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(240)


def sklearn_fit(X, y, sample_weight=None, **params):
    # one thread: scikit-learn's OpenMP loss next to the worker processes on 2 cores took 19 s instead of 0.5 s
    with threadpool_limits(1):
        return SKLogisticRegression(solver="lbfgs", **params).fit(X, y, sample_weight=sample_weight)


def generated(seed: int, n: int, d: int, classes: int = 2):
    """Features of unequal scales and offsets; labels drawn from a logistic (softmax) model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(size=d)
    W = rng.normal(size=(d, classes)) * 0.6
    logits = X @ W + rng.normal(size=classes)
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return X, y


def load(name: str):
    """scikit-learn's data sets as its own lbfgs examples use them: scaled where raw scales differ by 10^3."""
    if name.startswith("generated"):
        return generated(7, 1500, 12, classes=4 if name == "generated4" else 2)
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if name == "digits":
        return X / 16.0, y                                 # pixel intensities in [0, 1]
    if name in ("wine", "breast_cancer"):
        return StandardScaler().fit_transform(X), y
    return X, y


def weights(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 3.0, size=n)


# --------------------------------------------------------------- against scikit-learn
@pytest.mark.parametrize(("name", "sparse", "weighted"), [
    ("iris", False, False), ("iris", False, True), ("digits", False, False), ("digits", True, True),
    ("wine", False, False), ("breast_cancer", False, True), ("breast_cancer", True, False),
    ("generated", True, True), ("generated4", False, True),
])
def test_coefficients_match_sklearns_lbfgs(ctx, name, sparse, weighted):
    """At tol=1e-8 (scikit-learn's at 1e-10) both sit within 1e-4 of the one optimum: l2 makes it unique, up to a
    constant added to every softmax intercept, and from 0 both solvers stay on the zero-sum intercepts."""
    X, y = load(name)
    Xin = sp.csr_matrix(X) if sparse else X              # digits is 50 % zeros, the others become CSR as they are
    w = weights(len(y), 3) if weighted else None
    ours = LogisticRegression(solver="lbfgs", tol=1e-8, max_iter=2000, context=ctx).fit(Xin, y, sample_weight=w)
    sk = sklearn_fit(Xin, y, w, tol=1e-10, max_iter=10_000)
    assert ours.coef_.shape == sk.coef_.shape and ours.intercept_.shape == sk.intercept_.shape
    assert close(ours.coef_, sk.coef_, 1e-4)
    assert close(ours.intercept_, sk.intercept_, 1e-4)
    assert close(ours.predict_proba(Xin), sk.predict_proba(Xin), 1e-5)
    assert np.array_equal(ours.predict(Xin), sk.predict(Xin))
    assert len(ours.loss_curve_) == ours.n_iter_
    assert all(b <= a + 1e-12 * abs(a) for a, b in zip(ours.loss_curve_, ours.loss_curve_[1:]))


@pytest.mark.parametrize("name", ["iris", "digits", "wine", "breast_cancer", "generated", "generated4"])
def test_iterations_are_sklearns_tens_not_hundreds(ctx, name):
    """Default tol: iterations within 2x scikit-learn's lbfgs's (gradient descent needs 3,100 on breast cancer)."""
    X, y = load(name)
    ours = LogisticRegression(solver="lbfgs", context=ctx).fit(X, y)
    sk = sklearn_fit(X, y, max_iter=1000)
    assert ours.n_iter_ <= 2 * int(np.max(sk.n_iter_)), (ours.n_iter_, sk.n_iter_)
    assert ours.n_iter_ < 100
    assert np.abs(ours.coef_ - sk.coef_).max() <= 0.05 * max(1.0, float(np.abs(sk.coef_).max()))


def test_without_intercept_and_without_penalty(ctx):
    X, y = generated(11, 800, 6)
    for params in (dict(fit_intercept=False), dict(penalty=None)):
        ours = LogisticRegression(solver="lbfgs", tol=1e-9, max_iter=1000, context=ctx, **params).fit(X, y)
        sk_params = dict(fit_intercept=params.get("fit_intercept", True), C=np.inf if "penalty" in params else 1.0)
        sk = sklearn_fit(X, y, tol=1e-11, max_iter=10_000, **sk_params)
        assert close(ours.coef_, sk.coef_, 1e-5) and close(ours.intercept_, sk.intercept_, 1e-5)
    assert np.array_equal(LogisticRegression(solver="lbfgs", fit_intercept=False, context=ctx).fit(X, y).intercept_,
                          [0.0])


def test_sample_weight_is_repeated_rows(ctx):
    """The same objective, so the same path up to rounding (59 iterations each; 6.6e-12 apart at the end, measured)
    and the same optimum."""
    X, y = load("breast_cancer")
    w = np.random.default_rng(5).integers(1, 4, size=len(y))
    a = LogisticRegression(solver="lbfgs", tol=1e-9, max_iter=1000, context=ctx).fit(X, y, sample_weight=w)
    b = LogisticRegression(solver="lbfgs", tol=1e-9, max_iter=1000, context=ctx).fit(np.repeat(X, w, axis=0),
                                                                                     np.repeat(y, w))
    assert close(a.coef_, b.coef_, 1e-8) and close(a.intercept_, b.intercept_, 1e-8)
    assert a.loss_curve_[-1] == pytest.approx(b.loss_curve_[-1], rel=1e-12)


# ------------------------------------------------------------ the engine against itself
def test_engine_matches_the_serial_reference(ctx):
    X, y = generated(4, 600, 5, classes=3)
    est = LogisticRegression(solver="lbfgs", tol=1e-6, context=ctx)
    ref = run_serial(est.make_problem(X, y, num_partitions=ctx.num_workers), max_iter=1000)
    lr = est.fit(X, y)
    assert lr.n_iter_ == ref.iterations and ref.converged
    assert close(np.concatenate([lr.coef_.T.ravel(), lr.intercept_]), ref.state.best, 1e-12)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(12, 150), d=st.integers(1, 6), classes=st.sampled_from([2, 3]),
       sparse=st.booleans(), weighted=st.booleans(), penalty=st.sampled_from(["l2", None]),
       group_size=st.sampled_from([2, 5, "auto"]), num_partitions=st.sampled_from([None, 1, 4]))
def test_same_result_for_every_group_size_and_worker_count(contexts, seed, n, d, classes, sparse, weighted, penalty,
                                                           group_size, num_partitions):
    """Bit for bit across group sizes (the fold order is fixed by the lineage); across worker counts bit for bit
    when the fold is the same (one partition), else equal to rounding, since another count folds the partitions'
    sums in another tree."""
    X, y = generated(seed, n, d, classes)
    y[:classes] = np.arange(classes)                         # every class present
    Xin = sparsify(X, 0.5, seed) if sparse else X
    w = weights(n, seed) if weighted else None
    params = dict(solver="lbfgs", penalty=penalty, tol=1e-6, max_iter=40, num_partitions=num_partitions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # 40 iterations may not be enough: no matter
        base = {k: LogisticRegression(**params, context=c, group_size=1).fit(Xin, y, sample_weight=w)
                for k, c in contexts.items()}
        other = {k: LogisticRegression(**params, context=c, group_size=group_size).fit(Xin, y, sample_weight=w)
                 for k, c in contexts.items()}
    for k in contexts:
        a, b = base[k], other[k]
        assert a.n_iter_ == b.n_iter_ and a.loss_curve_ == b.loss_curve_
        assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
    ref = base[1]
    for k in contexts:
        if num_partitions == 1:
            assert np.array_equal(base[k].coef_, ref.coef_) and base[k].loss_curve_ == ref.loss_curve_
        else:
            # rounding differences may shift where a line search or the stop lands; the losses stay together
            assert abs(base[k].loss_curve_[-1] - ref.loss_curve_[-1]) <= 1e-6 * max(1.0, ref.loss_curve_[-1])


def test_workers_never_import_sklearn(ctx):
    X, y = load("iris")
    LogisticRegression(solver="lbfgs", context=ctx).fit(sp.csr_matrix(X), y)
    ds = ctx.parallelize(range(ctx.num_workers), ctx.num_workers)
    assert ctx.run_jobs([(ds, ml_support.sklearn_loaded)], group_size=1)[0] == [False] * ctx.num_workers


# ------------------------------------------------------------- estimator semantics
def test_max_iter_warns_and_warm_start_at_the_optimum(ctx):
    X, y = load("breast_cancer")
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations"):
        lr = LogisticRegression(solver="lbfgs", tol=0.0, max_iter=3, context=ctx).fit(X, y)
    assert lr.n_iter_ == 3 and len(lr.loss_curve_) == 3
    warm = LogisticRegression(solver="lbfgs", tol=1e-6, warm_start=True, context=ctx).fit(X, y)
    warm.fit(X, y)                                           # the first pass evaluates the optimum: done
    assert warm.n_iter_ == 1


def test_auto_is_lbfgs_above_the_newton_limit_and_bad_solver_names_the_choices():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, NEWTON_MAX_PARAMS)), np.arange(40) % 2
    assert isinstance(LogisticRegression().make_problem(X, y, 2).update, L.LBFGSUpdate)
    assert not isinstance(LogisticRegression().make_problem(X[:, :10], y, 2).update, L.LBFGSUpdate)
    with pytest.raises(ValueError, match="solver must be one of 'auto', 'newton', 'lbfgs', 'gd'; got 'bfgs'"):
        LogisticRegression(solver="bfgs").make_problem(X, y, 2)


def test_a_stalled_fit_warns():
    """``status == "stalled"`` (no step lowers the loss) ends the loop as converged; the estimator still warns."""
    state = L.initial_state(np.zeros(2))
    stalled = L.LBFGSState(state.best, 1.0, np.ones(2), 1.0, state.direction, state.steps, state.S, state.Y,
                           state.rho, state.search, "stalled")
    fit = Fit(state=stalled, records=[1.0] * 7, iterations=7, converged=True, seconds=0.0)
    est = LogisticRegression(tol=1e-4)
    with pytest.warns(ConvergenceWarning, match="stopped after 7 iterations: no step"):
        record_fit(est, fit)
    assert est.n_iter_ == 7


# ----------------------------------------------------------------- the kernels
class GuardedCSR(sp.csr_matrix):
    """A CSR matrix that fails on any densifying or copying conversion: the kernels must use it as it is."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("the kernel densified or copied its CSR block")

    toarray = todense = copy = tocoo = tocsc = astype = __array__ = _refuse


@pytest.mark.parametrize("classes", [2, 3, 6])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_trial_kernels_equal_the_one_point_kernels_at_every_step(classes, sparse):
    rng = np.random.default_rng(classes)
    n, d = 400, 9
    X = rng.normal(size=(n, d)) * 4
    if sparse:
        X = GuardedCSR(sparsify(X, 0.3, classes))
    y = rng.integers(0, classes, size=n)
    steps = np.array([1.0, 0.5, 2.0, 0.0, 40.0])             # 40: margins of hundreds, the exponent floor at work
    for s in (None, rng.uniform(0.0, 2.0, size=n)):
        for intercept in (True, False):
            K = 1 if classes == 2 else classes
            p = d * K + (K if intercept else 0)
            x, direction = rng.normal(size=p), rng.normal(size=p)
            target = y.astype(np.float64) if classes == 2 else y
            kernel, one = (BinaryTrials(), binary_local) if classes == 2 else (SoftmaxTrials(classes),
                                                                              SoftmaxLocal(classes))
            state = L.initial_state(x)
            state = L.LBFGSState(x, 0.0, x, 0.0, direction, steps, state.S, state.Y, state.rho, state.search,
                                 "running")
            out = kernel([(X, target, s)], state).reshape(len(steps), p + 1)
            for k, a in enumerate(steps):
                ref = one([(X, target, s)], _Theta(x + a * direction))
                assert close(out[k], ref, 1e-11), (k, a, np.abs(out[k] - ref).max())


class _Theta:
    def __init__(self, theta):
        self.theta = theta


# --------------------------------------------------- the optimizer on known functions
class RosenbrockTrials:
    """A kernel for the whole of scipy's Rosenbrock function: ``[grad | f]`` at every trial step."""

    def __init__(self, lie: bool = False) -> None:
        self.lie = lie                                       # report minus the gradient: no step can descend

    def __call__(self, partition, state):
        rows = []
        for a in state.steps:
            x = state.best + a * state.direction
            g = rosen_der(x)
            rows.append(np.append(-g if self.lie else g, rosen(x)))
        return np.concatenate(rows)


def rosenbrock(x0, lie=False, tol=1e-6) -> Problem:
    return Problem(blocks=[None], init=L.initial_state(np.asarray(x0, dtype=float)), local=RosenbrockTrials(lie),
                   combine=np.add, update=L.LBFGSUpdate(1.0, 0, 0.0), until=L.LBFGSUntil(tol), loss=lambda s: s.loss)


@pytest.mark.parametrize("x0", [[-1.2, 1.0], [3.0, -40.0], [10.0, 10.0]], ids=["classic", "far", "steep"])
def test_rosenbrock_as_scipy(x0):
    """The minimum (1, 1) in about scipy's L-BFGS-B iterations (37, 75, 28 passes against its 36, 60, 46),
    however far the unit-length first step is from the right one; every pass that continues a line search
    looks strictly inside its bracket, or beyond it while all steps were too short."""
    x0 = np.array(x0)
    fit = run_serial(rosenbrock(x0), max_iter=500, keep_history=True)
    nit = minimize(rosen, x0, jac=rosen_der, method="L-BFGS-B", options={"gtol": 1e-6, "maxcor": 10}).nit
    assert fit.converged and fit.state.grad_max <= 1e-6
    assert np.allclose(fit.state.best, [1.0, 1.0], atol=1e-5)
    assert fit.iterations <= 2 * nit + 10, (fit.iterations, nit)
    bracketed = [s for s in fit.history if s.search.passes]
    assert bracketed                                         # the bracket's paths ran
    for s in bracketed:
        if np.isfinite(s.search.hi):
            lo, hi = sorted((s.search.lo, s.search.hi))
            assert ((s.steps > lo) & (s.steps < hi)).all()
        else:
            assert (s.steps > s.search.lo).all()
    assert all(s.S.shape[0] <= L.MEMORY for s in fit.history) and fit.state.S.shape[0] == L.MEMORY


def test_a_direction_that_cannot_descend_stalls():
    """With the gradient's sign flipped every trial raises the loss: the bracket closes on 0 after
    MAX_SEARCH_PASSES passes, there is no history to drop, and the state says stalled at the start point."""
    x0 = np.array([-1.2, 1.0])
    fit = run_serial(rosenbrock(x0, lie=True), max_iter=100)
    assert fit.converged and fit.state.status == "stalled"
    assert fit.iterations == 1 + L.MAX_SEARCH_PASSES
    assert np.array_equal(fit.state.best, x0) and fit.state.loss == rosen(x0)


def test_the_loss_stopping_to_move_is_convergence():
    """tol=0 can never be met by the gradient; the fit ends by scikit-learn's ftol rule instead, without a warning."""
    X, y = generated(2, 300, 3)
    fit = run_serial(LogisticRegression(solver="lbfgs", tol=0.0).make_problem(X, y, 2), max_iter=500)
    assert fit.converged and fit.state.status == "converged" and fit.iterations < 500
