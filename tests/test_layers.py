"""The dependency rule, enforced: a package of drizzle_core imports only packages of a lower rank.

Every import counts: at module level, inside functions (lazy) and under
``TYPE_CHECKING``. A lower layer that must call up declares a Protocol or
takes a registration (the planner's ``Dataset`` protocol, ``register_stream``,
``register_builtin``) instead of importing.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import drizzle_core

ROOT = pathlib.Path(drizzle_core.__file__).parent

# lowest first; the root's private helpers (_errors, _check, _version, hookspecs) sit below them all, and the
# root's facades (__init__, transport, _cli) above them all
RANKS = ["lineage", "protocol", "worker", "net", "driver", "inline", "api", "stream", "cli"]
BASE = {"_errors", "_check", "_version", "hookspecs"}
TOP = {"__init__", "transport", "_cli"}


def _unit(parts: tuple[str, ...]) -> str:
    """The layer a module path under drizzle_core belongs to (``('api', '_context')`` -> ``api``)."""
    return parts[0] if parts[0] in RANKS else parts[0].removesuffix(".py")


def _rank(unit: str) -> int:
    if unit in BASE:
        return -1
    if unit in TOP:
        return len(RANKS)
    return RANKS.index(unit)


def _imports(path: pathlib.Path, root: pathlib.Path) -> list[tuple[int, str]]:
    """(line, target layer) of every drizzle_core import in ``path``."""
    rel = path.relative_to(root).with_suffix("").parts
    package = rel[:-1]  # folders under drizzle_core holding the module (an __init__ is its folder's)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[tuple[str, ...]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = tuple(node.module.split(".")) if node.module else ()
                targets = [base + mod] if base + mod else [(a.name,) for a in node.names]
            elif node.module and node.module.split(".")[0] == "drizzle_core":
                full = tuple(node.module.split(".")[1:])
                targets = [full] if full else [(a.name,) for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "drizzle_core"]
        found.extend((node.lineno, _unit(t)) for t in targets if t)
    return found


def violations(root: pathlib.Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("").parts
        me = _unit(rel)
        for line, target in _imports(path, root):
            if target == me or (target not in RANKS and target not in BASE and target not in TOP):
                continue
            if _rank(target) >= _rank(me) and not (me in TOP and target in TOP):
                bad.append(f"{path.relative_to(root)}:{line}: {me} imports {target}")
    return bad


def test_every_import_goes_down():
    assert violations() == []


def test_the_rule_catches_an_upward_import(tmp_path):
    import shutil

    copy = tmp_path / "drizzle_core"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    runtime = copy / "worker" / "_runtime.py"
    runtime.write_text(runtime.read_text() + "\n\ndef _late():\n    from ..driver import GroupScheduler  # upward\n")
    plan = copy / "driver" / "_plan.py"
    plan.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from drizzle_core.api import Dataset\n"
                    + plan.read_text())
    found = violations(copy)
    assert any("worker/_runtime.py" in v and "imports driver" in v for v in found), found
    assert any("driver/_plan.py:3" in v and "imports api" in v for v in found), found
    assert len(found) == 2


def test_every_package_has_a_curated_init():
    for pkg in RANKS:
        init = ROOT / pkg / "__init__.py"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{pkg}/__init__.py says what the package is"
        names = [n for n in tree.body if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
        assert names, f"{pkg}/__init__.py lists its public names in __all__"


def test_a_worker_process_imports_only_the_runtime():
    """What a worker needs: lineage, protocol, worker, net — never the driver, the API or streaming."""
    code = ("import sys, drizzle_core.transport; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('drizzle_core'))))")
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.split()
    layers = {m.split(".")[1] for m in mods if m.count(".") >= 1}
    assert layers <= {"lineage", "protocol", "worker", "net", "transport", "hookspecs", "_errors", "_version"}, mods
    assert len(mods) <= 20, mods


def test_the_public_api_is_unchanged():
    import drizzle_core as dz

    for name in dz.__all__:
        assert getattr(dz, name) is not None, name
    assert callable(dz.transports) and dz.Context.__module__ == "drizzle_core.api._context"
    import drizzle_core.hookspecs
    import drizzle_core.transport

    assert {"Transport", "WorkerRuntime", "Hub", "hookimpl"} <= set(drizzle_core.transport.__all__)
    out = subprocess.run([sys.executable, "-m", "drizzle_core._cli", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "demo" in out.stdout
