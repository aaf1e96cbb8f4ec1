"""Windowed aggregation over a stream: on batch time and on event time.

Batch time (:class:`BatchWindow`). A window of ``length`` seconds sliding
every ``slide`` seconds is, every ``slide / I`` batches, the union of the last
``length / I`` batches' datasets. Each batch's input is cached where it was
computed (so it is computed once, in its own batch, even for a socket
source) and unpersisted once no window can read it again; the union is read
where its partitions live. Batches that end no window emit nothing.

Event time (:class:`EventWindows`). Windows are ``[s, s + length)`` for every
``s`` that is a multiple of ``slide`` (aligned to the epoch, as in Spark); a
record belongs to every window that contains ``event_time(record)``. The
*watermark* after batch b is ``end_b - lateness``: records are assumed to
arrive no later than ``lateness`` after their event time. A window is final
when the watermark passes its end; its value is emitted in that batch, once.

Late events. A record whose every window was already emitted when it
arrives (its event time is older than the previous batch's watermark by
more than the windows reach) would change only results already delivered:
it is *late*, and left out of every window. Late records are not dropped
silently: each batch's count is in its metrics (``BatchMetrics.late_events``,
the sum over the stream's event-time aggregations) and the stream keeps a
running total (``Stream.late_events``); and ``agg.late_events()`` on an
aggregation is a DStream of the late records themselves, per batch (Flink's
side output for late data: the records as the window received them). As in
Flink, a record of sliding windows some of which are still open is not
late: it counts in the open ones (and is missing, by design, from those
already emitted).

Open windows' partial aggregates are keyed state carried from batch to batch
on the workers, like ``update_state_by_key``: per reduce partition r, one
dict ``{(window start, key): value}``; batch b's state partition r is made
from batch b-1's partition r on the worker that holds it, merged with this
batch's values (combined on the map side, then shuffled by (window, key)),
and it also carries the entries that closed in this batch, which are the
stream's output, and this batch's late records (their count, and the
records themselves when a side output asks for them): they reach the
reduce side through the same shuffle, one entry per map partition under the
key ``(None, p)`` (no window starts at None, and one entry per key means the
user's ``f`` never sees it). Only closed windows' values reach the driver, and, every
``checkpoint_every`` batches, the open ones: a checkpoint that bounds the
state's lineage, as for ``update_state_by_key``.

Comparisons are exact (no epsilon): a window is final when ``start + length
<= watermark`` as floats, and the same test decides that a record is too late,
so a record at or after the previous watermark is never dropped. Batch
boundaries are rounded to the microsecond, so windows whose ends are multiples
of the interval (10 s windows, 0.1 s batches) close exactly at a batch end.

Output records: ``(((window_start, window_end), key), value)``; ``count()``
uses the key ``None``. A state partition is ``(open, emitted, late count,
late records)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._check import check_callable
from ..api import Dataset
from ._sources import check_seconds
from ._stream import DStream, _add, _Batch

if TYPE_CHECKING:
    from ..api import Context


def _multiple_of(x: float, interval: float, what: str) -> int:
    x = check_seconds(x, f"window {what}")
    n = round(x / interval)
    if n < 1 or abs(n * interval - x) > 1e-9 * max(1.0, x):
        raise ValueError(f"window {what} ({x} s) must be a positive multiple of the batch interval ({interval} s)")
    return n


class BatchWindow(DStream):
    """The union of the last ``length`` seconds of batches, every ``slide`` seconds (see the module docstring)."""

    _batch_state = ("_recent",)

    def __init__(self, parent: DStream, length: float, slide: float | None) -> None:
        interval = parent.root.interval
        slide = length if slide is None else slide
        self.n = _multiple_of(length, interval, "length")
        self.m = _multiple_of(slide, interval, "slide")
        super().__init__(parent.root, (parent,), f"window({length}, {slide})")
        self._recent: list[tuple[int, Dataset]] = []  # (batch, cached input), oldest first

    def _build(self, batch: _Batch) -> Dataset:
        ds = self.parents[0]._dataset(batch).cache()
        self._recent.append((batch.index, ds))
        while self._recent and self._recent[0][0] <= batch.index - self.n:
            batch.release.append(self._recent.pop(0)[1])
        if (batch.index + 1) % self.m:
            batch.touch.append(ds)  # no window ends here: compute it now anyway, read it later
            return ds.ctx.parallelize([], 1)
        parts = [d for _, d in self._recent]
        return parts[0].union(*parts[1:])


class EventWindows:
    """Event-time windows of a DStream, waiting for an aggregation (see the module docstring)."""

    def __init__(self, parent: DStream, length: float, slide: float | None,
                 event_time: Callable[[Any], float], lateness: float = 0.0) -> None:
        length = check_seconds(length, "window length")
        slide = length if slide is None else check_seconds(slide, "window slide")
        if not slide <= length:
            raise ValueError(f"window slide must be in (0, length], got {slide!r}")
        if not callable(event_time):
            raise TypeError(f"event_time must be callable, got {type(event_time).__name__}")
        self.parent = parent
        self.length = length
        self.slide = slide
        self.event_time = event_time
        self.lateness = check_seconds(lateness, "lateness", zero=True)

    def reduce_by_key(self, f: Callable[[Any, Any], Any], num_partitions: int | None = None) -> DStream:
        """Per window and key of records ``(k, v)``: the values merged with ``f``, emitted when final."""
        check_callable(f, "reduce_by_key")
        return _EventWindowAgg(self, f, _Value(), num_partitions)

    def count_by_key(self, num_partitions: int | None = None) -> DStream:
        """Per window and key of records ``(k, anything)``: how many records."""
        return _EventWindowAgg(self, _add, _One(), num_partitions)

    def count(self, num_partitions: int | None = None) -> DStream:
        """Per window: how many records (key None)."""
        return _EventWindowAgg(self, _add, _OneNoKey(), num_partitions)


def windows_of(t: float, length: float, slide: float) -> list[float]:
    """Starts of the windows ``[s, s + length)`` (``s = j * slide``, j an integer) that contain ``t``.

    Exact under float rounding: ``s <= t < s + length`` holds, as computed,
    for every start returned (a window's end is always computed as
    ``s + length``), so the map side and the emitted windows agree.
    """
    k = math.floor(t / slide)
    while k * slide > t:
        k -= 1
    while (k + 1) * slide <= t:
        k += 1
    n = round(length / slide)
    if n >= 1 and math.isclose(n * slide, length, rel_tol=1e-9):
        # length a whole number of slides (tumbling: n = 1): t is in the n windows ending at slide step k.
        # Counted in steps, not by comparing t with s + length, which can exceed the next start by a
        # rounding step and put one event in two tumbling windows.
        return [(k - i) * slide for i in range(n)]
    out = []
    s = k * slide
    while s + length > t:
        out.append(s)
        k -= 1
        s = k * slide
    return out


class _EventWindowAgg(DStream):
    """An aggregation over event-time windows: each window's value once it is final (see the module docstring)."""

    _batch_state = ("_state", "_watermark")

    def __init__(self, w: EventWindows, f: Callable[[Any, Any], Any], kv: Any, num_partitions: int | None) -> None:
        super().__init__(w.parent.root, (w.parent,), f"event-time window({w.length}, {w.slide})")
        self.w = w
        self.f = f
        self.kv = kv
        self.num_partitions = num_partitions
        self._state: Dataset | None = None
        self._watermark = -math.inf  # of the last batch built: windows ending at or before it were emitted
        self._late: LateEvents | None = None  # the side output, once asked for

    def _prepare(self, ctx: Context) -> None:
        pass

    def late_events(self) -> DStream:
        """The records this aggregation left out as late, per batch (a side output, as Flink's for late data).

        A DStream like any other: attach a sink (``collect_sink``,
        ``foreach_batch``) or transform it. Its dataset for a batch is the
        records of that batch that arrived after every window they belong to
        had been emitted, as the window received them. Ask for it before the
        stream runs: batches built before that carry only the count
        (``BatchMetrics.late_events``), which is kept either way.
        """
        if self._late is None:
            self._late = LateEvents(self)
        return self._late

    def _build(self, batch: _Batch) -> Dataset:
        w = self.w
        data = self.parents[0]._dataset(batch)
        r = self.num_partitions or data.num_partitions
        if self._state is None:
            self._state = data.ctx.parallelize([({}, [], 0, []) for _ in range(r)], r).cache()
        watermark = batch.time.end - w.lateness
        assign = _Assign(w.length, w.slide, w.event_time, self.kv, self._watermark, self.f, self._late is not None)
        assigned = data.map_partitions(assign, with_index=True)
        old = self._state
        reduced = assigned.reduce_by_key(self.f, old.num_partitions)
        new = old.zip_partitions(reduced, _Close(self.f, w.length, watermark)).cache()
        batch.release.append(old)
        if batch.checkpoint_due:
            batch.checkpoint.append(new)  # the open windows: lineage cut when the driver has them
        batch.late_counts.append(new.map_partitions(_late_count))
        batch.late_states[id(self)] = new
        self._state = new
        self._watermark = max(self._watermark, watermark)
        return new.map_partitions(_emitted)


class LateEvents(DStream):
    """The late records of an event-time aggregation, per batch (:meth:`_EventWindowAgg.late_events`)."""

    def __init__(self, agg: _EventWindowAgg) -> None:
        super().__init__(agg.root, (agg,), f"late events of {agg.label}")
        self.agg = agg

    def _build(self, batch: _Batch) -> Dataset:
        agg = self.agg
        agg._dataset(batch)  # builds this batch's state, if no sink asked for the aggregation itself
        return batch.late_states[id(agg)].map_partitions(_late_records)


# ------------------------------------------------ worker-side functions

#: one state partition: (open windows {(start, key): value}, emitted records, late count, late records)
_StatePart = tuple[dict[Any, Any], list[Any], int, list[Any]]


class _Value:
    __slots__ = ()

    def __call__(self, rec: Any) -> tuple[Any, Any]:
        return rec[0], rec[1]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Value, ())


class _One(_Value):
    __slots__ = ()

    def __call__(self, rec: Any) -> tuple[Any, Any]:
        return rec[0], 1

    def __reduce__(self) -> tuple[Any, ...]:
        return (_One, ())


class _OneNoKey(_Value):
    __slots__ = ()

    def __call__(self, rec: Any) -> tuple[Any, Any]:
        return None, 1

    def __reduce__(self) -> tuple[Any, ...]:
        return (_OneNoKey, ())


class _Assign:
    """Map side: ``((window start, key), value)`` per window of each record, combined per partition.

    Windows that ended at or before ``emitted_upto`` (the previous batch's
    watermark) were already emitted: a record is left out of them, and a
    record left out of all of its windows is late. Partition ``p``'s late
    records travel as one entry ``((None, p), (count, records))``: records
    only when ``keep_late`` (a side output reads them), else an empty list.
    """

    __slots__ = ("emitted_upto", "event_time", "f", "keep_late", "kv", "length", "slide")

    def __init__(self, length: float, slide: float, event_time: Callable[[Any], float], kv: Any,
                 emitted_upto: float, f: Callable[[Any, Any], Any], keep_late: bool = False) -> None:
        self.length = length
        self.slide = slide
        self.event_time = event_time
        self.kv = kv
        self.emitted_upto = emitted_upto
        self.f = f
        self.keep_late = keep_late

    def __call__(self, p: int, part: Iterable[Any]) -> list[tuple[Any, Any]]:
        length, slide, upto = self.length, self.slide, self.emitted_upto
        et, kv, f = self.event_time, self.kv, self.f
        acc: dict[Any, Any] = {}
        late: list[Any] = []
        n_late = 0
        for rec in part:
            t = et(rec)
            k, v = kv(rec)
            in_a_window = False
            for s in windows_of(t, length, slide):
                if s + length <= upto:
                    continue  # too late for this window: it was emitted
                in_a_window = True
                key = (s, k)
                acc[key] = f(acc[key], v) if key in acc else v
            if not in_a_window:
                n_late += 1
                if self.keep_late:
                    late.append(rec)
        out = list(acc.items())
        if n_late:
            out.append(((None, p), (n_late, late)))
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Assign, (self.length, self.slide, self.event_time, self.kv, self.emitted_upto, self.f,
                          self.keep_late))


class _Close:
    """Reduce side: merge a batch into the open windows; move those the watermark passed to the output."""

    __slots__ = ("f", "length", "watermark")

    def __init__(self, f: Callable[[Any, Any], Any], length: float, watermark: float) -> None:
        self.f = f
        self.length = length
        self.watermark = watermark

    def __call__(self, old: list[_StatePart], reduced: Iterable[tuple[Any, Any]]) -> list[_StatePart]:
        f = self.f
        open_ = dict(old[0][0]) if old else {}
        n_late = 0
        late: list[Any] = []
        for key, v in reduced:
            if key[0] is None:  # a map partition's late records (see _Assign)
                n_late += v[0]
                late.extend(v[1])
                continue
            open_[key] = f(open_[key], v) if key in open_ else v
        limit = self.watermark
        length = self.length
        closed = sorted((key for key in open_ if key[0] + length <= limit), key=lambda key: key[0])
        emitted = [(((s, s + length), k), open_.pop((s, k))) for s, k in closed]
        return [(open_, emitted, n_late, late)]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Close, (self.f, self.length, self.watermark))


def _emitted(part: list[_StatePart]) -> list[Any]:
    return part[0][1] if part else []


def _late_count(part: list[_StatePart]) -> list[int]:
    return [part[0][2] if part else 0]


def _late_records(part: list[_StatePart]) -> list[Any]:
    return part[0][3] if part else []
