"""Micro-batch streaming on group scheduling (Drizzle's streaming mode).

``ctx.stream(source, batch_interval)`` returns a :class:`Stream`: the root of
a graph of :class:`DStream` transformations (Spark Streaming's DStreams) with
sinks attached. Running it turns every micro-batch into one job and feeds the
jobs to :meth:`Context.iter_jobs`, which schedules them G at a time.

Timing. Batch ``b`` covers ``[start_b, end_b)`` with ``start_b = k0 * I + b * I``
(``I`` the interval, ``k0`` chosen so batch 0 starts at the first multiple of
``I`` after ``run()`` is called: batch and window boundaries are aligned to the
epoch). The batch's source node has ``start_at = end_b``: its tasks are
launched with the rest of their group and wait on their worker until the
batch's data is complete. So a group of G batches is planned and shipped once
(one launch message per worker), and then the workers run batch after batch
at its time while the driver only listens; every downstream stage is
pre-scheduled (worker-to-worker shuffles), and per-key state for batch b+1 is
computed from the state of batch b where that state lives. The driver plans
the next group when the current one has finished (iter_jobs' contract), so
with G = 1 every batch carries one driver round trip (results in, plan,
serialize, launch) between it and the previous batch; with larger G only one
batch in G does. Outputs reach the sinks per batch, in batch order, each as
soon as its batch finishes (iter_jobs yields jobs as they finish).

Falling behind: if a batch's processing (plus the driver round trip, at a
group boundary) takes longer than the interval, the next batch's tasks find
their ``start_at`` already past and start at once: batches queue on the
workers, none is dropped, and the queueing shows as ``lag`` in the metrics.

One batch = one job. The job's dataset is a union of:

* the batch's source dataset (cached for the batch, so that several branches
  read one copy: a source is read once per batch, not once per branch), mapped to its record
  count and start time (the metrics);
* one dataset per sink (the sink's DStream for this batch);
* "touch" datasets that must be computed in this batch even if no sink reads
  them now (a batch-time window's cached input in a batch that emits nothing).

Group size. ``group_size`` is an int, ``"auto"`` or a
:class:`~drizzle_core.GroupSizeController` (used as is). For a stream,
``"auto"`` is an :class:`~drizzle_core.AutoGroupSize` (AIMD) of its own for
each run, started where the context's would start (its groups must not
retune the context's for other jobs: a stream's idle time grows AIMD to its
limits), with two caps (:class:`_CappedAuto`). The time limit,
``G * I <= max_group_seconds`` (1 s by default), because a group is also
the unit of reaction: a stop, or a failure, is acted on at the next group
boundary. And the latency budget
(:class:`~drizzle_core.stream._cap.LatencyCap`): a group's driver cost (about
G times the per-batch planning, serializing and launching) must fit in the
slack G=1 has between batches, so that grouping never delays results more
than G=1 does; the figures are medians over recent groups and the cap grows
gradually, so one slow group does not lift it to the time limit. Idle time
waiting for batches to come due counts as coordination for AIMD, so in a
stream that keeps up it grows G to the caps quickly, and a stream that
falls behind (workers busy) shrinks it slowly.

Stopping. :meth:`Stream.stop` (from a sink callback or another thread),
``run(batches=N)`` or ``run(duration=S)``: no batch is planned after the stop
is noticed. Batches already planned — the rest of the current group, at most
``max_group_seconds`` of data — are processed and delivered to the sinks as
usual, so every delivered batch is complete and state stays consistent. Then
``run`` returns; the workers are idle and the context usable. The stream can
be run again: batch indices and per-key state continue; batch times restart
from the new ``run`` call's clock.

Failures. A batch is *delivered* once every sink's callback returned for it.
When a task fails or a sink raises, ``run`` raises that error after rolling
the DStreams back to their state after the last delivered batch (the same
rollback a stop does for the group it drops): running the stream again
continues with the first batch not delivered. So the batch whose sink
raised is delivered again, to every sink (output is at-least-once, as in
Spark Streaming), and state counts every batch exactly once.

A lost worker is not an error: the engine recomputes what it held from
lineage and the group goes on. Sinks run on the driver, once per delivered
batch, so output is exactly once provided a batch read again from its
source gives the same records: a deterministic generator does; the
directory and socket sources record on the driver what each batch read
and replay it (:mod:`drizzle_core.stream._sources`, "Delivery under
failure"); a custom source must make its reads repeatable itself. After a
batch is delivered the source is told (``Source._commit``), so what it
kept for replay can go once no dataset may read the batch again. Late
events of event-time windows are counted per batch
(``BatchMetrics.late_events``) and in :attr:`Stream.late_events`, and can be
read from a side output (:mod:`drizzle_core.stream._window`).

Checkpoints. Each batch's state dataset (``update_state_by_key``, event-time
windows) is computed from the previous one, so its lineage — which the
driver keeps, to recompute lost blocks — would grow by one batch's datasets
per batch, without bound. Every ``checkpoint_every`` batches (10 by default)
the batch's job also returns the state partitions to the driver, and when
they arrive the state dataset's lineage is replaced by that value (Spark's
periodic checkpoint; the driver is the reliable store, as in ``iterate``).
The state stays cached on its workers; a lost worker's state is recomputed
from the last checkpoint and at most ``checkpoint_every`` batches after it.
Its cost is the state's size sent to the driver once per checkpoint.

State kept on the driver between batches (references to cached datasets on
the workers, plus one checkpointed value per stateful DStream): per stateful
DStream its latest state dataset and the lineage back to its last checkpoint,
per batch-time window the last ``length / I`` input datasets, and per
broadcast join the table's single cached partition.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._check import check_callable, check_group_size, fn_name
from .._retained import Retained
from .._stats import percentile
from ..api import AIMD, AutoGroupSize, Dataset, GroupMetrics, GroupSizeController, ProgressBar
from ._cap import GroupSample, LatencyCap
from ._metrics import BatchMetrics, StreamSummary, summarize
from ._sources import BatchTime, Source, check_seconds

if TYPE_CHECKING:
    from ..api import Context

log = logging.getLogger("drizzle.stream")

#: batches between checkpoints of a stateful DStream (see the module docstring)
DEFAULT_CHECKPOINT_EVERY = 10


def _check_group_size(g: Any) -> None:
    """An int or ``"auto"`` (checked), or a GroupSizeController (used as is)."""
    if not isinstance(g, GroupSizeController):
        check_group_size(g)


@dataclass
class _Batch:
    """One batch, from building its job until it is delivered (or rolled back)."""

    index: int
    time: BatchTime
    checkpoint_due: bool = False                               # stateful DStreams checkpoint in this batch
    memo: dict[int, Dataset] = field(default_factory=dict)     # id(DStream) -> its dataset for this batch
    touch: list[Dataset] = field(default_factory=list)         # computed this batch, output ignored
    checkpoint: list[Dataset] = field(default_factory=list)    # state returned to the driver, lineage cut
    release: list[Dataset] = field(default_factory=list)       # unpersist once this batch's job is planned
    late_counts: list[Dataset] = field(default_factory=list)   # [n late] per partition, per event-time window
    late_states: dict[int, Dataset] = field(default_factory=dict)  # id(event-time aggregation) -> its state
    layout: list[int] = field(default_factory=list)            # partitions per part of the job's union
    late_at: int = 0                                           # first partition of the late counts in the result


class DStream:
    """A stream of datasets, one per micro-batch (a Spark DStream).

    Transformations build new DStreams and run nothing. A DStream reaches the
    workers only through a sink (:meth:`foreach_batch`,
    :meth:`collect_sink`) and the root :class:`Stream`'s :meth:`Stream.run`.
    """

    #: attributes that change as batches are built (a stop may roll them back)
    _batch_state: tuple[str, ...] = ()

    def __init__(self, root: Stream | None, parents: tuple[DStream, ...], label: str) -> None:
        self.root: Stream = root if root is not None else self  # type: ignore[assignment]
        self.parents = parents
        self.label = label

    def __repr__(self) -> str:
        return f"<DStream {self.label}>"

    # --------------------------------------------------------- building
    def _dataset(self, batch: _Batch) -> Dataset:
        ds = batch.memo.get(id(self))
        if ds is None:
            ds = batch.memo[id(self)] = self._build(batch)
        return ds

    def _build(self, batch: _Batch) -> Dataset:
        raise NotImplementedError

    def _prepare(self, ctx: Context) -> None:
        """Driver work before a run's first batch (outside any group: may run jobs)."""

    # --------------------------------------------------- transformations
    def transform(self, f: Callable[[Dataset], Dataset], label: str = "") -> DStream:
        """Apply ``f`` to every batch's dataset (Spark's ``transform``); ``f`` must return a Dataset."""
        check_callable(f, "transform")
        return _Transform(self, f, label or f"transform({fn_name(f)})")

    def map(self, f: Callable[[Any], Any]) -> DStream:
        return _Transform(self, _Method("map", f), f"map({fn_name(f)})")

    def filter(self, f: Callable[[Any], bool]) -> DStream:
        return _Transform(self, _Method("filter", f), f"filter({fn_name(f)})")

    def flat_map(self, f: Callable[[Any], Iterable[Any]]) -> DStream:
        return _Transform(self, _Method("flat_map", f), f"flat_map({fn_name(f)})")

    def map_partitions(self, f: Callable[[Any], Iterable[Any]]) -> DStream:
        return _Transform(self, _Method("map_partitions", f), f"map_partitions({fn_name(f)})")

    def reduce_by_key(self, f: Callable[[Any, Any], Any], num_partitions: int | None = None) -> DStream:
        """Per batch: merge the values of each key with the associative ``f``."""
        check_callable(f, "reduce_by_key")
        return _Transform(self, _Method("reduce_by_key", f, num_partitions), f"reduce_by_key({fn_name(f)})")

    def group_by_key(self, num_partitions: int | None = None) -> DStream:
        return _Transform(self, _Method("group_by_key", num_partitions), "group_by_key")

    def count_by_key(self, num_partitions: int | None = None) -> DStream:
        """Per batch: ``(key, number of records)`` for records ``(key, value)``."""
        return self.map(_one_per_key).reduce_by_key(_add, num_partitions)

    def union(self, *others: DStream) -> DStream:
        """Per batch: this stream's dataset followed by the others'."""
        for o in others:
            if not isinstance(o, DStream) or o.root is not self.root:
                raise ValueError("DStream.union needs DStreams of the same Stream")
        return _Union(self, others)

    def join(self, other: Dataset, num_partitions: int | None = None, *, broadcast: bool = True) -> DStream:
        """Inner join of each batch's ``(k, v)`` records with a static dataset of ``(k, w)``: ``(k, (v, w))``.

        ``broadcast=True`` (for a small table, e.g. a dimension table): the
        table is collected once when the stream starts, kept as one cached
        partition on a worker, and forwarded to each worker once per group;
        every batch partition joins against it where it is, with no shuffle.
        ``broadcast=False``: a shuffle join per batch (cache ``other``).
        """
        if not isinstance(other, Dataset) or other.ctx is not self.root.ctx:
            raise ValueError("DStream.join needs a Dataset of the stream's Context")
        if broadcast:
            return _BroadcastJoin(self, other)
        return _Transform(self, _Method("join", other, num_partitions), "join")

    def update_state_by_key(self, update: Callable[[list[Any], Any], Any], num_partitions: int | None = None,
                            ) -> DStream:
        """Per-key state carried across batches (Spark's ``updateStateByKey``).

        For records ``(k, v)``: after each batch, every key's state becomes
        ``update(new_values, old_state)`` — ``new_values`` the key's values in
        this batch (a list, maybe empty), ``old_state`` None for a new key.
        Returning None removes the key. The DStream's dataset for each batch
        is the whole state, ``(k, state)`` pairs.

        The state is a cached dataset of ``num_partitions`` partitions (one
        dict each); partition r of batch b is computed from partition r of
        batch b-1 on the worker that holds it, from this batch's values
        shuffled by key to it: neither state nor values pass the driver.
        """
        check_callable(update, "update_state_by_key")
        return _StateByKey(self, update, num_partitions)

    def window(self, length: float, slide: float | None = None, *,
               event_time: Callable[[Any], float] | None = None, lateness: float = 0.0) -> Any:
        """A sliding window of ``length`` seconds every ``slide`` seconds (default: tumbling).

        Batch time (no ``event_time``): a DStream whose dataset, every
        ``slide`` seconds, is the union of the last ``length`` seconds of
        batches (empty in between). Both must be multiples of the interval.

        Event time (``event_time(record)`` gives a record's time): returns a
        :class:`~drizzle_core.stream._window.EventWindows`; aggregate it with
        ``reduce_by_key`` / ``count_by_key`` / ``count`` to get each window's
        final value once the watermark (batch end minus ``lateness``) passes
        the window's end. A record arriving after all its windows were
        emitted is late: counted (``BatchMetrics.late_events``,
        ``Stream.late_events``) and, with ``agg.late_events()`` (a DStream),
        seen as a side output. See :mod:`drizzle_core.stream._window`.
        """
        from . import _window

        if event_time is None:
            return _window.BatchWindow(self, length, slide)
        return _window.EventWindows(self, length, slide, event_time, lateness)

    # --------------------------------------------------------------- sinks
    def foreach_batch(self, callback: Callable[[list[Any], BatchMetrics], Any]) -> DStream:
        """Call ``callback(records, metrics)`` on the driver for every batch, in batch order.

        ``records`` is the batch's dataset collected (partition order);
        ``metrics`` the batch's :class:`BatchMetrics`. Returns self.
        """
        if not callable(callback):
            raise TypeError(f"foreach_batch needs a callable, got {type(callback).__name__}")
        self.root._sinks.append((self, callback))
        return self

    def collect_sink(self) -> CollectingSink:
        """A sink that keeps every batch's records (for tests and small streams)."""
        sink = CollectingSink()
        self.foreach_batch(sink)
        return sink

    # ----------------------------------------------- delegated to the root
    def run(self, batches: int | None = None, *, duration: float | None = None,
            group_size: int | str | None = None, progress: bool | ProgressBar = False) -> list[BatchMetrics]:
        """Run the whole stream (see :meth:`Stream.run`)."""
        return self.root.run(batches, duration=duration, group_size=group_size, progress=progress)

    def stop(self) -> None:
        self.root.stop()


class CollectingSink:
    """Keeps every batch's records: ``batches[i]`` is batch i's list (of this run and later ones)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.metrics: list[BatchMetrics] = []

    def __call__(self, records: list[Any], metrics: BatchMetrics) -> None:
        self.batches.append(records)
        self.metrics.append(metrics)

    def items(self) -> list[Any]:
        """Every record of every batch, in order."""
        return [x for b in self.batches for x in b]


class Stream(DStream):
    """The root of a streaming computation: its source, interval, sinks and metrics.

    Made by :meth:`Context.stream`. As a DStream it is the source's records.
    """

    def __init__(self, ctx: Context, source: Source, batch_interval: float = 0.1, *,
                 group_size: int | str | GroupSizeController = "auto", max_group_seconds: float = 1.0,
                 checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        if not isinstance(source, Source):
            raise TypeError(f"ctx.stream needs a Source (GeneratorSource, DirectorySource, SocketSource), "
                            f"got {type(source).__name__}")
        interval = check_seconds(batch_interval, "batch_interval")
        _check_group_size(group_size)
        source._attach(self)
        super().__init__(None, (), f"stream of {type(source).__name__}")
        self.ctx = ctx
        self.source = source
        self.interval = interval
        self.group_size = group_size
        self.max_group_seconds = check_seconds(max_group_seconds, "max_group_seconds")
        self.checkpoint_every = checkpoint_every
        #: every batch's metrics, the last METRICS_RETAINED kept (indexed by batch position; see _retained.py)
        self.metrics: Retained[BatchMetrics] = Retained()
        #: events left out of event-time windows as late, over every delivered batch (see _window.py)
        self.late_events = 0
        self._sinks: list[tuple[DStream, Callable[[list[Any], BatchMetrics], Any]]] = []
        self._stop = threading.Event()
        self._running = False
        self._next_batch = 0  # the first batch not delivered yet: where the next run starts
        self._latency_cap = LatencyCap(self.interval, self._time_cap())
        self._graph_of: tuple[int, list[DStream]] | None = None  # (sinks, _graph()) when last computed

    @property
    def checkpoint_every(self) -> int:
        """Every this many batches, stateful DStreams return their state to the driver (see the module docstring)."""
        return self._checkpoint_every

    @checkpoint_every.setter
    def checkpoint_every(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"checkpoint_every must be a positive int (batches), got {n!r}")
        self._checkpoint_every = n

    def _build(self, batch: _Batch) -> Dataset:
        raw = batch.memo[_RAW]
        return raw.map_partitions(_records)

    @property
    def running(self) -> bool:
        return self._running

    def stop(self) -> None:
        """Stop at the next group boundary (see the module docstring); safe from any thread."""
        self._stop.set()

    def metrics_summary(self, skip: int = 0) -> StreamSummary:
        """Latency percentiles, events per second and lag over :attr:`metrics` (after ``skip`` batches)."""
        return summarize(self.metrics[skip:], self.interval)

    # ---------------------------------------------------------------- run
    def run(self, batches: int | None = None, *, duration: float | None = None,
            group_size: int | str | GroupSizeController | None = None,
            progress: bool | ProgressBar = False) -> list[BatchMetrics]:
        """Process batches until ``batches`` have run, ``duration`` seconds of batches, or :meth:`stop`.

        With neither limit it runs until stopped. Returns this run's
        :class:`BatchMetrics` (all runs' are in :attr:`metrics`).
        ``progress=True`` draws a bar on a terminal: batches, batches per
        second, current G and the last batch's latency (nothing when stderr
        is not a terminal); a :class:`~drizzle_core.ProgressBar` chooses its own.
        """
        ctx = self.ctx
        if ctx.closed:
            raise RuntimeError("this Context is stopped")
        if self._running:
            raise RuntimeError("this stream is already running")
        if not self._sinks:
            raise ValueError("the stream has no sink: add one with foreach_batch or collect_sink")
        if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 0):
            raise ValueError(f"batches must be a non-negative int, got {batches!r}")
        if duration is not None:
            duration = check_seconds(duration, "duration", zero=True)
            by_time = math.floor(duration / self.interval + 1e-9)
            batches = by_time if batches is None else min(batches, by_time)
        g = self.group_size if group_size is None else group_size
        _check_group_size(g)
        if progress is True:
            progress = ProgressBar(batches, "stream", unit="batch", status=self._progress_status)
        self._running = True
        self._stop.clear()
        start = max(1, ctx.auto_group_size.next_size())
        self._latency_cap = LatencyCap(self.interval, self._time_cap(), start=start)
        if g == "auto":
            g = _CappedAuto(self, AutoGroupSize(AIMD(initial=self._latency_cap.cap)))
        first_metric = len(self.metrics)
        try:
            for d in self._graph():
                d._prepare(ctx)
            self.source._open(ctx)
            try:
                self._loop(batches, g, progress)
            finally:
                self.source._close(ctx)
        finally:
            self._running = False
        return self.metrics[first_metric:]

    def _graph(self) -> list[DStream]:
        """Every DStream some sink reads, parents first (explicit stack).

        Asked once per batch (its snapshot), so kept until a sink is added: DStreams
        never change their parents, and sinks are only ever appended.
        """
        if self._graph_of is not None and self._graph_of[0] == len(self._sinks):
            return self._graph_of[1]
        order: list[DStream] = []
        seen: set[int] = set()
        stack: list[tuple[DStream, bool]] = [(d, False) for d, _ in reversed(self._sinks)]
        while stack:
            d, expanded = stack.pop()
            if expanded:
                order.append(d)
                continue
            if id(d) in seen:
                continue
            seen.add(id(d))
            stack.append((d, True))
            stack.extend((p, False) for p in d.parents)
        self._graph_of = (len(self._sinks), order)
        return order

    def _progress_status(self, _result: Any) -> str:
        """What a stream's progress bar shows after G: the latency of the last batch delivered."""
        return f"latency {self.metrics[-1].latency * 1000:,.0f} ms" if self.metrics else ""

    def _time_cap(self) -> int:
        return max(1, int(self.max_group_seconds / self.interval + 1e-9))

    def _loop(self, batches: int | None, group_size: int | str | GroupSizeController,
              progress: bool | ProgressBar = False) -> None:
        """Build, run and deliver batches; on any exit, roll back to the first batch not delivered.

        A batch is *delivered* when every sink's callback has returned for it.
        Whatever ends the loop — the end of ``batches``, a stop (the group
        planned ahead is dropped unrun), a failed task, a sink that raised —
        the DStreams' state is set back to what it was after the last
        delivered batch, and the next run starts with the batch after it:
        a batch whose sink raised is processed and delivered again (to every
        sink: at-least-once output, as in Spark Streaming), and no batch is
        skipped or counted twice in the state.
        """
        ctx = self.ctx
        interval = self.interval
        first = self._next_batch
        every = self.checkpoint_every
        k0 = math.floor(time.time() / interval) + 1  # batch `first` starts at the next multiple of I
        pending: deque[_Batch] = deque()  # built (planned or planned ahead), not delivered; in batch order
        snapshots: dict[int, _Snapshot] = {}  # batch -> DStream state before it was built, until delivered
        last_delivered: list[_Batch] = []  # [the last batch delivered], whose release may not have run

        def jobs() -> Iterator[tuple[Dataset, Any]]:
            b = first
            while not self._stop.is_set() and (batches is None or b < first + batches):
                k = k0 + b - first
                batch = _Batch(b, BatchTime(round(k * interval, 6), round((k + 1) * interval, 6)),
                               checkpoint_due=(b + 1) % every == 0)
                snapshots[b] = _snapshot(self._graph())
                job = self._job(batch)
                pending.append(batch)
                # No try/finally: a generator closed here (the loop ended) must not
                # release what this batch superseded — it may not have run.
                yield job, _to_list
                # the job just yielded is planned: what it superseded can go after its group
                _release(batch)
                b += 1

        gen = jobs()
        results = ctx.iter_jobs(gen, group_size, keep_going=lambda: not self._stop.is_set(), progress=progress)
        delivered = first
        try:
            for result in results:
                arrived = time.time()
                batch = pending[0]
                self._deliver(batch, result, arrived, results.group)
                pending.popleft()
                snapshots.pop(batch.index, None)
                delivered = batch.index + 1
                last_delivered[:] = [batch]
        finally:
            # Close both now, not at garbage collection: the scheduler settles the
            # groups it planned (dropping those not launched) before we roll back.
            results.close()
            gen.close()  # type: ignore[attr-defined]  # a generator
            snapshot = snapshots.get(delivered)
            if snapshot is not None:
                _restore(snapshot)
            if last_delivered:
                # Its release ran when the next job was pulled, and that pull may have
                # been for a group the stop dropped (whose releases are cancelled).
                _release(last_delivered[0])
            self._next_batch = delivered

    def _cap_auto(self, last: GroupMetrics) -> None:
        """Feed the latency cap (:class:`~drizzle_core.stream._cap.LatencyCap`) one finished group of this stream.

        The group's batches are the last ``last.jobs`` delivered: a group is
        observed after its last job was handed out, and the loop delivers
        each batch before it asks for the next.
        """
        n = max(1, last.jobs)
        recent = self.metrics[-n:]
        if not recent:
            return
        before = self.metrics[-n - 1] if len(self.metrics) > n else recent[0]  # the previous group's last batch
        sample = GroupSample(jobs=last.jobs, plan_s=last.plan_s + last.serialize_s, launch_s=last.launch_s,
                             latency=percentile([m.latency for m in recent], 50), lag_end=recent[-1].lag,
                             lag_growth=recent[-1].lag - before.lag)
        self._latency_cap.observe(sample)

    def _job(self, batch: _Batch) -> Dataset:
        """Batch ``b``'s one job: stamps, then each sink's dataset, then touches, then checkpoints."""
        raw = self.source._batch(self.ctx, batch.index, batch.time).cache()
        batch.memo[_RAW] = raw
        batch.release.append(raw)
        stamps = raw.map_partitions(_stamp)
        outs = [d._dataset(batch) for d, _ in self._sinks]
        touches = [t.map_partitions(_nothing) for t in batch.touch]
        # The state datasets themselves (cached: read where they are, not recomputed).
        parts = [stamps, *outs, *touches, *batch.late_counts, *batch.checkpoint]
        batch.layout = [d.num_partitions for d in parts]
        batch.late_at = sum(batch.layout[:1 + len(outs) + len(touches)])
        batch.memo.clear()  # only the job and the datasets named above are needed from here on
        batch.touch.clear()
        batch.late_states.clear()
        return parts[0].union(*parts[1:])

    def _deliver(self, batch: _Batch, result: list[Any], arrived: float, group: int) -> None:
        """Metrics, checkpoints, then every sink's callback; raises what a callback raises."""
        bt = batch.time
        layout = batch.layout
        stamps = result[:layout[0]]
        events = sum(s[0][0] for s in stamps)
        started = max(s[0][1] for s in stamps)
        latency = arrived - bt.end
        n_late = sum(d.num_partitions for d in batch.late_counts)
        late = sum(n for part in result[batch.late_at:batch.late_at + n_late] for n in part)
        m = BatchMetrics(batch=batch.index, start=bt.start, end=bt.end, arrived=arrived, latency=latency,
                         events=events, lag=started - bt.end, queued=max(0, math.floor(latency / self.interval)),
                         group=group, late_events=late, dropped=self.source._dropped(batch.index))
        pos = sum(layout) - sum(d.num_partitions for d in batch.checkpoint)
        for ds in batch.checkpoint:
            # The state's value, just received: a checkpoint. The dataset stays cached where
            # it is; recovery recomputes it from this value instead of replaying every batch
            # since the stream began, and the driver frees the datasets of those batches.
            n = ds.num_partitions
            ds.truncate_lineage(result[pos:pos + n])
            pos += n
        self.metrics.append(m)
        try:
            pos = layout[0]
            for (_d, callback), n in zip(self._sinks, layout[1:]):
                records = [x for part in result[pos:pos + n] for x in part]
                pos += n
                callback(records, m)
        except BaseException:
            self.metrics.pop()  # not delivered: the next run delivers it again, with its own metrics
            raise
        self.late_events += late
        self.source._commit(batch.index)  # delivered: what the source kept to re-read it may go


_RAW = -1  # memo key of the batch's raw (stamped) source dataset


_Snapshot = list[tuple[DStream, dict[str, Any]]]  # [(DStream, {attribute: value})]


def _snapshot(dstreams: list[DStream]) -> _Snapshot:
    """Each DStream's mutable state (its per-batch attributes), shallow-copied.

    Taken before a batch is built, so batches built but not delivered (a
    group dropped at a stop, a failed task, a sink that raised) can be undone.
    """
    return [(d, {k: (list(v) if isinstance(v, list) else v) for k in d._batch_state for v in (getattr(d, k),)})
            for d in dstreams if d._batch_state]


def _restore(snapshot: _Snapshot) -> None:
    """Put the DStreams back as they were; cache again what the undone batches released.

    A batch releases (unpersists) what it supersedes once its job is planned,
    before it has run; undoing it brings those datasets back into use. If
    their blocks are gone, the next batch recomputes them from lineage (at
    most ``checkpoint_every`` batches deep), with the same values.
    """
    for d, attrs in snapshot:
        vars(d).update(attrs)
        for value in attrs.values():
            for ds in _datasets_in(value):
                ds.cache()


def _datasets_in(value: Any) -> list[Dataset]:
    """The Datasets in a per-batch attribute: a Dataset, or a list of them or of tuples holding them."""
    if isinstance(value, Dataset):
        return [value]
    if isinstance(value, list):
        return [x for item in value for x in (item if isinstance(item, tuple) else (item,))
                if isinstance(x, Dataset)]
    return []


def _release(batch: _Batch) -> None:
    """Unpersist what ``batch`` superseded (idempotent: a second call finds nothing cached)."""
    for ds in batch.release:
        ds.unpersist()


class _CappedAuto:
    """A stream's ``group_size="auto"``: its own AIMD, under the stream's two caps (see the module docstring).

    ``next_size`` is the smaller of the AIMD's and the latency cap's, which
    already holds the time limit (``G * I <= max_group_seconds``). Each
    finished group teaches the AIMD, as any ``"auto"`` loop's does, then the
    latency cap (:meth:`Stream._cap_auto`). Called by the scheduler from the
    loop's thread: group k's figures arrive when it ends, and the size of
    group k+2 is asked when k+1 is launched, just after.
    """

    __slots__ = ("aimd", "stream")

    def __init__(self, stream: Stream, aimd: AutoGroupSize) -> None:
        self.stream = stream
        self.aimd = aimd

    def next_size(self) -> int:
        return max(1, min(self.aimd.next_size(), self.stream._latency_cap.cap))

    def observe(self, metrics: GroupMetrics) -> None:
        self.aimd.observe(metrics)
        self.stream._cap_auto(metrics)

    def __repr__(self) -> str:
        return f"<auto group size of {self.stream!r}: {self.next_size()}>"


# ------------------------------------------------------------- DStream kinds


class _Method:
    """``ds.<name>(*args)``: a picklable-free, driver-side transformation step."""

    __slots__ = ("args", "name")

    def __init__(self, name: str, *args: Any) -> None:
        self.name = name
        self.args = args
        if args and name not in ("group_by_key", "join") and not callable(args[0]):
            raise TypeError(f"DStream.{name} needs a callable, got {type(args[0]).__name__}")

    def __call__(self, ds: Dataset) -> Dataset:
        out: Dataset = getattr(ds, self.name)(*self.args)
        return out


class _Transform(DStream):
    def __init__(self, parent: DStream, f: Callable[[Dataset], Dataset], label: str) -> None:
        super().__init__(parent.root, (parent,), label)
        self.f = f

    def _build(self, batch: _Batch) -> Dataset:
        out = self.f(self.parents[0]._dataset(batch))
        if not isinstance(out, Dataset):
            raise TypeError(f"{self.label} returned {type(out).__name__}, not a Dataset")
        return out


class _Union(DStream):
    def __init__(self, first: DStream, others: tuple[DStream, ...]) -> None:
        super().__init__(first.root, (first, *others), "union")

    def _build(self, batch: _Batch) -> Dataset:
        parts = [p._dataset(batch) for p in self.parents]
        return parts[0].union(*parts[1:])


class _BroadcastJoin(DStream):
    def __init__(self, parent: DStream, table: Dataset) -> None:
        super().__init__(parent.root, (parent,), "broadcast join")
        self.table = table
        self._table_ds: Dataset | None = None

    def _prepare(self, ctx: Context) -> None:
        if self._table_ds is None:
            table: dict[Any, list[Any]] = {}
            for k, w in self.table.collect():
                table.setdefault(k, []).append(w)
            self._table_ds = ctx.parallelize([table], 1).cache()

    def _build(self, batch: _Batch) -> Dataset:
        data = self.parents[0]._dataset(batch)
        tbl = self._table_ds
        assert tbl is not None
        return data.zip_broadcast(tbl, _JoinWith())


class _StateByKey(DStream):
    _batch_state = ("_state",)

    def __init__(self, parent: DStream, update: Callable[[list[Any], Any], Any], num_partitions: int | None) -> None:
        super().__init__(parent.root, (parent,), f"update_state_by_key({fn_name(update)})")
        self.merge = _UpdateState(update)
        self.num_partitions = num_partitions
        self._state: Dataset | None = None

    def _build(self, batch: _Batch) -> Dataset:
        values = self.parents[0]._dataset(batch)
        r = self.num_partitions or values.num_partitions
        if self._state is None:
            self._state = values.ctx.parallelize([{} for _ in range(r)], r).cache()
        old = self._state
        new = old.zip_partitions(values.group_by_key(old.num_partitions), self.merge).cache()
        batch.release.append(old)
        if batch.checkpoint_due:
            batch.checkpoint.append(new)
        self._state = new
        return new.map_partitions(_state_items)


# ------------------------------------------------ worker-side functions
# Module-level so they pickle by reference.


def _to_list(part: Iterable[Any]) -> list[Any]:
    """The job function of every batch: its partitions as lists (the driver splits them by ``layout``)."""
    return part if type(part) is list else list(part)


def _records(part: list[Any]) -> Any:
    return part[1:]


def _stamp(part: list[Any]) -> list[tuple[int, float]]:
    return [(len(part) - 1, part[0])]


def _nothing(part: Any) -> list[Any]:
    return []


def _one_per_key(kv: Any) -> tuple[Any, int]:
    return (kv[0], 1)


def _add(a: Any, b: Any) -> Any:
    return a + b


def _state_items(part: list[dict[Any, Any]]) -> Any:
    return list(part[0].items()) if part else []


class _UpdateState:
    """State partition of batch b from that of b-1 and this batch's grouped values."""

    __slots__ = ("update",)

    def __init__(self, update: Callable[[list[Any], Any], Any]) -> None:
        self.update = update

    def __call__(self, old: list[dict[Any, Any]], grouped: Iterable[tuple[Any, list[Any]]]) -> list[dict[Any, Any]]:
        prev = old[0] if old else {}
        new_values = dict(grouped)
        update = self.update
        state: dict[Any, Any] = {}
        for k, s in prev.items():
            v = update(new_values.pop(k, []), s)
            if v is not None:
                state[k] = v
        for k, vs in new_values.items():
            v = update(vs, None)
            if v is not None:
                state[k] = v
        return [state]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_UpdateState, (self.update,))


class _JoinWith:
    """Broadcast hash join: ``part`` of ``(k, v)`` against the one-partition table ``{k: [w]}``."""

    __slots__ = ()

    def __call__(self, part: Iterable[Any], table_part: Any) -> list[Any]:
        table = table_part[0]
        out = []
        for k, v in part:
            ws = table.get(k)
            if ws:
                for w in ws:
                    out.append((k, (v, w)))
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (_JoinWith, ())
