"""The examples and the demo run and print what their docstrings promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("script,args", [("single_stage.py", ["30", "10", "4"]),
                                         ("running_sum.py", ["30", "10", "4", "2"])])
def test_example_prints_ms_per_iteration(script, args, no_orphans):
    out = _run(os.path.join("examples", script), *args)
    assert re.search(r"group size 10, 4 partitions.*: \d+\.\d+ ms per iteration", out)


def test_drizzle_demo_prints_the_group_size_table(no_orphans):
    out = _run("-m", "drizzle_core._cli", "demo", "--iterations", "40")
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s*(1|10|100)\s+\d", line)]
    assert [r[0] for r in rows] == ["1", "10", "100"]
    assert rows[0][2] == "1.0x"
    assert all(r[3].endswith("%") for r in rows)
    assert "Coordination share: the part of the workers' time not spent running tasks" in out
