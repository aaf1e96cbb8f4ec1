"""Where a large frame's arrays live once received: memory the kernel may back with huge pages.

A cached partition stays in the buffer its frame was received into, and a
kernel streaming over it (a gradient pass over 8 MB blocks) spent ~40% of
its time in TLB misses on 4 KiB pages (measured: 2.4-2.6 against 1.3-1.5 ms
a block). So a body of 4 MiB and more goes to a private anonymous mapping
madvised for transparent huge pages, the arrays starting in it on a 2 MiB
boundary's page. What a user checks: the arrays arrive intact (dense and
several per frame, over a plain and an authenticated connection), and the
kernel was told the memory may take huge pages (``THPeligible`` in
``/proc/self/smaps``, where this kernel reports it and THP is not off).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from drizzle_core.net._hub import Hub
from drizzle_core.protocol._wire import FrameAuth, derive_frame_keys

pytestmark = pytest.mark.timeout(60)


def _mapping_of(address: int) -> dict[str, str] | None:
    """The ``/proc/self/smaps`` entry (its header line as ``range``/``perms``/``path``, then its fields)."""
    entry: dict[str, str] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and ":" not in head[0]:
            if entry is not None:
                return entry
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            entry = {"perms": head[1], "path": head[5] if len(head) > 5 else ""} if lo <= address < hi else None
        elif entry is not None and ":" in head[0]:
            entry[head[0].rstrip(":")] = head[1]
    return entry


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "absent"
    return text.split("[")[1].split("]")[0]


@pytest.mark.parametrize("authenticated", [False, True])
def test_large_arrays_arrive_intact_in_memory_eligible_for_huge_pages(authenticated: bool) -> None:
    a, b = socket.socketpair()
    sender, receiver = Hub(), Hub()
    if authenticated:
        c2s, s2c = derive_frame_keys(b"secret", os.urandom(32), os.urandom(32))
        sender.add(a, "R", auth=FrameAuth(c2s, s2c))
        receiver.add(b, "S", auth=FrameAuth(s2c, c2s))
    else:
        sender.add(a, "R")
        receiver.add(b, "S")
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(50_000, 20)), rng.normal(size=(50_000, 20)), np.arange(50_000.0)]
    try:
        sender.send("R", ("blocks", blocks))
        got: list = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            sender.poll(0)
            got += receiver.poll(0.01)
        assert len(got) == 1, got
        peer, (tag, arrived) = got[0]
        assert (peer, tag) == ("S", "blocks")
        for want, have in zip(blocks, arrived):
            np.testing.assert_array_equal(have, want)
            assert have.ctypes.data % 64 == 0 or authenticated  # unauthenticated: each buffer cache-line aligned
        mapping = _mapping_of(arrived[0].ctypes.data)
        assert mapping is not None
        # private and anonymous (a shared anonymous mapping is shmem, which THP leaves alone), not the heap
        assert mapping["perms"].endswith("p") and mapping["path"] == "", mapping
        if _thp_mode() != "never" and "THPeligible" in mapping:
            assert mapping["THPeligible"] == "1", mapping
    finally:
        sender.close()
        receiver.close()

