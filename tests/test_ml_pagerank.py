"""``drizzle_ml.pagerank``: networkx's PageRank, the ranks split by block across the workers (``iterate_by_key``)."""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from bookkeeping import assert_no_bookkeeping
from drizzle_ml import ConvergenceWarning, pagerank
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import context, wait_all_live

pytestmark = pytest.mark.timeout(120)


def _graph(n: int, m: int, seed: int, isolated: int = 5) -> nx.DiGraph:
    G = nx.gnm_random_graph(n, m, seed=seed, directed=True)
    G.add_nodes_from(range(n, n + isolated))  # dangling vertices no link reaches
    return G


def _networkx(G: nx.DiGraph, **kw) -> np.ndarray:
    ranks = nx.pagerank(G, **kw)
    return np.array([ranks[v] for v in range(G.number_of_nodes())])


def _scipy(A: sp.csr_matrix, damping: float, iterations: int, p: np.ndarray | None = None) -> np.ndarray:
    """Power iteration written out: x = d (M' x + x[dangling].sum() p) + (1 - d) p, from x = 1/n."""
    n = A.shape[0]
    out = np.asarray(A.sum(axis=1)).ravel()
    M = sp.diags(np.divide(1.0, out, out=np.zeros(n), where=out != 0)) @ A
    p = np.full(n, 1.0 / n) if p is None else p / p.sum()
    x = np.full(n, 1.0 / n)
    for _ in range(iterations):
        x = damping * (M.T @ x + x[out == 0].sum() * p) + (1 - damping) * p
    return x


def test_equals_networkx_on_a_random_graph_with_dangling_vertices_for_any_block_count():
    ctx = context("local", 2)
    G = _graph(400, 2000, seed=1)
    A = nx.to_scipy_sparse_array(G, nodelist=range(G.number_of_nodes()))
    ref = _networkx(G)
    for blocks in (1, 2, 5):
        res = pagerank(A, context=ctx, num_partitions=blocks)
        assert res.converged and res.n_iter < 100
        np.testing.assert_allclose(res.ranks, ref, rtol=1e-12, atol=1e-18)
        assert res.ranks.sum() == pytest.approx(1.0, abs=1e-12)
    assert_no_bookkeeping(ctx)


def test_weights_personalization_and_damping_as_networkx():
    ctx = context("local", 2)
    G = _graph(150, 700, seed=2)
    rng = np.random.default_rng(2)
    for u, v in G.edges:
        G[u][v]["weight"] = float(rng.uniform(0.1, 3.0))
    A = nx.to_scipy_sparse_array(G, nodelist=range(G.number_of_nodes()))
    p = rng.random(G.number_of_nodes())
    ref = _networkx(G, alpha=0.7, personalization=dict(enumerate(p)), tol=1e-10, max_iter=500)
    res = pagerank(A, damping=0.7, personalization=p, tol=1e-10, max_iter=500, context=ctx, num_partitions=3)
    np.testing.assert_allclose(res.ranks, ref, rtol=1e-12)
    # the same graph as an (m, 3) edge array, and dense
    edges = np.array([(u, v, d["weight"]) for u, v, d in G.edges(data=True)])
    by_edges = pagerank(edges, num_nodes=G.number_of_nodes(), damping=0.7, personalization=p, tol=1e-10,
                        max_iter=500, context=ctx, num_partitions=3)
    dense = pagerank(A.toarray(), damping=0.7, personalization=p, tol=1e-10, max_iter=500, context=ctx,
                     num_partitions=3)
    assert np.array_equal(by_edges.ranks, res.ranks) and np.array_equal(dense.ranks, res.ranks)
    assert_no_bookkeeping(ctx)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), workers=st.sampled_from([1, 2, 3]), group_size=st.integers(1, 40),
       blocks=st.integers(1, 6), damping=st.sampled_from([0.5, 0.85, 0.99]))
def test_any_group_size_and_worker_count_give_the_same_bits_as_a_direct_power_iteration(
        seed, workers, group_size, blocks, damping):
    ctx = context("local", workers)
    wait_all_live(ctx)
    G = _graph(60, 200, seed=seed, isolated=seed % 3)
    A = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(G.number_of_nodes())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = pagerank(A, damping=damping, tol=0.0, max_iter=25, context=ctx, num_partitions=blocks,
                       group_size=group_size)
        base = pagerank(A, damping=damping, tol=0.0, max_iter=25, context=context("local", 2),
                        num_partitions=blocks, group_size=1)
    assert res.n_iter == 25 and not res.converged
    assert np.array_equal(res.ranks, base.ranks)
    np.testing.assert_allclose(res.ranks, _scipy(A, damping, 25), rtol=1e-12, atol=1e-18)
    assert_no_bookkeeping(ctx)


def test_max_iter_reached_warns_with_sklearns_convergence_warning():
    ctx = context("local", 2)
    A = nx.to_scipy_sparse_array(_graph(50, 200, seed=3), nodelist=range(55))
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        res = pagerank(A, max_iter=2, context=ctx)
    assert res.n_iter == 2 and not res.converged


def test_bad_graphs_get_errors_that_name_the_problem():
    ctx = context("local", 2)
    with pytest.raises(ValueError, match="square"):
        pagerank(sp.csr_matrix((3, 4)), context=ctx)
    with pytest.raises(ValueError, match="non-negative integer vertex ids"):
        pagerank(np.array([[0, 1], [1, -2]]), context=ctx)
    with pytest.raises(ValueError, match="names vertex 5, but num_nodes=3"):
        pagerank(np.array([[0, 5]]), num_nodes=3, context=ctx)
    with pytest.raises(ValueError, match="weights must be finite and non-negative"):
        pagerank(np.array([[0, 1, -1.0]]), context=ctx)
    with pytest.raises(ValueError, match="damping"):
        pagerank(np.array([[0, 1]]), damping=1.0, context=ctx)
    with pytest.raises(ValueError, match="personalization must be 2"):
        pagerank(np.array([[0, 1]]), personalization=[1, 2, 3], context=ctx)
    assert pagerank(sp.csr_matrix((0, 0)), context=ctx).ranks.shape == (0,)
    assert_no_bookkeeping(ctx)
