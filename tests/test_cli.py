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


def test_bench_writes_its_plots(tmp_path, no_orphans):
    """``drizzle bench --plot DIR``: ms/iteration and coordination share against G, and a stream's latency CDF."""
    out = subprocess.run([sys.executable, "-m", "drizzle_core._cli", "bench", "--iterations", "20", "--repeat", "1",
                          "--group-sizes", "1", "10", "--plot", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["coordination_share.png", "ms_per_iteration.png", "stream_latency_cdf.png"]
    for p in tmp_path.iterdir():
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, p  # a drawn picture, not an empty canvas
    assert "plots: " in out.stdout


def test_bench_plot_without_matplotlib_is_one_clear_line(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from drizzle_core._cli import main; "
            f"sys.exit(main(['bench', '--iterations', '2', '--plot', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install matplotlib" in lines[0], out.stderr
    assert not any(tmp_path.iterdir())
