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
    BLOCKS = re.findall(r"```python\n(.*?)```", _f.read(), re.S)


@pytest.mark.parametrize("index", [i for i, b in enumerate(BLOCKS) if "with dz.Context(" in b])
def test_readme_snippet_runs(index, tmp_path, no_orphans):
    script = tmp_path / f"snippet{index}.py"
    script.write_text(BLOCKS[index])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
