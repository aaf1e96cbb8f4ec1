"""Drizzle ML: scikit-learn-style estimators on Drizzle's ``ctx.iterate``.

>>> import drizzle_core as dz
>>> from drizzle_ml import KMeans
>>> with dz.Context(workers=2) as ctx:                          # doctest: +SKIP
...     km = KMeans(n_clusters=8, context=ctx, group_size="auto").fit(X)

Every ``fit`` is one :class:`Problem` (training data cut into one row block
per partition, plus ``iterate``'s local/combine/update/until functions) run
by ``ctx.iterate``: the data goes to the workers once, and iterations run in
groups with no driver round trip inside a group. Only the public API of
``drizzle_core`` is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._base import ConvergenceWarning
from ._kmeans import KMeans, kmeans_plusplus
from ._linear import LinearRegression
from ._logistic import LogisticRegression
from ._problem import Fit, Problem, row_blocks, run, run_serial
from ._progress import ProgressBar
from ._threads import blas_threads_here, max_blas_threads, worker_blas_threads

__all__ = [
    "ConvergenceWarning",
    "Fit",
    "KMeans",
    "LinearRegression",
    "LogisticRegression",
    "Problem",
    "ProgressBar",
    "__version__",
    "blas_threads_here",
    "kmeans_plusplus",
    "max_blas_threads",
    "row_blocks",
    "run",
    "run_serial",
    "worker_blas_threads",
]
