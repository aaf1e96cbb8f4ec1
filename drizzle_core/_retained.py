"""A log that keeps only its last entries: ``Context.metrics`` and ``Stream.metrics`` of a loop that never ends.

A stream at 10 batches a second appends 864,000 batch metrics a day; kept
in a list they are hundreds of MB by the evening. Spark keeps the last
1,000 batches for its UI (``spark.streaming.ui.retainedBatches``); this keeps
the last ``maxlen`` entries, and still indexes by position in the whole
log: ``since = len(ctx.metrics)`` before a loop and ``ctx.metrics[since:]``
after it mean the same as with a list, as long as the loop appended fewer
than ``maxlen`` entries. An entry that was dropped is an IndexError that
says so (a slice leaves it out).

Why a list trimmed by halves, not a deque: slices near the end
(``metrics[-n:]``, asked once per group by the stream's latency cap) and
indexing are O(1) per item in a list, O(n) inside a deque; trimming half at
a time keeps appends amortized O(1).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

#: how many entries ``Context.metrics`` and ``Stream.metrics`` keep (Spark's UI keeps 1,000)
METRICS_RETAINED = 10_000


class Retained(Sequence[T], Generic[T]):
    """The last ``maxlen`` entries of an append-only log, indexed by their position in the whole log."""

    __slots__ = ("_dropped", "_items", "maxlen")

    def __init__(self, maxlen: int = METRICS_RETAINED) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be a positive int, got {maxlen!r}")
        self.maxlen = maxlen
        self._items: list[T] = []
        self._dropped = 0  # entries before _items[0]

    @property
    def dropped(self) -> int:
        """How many entries, the oldest, are no longer kept (the position of the oldest kept)."""
        return self._first()

    def append(self, item: T) -> None:
        items = self._items
        items.append(item)
        if len(items) >= 2 * self.maxlen:
            cut = len(items) - self.maxlen
            del items[:cut]
            self._dropped += cut

    def pop(self) -> T:
        """Remove and return the last entry (one that turned out not to have happened)."""
        return self._items.pop()

    def __len__(self) -> int:
        return self._dropped + len(self._items)

    def _first(self) -> int:
        """Position of the oldest entry still kept."""
        return self._dropped + max(0, len(self._items) - self.maxlen)

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        n, first = len(self), self._first()
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step == 1:
                start = max(start, first)
                return self._items[start - self._dropped:max(start, stop) - self._dropped]
            return [self._items[j - self._dropped] for j in range(start, stop, step) if j >= first]
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} entries")
        if j < first:
            raise IndexError(f"entry {i} is no longer kept: only the last {self.maxlen} of {n} are")
        return self._items[j - self._dropped]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[self._first() - self._dropped:])  # a copy: another thread may append meanwhile

    def __reversed__(self) -> Iterator[T]:
        return reversed(list(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        kept = len(self) - self._first()
        return f"<Retained: the last {kept} of {len(self)} entries (keeps {self.maxlen})>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.maxlen, self._dropped, self._items))


def _restore(maxlen: int, dropped: int, items: list[Any]) -> Retained[Any]:
    r: Retained[Any] = Retained(maxlen)
    r._dropped, r._items = dropped, list(items)
    return r
