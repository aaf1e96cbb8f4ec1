"""What all drizzle_ml estimators share: scikit-learn conventions, validation before work, progress, threads."""

from __future__ import annotations

import ast
import io
import pathlib
import sys

import drizzle_ml
import ml_support
import numpy as np
import pytest
import scipy.sparse as sp
from drizzle_ml import KMeans, LinearRegression, LogisticRegression, max_blas_threads, worker_blas_threads

import drizzle_core as dz

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(120)

ESTIMATORS = [KMeans, LogisticRegression, LinearRegression]


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) + np.array([0.0, 5.0, -3.0])           # well-conditioned once standardized
    y = (X[:, 0] + rng.normal(size=60) > 0).astype(int)        # not separable
    return X, y


class NoWork:
    """Stands in for ``dz.Context``: being started before the input is checked fails the test."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("a Context was started before the input was checked")


@pytest.fixture
def no_default_context(monkeypatch):
    """No default context exists, and making one fails the test: ``context=None`` fits must fail first."""
    previous = drizzle_ml.set_default_context(None)
    drizzle_ml.close_default_context()
    monkeypatch.setattr(dz, "Context", NoWork)
    yield
    drizzle_ml.set_default_context(previous)


def fitted(cls, ctx, **params):
    X, y = data()
    if cls is KMeans:
        return KMeans(3, random_state=0, context=ctx, **params).fit(X)
    return cls(context=ctx, **params).fit(X, y)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_sklearn_conventions(ctx, cls):
    est = cls()
    params = est.get_params()
    assert {"context", "group_size", "max_iter", "tol", "verbose"} <= set(params)
    assert est.set_params(max_iter=7, group_size=3) is est
    assert est.get_params()["max_iter"] == 7 and est.group_size == 3
    assert "max_iter=7" in repr(est)
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        est.set_params(nope=1)
    with pytest.raises(ValueError, match="not fitted"):
        est.predict(np.zeros((2, 3)))
    X, y = data()
    est = cls(context=ctx, **({"random_state": 0} if cls is KMeans else {}))
    assert (est.fit(X) if cls is KMeans else est.fit(X, y)) is est
    assert est.get_params() == cls(context=ctx, **({"random_state": 0} if cls is KMeans else {})).get_params()
    learned = [a for a in vars(est) if a.endswith("_") and not a.startswith("_")]
    assert {"n_iter_", "loss_curve_", "n_features_in_"} <= set(learned)
    assert len(est.loss_curve_) == est.n_iter_ >= 1
    assert est.predict(X).shape == (60,)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("bad", ["nan", "inf", "sparse-nan", "1-D", "3-D", "empty", "strings"])
def test_bad_X_is_a_value_error_before_any_work(no_default_context, cls, bad):
    X, y = data()
    X = {"nan": np.where(X > 5, np.nan, X), "inf": np.where(X > 5, -np.inf, X),
         "sparse-nan": sp.csr_matrix(np.where(X > 5, np.nan, X)), "1-D": X[:, 0], "3-D": X[None],
         "empty": X[:0], "strings": np.array([["a", "b"]] * 60)}[bad]
    with pytest.raises(ValueError):
        KMeans(2).fit(X) if cls is KMeans else cls().fit(X, y)


def test_bad_targets_are_value_errors_before_any_work(no_default_context):
    X, y = data()
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegression().fit(X, np.zeros(60))
    with pytest.raises(ValueError, match="with a positive sample_weight; got 1 class"):
        LogisticRegression().fit(X, y, sample_weight=(y == 1).astype(float))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        LogisticRegression().fit(X, X[:, 0])
    with pytest.raises(ValueError, match="n_samples=60 should be >= n_clusters=61"):
        KMeans(61).fit(X)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        LinearRegression().fit(X, y[:-1])
    for cls in ESTIMATORS:
        for w, match in ((-np.ones(60), "must be >= 0"), (np.zeros(60), "sums to zero"), (np.ones(59), "59 values"),
                         (np.ones((60, 2)), "1-D")):
            with pytest.raises(ValueError, match=match):
                KMeans(2).fit(X, sample_weight=w) if cls is KMeans else cls().fit(X, y, sample_weight=w)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("param", [{"group_size": 0}, {"group_size": "fast"}, {"group_size": True},
                                   {"max_iter": 0}, {"tol": -1.0}, {"context": "local"},
                                   {"num_partitions": 0}])
def test_bad_params_are_value_errors_before_any_work(no_default_context, cls, param):
    X, y = data()
    with pytest.raises(ValueError):
        KMeans(2, **param).fit(X) if cls is KMeans else cls(**param).fit(X, y)


class _Terminal(io.StringIO):
    """stderr as a terminal of 100 columns: the bar draws only on one."""

    def isatty(self):
        return True

    def fileno(self):
        raise io.UnsupportedOperation("no descriptor")


def test_verbose_draws_the_engines_progress_bar_with_the_loss(ctx, monkeypatch, capsys):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setenv("COLUMNS", "100")
    fitted(LogisticRegression, ctx, verbose=True)
    fitted(KMeans, ctx, verbose=True)
    text = term.getvalue()
    assert capsys.readouterr().out == ""
    assert "LogisticRegression" in text and "KMeans" in text
    assert "loss=" in text and "converged" in text  # (stale characters: tests/test_progress.py, the same bar)


def test_verbose_draws_nothing_when_stderr_is_not_a_terminal(ctx, capsys):
    fitted(LogisticRegression, ctx, verbose=True)
    assert capsys.readouterr().err == ""


def test_workers_run_one_blas_thread(ctx):
    pytest.importorskip("threadpoolctl")  # optional by design: a dependency of scikit-learn, not of drizzle_ml
    infos = worker_blas_threads(ctx)
    assert len({info["pid"] for info in infos}) == ctx.num_workers
    assert max_blas_threads(infos) == 1
    assert all(info["env"]["OPENBLAS_NUM_THREADS"] == "1" for info in infos)


def test_without_a_context_the_default_one_is_shared_and_closed(no_orphans):
    dml = drizzle_ml
    previous = dml.set_default_context(None)
    try:
        fits = [fitted(cls, None) for cls in ESTIMATORS]
        assert all(est.n_iter_ >= 1 and est.context is None for est in fits)
        default = dml.default_context()
        assert default.transport_name == "local" and not default.closed
        n = len(default.metrics)
        fitted(KMeans, None)
        assert dml.default_context() is default and len(default.metrics) > n
    finally:
        dml.close_default_context()          # its workers end here (no_orphans checks), else at exit
        dml.set_default_context(previous)
    assert default.closed


def test_same_fit_on_a_shared_context_and_on_the_default_one(ctx):
    previous = drizzle_ml.set_default_context(ctx.__class__(transport="local", workers=2))
    try:
        a = fitted(LogisticRegression, ctx, num_partitions=2, tol=1e-6)
        b = fitted(LogisticRegression, None, num_partitions=2, tol=1e-6)
        assert np.array_equal(a.coef_, b.coef_)
    finally:
        drizzle_ml.default_context().stop()
        drizzle_ml.set_default_context(previous)


def test_uses_only_the_public_api_of_drizzle_core():
    """No module of drizzle_ml imports drizzle_core's private modules or names."""
    root = pathlib.Path(drizzle_ml.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("drizzle_core"):
                assert node.module == "drizzle_core", f"{path.name} imports {node.module}"
                assert not any(a.name.startswith("_") for a in node.names), path.name
            if isinstance(node, ast.Import):
                assert all(a.name == "drizzle_core" or not a.name.startswith("drizzle_core")
                           for a in node.names), path.name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "dz":
                assert not node.attr.startswith("_"), f"{path.name} uses dz.{node.attr}"


def test_public_names():
    assert {"KMeans", "LogisticRegression", "LinearRegression"} <= set(drizzle_ml.__all__)
    for name in drizzle_ml.__all__:
        assert hasattr(drizzle_ml, name)


def _problems():
    X, y = data()
    yc = X @ np.array([1.0, -2.0, 0.5]) + 0.1
    out = [("KMeans", KMeans(3, random_state=0).make_problem(X, 3)),
           ("LinearRegression", LinearRegression().make_problem(X, yc, 3)),
           ("PCA", drizzle_ml.PCA(2, random_state=0).make_problem(X, 3)),
           ("SGDClassifier", drizzle_ml.SGDClassifier(random_state=0, batch_size=8).make_problem(X, y, 3)[0]),
           ("MiniBatchKMeans", drizzle_ml.MiniBatchKMeans(3, random_state=0, batch_size=8).make_problem(X, 3)[0])]
    for solver in ("gd", "newton", "lbfgs"):
        out.append((f"LogisticRegression({solver})", LogisticRegression(solver=solver).make_problem(X, y, 3)))
    return out


@pytest.mark.parametrize("name, problem", _problems(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_update_returns_a_new_state_and_leaves_its_argument_alone(name, problem):
    # drizzle_ml.run runs iterate with copy_state=False: no update may change the state it is given
    import pickle

    state = problem.init
    for _ in range(6):
        total = None
        for block in problem.blocks:
            partial = problem.local([block], state)
            total = partial if total is None else problem.combine(total, partial)
        before = pickle.dumps(state)
        new = problem.update(state, total)
        assert pickle.dumps(state) == before, f"{name}'s update changed its state argument"
        state = new
