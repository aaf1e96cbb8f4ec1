"""The driver's log: INFO says what a user wants to know, DEBUG what the scheduler decided, never per task.

Loggers: ``drizzle.scheduler`` (workers, groups, recoveries) and
``drizzle.adaptive`` (group size changes). ``drizzle --log-level`` sets the
level for the CLI; a program sets it with ``logging``.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
import subprocess
import sys
import time

import pytest
from support import kill_self_once, wait_all_live

import drizzle_core as dz

pytestmark = pytest.mark.timeout(90)


def _messages(caplog, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def _kill_once_then_len(directory: str, part) -> int:
    kill_self_once(directory)
    return len(list(part))


def test_info_tells_workers_group_sizes_losses_recoveries_and_joins(caplog, tmp_path, no_orphans):
    caplog.set_level(logging.INFO, logger="drizzle")
    with dz.Context(workers=2) as ctx:
        started = _messages(caplog, "drizzle.scheduler", logging.INFO)
        assert len(started) == 1 and re.fullmatch(r"2 workers on local: local worker 0 \(pid \d+\), "
                                                  r"local worker 1 \(pid \d+\)", started[0]), started
        ds = ctx.parallelize(range(8), 2).cache()
        ctx.run_jobs([(ds, len)] * 100, group_size="auto")  # tiny jobs: coordination dominates, G grows
        grown = _messages(caplog, "drizzle.adaptive", logging.INFO)
        assert grown and re.match(r"group size 4 -> 8 \(next group: 8, after caps\): coordination share \d+% is "
                                  r"above 10%", grown[0]), grown

        caplog.clear()
        out = ctx.run_jobs([(ds, functools.partial(_kill_once_then_len, str(tmp_path)))] * 6, group_size=3)
        assert out == [[4, 4]] * 6
        wait_all_live(ctx)
        warned = " | ".join(_messages(caplog, "drizzle.scheduler", logging.WARNING))
        assert "lost local worker" in warned and "started a replacement" in warned, warned
        info = _messages(caplog, "drizzle.scheduler", logging.INFO)
        assert any(re.match(r"group \d+ recovered: \d+ unfinished jobs re-planned on 1 workers", m) for m in info), info
        assert any(re.match(r"local worker \d \(pid \d+\) joined: 2 live workers", m) for m in info), info
        assert "group size halved to" in " ".join(_messages(caplog, "drizzle.adaptive", logging.INFO))

        caplog.clear()
        ctx.add_worker()
        assert any(re.match(r"local worker 2 \(pid \d+\) joined: 3 live workers", m)
                   for m in _messages(caplog, "drizzle.scheduler", logging.INFO))


def _slow_on_3(x):
    if x == 3:
        time.sleep(2.0)
    return (x % 2, x)


def test_a_group_quiet_for_long_is_logged_with_what_its_workers_wait_for(caplog, monkeypatch):
    # a hang explains itself: after QUIET_WARN seconds without a word of a group, the driver says which jobs
    # and workers it waits for, and each worker (unless busy in a task) what it is waiting for
    from drizzle_core.driver import _scheduler

    monkeypatch.setattr(_scheduler, "QUIET_WARN", 0.5)
    caplog.set_level(logging.WARNING, logger="drizzle")
    with dz.Context(workers=2) as ctx:
        wait_all_live(ctx)
        ds = ctx.parallelize(range(4), 2)  # partition 1 (3 of its records) sleeps on its worker
        assert ctx.run_jobs([(ds, len)] * 5, group_size=5) == [[2, 2]] * 5
        assert not _messages(caplog, "drizzle.scheduler", logging.WARNING)  # a group that talks: nothing
        out = dict(ds.map(_slow_on_3).reduce_by_key(operator.add, 2).collect())
        assert out == {0: 2, 1: 4}
        warned = _messages(caplog, "drizzle.scheduler", logging.WARNING)
        worker = r"local worker \d \(pid \d+\)"
        assert any(re.match(rf"group \d+ has sent nothing for 0.5 s: 1 of its 1 jobs unfinished \(jobs \d+\), DONE "
                            rf"due from {worker}(, {worker})?; asking them what they are waiting for", m)
                   for m in warned), warned
        # the worker whose map side is done waits for the other's shuffle blocks, and says so
        said = [m for m in warned if " of a quiet group (wire " in m]
        assert any(re.match(rf"{worker}, of a quiet group \(wire \d+\), says: groups=\[\d+\] .*waiting=\{{.*'s'", m)
                   for m in said), warned
        assert ctx.bookkeeping()["driver"]["quiet_asks"] == 0  # an answer still due when the group ended: dropped


def test_debug_tells_each_groups_plan_launch_and_end_never_each_task(caplog):
    with dz.Context(workers=2) as ctx:
        ds = ctx.parallelize(range(40), 4).cache()
        ctx.run_jobs([(ds, len)], group_size=1)
        caplog.set_level(logging.DEBUG, logger="drizzle")
        caplog.clear()
        ctx.run_jobs([(ds, sum)] * 100, group_size=10)  # 400 tasks in 10 groups
        debug = _messages(caplog, "drizzle.scheduler", logging.DEBUG)
    planned = [m for m in debug if re.match(r"group \d+ planned: 10 jobs \(G=10 asked; \d+ stamped from templates, "
                                            r"\d+ templates recorded\), 40 tasks on 2 workers", m)]
    launched = [m for m in debug if re.match(r"group \d+ launched \(wire \d+\) to workers \[0, 1\]", m)]
    done = [m for m in debug if re.match(r"group \d+ done: 10 jobs, 40 tasks on 2 workers in [\d.]+ ms; "
                                         r"coordination share [\d.]+%", m)]
    assert len(planned) == len(launched) == len(done) == 10, debug
    assert any(re.search(r"planned: 10 jobs \(G=10 asked; 10 stamped", m) for m in planned), planned
    assert any(re.match(r"wire \d+: 10 jobs stamped from templates", m) for m in debug), debug
    assert len(debug) <= 6 * 10, debug  # a few lines a group; 400 tasks, 100 jobs would be far more


def test_the_cli_log_level_shows_the_drivers_info(tmp_path):
    out = subprocess.run([sys.executable, "-m", "drizzle_core._cli", "--log-level", "INFO", "demo", "--iterations",
                          "10", "--group-sizes", "5", "--workers", "2"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"INFO drizzle\.scheduler: 2 workers on local: local worker 0", out.stderr), out.stderr
    quiet = subprocess.run([sys.executable, "-m", "drizzle_core._cli", "demo", "--iterations", "10",
                            "--group-sizes", "5", "--workers", "2"], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path)
    assert quiet.returncode == 0 and "drizzle.scheduler" not in quiet.stderr, quiet.stderr  # WARNING by default


def test_a_stream_waiting_for_its_next_batch_is_not_a_quiet_group(caplog, monkeypatch):
    from drizzle_core.driver import _scheduler

    monkeypatch.setattr(_scheduler, "QUIET_WARN", 0.3)
    caplog.set_level(logging.WARNING, logger="drizzle")
    with dz.Context(workers=2) as ctx:
        s = ctx.stream(dz.GeneratorSource(lambda p, b, bt: [b], 2), batch_interval=0.5, group_size=3)
        sink = s.collect_sink()
        s.run(batches=6)
        assert sink.items() == [b for b in range(6) for _ in range(2)]
    assert not [m for m in _messages(caplog, "drizzle.scheduler", logging.WARNING) if "has sent nothing" in m]
