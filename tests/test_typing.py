"""mypy --strict passes on drizzle_core (the configuration is pyproject.toml's [tool.mypy]), and every
distribution ships py.typed so that users' type checkers read our annotations."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def test_mypy_strict_passes_on_drizzle_core():
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues found" in out.stdout


@pytest.mark.parametrize("package", ["drizzle_core", "drizzle_local", "drizzle_tcp", "drizzle_ml"])
def test_every_distribution_ships_py_typed(package):
    module = importlib.import_module(package)
    assert (pathlib.Path(module.__file__).parent / "py.typed").is_file()
