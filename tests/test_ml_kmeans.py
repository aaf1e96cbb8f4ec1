"""KMeans: against a plain numpy Lloyd loop, scikit-learn, and itself across group sizes and workers."""

from __future__ import annotations

import ml_support
import numpy as np
import pytest
import scipy.sparse as sp
from drizzle_ml import ConvergenceWarning, KMeans, run_serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_support import blobs, close, sparsify
from sklearn.cluster import KMeans as SKKMeans

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(300)


def numpy_lloyd(X: np.ndarray, init: np.ndarray, max_iter: int, tol: float):
    """Lloyd's algorithm written plainly (explicit differences): centers, labels, inertia, n_iter, inertias."""
    C = init.copy()
    k = len(C)
    tol_abs = tol * X.var(axis=0).mean()
    inertias = []
    for _ in range(max_iter):
        D = ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
        labels = D.argmin(axis=1)
        inertias.append(D.min(axis=1).sum())
        new = np.array([X[labels == j].mean(axis=0) if (labels == j).any() else C[j] for j in range(k)])
        shift = ((new - C) ** 2).sum()
        C = new
        if shift <= tol_abs:
            break
    labels = ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    return C, labels, ((X - C[labels]) ** 2).sum(), len(inertias), np.array(inertias)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_matches_numpy_lloyd_and_sklearn(ctx, sparse):
    X, init = blobs(seed=1, n=300, d=4, k=5, spread=3.0)
    Xin = sp.csr_matrix(X) if sparse else X
    km = KMeans(5, init=init, context=ctx, group_size=3).fit(Xin)
    C, labels, inertia, n_iter, inertias = numpy_lloyd(X, init, 300, 1e-4)
    assert km.n_iter_ == n_iter
    assert close(km.cluster_centers_, C, 1e-9)
    assert (km.labels_ == labels).all()
    assert km.inertia_ == pytest.approx(inertia, rel=1e-9)
    assert close(km.loss_curve_, inertias, 1e-9)
    sk = SKKMeans(5, init=init, n_init=1, algorithm="lloyd").fit(Xin)
    assert close(km.cluster_centers_, sk.cluster_centers_, 1e-6)
    assert (km.labels_ == sk.labels_).all()
    assert km.n_iter_ == sk.n_iter_
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-6)


def test_fixed_iterations_follow_the_numpy_loop_step_by_step(ctx):
    # overlapping blobs: many iterations, every one of them compared through the loss curve
    X, init = blobs(seed=2, n=400, d=3, k=6, spread=1.0)
    for max_iter in (1, 2, 5):
        km = KMeans(6, init=init, max_iter=max_iter, tol=0.0, context=ctx, group_size=2).fit(X)
        C, labels, _, n_iter, inertias = numpy_lloyd(X, init, max_iter, 0.0)
        assert km.n_iter_ == n_iter == max_iter
        assert close(km.cluster_centers_, C, 1e-9)
        assert (km.labels_ == labels).all()
        assert close(km.loss_curve_, inertias, 1e-9)


def test_engine_matches_the_serial_reference(ctx):
    X, init = blobs(seed=3, n=500, d=5, k=4, spread=1.5)
    est = KMeans(4, init=init, context=ctx)
    problem = est.make_problem(X, num_partitions=ctx.num_workers)
    ref = run_serial(problem, max_iter=300)
    km = est.fit(X)
    assert km.n_iter_ == ref.iterations
    assert close(km.cluster_centers_, ref.state.centers, 1e-12)
    assert (km.labels_ == np.concatenate([lab for lab, _ in ref.finished])).all()


def _fit_all(X, k, init, contexts, group_size, num_partitions=None):
    return {w: KMeans(k, init=init, context=c, group_size=group_size, num_partitions=num_partitions).fit(X)
            for w, c in contexts.items()}


# Sparse rows give duplicate initial centers now and then (two empty rows + 0.01): KMeans then warns, as
# scikit-learn's does, that it found fewer distinct clusters; what this test checks holds all the same.
@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 120), d=st.integers(1, 4), k=st.integers(1, 5),
       sparse=st.booleans(), group_size=st.sampled_from([2, 3, 7, "auto"]),
       num_partitions=st.sampled_from([None, 1, 3, 5]))
def test_same_result_for_every_group_size_and_worker_count(contexts, seed, n, d, k, sparse, group_size,
                                                           num_partitions):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 4.0
    init = X[rng.choice(n, size=k, replace=False)] + 0.01
    Xin = sparsify(X, 0.7, seed) if sparse else X
    if sparse:
        init = np.asarray(Xin[:k].todense()) + 0.01
    base = {w: KMeans(k, init=init, context=c, group_size=1, num_partitions=num_partitions).fit(Xin)
            for w, c in contexts.items()}
    other = _fit_all(Xin, k, init, contexts, group_size, num_partitions)
    for w in contexts:
        a, b = base[w], other[w]      # same workers, another group size: identical
        assert a.n_iter_ == b.n_iter_
        assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
        assert np.array_equal(a.labels_, b.labels_)
        assert a.inertia_ == b.inertia_
        assert a.loss_curve_ == b.loss_curve_
    ref = base[1]                     # across worker counts: sums combined in another order
    for w in contexts:
        assert base[w].n_iter_ == ref.n_iter_
        assert close(base[w].cluster_centers_, ref.cluster_centers_, 1e-12)
        assert np.array_equal(base[w].labels_, ref.labels_)
        assert base[w].inertia_ == pytest.approx(ref.inertia_, rel=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_seeding_is_reproducible_and_finds_separated_blobs(ctx, init):
    X, _ = blobs(seed=4, n=600, d=2, k=3, spread=20.0)
    a = KMeans(3, init=init, random_state=7, context=ctx).fit(X)
    b = KMeans(3, init=init, random_state=7, context=ctx).fit(X)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.cluster_centers_.shape == (3, 2)
    if init == "k-means++":   # one center per blob: the inertia is that of the true blobs
        truth = np.arange(600) % 3
        within = sum(((X[truth == j] - X[truth == j].mean(axis=0)) ** 2).sum() for j in range(3))
        assert a.inertia_ == pytest.approx(within, rel=1e-9)


def test_predict_and_fit_predict(ctx):
    X, init = blobs(seed=5, n=200, d=3, k=4)
    km = KMeans(4, init=init, context=ctx)
    labels = km.fit_predict(X)
    assert labels.dtype == np.int32
    assert np.array_equal(km.predict(X), labels)
    assert np.array_equal(km.predict(sp.csr_matrix(X)), labels)
    assert np.array_equal(km.predict(km.cluster_centers_), np.arange(4))


def test_an_empty_cluster_keeps_its_center(ctx):
    X, init = blobs(seed=6, n=100, d=2, k=2)
    far = np.vstack([init, [[1e6, 1e6]]])
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(2\) found smaller than n_clusters"):
        km = KMeans(3, init=far, context=ctx).fit(X)
    assert np.array_equal(km.cluster_centers_[2], [1e6, 1e6])
    assert set(km.labels_.tolist()) == {0, 1}


def test_bad_input_is_a_value_error(ctx):
    X, init = blobs(seed=7, n=10, d=2, k=2)
    with pytest.raises(ValueError, match="n_samples=10 should be >= n_clusters=11"):
        KMeans(11, context=ctx).fit(X)
    with pytest.raises(ValueError, match="shape"):
        KMeans(2, init=np.zeros((3, 2)), context=ctx).fit(X)
    with pytest.raises(ValueError, match="init must be"):
        KMeans(2, init="kmeans||", context=ctx).fit(X)
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(0, context=ctx).fit(X)
    km = KMeans(2, init=init, context=ctx).fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 2 features"):
        km.predict(np.zeros((4, 3)))
