"""The command line as a user meets it: a bad option is one line naming it, never a traceback; every example
answers --help; the YSB example reports windows on a short run."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)
ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize(("args", "culprit"), [
    (["demo", "--bogus"], "--bogus"),
    (["demo", "--workers", "0"], "--workers"),
    (["demo", "--iterations", "many"], "many"),
    (["--log-level", "loud", "transports"], "LOUD"),
    (["nosuchcommand"], "nosuchcommand"),
    (["demo", "--transport", "pigeon", "--iterations", "1"], "pigeon"),   # judged by the library, not argparse
])
def test_a_bad_option_is_one_line_naming_it(args, culprit):
    out = _run("-m", "drizzle_core._cli", *args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("drizzle") and "error:" in lines[0] and culprit in lines[0], lines[0]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_answers_help(example):
    out = _run(str(example), "--help", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ") and example.name in out.stdout


@pytest.mark.parametrize(("example", "args"), [("single_stage.py", ["ten"]), ("running_sum.py", ["0"]),
                                               ("ysb.py", ["fast"]), ("kmeans.py", ["--k", "x"])])
def test_a_bad_example_argument_is_one_line(example, args):
    out = _run(str(ROOT / "examples" / example), *args, timeout=60)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr


def test_ysb_with_small_arguments_reports_its_windows(no_orphans):
    out = _run(str(ROOT / "examples" / "ysb.py"), "2000", "2", timeout=90)
    assert out.returncode == 0, out.stderr
    m = re.search(r"(\d+) windows of ([\d.]+) s: window latency p50 ([\d.]+) ms, p99 ([\d.]+) ms; counts correct",
                  out.stdout)
    assert m, out.stdout
    assert int(m.group(1)) >= 2 and float(m.group(2)) == 0.4


def test_ysb_says_when_no_window_could_close(no_orphans):
    # windows are aligned on event time (seconds since the epoch): a 0.3 s run crosses a 100,000 s window's
    # end with probability 3e-6
    out = _run(str(ROOT / "examples" / "ysb.py"), "1000", "0.3", "auto", "100000", timeout=90)
    assert out.returncode == 0, out.stderr
    assert "0 windows of 100000 s: no window closed within the run" in out.stdout and "nan" not in out.stdout
