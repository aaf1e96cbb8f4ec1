"""Online learning from a stream: ``partial_fit`` once per micro-batch, from a ``foreach_batch`` sink.

A :class:`drizzle_core.Stream` delivers each micro-batch's records to its
sinks on the driver, in batch order, exactly once per delivered batch. The
sink here turns the records into ``X`` (and ``y``) and calls the model's
``partial_fit``, which runs on the model's context like any fit (for the SGD
models one epoch of mini-batch steps, for the k-means models one update).
So the model after batch b has seen batches 0..b in order, whatever the
stream's group size: the same model as ``partial_fit`` called on the same
batches by hand.

Records are ``(x, y)`` pairs for a supervised model and ``x`` for a
clusterer; ``x`` is one row (1-D) or a block of rows (2-D), ``y`` a label or
a block of labels to match. A batch with no records is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_regressor

from drizzle_core import BatchMetrics, DStream


class StreamTrainer:
    """The sink :func:`fit_stream` attaches: calls ``model.partial_fit`` per non-empty micro-batch.

    ``batches`` and ``rows`` count what it trained on; ``on_batch(model,
    metrics)``, if given, runs after each update (to log, evaluate, or
    stop the stream).
    """

    def __init__(self, model: Any, supervised: bool, fit_params: dict[str, Any],
                 on_batch: Callable[[Any, BatchMetrics], Any] | None = None) -> None:
        self.model = model
        self.supervised = supervised
        self.fit_params = fit_params
        self.on_batch = on_batch
        self.batches = 0
        self.rows = 0

    def __call__(self, records: list[Any], metrics: BatchMetrics) -> None:
        if not records:
            return
        if self.supervised:
            X, y = rows_of([r[0] for r in records]), labels_of([r[1] for r in records])
            if X.shape[0] != y.shape[0]:
                raise ValueError(f"fit_stream: a batch has {X.shape[0]} rows but {y.shape[0]} labels")
            self.model.partial_fit(X, y, **self.fit_params)
        else:
            X = rows_of(records)
            self.model.partial_fit(X, **self.fit_params)
        if "classes" in self.fit_params:
            self.fit_params = {k: v for k, v in self.fit_params.items() if k != "classes"}
        self.batches += 1
        self.rows += X.shape[0]
        if self.on_batch is not None:
            self.on_batch(self.model, metrics)


def rows_of(xs: list[Any]) -> np.ndarray:
    """Stack records' features, each one row or a block of rows, into one (n, d) float64 array."""
    first = np.asarray(xs[0])
    if first.ndim == 2:
        return np.vstack([np.asarray(x, dtype=np.float64) for x in xs])
    if first.ndim != 1:
        raise ValueError(f"fit_stream: a record's features must be a row (1-D) or a block (2-D), "
                         f"got {first.ndim}-D")
    return np.asarray(xs, dtype=np.float64)


def labels_of(ys: list[Any]) -> np.ndarray:
    if np.ndim(ys[0]) == 1:
        return np.concatenate([np.asarray(y) for y in ys])
    return np.asarray(ys)


def fit_stream(model: Any, stream: DStream, *, on_batch: Callable[[Any, BatchMetrics], Any] | None = None,
               **fit_params: Any) -> StreamTrainer:
    """Train ``model`` online on ``stream``: its ``partial_fit`` runs once per micro-batch.

    ``stream`` is a :class:`drizzle_core.DStream` of ``(x, y)`` records (a
    classifier or regressor) or of ``x`` (a clusterer: ``MiniBatchKMeans``,
    ``StreamingKMeans``). ``fit_params`` go to every ``partial_fit`` call,
    except ``classes``, which goes to the first only. Attaches the sink and
    returns it; run the stream as usual (``stream.run(batches=...)``).
    """
    if not isinstance(stream, DStream):
        raise ValueError(f"fit_stream needs a drizzle_core DStream, got {type(stream).__name__}")
    if not callable(getattr(model, "partial_fit", None)):
        raise ValueError(f"fit_stream needs a model with partial_fit, got {type(model).__name__}")
    supervised = is_classifier(model) or is_regressor(model)
    trainer = StreamTrainer(model, supervised, fit_params, on_batch)
    stream.foreach_batch(trainer)
    return trainer
