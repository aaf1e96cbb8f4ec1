"""The README's Python snippets run as written (a newcomer copies them first)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "README.md")) as _f:
    README = _f.read()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def _set_up_commands() -> list[str]:
    section = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```\n(.*?)```", section, re.S) for line in block.strip().splitlines()]


def test_set_up_is_two_one_line_commands_and_ci_runs_the_second():
    demo, tests = _set_up_commands()  # exactly two lines
    assert re.fullmatch(r"pip install \. (\./\S+ )*&& drizzle demo", demo), demo
    assert re.fullmatch(r'pip install "\.\[test\]" (\./\S+ )*&& python -m pytest -q', tests), tests
    for command in (demo, tests):  # every path it installs is a distribution of this checkout
        for path in re.findall(r"\./[\w/]+", command):
            assert os.path.isfile(os.path.join(ROOT, path, "pyproject.toml")), path
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        text = f.read().replace("\\\n", " ")  # a command continued on the next line is one command
        ci = [line for line in text.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    # the README's command, and before it only the install of a system package tests need (Debian's chromium,
    # for tests/test_dashboard.py)
    assert ci[-1] == tests and all("apt-get install -y -qq chromium" in line for line in ci[:-1]), ci


@pytest.mark.parametrize("index", [i for i, b in enumerate(BLOCKS) if "with dz.Context(" in b])
def test_readme_snippet_runs(index, tmp_path, no_orphans):
    script = tmp_path / f"snippet{index}.py"
    script.write_text(BLOCKS[index])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
