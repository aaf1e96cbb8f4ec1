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
Records that arrive after every window they belong to was emitted are
dropped (they would change a result already delivered).

Open windows' partial aggregates are keyed state carried from batch to batch
on the workers, like ``update_state_by_key``: per reduce partition r, one
dict ``{(window start, key): value}``; batch b's state partition r is made
from batch b-1's partition r on the worker that holds it, merged with this
batch's values (combined on the map side, then shuffled by (window, key)),
and it also carries the entries that closed in this batch, which are the
stream's output. Only closed windows' values reach the driver, and, every
``checkpoint_every`` batches, the open ones: a checkpoint that bounds the
state's lineage, as for ``update_state_by_key``.

Comparisons are exact (no epsilon): a window is final when ``start + length
<= watermark`` as floats, and the same test decides that a record is too late,
so a record at or after the previous watermark is never dropped. Batch
boundaries are rounded to the microsecond, so windows whose ends are multiples
of the interval (10 s windows, 0.1 s batches) close exactly at a batch end.

Output records: ``(((window_start, window_end), key), value)``; ``count()``
uses the key ``None``.
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
    _batch_state = ("_state", "_watermark")

    def __init__(self, w: EventWindows, f: Callable[[Any, Any], Any], kv: Any, num_partitions: int | None) -> None:
        super().__init__(w.parent.root, (w.parent,), f"event-time window({w.length}, {w.slide})")
        self.w = w
        self.f = f
        self.kv = kv
        self.num_partitions = num_partitions
        self._state: Dataset | None = None
        self._watermark = -math.inf  # of the last batch built: windows ending at or before it were emitted

    def _prepare(self, ctx: Context) -> None:
        pass

    def _build(self, batch: _Batch) -> Dataset:
        w = self.w
        data = self.parents[0]._dataset(batch)
        r = self.num_partitions or data.num_partitions
        if self._state is None:
            self._state = data.ctx.parallelize([({}, []) for _ in range(r)], r).cache()
        watermark = batch.time.end - w.lateness
        assigned = data.map_partitions(_Assign(w.length, w.slide, w.event_time, self.kv, self._watermark, self.f))
        old = self._state
        reduced = assigned.reduce_by_key(self.f, old.num_partitions)
        new = old.zip_partitions(reduced, _Close(self.f, w.length, watermark)).cache()
        batch.release.append(old)
        if batch.checkpoint_due:
            batch.checkpoint.append(new)  # the open windows: lineage cut when the driver has them
        self._state = new
        self._watermark = max(self._watermark, watermark)
        return new.map_partitions(_emitted)


# ------------------------------------------------ worker-side functions


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
    watermark) were already emitted: their late records are dropped.
    """

    __slots__ = ("emitted_upto", "event_time", "f", "kv", "length", "slide")

    def __init__(self, length: float, slide: float, event_time: Callable[[Any], float], kv: Any,
                 emitted_upto: float, f: Callable[[Any, Any], Any]) -> None:
        self.length = length
        self.slide = slide
        self.event_time = event_time
        self.kv = kv
        self.emitted_upto = emitted_upto
        self.f = f

    def __call__(self, part: Iterable[Any]) -> list[tuple[Any, Any]]:
        length, slide, upto = self.length, self.slide, self.emitted_upto
        et, kv, f = self.event_time, self.kv, self.f
        acc: dict[Any, Any] = {}
        for rec in part:
            t = et(rec)
            k, v = kv(rec)
            for s in windows_of(t, length, slide):
                if s + length <= upto:
                    continue  # too late: that window was emitted
                key = (s, k)
                acc[key] = f(acc[key], v) if key in acc else v
        return list(acc.items())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Assign, (self.length, self.slide, self.event_time, self.kv, self.emitted_upto, self.f))


class _Close:
    """Reduce side: merge a batch into the open windows; move those the watermark passed to the output."""

    __slots__ = ("f", "length", "watermark")

    def __init__(self, f: Callable[[Any, Any], Any], length: float, watermark: float) -> None:
        self.f = f
        self.length = length
        self.watermark = watermark

    def __call__(self, old: list[tuple[dict[Any, Any], list[Any]]],
                 reduced: Iterable[tuple[Any, Any]]) -> list[tuple[dict[Any, Any], list[Any]]]:
        f = self.f
        open_ = dict(old[0][0]) if old else {}
        for key, v in reduced:
            open_[key] = f(open_[key], v) if key in open_ else v
        limit = self.watermark
        length = self.length
        closed = sorted((key for key in open_ if key[0] + length <= limit), key=lambda key: key[0])
        emitted = [(((s, s + length), k), open_.pop((s, k))) for s, k in closed]
        return [(open_, emitted)]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Close, (self.f, self.length, self.watermark))


def _emitted(part: list[tuple[dict[Any, Any], list[Any]]]) -> list[Any]:
    return part[0][1] if part else []
