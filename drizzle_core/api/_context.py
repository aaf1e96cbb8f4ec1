"""Context: the user's handle on a set of workers (a SparkContext).

It owns the transport (started on entry, closed on exit, so no worker
outlives the ``with`` block), the group scheduler, and the registry of cached
datasets. Everything runs on the caller's thread; there is no background
thread on the driver.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .. import inline as _inline  # noqa: F401  (registers the inline transport)
from .. import lineage as N
from .._check import check_group_size
from ..driver import AIMD, GroupMetrics, GroupScheduler, JobIterator, Trace, get_transport
from ..net import Transport
from . import _dataset as D
from . import _iterate as _iterate_module
from . import _text
from ._inputs import split_input
from ._iterate import IterateResult
from ._iterate import iterate as _iterate
from ._keyed import KeyedIterateResult
from ._keyed import iterate_by_key as _iterate_by_key
from ._progress import ProgressBar, progress_bar

if TYPE_CHECKING:
    from ..dashboard import Address, Dashboard

log = logging.getLogger("drizzle.context")


@runtime_checkable
class GroupSizeController(Protocol):
    """Chooses the size of each group of a job loop: ``iter_jobs(jobs, group_size=controller)``.

    For a library whose jobs need their own policy (a stream bounds an
    :class:`AutoGroupSize` by its latency budget). The scheduler
    calls ``next_size()`` when it starts a group: group k+1 is planned while
    group k runs, so its size is asked when k is launched, before k's figures
    are in. It calls ``observe(metrics)`` once per finished group, with that
    group's :class:`~drizzle_core.GroupMetrics`, after the group's last job
    was handed to the caller. Both run on the thread iterating the jobs,
    between its jobs, and hold up the loop while they run: keep them short
    and run no jobs from them. ``next_size()`` must return a positive int.
    What a controller raises, or a bad size, ends the iteration with that
    error: at once if it is the first size, else at the next job (whose
    result is dropped, the rest of the running group aborted).
    """

    def next_size(self) -> int:
        """The size of the group about to be planned."""
        ...

    def observe(self, metrics: GroupMetrics) -> None:
        """One finished group's :class:`~drizzle_core.GroupMetrics`."""
        ...


GroupSize = int | str | GroupSizeController


def _check_group_size_arg(g: Any, where: str = "group_size") -> None:
    """A group size is a positive int, ``"auto"`` or a :class:`GroupSizeController`."""
    if isinstance(g, (int, str)):
        check_group_size(g, where)
    elif not isinstance(g, GroupSizeController):
        raise ValueError(f"{where} must be a positive int or 'auto' (or a GroupSizeController, with next_size() "
                         f"and observe(metrics)), got {g!r}")


class AutoGroupSize:
    """``group_size="auto"`` as a :class:`GroupSizeController`: AIMD on each group's coordination share.

    After each group it feeds ``aimd`` (a :class:`~drizzle_core.AIMD`, a
    default one if None) the group's coordination share, jobs and wall time,
    and calls its ``on_failure()`` once per lost worker the group recovered
    from (a smaller group reacts sooner). :attr:`Context.auto_group_size` is
    the context's own, shared by all its ``"auto"`` loops. A library running
    a long loop of another kind of job makes its own, so that what its groups
    teach does not carry over to the context's other jobs: a stream (many
    tiny, timed jobs) uses ``AutoGroupSize(AIMD(initial=...))`` per run.
    """

    __slots__ = ("aimd",)

    def __init__(self, aimd: AIMD | None = None) -> None:
        if aimd is not None and not isinstance(aimd, AIMD):
            raise TypeError(f"AutoGroupSize needs an AIMD or None, got {type(aimd).__name__}")
        self.aimd = AIMD() if aimd is None else aimd

    def next_size(self) -> int:
        return self.aimd.next_size()

    def observe(self, metrics: GroupMetrics) -> None:
        self.aimd.observe(metrics.coordination, metrics.jobs, metrics.planned_size, metrics.wall_s)
        for _ in range(metrics.recoveries):
            self.aimd.on_failure()

    def __repr__(self) -> str:
        return f"<AutoGroupSize: AIMD at {self.aimd.next_size()}>"


class _ContextAutoGroupSize(AutoGroupSize):
    """The context's own: its scheduler tells the AIMD of every lost worker directly (in loops of every kind)."""

    __slots__ = ()

    def observe(self, metrics: GroupMetrics) -> None:
        self.aimd.observe(metrics.coordination, metrics.jobs, metrics.planned_size, metrics.wall_s)


class _Guarded:
    """A caller's GroupSizeController, called safely from inside the scheduler.

    The scheduler asks for a size after it launched the running group and
    reports a group before it settled the one planned ahead: an exception
    raised there would leave both half done. So the first size (asked before
    anything is planned) may raise at once; later errors (exceptions, bad
    sizes) are kept, a group of 1 is planned instead, and :func:`_guarded`
    raises them at the next job, closing the run cleanly.
    """

    __slots__ = ("asked", "ctl", "error")

    def __init__(self, ctl: GroupSizeController) -> None:
        self.ctl = ctl
        self.asked = 0
        self.error: BaseException | None = None

    def next_size(self) -> int:
        try:
            n = self.ctl.next_size()
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"group_size: {self.ctl!r}.next_size() returned {n!r}, not a positive int")
        except Exception as e:
            if not self.asked:
                raise
            if self.error is None:
                self.error = e
            n = 1
        self.asked += 1
        return n

    def observe(self, metrics: GroupMetrics) -> None:
        try:
            self.ctl.observe(metrics)
        except Exception as e:
            if self.error is None:
                self.error = e


def _guarded(results: JobIterator, guard: _Guarded) -> Iterator[tuple[int, list[Any]]]:
    try:
        for result in results:
            if guard.error is not None:
                break
            yield results.group, result
        if guard.error is not None:
            raise guard.error
    finally:
        results.close()  # aborts what is left of the running group, drops the one planned ahead


def _with_progress(results: JobIterator, bar: ProgressBar) -> Iterator[tuple[int, list[Any]]]:
    """``results`` counted on ``bar``, which is closed with them (noting a failure, or an early stop)."""
    note = ""
    try:
        for result in results:
            bar.advance(result)
            yield results.group, result
    except GeneratorExit:
        note = "stopped"
        raise
    except BaseException:
        note = "failed"
        raise
    finally:
        results.close()
        bar.close(note)


class _SizesTo:
    """A GroupSizeController passed through, telling ``bar`` each size asked (``iterate(progress=)``)."""

    __slots__ = ("ctl", "sizes")

    def __init__(self, bar: ProgressBar, ctl: GroupSizeController) -> None:
        self.ctl = ctl
        self.sizes = bar.track(ctl.next_size)

    def next_size(self) -> int:
        return self.sizes()

    def observe(self, metrics: GroupMetrics) -> None:
        self.ctl.observe(metrics)


#: seconds of silence after which a worker is declared lost (Spark's network timeout is 120 s, its heartbeat 10 s)
WORKER_TIMEOUT = 60.0


def _preferred(prefer: Any, n: int) -> list[int | None] | None:
    """``from_partitions(prefer=)`` checked: one worker index (or None) per partition."""
    if prefer is None:
        return None
    where = list(prefer) if isinstance(prefer, (list, tuple)) else None
    if where is None or len(where) != n or not all(
            w is None or (isinstance(w, int) and not isinstance(w, bool) and w >= 0) for w in where):
        raise ValueError(f"from_partitions: prefer must give one worker index (an int >= 0) or None per "
                         f"partition ({n}), got {prefer!r}")
    return where


def _dashboard_address(value: Any) -> Address | None:
    """``dashboard=`` checked; the dashboard package is imported only when one is asked for (off, it costs nothing)."""
    if value is None or value is False:
        return None
    from ..dashboard import parse

    return parse(value)


def _check_timeout(value: Any, name: str) -> None:
    ok = value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                           and math.isfinite(float(value)) and float(value) > 0)
    if not ok:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


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
    Chrome trace-event file (tasks per worker over time; open it in
    Perfetto), written as the jobs run and completed when the context stops,
    is garbage-collected or the interpreter exits. Other keyword arguments
    go to the transport.

    Hung workers: ``worker_timeout`` (seconds, default 60; None: never) is
    how long a worker may stay silent before it is declared lost, fenced
    (its process killed when the transport started it) and its work
    recomputed from lineage, as for a crash. Workers send a heartbeat from
    a thread of their own every ``min(1, worker_timeout / 5)`` s, so a long
    task does not look dead; a stopped process (SIGSTOP), a frozen host or
    a cut network path does. ``task_timeout`` (seconds, default None) bounds
    each task: one that runs longer is interrupted and its job raises
    :class:`~drizzle_core.TaskTimeoutError` (not retried). The ``inline``
    transport runs tasks in the caller's thread and supports neither.

    ``dashboard``: serve a live web page of the workers, groups, task
    timeline, streams and iterate loops (:mod:`drizzle_core.dashboard`):
    True (127.0.0.1:8787, or any free port if that is taken), ``"host:port"``
    (port 0: any free port) or a port number; its address is logged and is
    :attr:`dashboard_url`. An address other than loopback is served only to
    requests with the token in that URL.
    """

    def __init__(self, transport: str = "local", workers: Any = None, group_size: GroupSize = "auto",
                 *, trace: str | os.PathLike[str] | None = None, worker_timeout: float | None = WORKER_TIMEOUT,
                 task_timeout: float | None = None, dashboard: bool | str | int | None = None,
                 **options: Any) -> None:
        _check_group_size_arg(group_size)
        board_at = _dashboard_address(dashboard)
        _check_timeout(worker_timeout, "worker_timeout")
        _check_timeout(task_timeout, "task_timeout")
        # workers=None is the transport's to decide: one per core here (local, inline, tcp), one per
        # Dask worker of the cluster (dask)
        if isinstance(workers, int) and not isinstance(workers, bool) and workers <= 0:
            raise ValueError(f"workers must be a positive int, got {workers}")
        info = get_transport(transport)
        # The trace file is opened first (a bad path fails here, before any worker starts) and is closed by
        # stop() or, for a Context never stopped, by a finalizer: at garbage collection or interpreter exit.
        self._trace = Trace(trace) if trace is not None else None
        if self._trace is not None:
            weakref.finalize(self, self._trace.close)
        self.transport_name = transport
        self.group_size = group_size
        self._adaptive = AIMD()
        self._auto: AutoGroupSize = _ContextAutoGroupSize(self._adaptive)
        self._transport: Transport = info.factory(workers=workers, **options)
        self._transport.name = transport
        self._transport.configure(worker_timeout=worker_timeout, task_timeout=task_timeout)
        self._closed = False
        self._transport.start()
        self.num_workers = len(self._transport.worker_names)
        self._scheduler = GroupScheduler(self._transport, self.num_workers)
        self._scheduler.on_failure = self._adaptive.on_failure
        if self._trace is not None:
            self._trace.name_workers(self.workers)
            self._scheduler.trace = self._trace
        self._dashboard: Dashboard | None = None
        if board_at is not None:
            from ..dashboard import Dashboard

            try:
                self._dashboard = Dashboard(board_at, self._scheduler, transport=transport)
            except BaseException:
                self._transport.close()
                raise
        self._cached: dict[int, weakref.finalize[Any, Any]] = {}
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
            if self._dashboard is not None:
                self._dashboard.close()
            for fin in self._cached.values():
                fin.detach()
            self._cached.clear()
            self._transport.close()
            if self._trace is not None:
                self._trace.close()

    close = stop

    # A Context is the driver's handle on its workers: never sent to them, never copied.
    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(D._CAPTURED.format(what="Context", why=" on its workers; tasks cannot run jobs"))

    def __copy__(self) -> Context:
        return self  # a handle: copies share the workers (sklearn's clone deep-copies an estimator's context=)

    def __deepcopy__(self, memo: dict[int, Any]) -> Context:
        return self

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
        if self._trace is not None:
            self._trace.name_workers(self.workers)
        return self._transport.worker_names[index]

    @property
    def dashboard_url(self) -> str | None:
        """The address of this context's live dashboard (``Context(dashboard=...)``), None without one."""
        return None if self._dashboard is None else self._dashboard.url

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
    def metrics(self) -> Sequence[GroupMetrics]:
        """One :class:`GroupMetrics` per group run so far: the last 10,000 kept, indexed by group position.

        ``len(ctx.metrics)`` counts every group; ``ctx.metrics[since:]`` is
        what ran since ``since = len(ctx.metrics)``. A context that runs a
        stream for days keeps only the last entries, like Spark's UI (see
        :mod:`drizzle_core._retained`); its memory stays flat.
        """
        return self._scheduler.metrics

    @property
    def auto_group_size(self) -> GroupSizeController:
        """The controller behind ``group_size="auto"``: this context's :class:`AutoGroupSize`.

        One per context, shared by every ``"auto"`` job loop: what their
        groups teach it, the next loop starts from, and a lost worker halves
        it. A library may wrap it to add a bound of its own and pass the
        wrapper as ``group_size``, or start its own from its ``next_size()``.
        """
        return self._auto

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

    def text_file(self, name: str | os.PathLike[str], min_partitions: int | None = None,
                  use_unicode: bool = True) -> D.Dataset:
        """The lines of text files, one element per line (without its ``\\n`` or ``\\r\\n``), read by the workers.

        ``name``: a file, a directory (its files, but those whose name starts
        with ``_`` or ``.``), a glob (``logs/2024-*/part-*``), or several of
        these separated by commas, as in Spark. Files are cut into splits of
        at most 32 MiB, for at least about ``min_partitions`` partitions
        (default ``min(workers, 2)``, as PySpark's); a line belongs to the
        split its first byte is in, so none is read twice or cut; a ``.gz``
        file is read whole, decompressed. The driver lists the files and
        their sizes only; each task reads its split, so the paths must be the
        same on every worker (one host, or a shared filesystem). Lines are
        decoded as UTF-8; ``use_unicode=False`` keeps them bytes. A path
        that matches nothing is a FileNotFoundError now, not at the first
        action.
        """
        self._check_open()
        return _text.text_file(self, name, min_partitions, use_unicode)

    def from_partitions(self, partitions: Sequence[Any], *, not_before: float | None = None,
                        label: str | None = None, prefer: Sequence[int | None] | None = None) -> D.Dataset:
        """A dataset whose partition p is ``partitions[p]``, as given (``parallelize`` splits data; this does not).

        For a library that makes its own inputs: each partition is an
        iterable of records (a list, a tuple, an ndarray), read by the task
        that runs it. ``not_before`` (epoch seconds, as ``time.time()``) makes
        it a timed source: the tasks reading it are launched with the rest of
        their group, ahead of time, and wait on their worker until then, so
        work that becomes possible at a known time (a micro-batch, at its
        end) is scheduled once, G batches at a time, and starts on time with
        no driver round trip. ``label`` names the dataset in errors and
        traces (default: the call site). ``prefer``: for each partition, the
        index of the worker that should read it (None: any), honoured while
        that worker is live — for data that already sits on a worker's host
        (``from_dask`` places each partition with the Dask worker holding it).
        """
        self._check_open()
        parts = D._partitions_arg(partitions, "from_partitions")
        if not parts:
            raise ValueError("from_partitions needs at least one partition")
        real = type(not_before) is float or (isinstance(not_before, numbers.Real) and not isinstance(not_before, bool))
        if not_before is not None and not (real and math.isfinite(not_before)):
            raise ValueError(f"from_partitions: not_before must be a finite time in epoch seconds or None, "
                             f"got {not_before!r}")
        if label is not None and not isinstance(label, str):
            raise TypeError(f"from_partitions: label must be a str, got {type(label).__name__}")
        name = label if label is not None else f"from_partitions at {D._call_site()}"
        where = _preferred(prefer, len(parts))
        node = N.SourceNode(next(D._ids), parts, name, start_at=None if not_before is None else float(not_before),
                            prefer=where)
        return D.Dataset(self, node, ())

    def from_dask(self, collection: Any, **options: Any) -> D.Dataset:
        """A cached dataset of a Dask collection's partitions (a dask array's blocks along its rows, a
        dataframe's partitions), each read by the Drizzle worker beside the Dask worker that holds it,
        never through the driver. Needs ``transport="dask"`` (the ``drizzle-dask`` plugin)."""
        return self._engine_input("from_dask", "dask", collection, options)

    def from_ray(self, dataset: Any, **options: Any) -> D.Dataset:
        """A cached dataset of a Ray Dataset's blocks, each read by a Drizzle worker on the node that holds
        it where one is there, never through the driver. Needs ``transport="ray"`` (the ``drizzle-ray``
        plugin)."""
        return self._engine_input("from_ray", "ray", collection=dataset, options=options)

    def _engine_input(self, method: str, transport: str, collection: Any, options: dict[str, Any]) -> D.Dataset:
        self._check_open()
        make = getattr(self._transport, method, None)
        if make is None:
            raise TypeError(f"{method} reads from the engine the workers run in: it needs "
                            f"Context(transport={transport!r}), this Context runs on {self._transport.name!r}")
        # under the scheduler's lock: the transport's launcher is only ever used by one thread at a time
        with self._scheduler._locked():
            ds: D.Dataset = make(self, collection, **options)
        return ds

    # --------------------------------------------------------------- jobs
    def run_jobs(self, jobs: Iterable[tuple[D.Dataset, Callable[[Any], Any]]],
                 group_size: GroupSize | None = None, *, progress: bool | ProgressBar = False) -> list[list[Any]]:
        """Drizzle's runJobs: run every ``(dataset, f)`` job; ``f`` gets each partition.

        Returns one list per job (one ``f`` result per partition), in job
        order. Jobs are scheduled ``group_size`` at a time (default: the
        context's): an int, ``"auto"`` or a :class:`GroupSizeController`;
        ``jobs`` may be a lazy iterable, consumed a group at a time. Nothing
        is returned before the last job is done, so workers send results in
        batches (``iter_jobs``' ``hold_results``): one wake-up of the driver
        for many jobs. ``progress=True`` draws a bar on a terminal (jobs done,
        rate, current G; nothing when stderr is not a terminal); a
        :class:`ProgressBar` chooses its text, file and renderer.
        """
        return list(self.iter_jobs(jobs, group_size, hold_results=_iterate_module.RESULT_HOLD, progress=progress))

    def iter_jobs(self, jobs: Iterable[tuple[D.Dataset, Callable[[Any], Any]]],
                  group_size: GroupSize | None = None, *,
                  keep_going: Callable[[], bool] | None = None, hold_results: float = 0.0,
                  progress: bool | ProgressBar = False) -> JobIterator:
        """Like :meth:`run_jobs`, but yields each job's results as soon as that job finishes.

        The next group is planned while the current one runs; ``keep_going()``
        is asked before it starts, and False ends the iteration there (jobs
        already pulled from ``jobs`` for that group do not run). The iterator's
        ``group`` attribute is the group of the job it returned last. Actions
        may be called while iterating (inside the loop, from the job
        generator, from another thread): each runs as a group of its own.
        ``group_size`` may be a :class:`GroupSizeController`, asked for each
        group's size and told how each group went. ``hold_results``: seconds
        a worker may keep finished jobs' results to send several at once (one
        wake-up of the driver, not one per job), for a loop that needs
        throughput more than each result the moment it exists (``iterate``).
        ``progress``: as for :meth:`run_jobs`; the bar ends with the iteration.
        """
        if isinstance(hold_results, bool) or not isinstance(hold_results, (int, float)) or \
                not 0 <= hold_results < float("inf"):
            raise ValueError(f"iter_jobs: hold_results must be a finite number of seconds >= 0, got {hold_results!r}")
        self._check_open()
        g = self.group_size if group_size is None else group_size
        _check_group_size_arg(g)
        bar = progress_bar(progress, len(jobs) if isinstance(jobs, Sized) else None, "jobs", "job")
        on_group: Callable[[GroupMetrics], None] | None = None
        if g == "auto" or g is self._auto:
            next_size, on_group = self._auto.next_size, self._auto.observe
        elif isinstance(g, int):
            fixed = g

            def next_size() -> int:
                return fixed
        else:
            guard = _Guarded(g)  # type: ignore[arg-type]
            self._scheduler.check_workers()
            sizes = guard.next_size if bar is None else bar.track(guard.next_size)
            inner = self._scheduler.run(self._validated(jobs), sizes, guard.observe, keep_going,
                                        float(hold_results))
            it = JobIterator(_guarded(inner, guard))
            return it if bar is None else JobIterator(_with_progress(it, bar))
        self._scheduler.check_workers()
        if bar is not None:
            next_size = bar.track(next_size)
        it = self._scheduler.run(self._validated(jobs), next_size, on_group, keep_going, float(hold_results))
        return it if bar is None else JobIterator(_with_progress(it, bar))

    def _validated(self, jobs: Iterable[Any]) -> Iterator[tuple[D.Dataset, Callable[[Any], Any]]]:
        if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Iterable):
            raise TypeError(f"run_jobs needs an iterable of (dataset, function) pairs, got {type(jobs).__name__}")
        for i, job in enumerate(jobs):
            # type(job) is tuple first: the ABC check costs ~1 us, per job of every loop and stream
            if not ((type(job) is tuple or isinstance(job, Sequence)) and len(job) == 2):
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
                keep_history: bool = False, progress: bool | ProgressBar = False,
                copy_state: bool = True) -> IterateResult:
        """Run dependent iterations on cached ``data`` with no driver round trip inside a group.

        Each iteration: ``local(partition, state)`` on every partition where it
        lives; each worker folds its partials with ``combine`` and sends the
        value to every other worker, and each worker folds them all (in one
        order, fixed by the lineage) and computes ``update(state, total)``
        itself, its own copy of the next state: one hop between workers per
        iteration (an all-reduce; one reducer past 16 workers, see
        :mod:`drizzle_core.api._iterate`). ``until(state)`` ends the loop early;
        ``on_iteration(i, state)`` sees every state on the driver as it
        arrives. Returns an :class:`IterateResult` (``state``, ``history``,
        ``iterations``, ``converged``); ``history`` holds every state only with
        ``keep_history=True`` (a long loop with a big state would otherwise keep
        them all on the driver: 2,000 iterations of a 2 MB state are 3.9 GB).
        ``progress=True`` draws a bar on a terminal (iterations, rate, current
        G); a :class:`ProgressBar` may show more (its ``status(state)``: a loss).
        ``update`` may change ``state`` in place and return it (``w -= lr * g``):
        it gets its own deep copy, as the state it was given is still the last
        iteration's (held for the driver, kept for recovery). ``copy_state=False``
        saves that copy (10-40 us an iteration for a model's state) for an
        ``update`` that returns a new state and never changes its argument.
        """
        self._check_open()
        if not isinstance(copy_state, bool):
            raise TypeError(f"iterate: copy_state must be a bool, got {type(copy_state).__name__}")
        bar = progress_bar(progress, iterations if isinstance(iterations, int) else None, "iterate", "it")
        if bar is None and self._dashboard is None:
            return _iterate(self, data, init, local=local, combine=combine, update=update, iterations=iterations,
                            group_size=group_size, until=until, on_iteration=on_iteration,
                            keep_history=keep_history, copy_state=copy_state)
        if bar is not None:
            # The bar counts the states as they arrive (on_iteration) and learns each group's size from a
            # controller wrapped around the one asked for (iterate's own job loop takes no progress= of its own).
            g = self.group_size if group_size is None else group_size
            _check_group_size_arg(g)
            if isinstance(g, int):
                bar.group_size = g
            else:
                group_size = _SizesTo(bar, self._auto if g == "auto" else g)  # type: ignore[arg-type]
        user = on_iteration

        def counted(i: int, state: Any) -> None:
            if bar is not None:
                bar(i, state)
            if user is not None:
                user(i, state)
        watching = self._dashboard.watch_iterate(iterations, counted) if self._dashboard is not None else None
        try:
            with watching if watching is not None else contextlib.nullcontext() as watch:
                res = _iterate(self, data, init, local=local, combine=combine, update=update, iterations=iterations,
                               group_size=group_size, until=until,
                               on_iteration=watch if watch is not None else counted,
                               keep_history=keep_history, copy_state=copy_state)
                if watch is not None:
                    watch.done(res.iterations, res.converged)
        except BaseException:
            if bar is not None:
                bar.close("failed")
            raise
        if bar is not None:
            bar.close("converged" if res.converged else "")
        return res

    def iterate_by_key(self, state: D.Dataset, *, send: Callable[..., Iterable[Any]], update: Callable[..., Any],
                       iterations: int, data: D.Dataset | Sequence[D.Dataset] | None = None,
                       combine: Callable[[Any, Any], Any] | None = None,
                       aggregate: tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]] | None = None,
                       measure: Callable[[Any, Any, Any], Any] | None = None,
                       until: Callable[[Any], bool] | None = None, num_partitions: int | None = None,
                       group_size: GroupSize | None = None, checkpoint_interval: int = 10,
                       on_iteration: Callable[[int, Any], None] | None = None,
                       progress: bool | ProgressBar = False, copy_state: bool = True) -> KeyedIterateResult:
        """Iterations whose state is a keyed dataset, split across the workers: Pregel's message passing.

        ``state`` holds ``(key, value)`` pairs, one per key; it is
        hash-partitioned into ``num_partitions`` (default: the most partitions
        of ``state`` and ``data``) and stays on the workers. Each iteration,
        ``send(key, value, values)`` runs for every key with ``values`` in the
        data (``data[(i - 1) % len(data)]`` when ``data`` is a sequence;
        ``send(key, value)`` for every key without data) and yields
        ``(key, message)`` pairs; the messages to a key are merged with
        ``combine`` (or listed), and ``update(key, old, message)`` is the key's
        new value (``old`` None for a new key; None removes the key). Keys
        without a message keep their value. ``aggregate=(seq, comb)`` folds
        ``seq`` (called as ``send`` is) over the sending keys and passes the total to
        ``update(key, old, message, total)``. ``measure(key, old, new)``, summed
        over the updated keys, is each iteration's metric: ``on_iteration(i,
        metric)`` sees it and ``until(metric)`` stops the loop. Groups of
        ``group_size`` iterations run with no driver between them; every
        ``checkpoint_interval`` iterations the state comes to the driver to
        bound its lineage. Returns a :class:`KeyedIterateResult` whose
        ``state`` is a dataset of ``(key, value)`` pairs, cached on the workers.
        ``update`` may change ``old`` in place and return it: it gets its own
        deep copy (``old`` is still the last iteration's, which ``measure``
        compares with); ``copy_state=False`` saves the copy for an ``update``
        that never changes its argument. See :mod:`drizzle_core.api._keyed`.
        """
        self._check_open()
        return _iterate_by_key(self, state, send=send, update=update, iterations=iterations, data=data,
                               combine=combine, aggregate=aggregate, measure=measure, until=until,
                               num_partitions=num_partitions, group_size=group_size,
                               checkpoint_interval=checkpoint_interval, on_iteration=on_iteration, progress=progress,
                               copy_state=copy_state)

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
        s = _stream_class(self, source, batch_interval, group_size=group_size,
                          max_group_seconds=max_group_seconds, **extra)
        if self._dashboard is not None:
            self._dashboard.watch_stream(s)
        return s

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
