"""Drizzle ML: scikit-learn estimators on Drizzle's ``ctx.iterate``.

>>> import drizzle_core as dz
>>> from drizzle_ml import KMeans
>>> with dz.Context(workers=2) as ctx:                          # doctest: +SKIP
...     km = KMeans(n_clusters=8, context=ctx, group_size="auto").fit(X)

Every ``fit`` is one :class:`Problem` (training data cut into one row block
per partition, plus ``iterate``'s local/combine/update/until functions) run
by ``ctx.iterate``: the data goes to the workers once, and iterations run in
groups with no driver round trip inside a group. Only the public API of
``drizzle_core`` is used.

They are scikit-learn estimators (``Pipeline``, ``clone``, ``GridSearchCV``,
``check_estimator``); a fitted model pickles without its Context and
predicts anywhere. ``context=None`` fits on one default Context per process
(:func:`default_context`), made on first need and closed at exit.

The names load on first use (PEP 562): a worker unpickling a kernel
(``drizzle_ml._losses``, ``drizzle_ml._lloyd``, ``drizzle_ml._als_kernels``) imports numpy and scipy,
never scikit-learn, which only the driver's estimators need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from drizzle_core import ProgressBar  # noqa: F401  (the engine's bar, which fits draw; documented there)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._als import ALS
    from ._base import ConvergenceWarning
    from ._context import close_default_context, default_context, set_default_context
    from ._decomposition import PCA, TruncatedSVD
    from ._kmeans import KMeans, kmeans_plusplus
    from ._linear import LinearRegression
    from ._logistic import LogisticRegression
    from ._minibatch_kmeans import MiniBatchKMeans, StreamingKMeans
    from ._pagerank import PageRankResult, pagerank
    from ._problem import Fit, Problem, row_blocks, run, run_serial
    from ._sgd import SGDClassifier, SGDRegressor
    from ._streaming import StreamTrainer, fit_stream
    from ._threads import blas_threads_here, max_blas_threads, worker_blas_threads

_LAZY = {
    "ALS": "_als",
    "ConvergenceWarning": "_base",
    "close_default_context": "_context", "default_context": "_context", "set_default_context": "_context",
    "KMeans": "_kmeans", "kmeans_plusplus": "_kmeans", "PCA": "_decomposition", "TruncatedSVD": "_decomposition",
    "LinearRegression": "_linear",
    "MiniBatchKMeans": "_minibatch_kmeans", "StreamingKMeans": "_minibatch_kmeans",
    "LogisticRegression": "_logistic",
    "PageRankResult": "_pagerank", "pagerank": "_pagerank",
    "Fit": "_problem", "Problem": "_problem", "row_blocks": "_problem", "run": "_problem", "run_serial": "_problem",
    "SGDClassifier": "_sgd", "SGDRegressor": "_sgd", "StreamTrainer": "_streaming", "fit_stream": "_streaming",
    "blas_threads_here": "_threads", "max_blas_threads": "_threads", "worker_blas_threads": "_threads",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'drizzle_ml' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ALS",
    "PCA",
    "ConvergenceWarning",
    "Fit",
    "KMeans",
    "LinearRegression",
    "LogisticRegression",
    "MiniBatchKMeans",
    "PageRankResult",
    "Problem",
    "SGDClassifier",
    "SGDRegressor",
    "StreamTrainer",
    "StreamingKMeans",
    "TruncatedSVD",
    "__version__",
    "blas_threads_here",
    "close_default_context",
    "default_context",
    "fit_stream",
    "kmeans_plusplus",
    "max_blas_threads",
    "pagerank",
    "row_blocks",
    "run",
    "run_serial",
    "set_default_context",
    "worker_blas_threads",
]
