"""The drizzle_ml examples run end to end on small data (and leave no process behind)."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(("script", "args"), [("kmeans.py", ["--n", "3000", "--max-iter", "20"]),
                                              ("logistic_regression.py", ["--n", "3000", "--max-iter", "30"])])
def test_example_runs(no_orphans, tmp_path, script, args):
    png = tmp_path / "loss.png"
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args, "--plot", str(png)],
                         capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "iterations/s" in out.stdout and "speedup of G=auto over G=1" in out.stdout
    if HAS_MATPLOTLIB:      # the plot is an optional extra (drizzle-ml[plot]); without it a note is printed
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in out.stdout
