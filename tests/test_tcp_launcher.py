"""tcp: the launcher interface (who starts the daemons, who reports their deaths).

The ray and dask transports are the tcp transport with their own launcher;
what the transport does with a launcher's news is pinned down here with the
local launcher and thin wrappers of it: a loss the engine saw before any
socket did, a worker that cannot be placed, a start that times out, a
daemon nobody connects to.
"""

from __future__ import annotations

import os
import time

import pytest
from drizzle_tcp import DaemonSpec, Failed, LocalLauncher, Lost, start_daemon
from support import wait_all_live, worker_pids

import drizzle_core as dz
from drizzle_core.transport import TransportError

pytestmark = pytest.mark.timeout(90)


def _slowly(kv):
    time.sleep(0.01)
    return kv


class SeesDeaths(LocalLauncher):
    """A local launcher whose 'engine' reports a worker lost while its process still runs (a node that
    vanished without its sockets closing)."""

    def __init__(self) -> None:
        super().__init__()
        self.report: list[Lost] = []

    def poll(self):
        events = super().poll()
        events += self.report
        self.report = []
        return events


class CannotPlace(LocalLauncher):
    """Worker 1 cannot be placed (no resources for it)."""

    def launch(self, index: int, epoch: int) -> None:
        if index == 1:
            self.failed = Failed(1, epoch, "no node has {'CPU': 64} free (requested by the test)")
            return
        super().launch(index, epoch)

    def poll(self):
        events = super().poll()
        if getattr(self, "failed", None):
            events.append(self.failed)
            self.failed = None
        return events


class NeverStarts(LocalLauncher):
    def launch(self, index: int, epoch: int) -> None:
        pass  # a cluster that never schedules it


def test_a_loss_the_engine_saw_is_recovered_and_the_old_daemon_fenced(no_orphans):
    launcher = SeesDeaths()
    with dz.Context(transport="tcp", workers=2, launcher=launcher) as ctx:
        pids = worker_pids(ctx)
        old = launcher.procs[1]
        launcher.report.append(Lost(1, 0, "ray actor died: the node was removed"))
        data = ctx.parallelize(range(100), 4).map(lambda x: (x % 3, x)).reduce_by_key(lambda a, b: a + b)
        expected = {k: sum(range(k, 100, 3)) for k in range(3)}
        deadline = time.monotonic() + 10
        while old.poll() is None and time.monotonic() < deadline:  # read at the launcher's next look
            assert dict(data.map(_slowly).collect()) == expected
        assert old.poll() is not None  # fenced: the launcher was told to kill it
        wait_all_live(ctx)
        assert worker_pids(ctx)[0] == pids[0] and worker_pids(ctx)[1] != pids[1]
        assert dict(data.collect()) == {k: sum(range(k, 100, 3)) for k in range(3)}
        # news about an incarnation already replaced changes nothing
        launcher.report.append(Lost(1, 0, "late news"))
        assert ctx.parallelize(range(10), 2).sum() == 45
        assert len(ctx.live_workers) == 2


def test_a_worker_that_cannot_be_placed_is_an_error_naming_it(no_orphans):
    with pytest.raises(TransportError, match=r"tcp worker 1 could not be started: no node has \{'CPU': 64\}"):
        dz.Context(transport="tcp", workers=2, launcher=CannotPlace())


def test_a_start_that_never_comes_times_out_with_the_missing_workers(no_orphans):
    t0 = time.monotonic()
    with pytest.raises(TransportError, match=r"tcp workers \[0, 1\] did not start within 1s \(local launcher\)"):
        dz.Context(transport="tcp", workers=2, launcher=NeverStarts(), start_timeout=1)
    assert time.monotonic() - t0 < 10


def test_a_launcher_needs_a_number_of_workers():
    with pytest.raises(ValueError, match="give their number"):
        dz.Context(transport="tcp", workers=["127.0.0.1:7078"], launcher=LocalLauncher())


def test_a_daemon_nobody_connects_to_leaves_after_its_deadline(no_orphans):
    spec = DaemonSpec(1, os.urandom(16).hex().encode(), connect_deadline=0.5)
    proc, address = start_daemon(spec, "127.0.0.1:0")
    assert address.startswith("127.0.0.1:")
    assert proc.wait(timeout=15) == 0


def test_the_secret_is_not_on_the_daemons_command_line(no_orphans):
    spec = DaemonSpec(1, b"s3cret-not-in-argv", connect_deadline=5)
    proc, _address = start_daemon(spec, "127.0.0.1:0")
    try:
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert b"s3cret-not-in-argv" not in f.read()
    finally:
        proc.kill()
        proc.wait()
