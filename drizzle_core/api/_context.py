"""Context: the user's handle on a set of workers (a SparkContext).

It owns the transport (started on entry, closed on exit, so no worker
outlives the ``with`` block), the group scheduler, and the registry of cached
datasets. Everything runs on the caller's thread; there is no background
thread on the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import inline as _inline  # noqa: F401  (registers the inline transport)
from .. import lineage as N
from .._check import check_group_size
from ..driver import AIMD, GroupMetrics, GroupScheduler, JobIterator, Trace, get_transport
from ..net import Transport
from . import _dataset as D
from ._inputs import split_input
from ._iterate import IterateResult
from ._iterate import iterate as _iterate

log = logging.getLogger("drizzle.context")

GroupSize = int | str


# The stream layer sits above this one; importing it registers its Stream class here.
_stream_class: Any = None


def register_stream(cls: Any) -> None:
    """Called by :mod:`drizzle_core.stream` on import: :meth:`Context.stream` makes instances of ``cls``."""
    global _stream_class
    _stream_class = cls


class Context:
    """Workers plus a group scheduler.

    ``transport`` names an installed transport (``drizzle transports`` lists
    them; ``local`` is the default). ``workers`` is how many to start (the
    number of cores by default), or what a transport takes (``tcp``: a list of
    addresses). ``group_size`` is the default number of jobs scheduled as one
    group: an int, or ``"auto"`` to tune it at run time. ``trace`` names a
    Chrome trace-event file written when the context stops (tasks per worker
    over time; open it in Perfetto). Other keyword arguments go to the
    transport.
    """

    def __init__(self, transport: str = "local", workers: Any = None, group_size: GroupSize = "auto",
                 *, trace: str | os.PathLike[str] | None = None, **options: Any) -> None:
        check_group_size(group_size)
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, int) and not isinstance(workers, bool) and workers <= 0:
            raise ValueError(f"workers must be a positive int, got {workers}")
        info = get_transport(transport)
        self.transport_name = transport
        self.group_size = group_size
        self._adaptive = AIMD()
        self._transport: Transport = info.factory(workers=workers, **options)
        self._transport.name = transport
        self._closed = False
        self._transport.start()
        self.num_workers = len(self._transport.worker_names)
        self._scheduler = GroupScheduler(self._transport, self.num_workers)
        self._scheduler.on_failure = self._adaptive.on_failure
        if trace is not None:
            self._scheduler.trace = Trace(trace, self.workers)
        self._cached: dict[int, weakref.finalize] = {}
        weakref.finalize(self, _close_transport, self._transport)

    # ---------------------------------------------------------- lifecycle
    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every worker. Idempotent."""
        if not self._closed:
            self._closed = True
            for fin in self._cached.values():
                fin.detach()
            self._cached.clear()
            self._transport.close()
            if self._scheduler.trace is not None:
                self._scheduler.trace.write()

    close = stop

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "running"
        return f"<drizzle Context transport={self.transport_name!r} workers={self.num_workers} {state}>"

    @property
    def workers(self) -> list[str]:
        """Names of the workers, by index."""
        return list(self._transport.worker_names)

    def add_worker(self, worker: Any = None) -> str:
        """Add a worker; it takes tasks from the next group on. Returns its name.

        What ``worker`` is depends on the transport: nothing for ``local`` (a
        new process), an address ``"host:port"`` of a running daemon for ``tcp``.
        """
        self._check_open()
        index = self._transport.add_worker(worker)
        self._scheduler.add_worker(index)
        self.num_workers = len(self._transport.worker_names)
        return self._transport.worker_names[index]

    @property
    def closed(self) -> bool:
        """True once :meth:`stop` ran (or the ``with`` block ended): nothing more can run."""
        return self._closed

    @property
    def live_workers(self) -> list[str]:
        """Names of the workers that can take tasks now."""
        return [self._transport.worker_names[i] for i in self._scheduler.live]

    def bookkeeping(self, timeout: float = 10.0) -> dict[str, Any]:
        """What the driver and each worker still hold: container sizes, for tests and debugging.

        Between jobs only ``cached_blocks`` may be non-zero (the partitions of
        datasets that are cached); anything else left behind is a leak.
        """
        self._check_open()
        return self._scheduler.bookkeeping(timeout)

    @property
    def metrics(self) -> list[GroupMetrics]:
        """One :class:`GroupMetrics` per group run so far."""
        return list(self._scheduler.metrics)

    # --------------------------------------------------------- datasets
    def parallelize(self, data: Iterable[Any] | np.ndarray, num_partitions: int | None = None) -> D.Dataset:
        """Distribute ``data`` in ``num_partitions`` contiguous partitions.

        A numpy array is split by rows and each partition is its row slice (an
        ndarray), so partition functions can stay vectorized; a scipy.sparse
        matrix is split by rows into CSR slices; a pandas DataFrame is split
        by rows into records, tuples of a row's values (``itertuples(index=False,
        name=None)``), and a Series into its values. A dict is refused (pass
        ``d.items()``), as are str and bytes. Anything else is listed and split
        into lists. The default partition count is the number of workers.
        The policy and its reasons: ``drizzle_core._inputs``.
        """
        self._check_open()
        n = self.num_workers if num_partitions is None else num_partitions
        node = N.SourceNode(next(D._ids), split_input(data, n), f"parallelize at {D._call_site()}")
        return D.Dataset(self, node, ())

    # --------------------------------------------------------------- jobs
    def run_jobs(self, jobs: Iterable[tuple[D.Dataset, Callable[[Any], Any]]],
                 group_size: GroupSize | None = None) -> list[list[Any]]:
        """Drizzle's runJobs: run every ``(dataset, f)`` job; ``f`` gets each partition.

        Returns one list per job (one ``f`` result per partition), in job
        order. Jobs are scheduled ``group_size`` at a time (default: the
        context's); ``jobs`` may be a lazy iterable, consumed a group at a time.
        """
        return list(self.iter_jobs(jobs, group_size))

    def iter_jobs(self, jobs: Iterable[tuple[D.Dataset, Callable[[Any], Any]]],
                  group_size: GroupSize | None = None, *,
                  keep_going: Callable[[], bool] | None = None) -> JobIterator:
        """Like :meth:`run_jobs`, but yields each job's results as soon as that job finishes.

        The next group is planned while the current one runs; ``keep_going()``
        is asked before it starts, and False ends the iteration there (jobs
        already pulled from ``jobs`` for that group do not run). The iterator's
        ``group`` attribute is the group of the job it returned last. Actions
        may be called while iterating (inside the loop, from the job
        generator, from another thread): each runs as a group of its own.
        """
        self._check_open()
        g = self.group_size if group_size is None else group_size
        check_group_size(g)
        if g == "auto":
            controller = self._adaptive

            def next_size() -> int:
                return controller.next_size()

            def on_group(m: GroupMetrics) -> None:
                controller.observe(m.coordination, m.jobs, m.planned_size, m.wall_s)
        else:
            fixed = int(g)

            def next_size() -> int:
                return fixed

            on_group = None  # type: ignore[assignment]
        self._scheduler.check_workers()
        return self._scheduler.run(self._validated(jobs), next_size, on_group, keep_going)

    def _validated(self, jobs: Iterable[Any]) -> Iterator[tuple[D.Dataset, Callable[[Any], Any]]]:
        if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Iterable):
            raise TypeError(f"run_jobs needs an iterable of (dataset, function) pairs, got {type(jobs).__name__}")
        for i, job in enumerate(jobs):
            if not (isinstance(job, Sequence) and len(job) == 2):
                raise TypeError(f"job {i} must be a (dataset, function) pair, got {job!r}")
            ds, f = job
            if not isinstance(ds, D.Dataset):
                raise TypeError(f"job {i}: the first item must be a Dataset, got {type(ds).__name__}")
            if ds.ctx is not self:
                raise ValueError(f"job {i}: {ds!r} belongs to another Context")
            if not callable(f):
                raise TypeError(f"job {i}: the second item must be callable, got {type(f).__name__}")
            yield ds, f

    def iterate(self, data: D.Dataset, init: Any, *, local: Callable[[Any, Any], Any],
                combine: Callable[[Any, Any], Any], update: Callable[[Any, Any], Any], iterations: int,
                group_size: GroupSize | None = None, until: Callable[[Any], bool] | None = None,
                on_iteration: Callable[[int, Any], None] | None = None,
                keep_history: bool = False) -> IterateResult:
        """Run dependent iterations on cached ``data`` with no driver round trip inside a group.

        Each iteration: ``local(partition, state)`` on every partition where it
        lives; each worker folds its partials with ``combine``; one reducer
        folds the workers' partials and computes ``update(state, total)``, the
        next state, which goes straight to the workers for the next iteration.
        ``until(state)`` (checked on the reducer) ends the loop early;
        ``on_iteration(i, state)`` sees every state on the driver as it
        arrives. Returns an :class:`IterateResult` (``state``, ``history``,
        ``iterations``, ``converged``); ``history`` holds every state only with
        ``keep_history=True`` (a long loop with a big state would otherwise keep
        them all on the driver: 2,000 iterations of a 2 MB state are 3.9 GB).
        """
        self._check_open()
        return _iterate(self, data, init, local=local, combine=combine, update=update, iterations=iterations,
                        group_size=group_size, until=until, on_iteration=on_iteration, keep_history=keep_history)

    def stream(self, source: Any, batch_interval: float = 0.1, *, group_size: GroupSize = "auto",
               max_group_seconds: float = 1.0, checkpoint_every: int | None = None) -> Any:
        """A micro-batch :class:`~drizzle_core.Stream` reading ``source`` every ``batch_interval`` seconds.

        Each group schedules G batches at once (``group_size``; ``"auto"`` is
        capped so a group spans at most ``max_group_seconds``). Stateful
        DStreams return their state to the driver every ``checkpoint_every``
        batches, which bounds their lineage (and what a lost worker costs).
        See :mod:`drizzle_core._stream`.
        """
        self._check_open()
        if _stream_class is None:
            raise RuntimeError("streams need drizzle_core.stream (import drizzle_core loads it)")
        extra = {} if checkpoint_every is None else {"checkpoint_every": checkpoint_every}
        return _stream_class(self, source, batch_interval, group_size=group_size,
                             max_group_seconds=max_group_seconds, **extra)

    # ----------------------------------------------------------- caching
    def _register_cached(self, ds: D.Dataset) -> None:
        self._cached[ds.id] = weakref.finalize(ds, D._finalizer, weakref.ref(self), ds.id)
        if not self._closed:
            self._scheduler.keep_cached(ds.id)

    def _unpersist(self, ds: D.Dataset) -> None:
        fin = self._cached.pop(ds.id, None)
        if fin is not None:
            fin.detach()
        if self._closed:
            ds._cached = False
        else:
            self._scheduler.unpersist(ds.id, ds._uncache)

    def _unregister_cached(self, ds_id: int) -> None:
        fin = self._cached.pop(ds_id, None)
        if fin is not None:
            fin.detach()
        if not self._closed:
            self._scheduler.drop_cached(ds_id)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Context is stopped")


def _close_transport(transport: Transport) -> None:
    with contextlib.suppress(Exception):  # at interpreter exit, best effort
        transport.close()
