"""Directory and socket sources under the loss of a worker (issue 11): exactly once.

What a user checks: a worker SIGKILLed in the middle of a stream while data
keeps arriving, and the sink still gets every record once, in order, with
state that counted each record once; nothing left in the engine's
bookkeeping afterwards. The directory source reads, for a recomputed batch,
the files its first read listed, even when a file has appeared since with an
mtime in that batch's span (a re-listing would read it: state and sink would
disagree). The socket source replays a lost batch from the driver's bounded
buffer; when the buffer is full it blocks the reader (nothing lost) or drops
lines, counted.

On ``inline`` no worker can be killed; there the same streams must give
exactly the sequential result, and a batch read twice gives the same records.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
from collections import Counter

import pytest
from bookkeeping import assert_no_bookkeeping
from support import alive, wait_dead, worker_pids

import drizzle_core as dz
from drizzle_core import portable_hash

pytestmark = pytest.mark.timeout(120)

I = 0.02  # noqa: E741  (batch interval, seconds)
TRANSPORTS = ["inline", "local", "tcp"]


def _count(values, old):
    return (old or 0) + len(values)


def _file_of(line):
    return (line.split()[0], 1)


class Killer:
    """A sink that SIGKILLs worker ``pids[-1]`` once, when batch ``at`` is delivered (no-op without pids)."""

    def __init__(self, pids, at):
        self.pids, self.at, self.killed = pids, at, None

    def __call__(self, records, m):
        if self.pids and self.killed is None and m.batch >= self.at:
            self.killed = self.pids[-1]
            os.kill(self.killed, signal.SIGKILL)


def _check_state(state, sink):
    """Each delivered state is the running count, per file (or connection), of the records the sink got."""
    running: Counter = Counter()
    assert len(state.batches) == len(sink.batches)
    for records, got in zip(sink.batches, state.batches):
        running.update(_file_of(x)[0] for x in records)
        assert dict(got) == dict(running)


def _check_recovered(ctx, transport, killer, n0):
    if transport == "inline":
        return
    assert killer.killed is not None and wait_dead([killer.killed]) == []
    assert sum(m.recoveries for m in ctx.metrics[n0:]) >= 1
    assert ctx.parallelize(range(10), 2).sum() == 45  # the context works on


# ------------------------------------------------------------------ directory


def _write(directory, name, text, mtime=None):
    tmp = directory / f".{name}.tmp"
    tmp.write_text(text)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, directory / name)


def _listing(directory, m, partitions, skip):
    """What batch ``m`` reads by the documented rule: per partition, files with an mtime in its span,
    by (mtime, name)."""
    out = []
    for p in range(partitions):
        picked = []
        for e in os.scandir(directory):
            if e.name[:1] in "._" or e.name in skip or portable_hash(e.name) % partitions != p:
                continue
            t = e.stat().st_mtime
            if m.start <= t < m.end:
                picked.append((t, e.name))
        for _t, name in sorted(picked):
            out.extend((directory / name).read_text().splitlines())
    return out


def _back_dated_names(partitions):
    """One file name per partition (by the source's hash), for files moved in with an old mtime."""
    names, i = {}, 0
    while len(names) < partitions:
        name = f"moved{i}.txt"
        names.setdefault(portable_hash(name) % partitions, name)
        i += 1
    return sorted(names.values())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_directory_source_is_exactly_once_when_a_worker_is_lost(transport, tmp_path, no_orphans):
    files = 16
    expected = [f"f{i:02d} line{j}" for i in range(files) for j in range(3)]
    moved = _back_dated_names(2)
    with dz.Context(transport=transport, workers=2) as ctx:
        pids = [] if transport == "inline" else worker_pids(ctx)
        src = dz.DirectorySource(tmp_path, 2, settle=0.03)
        # no checkpoint: recovering the state reads every batch since the first again
        s = ctx.stream(src, batch_interval=I, group_size=3, checkpoint_every=10**6)
        sink = s.collect_sink()
        state = s.map(_file_of).update_state_by_key(_count, 2).collect_sink()
        killer = Killer(pids, at=6)
        s.foreach_batch(killer)
        done = threading.Event()

        def writer():
            for i in range(files):
                _write(tmp_path, f"f{i:02d}.txt", "".join(f"f{i:02d} line{j}\n" for j in range(3)))
                if i == 3:  # moved in with an mtime in batch 0's span, listed before they existed
                    for name in moved:
                        _write(tmp_path, name, "moved line\n", mtime=s.metrics[0].start + 0.001)
                time.sleep(0.015)
            done.set()

        started = []

        def control(records, m):
            if not started:
                started.append(threading.Thread(target=writer))
                started[0].start()
            if done.is_set() and len(sink.items()) >= len(expected):
                s.stop()

        s.foreach_batch(control)
        n0 = len(ctx.metrics)
        try:
            s.run(batches=300)
        finally:
            if started:
                started[0].join()
        _check_recovered(ctx, transport, killer, n0)
        # no loss, no duplicate, in the order of the sequential result
        assert sorted(sink.items()) == expected
        assert sink.batches == [_listing(tmp_path, m, 2, skip=moved) for m in s.metrics]
        _check_state(state, sink)  # the moved files are in no state: recomputed batches read what they listed
        assert sum(m.events for m in s.metrics) == len(expected)
        assert_no_bookkeeping(ctx)


def test_a_batch_read_again_reads_the_files_it_listed(tmp_path):
    """The ledger itself (inline, where nothing is lost): a batch's dataset computed twice, a file moved in
    between with an mtime in its span; then the listed file changed: a clear error naming it."""
    with dz.Context(transport="inline", workers=1) as ctx:
        now = time.time()
        bt = dz.BatchTime(now - 10, now - 5)
        _write(tmp_path, "a.txt", "a1\na2\n", mtime=now - 8)
        src = dz.DirectorySource(tmp_path, 1)
        src._open(ctx)
        try:
            raw = src._batch(ctx, 0, bt)
            assert raw.collect()[1:] == ["a1", "a2"]
            _write(tmp_path, "b.txt", "b1\n", mtime=now - 7)  # in the span, after the first read
            assert raw.collect()[1:] == ["a1", "a2"]
            later = src._batch(ctx, 1, dz.BatchTime(bt.start, bt.end + 1e-6))  # a new listing sees b.txt
            assert later.collect()[1:] == ["a1", "a2", "b1"]
            _write(tmp_path, "a.txt", "rewritten\n", mtime=now - 8)
            with pytest.raises(dz.TaskError, match=r"'a\.txt' changed since batch 0 listed it"):
                raw.collect()
            os.remove(tmp_path / "a.txt")
            with pytest.raises(dz.TaskError, match=r"'a\.txt', which is gone"):
                raw.collect()
            # the record lives as long as a dataset that may read it: then it is forgotten
            del raw
            gc.collect()
            src._commit(1)
            assert list(src._files) == [(1, bt.start, bt.end + 1e-6)]
            del later
            gc.collect()
            src._commit(2)
            assert src._files == {}
        finally:
            src._close(ctx)


def test_a_directory_source_feeds_one_stream(tmp_path):
    with dz.Context(transport="inline", workers=1) as ctx:
        src = dz.DirectorySource(tmp_path)
        s = ctx.stream(src, batch_interval=I)
        with pytest.raises(ValueError, match="already feeds"):
            ctx.stream(src, batch_interval=I)
        del s


# --------------------------------------------------------------------- socket


class LineServer:
    """A local text server: connection c gets lines ``c<c> <i>``, one every ``gap`` seconds (round robin)."""

    def __init__(self, per_connection, connections, gap=0.002):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines = [[f"c{c} {i}" for i in range(per_connection)] for c in range(connections)]
        self.gap = gap
        self.sent = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conns = [self.sock.accept()[0] for _ in self.lines]
        try:
            for i in range(len(self.lines[0])):
                for c, conn in enumerate(conns):
                    conn.sendall((self.lines[c][i] + "\n").encode())
                if self.gap:
                    time.sleep(self.gap)
        except OSError:
            pass  # the source closed its connections (a test that stops early)
        self.sent.set()
        for conn in conns:
            conn.close()
        self.sock.close()

    def all_lines(self):
        return [x for c in self.lines for x in c]


def _per_connection(items, connections):
    return [[x for x in items if x.startswith(f"c{c} ")] for c in range(connections)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_socket_source_replays_a_lost_batch_from_its_buffer(transport, no_orphans):
    server = LineServer(per_connection=120, connections=2)
    with dz.Context(transport=transport, workers=2) as ctx:
        pids = [] if transport == "inline" else worker_pids(ctx)
        src = dz.SocketSource("127.0.0.1", server.port, 2, buffer=10_000)
        s = ctx.stream(src, batch_interval=I, group_size=3, checkpoint_every=5)
        sink = s.collect_sink()
        state = s.map(_file_of).update_state_by_key(_count, 2).collect_sink()
        killer = Killer(pids, at=5)
        s.foreach_batch(killer)
        expected = server.all_lines()

        def control(records, m):
            if len(sink.items()) >= len(expected):
                s.stop()

        s.foreach_batch(control)
        n0 = len(ctx.metrics)
        s.run(batches=500)
        server.thread.join(timeout=10)
        _check_recovered(ctx, transport, killer, n0)
        # every line once, each connection's lines in the order sent
        assert sorted(sink.items()) == sorted(expected)
        assert _per_connection(sink.items(), 2) == server.lines
        _check_state(state, sink)
        assert all(m.dropped == 0 for m in s.metrics) and src.dropped == 0
        # released as batches were delivered and checkpointed: the buffer holds at most the lines of the
        # batches since the state's last checkpoint
        since = (len(s.metrics) // 5) * 5 - 5
        assert src.buffered <= sum(m.events for m in s.metrics[max(0, since - 3):])
        assert_no_bookkeeping(ctx)


def test_a_full_buffer_blocks_the_reader_and_loses_nothing(no_orphans):
    server = LineServer(per_connection=150, connections=1, gap=0)  # as fast as TCP goes
    with dz.Context(transport="local", workers=2) as ctx:
        src = dz.SocketSource("127.0.0.1", server.port, 1, buffer=20)
        s = ctx.stream(src, batch_interval=I, group_size=1)
        sink = s.collect_sink()
        most: list[int] = []

        def control(records, m):
            most.append(src.buffered)
            if len(sink.items()) >= 150:
                s.stop()

        s.foreach_batch(control)
        s.run(batches=2000)
        server.thread.join(timeout=10)
    assert sink.items() == server.lines[0]
    assert max(most) <= 20 and max(len(b) for b in sink.batches) <= 20
    assert src.dropped == 0


def test_a_full_buffer_with_overflow_drop_drops_lines_and_counts_them(no_orphans):
    server = LineServer(per_connection=400, connections=1, gap=0)
    with dz.Context(transport="local", workers=2) as ctx:
        src = dz.SocketSource("127.0.0.1", server.port, 1, buffer=10, overflow="drop")
        s = ctx.stream(src, batch_interval=I, group_size=1)
        sink = s.collect_sink()

        def control(records, m):
            if server.sent.is_set() and len(s.metrics) > 1 and not records and not s.metrics[-2].events:
                s.stop()  # sent, and two batches in a row found nothing new

        s.foreach_batch(control)
        s.run(batches=2000)
        server.thread.join(timeout=10)
    got = sink.items()
    assert src.dropped > 0
    assert len(got) + src.dropped == 400
    assert sum(m.dropped for m in s.metrics) == src.dropped  # each drop reported with the batch after it
    sent = server.lines[0]
    order = {line: i for i, line in enumerate(sent)}
    assert len(set(got)) == len(got) and all(line in order for line in got)
    assert [order[x] for x in got] == sorted(order[x] for x in got)  # what was kept, in order


def test_bad_socket_source_arguments():
    with pytest.raises(ValueError, match="buffer"):
        dz.SocketSource("127.0.0.1", 1, buffer=0)
    with pytest.raises(ValueError, match="overflow"):
        dz.SocketSource("127.0.0.1", 1, overflow="spill")
    assert alive(os.getpid())
