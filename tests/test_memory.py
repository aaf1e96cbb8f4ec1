"""Large arrays cost what they must in memory (issue 11).

Caching an array costs the user's array in the driver plus one copy of each
partition on its worker: 2x the data in total, not the 3x (and 6x before
sources went only to their worker) of a worker that received a partition and
then copied it to align it. Measured as a user would: the peak RSS of each
process (VmHWM, the kernel's exact high-water mark, reset once the context is
warm), summed. Not a timed test. Linux only (it reads /proc).
"""

from __future__ import annotations

import os
import socket
import sys

import numpy as np
import pytest
from conftest import child_pids
from support import worker_pids

import drizzle_core as dz
from drizzle_core.transport import Hub

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")]

DATA = 200_000_000          # bytes of float64
ALLOWANCE = 25_000_000      # per process: interpreter arenas, the per-row results, receive buffers


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def _row_sum(row):
    return float(row.sum())


def test_caching_an_array_costs_twice_its_size_in_total(no_orphans):
    with dz.Context(transport="local", workers=2) as ctx:
        ctx.parallelize(range(4), 2).map(lambda x: x).collect()  # warm: imports, connections
        # this Context's own processes (a cluster another test module keeps for the session is not ours)
        pids = [os.getpid(), *sorted(set(worker_pids(ctx)))]
        assert len(pids) == 3 and set(pids[1:]) <= set(child_pids())
        for pid in pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
        base = {pid: _status(pid, "VmRSS") for pid in pids}

        data = np.random.default_rng(0).random((DATA // 8000, 1000))
        ds = ctx.parallelize(data, 2).cache()
        for _ in range(2):  # the second job reads the cached partitions
            np.testing.assert_allclose(ds.map(_row_sum).collect(), data.sum(axis=1))
        growth = {pid: _status(pid, "VmHWM") - base[pid] for pid in pids}

    total = sum(growth.values())
    shown = {pid: f"{g / 1e6:.0f} MB" for pid, g in growth.items()}
    assert total <= 2 * DATA + len(pids) * ALLOWANCE, (
        f"peak RSS growth {total / DATA:.2f}x the data ({shown}, driver {os.getpid()})")
    for pid in pids[1:]:  # each worker holds its half once
        assert growth[pid] <= DATA / 2 + ALLOWANCE, shown


def test_arrays_arrive_whole_and_aligned():
    """A large frame's arrays land at 64-byte aligned addresses (no copy on the worker to align them),
    with their values, dtypes and shapes, whatever the sizes before them in the frame."""
    a, b = socket.socketpair()
    sender, receiver = Hub(), Hub()
    sender.add(a, "receiver")
    receiver.add(b, "sender")
    try:
        rng = np.random.default_rng(1)
        arrays = [rng.random(1_000_003), np.arange(17, dtype=np.int8), np.zeros((0, 3)), rng.random((999, 7)),
                  np.arange(10, dtype=np.int16), rng.random(5_000_001)]  # the last over 32 MiB: a mapping
        sender.send("receiver", ("tag", arrays, b"x" * 100))
        got: list = []
        for _ in range(100_000):
            sender.poll(0.001)
            got += receiver.poll(0.001)
            if got:
                break
        [(peer, (tag, received, tail))] = got
        assert (peer, tag, tail) == ("sender", "tag", b"x" * 100)
        for sent, arrived in zip(arrays, received, strict=True):
            assert arrived.dtype == sent.dtype and arrived.shape == sent.shape
            np.testing.assert_array_equal(arrived, sent)
            assert arrived.nbytes == 0 or arrived.ctypes.data % 64 == 0, (sent.shape, arrived.ctypes.data % 64)
            assert arrived.flags.writeable
    finally:
        sender.close()
        receiver.close()
