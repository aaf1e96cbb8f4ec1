"""StatCounter: count, mean, variance, min and max of numbers in one pass, mergeable (what ``Dataset.stats`` returns).

Each partition is summarized where it lives (vectorized for an ndarray
partition) and the summaries are merged on the driver with Chan et al.'s
parallel update, so the variance is computed without a second pass and
without the cancellation of ``E[x^2] - E[x]^2``. For ndarray rows the
statistics are per column (arrays), as ``Dataset.sum`` gives column sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def _lesser(a: Any, b: Any) -> Any:
    return np.minimum(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else min(a, b)


def _greater(a: Any, b: Any) -> Any:
    return np.maximum(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else max(a, b)


class StatCounter:
    """Running statistics of numbers: PySpark's ``StatCounter``, methods in snake_case.

    ``count()``, ``mean()``, ``sum()``, ``min()``, ``max()``, ``variance()``
    and ``stdev()`` (population), ``sample_variance()`` and ``sample_stdev()``
    (divided by n - 1); ``merge(value)`` adds one number, ``merge_stats(other)``
    another counter; ``as_dict(sample=False)``. Of an empty set, ``mean`` and the
    variances are nan, ``min`` is inf and ``max`` -inf (as in PySpark).
    """

    __slots__ = ("m2", "maxValue", "minValue", "mu", "n")

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self.n = 0
        self.mu: Any = 0.0
        self.m2: Any = 0.0
        self.maxValue: Any = float("-inf")
        self.minValue: Any = float("inf")
        if isinstance(values, np.ndarray):
            self._merge_array(values)
        else:
            for v in values:
                self.merge(v)

    def _merge_array(self, a: np.ndarray) -> None:
        if len(a) == 0:
            return
        other = StatCounter()
        other.n = len(a)
        other.mu = a.mean(axis=0)
        other.m2 = ((a - other.mu) ** 2).sum(axis=0)
        other.maxValue = a.max(axis=0)
        other.minValue = a.min(axis=0)
        self.merge_stats(other)

    def merge(self, value: Any) -> StatCounter:
        """Add one number (Welford's update). Returns self."""
        delta = value - self.mu
        self.n += 1
        self.mu = self.mu + delta / self.n
        self.m2 = self.m2 + delta * (value - self.mu)
        self.maxValue = _greater(self.maxValue, value)
        self.minValue = _lesser(self.minValue, value)
        return self

    def merge_stats(self, other: StatCounter) -> StatCounter:
        """Add another counter's numbers (Chan et al.'s parallel update). Returns self."""
        if not isinstance(other, StatCounter):
            raise TypeError(f"merge_stats needs a StatCounter, got {type(other).__name__}")
        if other is self:
            other = self.copy()
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mu, self.m2 = other.n, other.mu, other.m2
            self.maxValue, self.minValue = other.maxValue, other.minValue
            return self
        delta = other.mu - self.mu
        n = self.n + other.n
        self.mu = self.mu + delta * other.n / n
        self.m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        self.maxValue = _greater(self.maxValue, other.maxValue)
        self.minValue = _lesser(self.minValue, other.minValue)
        return self

    def copy(self) -> StatCounter:
        out = StatCounter()
        out.n, out.mu, out.m2, out.maxValue, out.minValue = self.n, self.mu, self.m2, self.maxValue, self.minValue
        return out

    def count(self) -> int:
        return self.n

    def mean(self) -> Any:
        return self.mu if self.n else float("nan")

    def sum(self) -> Any:
        return self.n * self.mu

    def min(self) -> Any:
        return self.minValue

    def max(self) -> Any:
        return self.maxValue

    def variance(self) -> Any:
        return self.m2 / self.n if self.n else float("nan")

    def sample_variance(self) -> Any:
        return self.m2 / (self.n - 1) if self.n > 1 else float("nan")

    def stdev(self) -> Any:
        return _sqrt(self.variance())

    def sample_stdev(self) -> Any:
        return _sqrt(self.sample_variance())

    def as_dict(self, sample: bool = False) -> dict[str, Any]:
        """The statistics by name; ``sample=True``: the sample variance and stdev instead of the population's."""
        return {"count": self.count(), "mean": self.mean(), "sum": self.sum(), "min": self.min(), "max": self.max(),
                "stdev": self.sample_stdev() if sample else self.stdev(),
                "variance": self.sample_variance() if sample else self.variance()}

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.n, self.mu, self.m2, self.maxValue, self.minValue)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.n, self.mu, self.m2, self.maxValue, self.minValue = state

    def __repr__(self) -> str:
        return (f"(count: {self.count()}, mean: {self.mean()}, stdev: {self.stdev()}, max: {self.max()}, "
                f"min: {self.min()})")


def _sqrt(x: Any) -> Any:
    return np.sqrt(x) if isinstance(x, np.ndarray) else math.sqrt(x)
