"""``Context(trace=...)``: the Chrome trace is written as the jobs run, and at exit, not only at ``stop()``.

A script that never stops its Context, a driver killed with SIGKILL: the
file is a complete JSON trace either way (up to the last flush for the
killed one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from support import wait_dead

import drizzle_core as dz
from drizzle_core.driver import _trace

pytestmark = pytest.mark.timeout(90)


def _events(path) -> list[dict]:
    return json.loads(path.read_text())["traceEvents"]


def _tasks(events) -> list[dict]:
    return [e for e in events if e.get("cat") == "task"]


def test_the_file_is_a_complete_trace_after_every_flush(tmp_path):
    path = tmp_path / "t.json"
    t = _trace.Trace(path, ["w0", "w1"])
    assert _events(path) == []  # valid from the start
    t.write()
    assert [e["args"]["name"] for e in _events(path)] == ["driver", "w0", "w1"]
    t.instant("job 0 done")
    t.write()
    t.instant("lost w1", "killed")
    t.write()
    names = [e["name"] for e in _events(path)]
    assert names[-2:] == ["job 0 done", "lost w1"] and len(names) == 5
    t.close()
    t.close()  # idempotent
    t.instant("after the end")
    t.write()
    assert len(_events(path)) == 5 and t.closed


def test_a_bad_path_fails_before_any_worker_starts(tmp_path, no_orphans):
    with pytest.raises(FileNotFoundError):
        dz.Context(workers=2, trace=tmp_path / "no such folder" / "t.json")


def test_events_are_flushed_while_the_context_runs(tmp_path, monkeypatch, no_orphans):
    monkeypatch.setattr(_trace, "FLUSH_EVERY", 0.0)  # every group
    path = tmp_path / "t.json"
    with dz.Context(workers=2, trace=path) as ctx:
        ds = ctx.parallelize(range(40), 4).cache()
        ctx.run_jobs([(ds, sum)] * 6, group_size=3)
        first = _tasks(_events(path))  # read while the context is open: a complete JSON document
        assert first, "no task on disk yet"
        ctx.add_worker()
        ctx.run_jobs([(ds, len)] * 4, group_size=2)
        later = _events(path)
        assert len(_tasks(later)) > len(first)
        names = {e["args"]["name"] for e in later if e["ph"] == "M"}
        assert any(n.startswith("local worker 2") for n in names), names  # the added worker has its row
    assert len(_tasks(_events(path))) == 6 * 4 + 4 * 4  # every task, once


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import drizzle_core as dz
    from drizzle_core.driver import _trace
    _trace.FLUSH_EVERY = 0.0
    ctx = dz.Context(workers=2, trace=sys.argv[1])   # never stopped, never in a with block
    ds = ctx.parallelize(range(40), 4).cache()
    ctx.run_jobs([(ds, sum)] * 8, group_size=4)
    pids = [p[0] for p in ctx.parallelize(range(2), 2).map_partitions(lambda it: [os.getpid()]).glom()]
    print(*pids, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_a_context_never_stopped_still_leaves_its_trace(tmp_path, end):
    script = tmp_path / "never_stopped.py"
    script.write_text(SCRIPT)
    path = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, str(script), str(path), end], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2, proc.stderr
    assert proc.returncode == (-signal.SIGKILL if end == "kill" else 0), proc.stderr
    try:
        events = _events(path)  # valid JSON: written at exit, or up to the last flush before the kill
        tasks = _tasks(events)
        assert len([t for t in tasks if t["name"].startswith("result")]) >= 8 * 4, len(tasks)
        assert {e["name"] for e in events if e.get("cat") == "driver"} >= {"plan", "launch", "wait for results"}
    finally:
        left = wait_dead(pids)  # the workers went with their driver
        for p in left:
            os.kill(p, signal.SIGKILL)
    assert not left
