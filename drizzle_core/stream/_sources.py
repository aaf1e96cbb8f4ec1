"""Streaming sources: each batch's data is read by worker tasks.

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
  record. Exactly once: the files of each batch partition are recorded on
  the driver when first listed, and a recomputed batch reads those files.
* :class:`SocketSource` — lines from a TCP text socket, received on the
  driver into a bounded replay buffer; each batch partition's task fetches
  its lines from there, and a recomputed batch gets the same lines. Exactly
  once while the buffer has room (``buffer=``; when full, ``overflow=``
  blocks the reader or drops lines, counted).

Delivery under failure. The engine recomputes what a lost worker held from
lineage, and sinks run on the driver once per delivered batch, so a source
whose re-read gives the same records gives exactly-once output (state,
windows and sinks) under the loss of any worker. The directory and socket
sources get there with a *ledger* (:mod:`drizzle_core.stream._ledger`): what
each batch partition read is recorded on the driver at its first read, and
kept while the batch may be read again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .._check import fn_name
from ..api import portable_hash
from ._ledger import Holds, LedgerServer, ask

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
    driver when a stream starts and stops running), :meth:`_commit` (a batch
    was delivered) and :meth:`_dropped` (records lost for a batch).
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

    def _attach(self, stream: Any) -> None:
        """Called on the driver when ``stream`` is made to read this source."""

    def _commit(self, b: int) -> None:
        """Called on the driver once batch ``b`` was delivered (every sink returned): it is never rolled back."""

    def _dropped(self, b: int) -> int:
        """Records of batch ``b`` the source had to drop (asked on the driver before ``b`` is delivered)."""
        return 0

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


class _LedgerSource(Source):
    """A source whose re-reads come from a ledger on the driver (see :mod:`drizzle_core.stream._ledger`).

    The ledger's server runs on the driver from a run's start to its end
    (:meth:`_open`, :meth:`_close`); the records outlive runs, as the
    datasets that may read them do. Driver-only state is left out when the
    source is pickled into a task; a task keeps the ledger's address and
    token. One stream per source: two streams would number their batches
    alike and read each other's records.
    """

    _driver_only: tuple[str, ...] = ("_server", "_lock", "_holds", "_owner")

    def __init__(self, num_partitions: int, driver_host: str) -> None:
        super().__init__(num_partitions)
        if not isinstance(driver_host, str) or not driver_host:
            raise TypeError(f"{type(self).__name__}: driver_host must be a host name or address, got {driver_host!r}")
        self.driver_host = driver_host
        self.uid = uuid.uuid4().hex
        self._token = secrets.token_hex(16)
        self._address: tuple[str, int] | None = None  # the ledger's, while a run is on
        self._server: LedgerServer | None = None
        self._lock = threading.Condition()  # guards the records (subclasses') and _holds
        self._holds = Holds()
        self._owner: weakref.ref[Any] | None = None
        self._committed = 0  # batches below this were delivered

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in self._driver_only}

    def _attach(self, stream: Any) -> None:
        owner = self._owner() if self._owner is not None else None
        if owner is not None and owner is not stream:
            raise ValueError(f"{self!r} already feeds {owner!r}: a {type(self).__name__} belongs to one stream "
                             f"(make one source per stream)")
        self._owner = weakref.ref(stream)

    def _open(self, ctx: Context) -> None:
        if self._server is None:
            self._server = LedgerServer(self.driver_host, self._token, self._handle, repr(self))
            self._address = self._server.address

    def _close(self, ctx: Context) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def _batch(self, ctx: Context, b: int, bt: BatchTime) -> Dataset:
        ds = super()._batch(ctx, b, bt)
        with self._lock:
            self._holds.hold(self._batch_key(b, bt), ds)
        return ds

    def _commit(self, b: int) -> None:
        with self._lock:
            self._committed = max(self._committed, b + 1)
            self._collect()

    def _ask(self, request: dict[str, Any]) -> Any:
        """On a worker: the ledger's answer to ``request``."""
        if self._address is None:
            raise RuntimeError(f"{self!r} is read outside a running stream")
        return ask(self._address, self._token, request, repr(self))

    # --- for subclasses (driver side, under _lock)
    def _batch_key(self, b: int, bt: BatchTime) -> Hashable:
        raise NotImplementedError

    def _handle(self, request: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _collect(self) -> None:
        """Forget the records no live dataset can read again (under ``_lock``)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _File:
    """A file as a batch listed it: what a re-read must find again."""

    name: str
    size: int
    mtime_ns: int


class DirectorySource(_LedgerSource):
    """Lines of the text files that appear in ``path``; one record per line, exactly once.

    Batch ``b`` takes the files whose modification time lies in its span
    ``[start, end)``. Each of the ``num_partitions`` tasks lists the directory
    itself, on its worker, and takes the files whose name hashes to its
    partition (:func:`~drizzle_core.portable_hash`), in (mtime, name) order.
    Files older than the stream's first batch are ignored, as are names
    starting with ``.`` or ``_`` (write there, then rename). Tasks start
    ``settle`` seconds after the batch's end, so a file whose (coarse,
    kernel-tick) mtime falls just before the end is already visible. A
    writer should make a file appear whole and with a fresh mtime: write it
    under a hidden name and ``os.replace`` it in (a file moved in with an
    old mtime belongs to a batch already read, and is not read).

    Exactly once. The first listing of each batch partition is recorded on
    the driver (its ledger: name, size and mtime of each file), and a batch
    recomputed after a worker was lost reads the recorded files, not a new
    listing: the same files, the same records, in the same order, even if
    files appeared since (with an mtime in the batch's span) or others were
    listed. A recorded file must stay as it is while its batch may be read
    again (until it is delivered and no window or state since the last
    checkpoint reads it); a re-read that finds it gone or changed (size,
    mtime) fails its task with an error naming the file, rather than
    delivering other records. ``driver_host`` is the driver's address as
    the workers reach it (loopback by default: set it when workers run on
    other hosts).
    """

    def __init__(self, path: str | os.PathLike[str], num_partitions: int = 1, *, settle: float = 0.02,
                 encoding: str = "utf-8", driver_host: str = "127.0.0.1") -> None:
        super().__init__(num_partitions, driver_host)
        self.path = os.fspath(path)
        self.settle = check_seconds(settle, "DirectorySource: settle", zero=True)
        self.encoding = encoding
        # (b, start, end) -> {partition: files listed}; driver only, under _lock
        self._files: dict[tuple[int, float, float], dict[int, list[_File]]] = {}

    _driver_only = (*_LedgerSource._driver_only, "_files")

    def __repr__(self) -> str:
        return f"DirectorySource({self.path!r})"

    def _batch_key(self, b: int, bt: BatchTime) -> Hashable:
        return (b, bt.start, bt.end)  # a batch rolled back is built again with another span: another listing

    def _collect(self) -> None:
        for key in self._holds.released():
            self._files.pop(key, None)  # type: ignore[call-overload]

    def _handle(self, request: dict[str, Any]) -> Any:
        """``files``: the recorded listing of ``(b, start, end, p)``; the proposed one if there is none yet."""
        if request.get("op") != "files":
            raise ValueError(f"unknown ledger request {request.get('op')!r}")
        key = (int(request["b"]), float(request["start"]), float(request["end"]))
        p = int(request["p"])
        with self._lock:
            self._collect()
            parts = self._files.setdefault(key, {})
            files = parts.get(p)
            if files is None:
                files = parts[p] = [_File(str(n), int(z), int(t)) for n, z, t in request["files"]]
        return {"files": [[f.name, f.size, f.mtime_ns] for f in files]}

    def _list(self, p: int, bt: BatchTime) -> list[list[Any]]:
        """This partition's files with an mtime in the batch's span, in (mtime, name) order."""
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
                picked.append((st.st_mtime, e.name, st.st_size, st.st_mtime_ns))
        return [[name, size, mtime_ns] for _t, name, size, mtime_ns in sorted(picked)]

    def _records(self, p: int, b: int, bt: BatchTime) -> Iterable[Any]:
        listing = self._ask({"op": "files", "b": b, "start": bt.start, "end": bt.end, "p": p,
                             "files": self._list(p, bt)})["files"]
        lines: list[str] = []
        for name, size, mtime_ns in listing:
            path = os.path.join(self.path, name)
            try:
                with open(path, encoding=self.encoding) as f:
                    st = os.fstat(f.fileno())
                    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                        raise RuntimeError(
                            f"{self!r}: {name!r} changed since batch {b} listed it ({size} bytes, mtime_ns "
                            f"{mtime_ns}; now {st.st_size} bytes, mtime_ns {st.st_mtime_ns}): write a file under "
                            f"a hidden name and os.replace it in whole, and leave it so")
                    lines.extend(line.rstrip("\n") for line in f)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{self!r}: batch {b} read {name!r}, which is gone: a file must stay while its batch may "
                    f"be read again (until delivered, and checkpointed if state reads it)") from None
        return lines


# ------------------------------------------------------------ socket source


@dataclass(frozen=True, slots=True)
class _Taken:
    """The lines one batch partition took from the buffer (kept while it may be read again)."""

    lines: list[str]
    dropped: int  # lines of this partition dropped (buffer full) since the previous batch took


_OVERFLOW = ("block", "drop")


class SocketSource(_LedgerSource):
    """Lines of text from a TCP server at ``host:port`` (like Spark's ``socketTextStream``), exactly once.

    Each of the ``num_partitions`` partitions has a connection, read by a
    thread *on the driver* into a replay buffer, each line stamped with its
    arrival. Batch ``b``'s task for partition ``p`` fetches from the driver
    the lines that arrived before ``b``'s end and no earlier batch took; the
    driver records what it took (its ledger), and a batch recomputed after a
    worker was lost gets the same lines. A line that arrives while a task
    fetches lands in the next batch: late by one batch, never lost or
    duplicated. Connections are opened when the stream starts running (so
    lines sent during the first batch are kept) and closed when it stops;
    lines received and not yet delivered are kept for the next run.

    The buffer holds every line received and not yet released: released
    once its batch was delivered and no dataset that may read it again is
    left on the driver (the last checkpoint of a stateful DStream, the
    window, since; see the stream's ``checkpoint_every``). ``buffer`` bounds
    it (lines, all partitions together). When it is full, ``overflow``
    decides: ``"block"`` (the default) stops reading the sockets until lines
    are released — the server's sends then block, TCP's back-pressure, and
    nothing is lost; ``"drop"`` keeps reading and drops the lines that do not
    fit, counted in :attr:`dropped`, in the next batch's
    ``BatchMetrics.dropped`` and logged (at most every 10 s).

    Lines pass through the driver (one copy in, one out per batch
    partition): the price of replay, since a worker's memory dies with it.
    ``driver_host`` is the driver's address as the workers reach it
    (loopback by default: set it when workers run on other hosts).
    """

    def __init__(self, host: str, port: int, num_partitions: int = 1, *, encoding: str = "utf-8",
                 buffer: int = 1_000_000, overflow: str = "block", driver_host: str = "127.0.0.1") -> None:
        super().__init__(num_partitions, driver_host)
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer <= 0:
            raise ValueError(f"SocketSource: buffer must be a positive int (lines), got {buffer!r}")
        if overflow not in _OVERFLOW:
            raise ValueError(f"SocketSource: overflow must be 'block' or 'drop', got {overflow!r}")
        self.host = host
        self.port = port
        self.encoding = encoding
        self.buffer = buffer
        self.overflow = overflow
        #: lines dropped because the buffer was full (overflow="drop"), over the source's life
        self.dropped = 0
        # Driver only, under _lock:
        self._arrived: list[deque[tuple[float, str]]] = [deque() for _ in range(num_partitions)]  # per partition
        self._taken: dict[tuple[int, int], _Taken] = {}  # (batch, partition) -> what it took
        self._dropped_since = [0] * num_partitions     # per partition, since its last take
        self._held = 0                                 # lines in _arrived and _taken
        self._unreleased: set[int] = set()             # batches with no live dataset, not delivered yet
        self._receivers: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closing = False
        self._warned = -math.inf

    _driver_only = (*_LedgerSource._driver_only, "_arrived", "_taken", "_dropped_since", "_held", "_unreleased",
                    "_receivers", "_sockets", "_closing", "_warned", "dropped")

    def __repr__(self) -> str:
        return f"SocketSource({self.host}:{self.port})"

    @property
    def buffered(self) -> int:
        """Lines held in the replay buffer now (received, not yet released)."""
        with self._lock:
            return self._held

    # ------------------------------------------------------- driver side
    def _open(self, ctx: Context) -> None:
        super()._open(ctx)
        self._closing = False
        try:
            for p in range(self.num_partitions):
                sock = socket.create_connection((self.host, self.port), timeout=10.0)
                sock.settimeout(None)
                self._sockets.append(sock)
                t = threading.Thread(target=self._receive, args=(p, sock), daemon=True,
                                     name=f"drizzle receiver {self.host}:{self.port} partition {p}")
                self._receivers.append(t)
                t.start()
        except BaseException:
            self._close(ctx)
            raise

    def _close(self, ctx: Context) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self._receivers:
            t.join(timeout=5.0)
        self._sockets, self._receivers = [], []
        super()._close(ctx)

    def _receive(self, p: int, sock: socket.socket) -> None:
        buf = b""
        enc = self.encoding
        try:
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    break
                now = time.time()
                buf += data
                *lines, buf = buf.split(b"\n")
                if lines:
                    self._put(p, now, [line.decode(enc, "replace").rstrip("\r") for line in lines])
        except OSError:
            pass  # closed by _close, or the peer reset the connection
        if buf:
            self._put(p, time.time(), [buf.decode(enc, "replace")])

    def _put(self, p: int, now: float, lines: list[str]) -> None:
        """Add a receiver's lines to the buffer: wait for room, or drop what does not fit (``overflow``)."""
        arrived = self._arrived[p]
        with self._lock:
            i = 0
            while i < len(lines):
                room = self.buffer - self._held
                if self._closing:
                    room = len(lines) - i  # received already: kept (at most one read over the bound)
                if room <= 0:
                    if self.overflow == "drop":
                        n = len(lines) - i
                        self.dropped += n
                        self._dropped_since[p] += n
                        if now - self._warned >= 10.0:
                            self._warned = now
                            log.warning("%r: the replay buffer is full (%d lines): dropped %d lines so far "
                                        "(buffer=, overflow=)", self, self.buffer, self.dropped)
                        return
                    self._lock.wait(0.1)  # "block": released lines or _close wake it
                    continue
                chunk = lines[i:i + room]
                arrived.extend((now, line) for line in chunk)
                self._held += len(chunk)
                i += len(chunk)

    def _batch_key(self, b: int, bt: BatchTime) -> Hashable:
        return b  # a batch rolled back is built again with the same index: it must take the same lines

    def _collect(self) -> None:
        """Release the lines of delivered batches that no live dataset can read again."""
        self._unreleased.update(self._holds.released())  # type: ignore[arg-type]
        done = [b for b in self._unreleased if b < self._committed and not self._holds.alive(b)]
        freed = 0
        for b in done:
            self._unreleased.discard(b)
            for p in range(self.num_partitions):
                taken = self._taken.pop((b, p), None)
                if taken is not None:
                    freed += len(taken.lines)
        self._unreleased.difference_update(b for b in list(self._unreleased) if self._holds.alive(b))
        if freed:
            self._held -= freed
            self._lock.notify_all()

    def _dropped(self, b: int) -> int:
        with self._lock:
            return sum(t.dropped for p in range(self.num_partitions) if (t := self._taken.get((b, p))) is not None)

    def _handle(self, request: dict[str, Any]) -> Any:
        """``take``: the lines of ``(b, p)``: those recorded, or the ones that arrived before ``end``."""
        if request.get("op") != "take":
            raise ValueError(f"unknown ledger request {request.get('op')!r}")
        b, p, end = int(request["b"]), int(request["p"]), float(request["end"])
        if not 0 <= p < self.num_partitions:
            raise ValueError(f"no partition {p}")
        with self._lock:
            self._collect()
            taken = self._taken.get((b, p))
            if taken is None:
                if b < self._committed:
                    raise RuntimeError(f"batch {b} was delivered and its lines released; it cannot be read again")
                arrived = self._arrived[p]
                lines = []
                while arrived and arrived[0][0] < end:
                    lines.append(arrived.popleft()[1])
                taken = self._taken[(b, p)] = _Taken(lines, self._dropped_since[p])
                self._dropped_since[p] = 0
        return {"lines": taken.lines}

    # ------------------------------------------------------- worker side
    def _records(self, p: int, b: int, bt: BatchTime) -> Iterable[Any]:
        lines: list[str] = self._ask({"op": "take", "b": b, "p": p, "end": bt.end})["lines"]
        return lines
