"""PCA and TruncatedSVD (randomized power iteration on ctx.iterate) against scikit-learn's exact decompositions."""

from __future__ import annotations

import ml_support
import numpy as np
import pytest
import scipy.sparse as sp
from drizzle_ml import PCA, TruncatedSVD, run_serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_support import close, sparsify
from sklearn import datasets
from sklearn.decomposition import PCA as SKPCA
from sklearn.decomposition import TruncatedSVD as SKTruncatedSVD
from sklearn.preprocessing import StandardScaler

contexts = ml_support.contexts
ctx = ml_support.ctx
pytestmark = pytest.mark.timeout(180)


def _aligned(ours: np.ndarray, exact: np.ndarray) -> float:
    """Largest 1 - |cos| between matching components (signs are conventions)."""
    return float(np.max(1.0 - np.abs((ours * exact).sum(axis=1))))


@pytest.mark.parametrize(("name", "k", "n_iter", "rel"), [
    ("digits", 5, "auto", 1e-7),        # a fast-decaying spectrum: the default iterations suffice
    ("digits", 20, 20, 1e-6),           # more components than a tenth of d: more iterations for this accuracy
    ("wine", 3, "auto", 1e-9),
    ("iris", 2, "auto", 1e-12),
    ("breast_cancer", 4, "auto", 1e-9),
])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_pca_matches_the_exact_decomposition(ctx, name, k, n_iter, rel, sparse):
    X = getattr(datasets, f"load_{name}")(return_X_y=True)[0]
    X = StandardScaler().fit_transform(X) if name in ("wine", "breast_cancer") else X
    Xin = sp.csr_matrix(X) if sparse else X
    ours = PCA(k, n_iter=n_iter, random_state=0, context=ctx).fit(Xin)
    exact = SKPCA(k, svd_solver="full").fit(X)
    assert ours.components_.shape == (k, X.shape[1]) and ours.n_components_ == k
    assert close(ours.explained_variance_ / exact.explained_variance_, np.ones(k), rel)
    assert close(ours.explained_variance_ratio_, exact.explained_variance_ratio_, rel)
    assert close(ours.singular_values_, exact.singular_values_, rel * float(exact.singular_values_[0]))
    assert np.allclose(ours.mean_, exact.mean_, rtol=1e-12, atol=1e-12)
    assert _aligned(ours.components_, exact.components_) <= 10 * rel
    assert np.allclose(ours.components_, exact.components_, atol=1e-3)     # same sign convention as scikit-learn
    T = ours.transform(Xin)
    assert np.allclose(T, exact.transform(X), atol=1e-3 * np.abs(T).max())
    assert np.allclose(ours.inverse_transform(T), exact.inverse_transform(exact.transform(X)),
                       atol=1e-3 * np.abs(X).max())


def test_truncated_svd_on_csr_matches_arpack(ctx):
    rng = np.random.default_rng(0)
    X = sparsify(rng.normal(size=(400, 60)) @ np.diag(3.0 * 0.8 ** np.arange(60)), 0.3, seed=0)  # a decaying spectrum
    ours = TruncatedSVD(6, random_state=0, context=ctx).fit(X)
    exact = SKTruncatedSVD(6, algorithm="arpack").fit(X)
    assert close(ours.singular_values_, exact.singular_values_, 1e-6 * float(exact.singular_values_[0]))
    assert close(ours.explained_variance_ratio_, exact.explained_variance_ratio_, 1e-6)
    assert _aligned(ours.components_, exact.components_) <= 1e-5
    assert X.has_canonical_format and ours.transform(X).shape == (400, 6)


def test_engine_matches_the_serial_reference(ctx):
    X = datasets.load_digits(return_X_y=True)[0]
    est = PCA(8, n_iter=7, random_state=3, context=ctx)
    ref = run_serial(est.make_problem(X, num_partitions=ctx.num_workers), max_iter=8)
    ours = est.fit(X)
    assert ours.n_iter_ == ref.iterations == 8           # 7 power iterations + the Ritz step
    assert close(np.abs(ours.components_), np.abs(ref.state.Q[:, :8].T), 1e-12)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(12, 120), d=st.integers(2, 12), sparse=st.booleans(),
       group_size=st.sampled_from([2, 3, "auto"]), num_partitions=st.sampled_from([None, 1, 5]))
def test_same_result_for_every_group_size_and_worker_count(contexts, seed, n, d, sparse, group_size,
                                                           num_partitions):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(4.0, 0.5, d)
    Xin = sparsify(X, 0.6, seed) if sparse else X
    k = max(1, d // 3)
    fits = {(w, g): PCA(k, random_state=seed, context=c, group_size=g, num_partitions=num_partitions).fit(Xin)
            for w, c in contexts.items() for g in (1, group_size)}
    for w in contexts:
        a, b = fits[(w, 1)], fits[(w, group_size)]
        assert np.array_equal(a.components_, b.components_)
        assert np.array_equal(a.explained_variance_, b.explained_variance_)
    ref = fits[(1, 1)]
    for w in contexts:
        assert close(fits[(w, 1)].explained_variance_, ref.explained_variance_, 1e-9 * ref.explained_variance_[0])


def test_bad_input(ctx):
    X = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=r"n_components=5 must be <= min\(n_samples, n_features\) = 4"):
        PCA(5, context=ctx).fit(X)
    with pytest.raises(ValueError, match="n_iter must be"):
        PCA(2, n_iter=-1, context=ctx).fit(X)
    with pytest.raises(ValueError, match="1 sample"):
        PCA(1, context=ctx).fit(X[:1])
