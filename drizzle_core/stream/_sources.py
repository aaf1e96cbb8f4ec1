"""Streaming sources: each batch's data is read by worker tasks, never by the driver.

A source turns batch ``b`` (covering ``[start, end)``) into a Dataset of
``num_partitions`` partitions. The dataset's root is
``ctx.from_partitions(..., not_before=end)`` (plus a settle delay for the
directory source): its tasks are launched ahead of time, with the rest of
their group, and wait *on their worker* until the batch's data is complete.
Those partitions only carry the batch's coordinates ``(b, start, end)``; a
``map_partitions`` reader produces the records where the task runs.

Every source partition is a list whose first element is the wall-clock time
the task started (the stream strips it before user code and reports it as
the batch's lag), followed by the records.

Sources:

* :class:`GeneratorSource` — ``gen(partition, batch, BatchTime)`` runs on the
  workers: benchmarks and tests. Deterministic generators make batches
  recomputable from lineage.
* :class:`DirectorySource` — new text files in a directory; each line is a
  record.
* :class:`SocketSource` — lines from a TCP text socket, received by a
  long-lived receiver inside the worker process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from .._check import fn_name
from ..api import portable_hash

if TYPE_CHECKING:
    from ..api import Context, Dataset

log = logging.getLogger("drizzle.stream.sources")


def check_seconds(value: Any, name: str, *, zero: bool = False) -> float:
    """``value`` as float seconds, or a ValueError naming ``name``.

    Every time parameter of a stream passes here: a non-finite one (inf, nan)
    used to be accepted and then reached ``select``/``sleep`` on the workers as
    a timeout, where ``inf`` raises OverflowError and kills every worker.
    Refused up front instead, with the parameter's name. Bools are refused
    too (``True`` is an int, but never meant as one second).
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        what = "a finite, non-negative" if zero else "a finite, positive"
        raise ValueError(f"{name} must be {what} number of seconds, got {value!r}")
    return float(value)


class BatchTime(NamedTuple):
    """The span a micro-batch covers, ``[start, end)`` in epoch seconds."""

    start: float
    end: float


class Source:
    """Base class: how batch ``b``'s records are produced on the workers.

    Subclasses implement :meth:`_records` (run on a worker, at or after the
    batch's end) and may override :meth:`_open` / :meth:`_close` (run on the
    driver when a stream starts and stops running).
    """

    #: seconds after a batch's end before its tasks start (data still settling)
    settle: float = 0.0

    def __init__(self, num_partitions: int) -> None:
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, int) or num_partitions <= 0:
            raise ValueError(f"{type(self).__name__}: num_partitions must be a positive int, got {num_partitions!r}")
        self.num_partitions = num_partitions

    def _records(self, p: int, b: int, bt: BatchTime) -> Iterable[Any]:
        raise NotImplementedError

    def _open(self, ctx: Context) -> None:
        """Called on the driver before a run's first batch."""

    def _close(self, ctx: Context) -> None:
        """Called on the driver after a run's last batch."""

    def _batch(self, ctx: Context, b: int, bt: BatchTime) -> Dataset:
        """Batch ``b``'s raw dataset (stamp first, then records), time-triggered at its end."""
        parts = [[(b, bt.start, bt.end)] for _ in range(self.num_partitions)]
        coords = ctx.from_partitions(parts, not_before=bt.end + self.settle, label=f"{self!r} batch {b}")
        # with_index: the worker calls _Read itself, so its user_functions() name the
        # user's generator when that does not pickle
        return coords.map_partitions(_Read(self), with_index=True)

    def _user_functions(self) -> list[Any]:
        """The user's callables this source runs on the workers (named when one does not pickle)."""
        return []

    def __repr__(self) -> str:
        return type(self).__name__


class _Read:
    """The worker side of every source: stamp the start time, then the records."""

    __slots__ = ("source",)

    def __init__(self, source: Source) -> None:
        self.source = source

    def __call__(self, p: int, part: Any) -> list[Any]:
        b, start, end = part[0]
        out: list[Any] = [time.time()]
        out.extend(self.source._records(p, b, BatchTime(start, end)))
        return out

    def user_functions(self) -> list[Any]:
        """The user's generator first (so a pickling error names it), then the reader as a whole."""
        return [*self.source._user_functions(), self]

    @property
    def __name__(self) -> str:
        """What labels and errors call this step (as a function's name: ``map_partitions`` labels with it)."""
        return f"read {self.source!r}"

    def __repr__(self) -> str:
        return f"the reader of {self.source!r}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Read, (self.source,))


class GeneratorSource(Source):
    """``gen(partition, batch_index, batch_time)`` returns the records of one partition of one batch.

    ``batch_time`` is a :class:`BatchTime` ``(start, end)``; a generator
    producing events "as they happen" gives them event times in that range.
    It runs on the worker, at the batch's end time, with the batch's other
    partitions in parallel on other workers: the driver never sees the data.
    """

    def __init__(self, gen: Callable[[int, int, BatchTime], Iterable[Any]], num_partitions: int = 2) -> None:
        if not callable(gen):
            raise TypeError(f"GeneratorSource needs a callable, got {type(gen).__name__}")
        super().__init__(num_partitions)
        self.gen = gen

    def _records(self, p: int, b: int, bt: BatchTime) -> Iterable[Any]:
        return self.gen(p, b, bt)

    def _user_functions(self) -> list[Any]:
        return [self.gen]

    def __repr__(self) -> str:
        return f"GeneratorSource({fn_name(self.gen)})"


class DirectorySource(Source):
    """Lines of the text files that appear in ``path``; one record per line.

    Batch ``b`` takes the files whose modification time lies in its span
    ``[start, end)``. Each of the ``num_partitions`` tasks lists the directory
    itself, on its worker, and takes the files whose name hashes to its
    partition (:func:`~drizzle_core.portable_hash`): no driver listing, and a
    recomputed batch reads the same files. Files older than the stream's first
    batch are ignored, as are names starting with ``.`` or ``_`` (write
    there, then rename). Tasks start ``settle`` seconds after the batch's end,
    so a file whose (coarse, kernel-tick) mtime falls just before the end is
    already visible. A writer should make a file appear whole and with a
    fresh mtime: write it under a hidden name and ``os.replace`` it in.
    """

    def __init__(self, path: str | os.PathLike[str], num_partitions: int = 1, *, settle: float = 0.02,
                 encoding: str = "utf-8") -> None:
        super().__init__(num_partitions)
        self.path = os.fspath(path)
        self.settle = check_seconds(settle, "DirectorySource: settle", zero=True)
        self.encoding = encoding

    def _records(self, p: int, b: int, bt: BatchTime) -> Iterable[Any]:
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        n = self.num_partitions
        picked = []
        for e in entries:
            if e.name[:1] in (".", "_") or portable_hash(e.name) % n != p:
                continue
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            if bt.start <= st.st_mtime < bt.end and e.is_file():
                picked.append((st.st_mtime, e.name))
        lines: list[str] = []
        for _mtime, name in sorted(picked):
            with open(os.path.join(self.path, name), encoding=self.encoding) as f:
                lines.extend(line.rstrip("\n") for line in f)
        return lines


# ------------------------------------------------------------ socket source
# Receivers live in the worker process, keyed by (source id, partition). A
# receiver thread timestamps every line on arrival; batch b's task takes the
# lines that arrived before b's end. A line that arrives while the task runs
# lands in the next batch: late by one batch, never lost or duplicated.
_receivers: dict[tuple[str, int], _Receiver] = {}
_receivers_lock = threading.Lock()


class _Receiver:
    def __init__(self, host: str, port: int, encoding: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10.0)
        self.sock.settimeout(None)
        self.encoding = encoding
        self.lines: deque[tuple[float, str]] = deque()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._receive, name=f"drizzle receiver {host}:{port}", daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                now = time.time()
                buf += data
                *lines, buf = buf.split(b"\n")
                if lines:
                    decoded = [(now, line.decode(self.encoding, "replace").rstrip("\r")) for line in lines]
                    with self.lock:
                        self.lines.extend(decoded)
        except OSError:
            pass  # closed by _close_receivers, or the peer reset the connection
        if buf:
            with self.lock:
                self.lines.append((time.time(), buf.decode(self.encoding, "replace")))

    def take(self, before: float) -> list[str]:
        out = []
        with self.lock:
            lines = self.lines
            while lines and lines[0][0] < before:
                out.append(lines.popleft()[1])
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5.0)


def _receiver(key: tuple[str, int], host: str, port: int, encoding: str) -> _Receiver:
    with _receivers_lock:
        r = _receivers.get(key)
        if r is None:
            r = _receivers[key] = _Receiver(host, port, encoding)
        return r


class _OpenReceivers:
    __slots__ = ("source",)

    def __init__(self, source: SocketSource) -> None:
        self.source = source

    def __call__(self, p: int, it: Iterable[Any]) -> list[Any]:
        s = self.source
        _receiver((s.uid, p), s.host, s.port, s.encoding)
        return []


class _CloseReceivers:
    __slots__ = ("uid",)

    def __init__(self, uid: str) -> None:
        self.uid = uid

    def __call__(self, it: Iterable[Any]) -> list[Any]:
        with _receivers_lock:
            mine = [k for k in _receivers if k[0] == self.uid]
            closing = [_receivers.pop(k) for k in mine]
        for r in closing:
            r.close()
        return []


class SocketSource(Source):
    """Lines of text from a TCP server at ``host:port`` (like Spark's ``socketTextStream``).

    Each of the ``num_partitions`` partitions has a receiver: a connection
    and a thread, held in the worker process that runs the partition's tasks
    (partition p of a source runs on worker ``p % workers`` while the worker
    set is unchanged). Receivers are opened when the stream starts running,
    so lines sent during the first batch are kept, and closed when it stops.
    Lines are consumed when read: a batch lost with its worker is not
    re-read (at most once under failure; exactly once otherwise).
    """

    def __init__(self, host: str, port: int, num_partitions: int = 1, *, encoding: str = "utf-8") -> None:
        super().__init__(num_partitions)
        self.host = host
        self.port = port
        self.encoding = encoding
        self.uid = uuid.uuid4().hex

    def _open(self, ctx: Context) -> None:
        n = self.num_partitions
        ctx.parallelize(range(n), n).map_partitions(_OpenReceivers(self), with_index=True).collect()

    def _close(self, ctx: Context) -> None:
        w = ctx.num_workers
        ctx.parallelize(range(w), w).map_partitions(_CloseReceivers(self.uid)).collect()

    def _records(self, p: int, b: int, bt: BatchTime) -> Iterable[Any]:
        # Opened here too if this task landed on another worker than the open job's
        # (a worker was lost): lines are then read from a new connection.
        return _receiver((self.uid, p), self.host, self.port, self.encoding).take(bt.end)
