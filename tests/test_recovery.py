"""Recovery of iterative and multi-group work: exactly the result of a run without the failure."""

from __future__ import annotations

import operator
import os
import time

import numpy as np
import pytest
from support import count_call, kill_self_once, recovered

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)


class KillOnce:
    """``local`` for iterate that SIGKILLs its worker on the n-th call (across workers), once."""

    def __init__(self, directory, n):
        self.directory, self.n = str(directory), n

    def __call__(self, part, w):
        if 0 < self.n <= count_call(self.directory):  # ">=": two workers may append between checks
            kill_self_once(self.directory)
        return part[:, :3].T @ (part[:, :3] @ w - part[:, 3])


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    return np.column_stack([X, X @ np.array([2.0, -1.0, 0.5])])


def _fit(ctx, local, g):
    ds = ctx.parallelize(_data(), 4)
    return ctx.iterate(ds, np.zeros(3), local=local, combine=operator.add,
                       update=lambda w, grad: w - 0.3 * grad / 2000, iterations=60, group_size=g,
                       keep_history=True)


@pytest.mark.parametrize("transport", ["local", "tcp"])
@pytest.mark.parametrize("g", [5, 60])
def test_iterate_resumes_from_the_last_completed_iteration(tmp_path, no_orphans, transport, g):
    with dz.Context(transport=transport, workers=2) as ctx:
        (tmp_path / "none").mkdir()
        (tmp_path / "k").mkdir()
        clean = _fit(ctx, KillOnce(tmp_path / "none", -1), g)
        t = time.perf_counter()
        n0 = len(ctx.metrics)
        hurt = _fit(ctx, KillOnce(tmp_path / "k", 4 * 25 + 2), g)  # dies in iteration 26
        assert time.perf_counter() - t < 30
        assert (tmp_path / "k" / "killed").exists()
        assert recovered(ctx.metrics[n0:]) == 1
        assert hurt.iterations == clean.iterations == 60
        for a, b in zip(hurt.history, clean.history):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_recovery_recomputes_only_after_the_checkpoint(tmp_path, no_orphans):
    """After a loss in iteration 26, local() runs for the partitions of iterations >= 26 only
    (plus the 4 cached partitions' replay of nothing): not from iteration 1 again."""
    with dz.Context(transport="local", workers=2) as ctx:
        (tmp_path / "k").mkdir()
        _fit(ctx, KillOnce(tmp_path / "k", 4 * 25 + 2), 60)
        calls = os.path.getsize(tmp_path / "k" / "count")
        # 60 iterations x 4 partitions, plus a re-run of at most one group's worth
        assert (tmp_path / "k" / "killed").exists()
        assert 240 < calls <= 240 + 4 * 35
