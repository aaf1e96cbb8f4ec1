"""Narrow kernels that depend on a record's position in its partition: sample and zip_with_index.

Both are functions of (partition index, position) alone, never of which
worker runs them or when, so a partition recomputed after a lost worker
gives the same records again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

_SEED_MASK = (1 << 64) - 1


def sample_draws(seed: int, p: int, n: int, with_replacement: bool, fraction: float) -> np.ndarray:
    """What sample keeps of partition ``p``'s ``n`` records: a bool per record, or (with replacement) a count.

    The contract (the tests' reference evaluator relies on it): the
    generator is ``numpy.random.default_rng([seed mod 2**64, p])``; without
    replacement record j is kept when its ``random()`` draw is below
    ``fraction`` (Bernoulli sampling, as Spark's); with replacement record j
    is repeated ``poisson(fraction)`` times (Spark's Poisson sampler).
    """
    rng = np.random.default_rng([seed & _SEED_MASK, p])
    if with_replacement:
        return rng.poisson(fraction, n)
    return rng.random(n) < fraction


class SampleOp:
    """``sample(with_replacement, fraction, seed)`` on one partition (see :func:`sample_draws`)."""

    __slots__ = ("fraction", "seed", "with_replacement")

    def __init__(self, with_replacement: bool, fraction: float, seed: int) -> None:
        self.with_replacement = with_replacement
        self.fraction = fraction
        self.seed = seed

    def __call__(self, p: int, it: Iterable[Any]) -> Any:
        part = it if type(it) is list or isinstance(it, np.ndarray) else list(it)
        draws = sample_draws(self.seed, p, len(part), self.with_replacement, self.fraction)
        if isinstance(part, np.ndarray):  # vectorized, and still an ndarray
            return np.repeat(part, draws, axis=0) if self.with_replacement else part[draws]
        if self.with_replacement:
            return [x for x, c in zip(part, draws.tolist()) for _ in range(c)]
        return [x for x, keep in zip(part, draws.tolist()) if keep]

    def __reduce__(self) -> tuple[Any, ...]:
        return (SampleOp, (self.with_replacement, self.fraction, self.seed))


class ZipWithIndexOp:
    """Partition p's record j becomes ``(record, starts[p] + j)``; ``starts`` from a job counting each partition."""

    __slots__ = ("starts",)

    def __init__(self, starts: list[int]) -> None:
        self.starts = starts

    def __call__(self, p: int, it: Iterable[Any]) -> list[tuple[Any, int]]:
        return [(x, i) for i, x in enumerate(it, self.starts[p])]

    def __reduce__(self) -> tuple[Any, ...]:
        return (ZipWithIndexOp, (self.starts,))
