"""The dependency rule, enforced: a package of drizzle_core imports only packages of a lower rank.

Every import counts: at module level, inside functions (lazy) and under
``TYPE_CHECKING``. A lower layer that must call up declares a Protocol or
takes a registration (the planner's ``Dataset`` protocol, ``register_stream``,
``register_builtin``) instead of importing.
"""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import drizzle_core

ROOT = pathlib.Path(drizzle_core.__file__).parent

# lowest first; the root's private helpers (_errors, _check, _version, hookspecs) sit below them all, and the
# root's facades (__init__, transport, _cli) above them all
RANKS = ["lineage", "protocol", "worker", "net", "driver", "inline", "dashboard", "api", "stream", "cli"]
BASE = {"_errors", "_check", "_retained", "_stats", "_version", "hookspecs"}
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


def _copy_of_the_tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """drizzle_core copied under ``tmp_path``, for a test to break and check that a rule notices."""
    copy = tmp_path / "drizzle_core"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_every_import_goes_down():
    assert violations() == []


def test_the_rule_catches_an_upward_import(tmp_path):
    copy = _copy_of_the_tree(tmp_path)
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
    # 20 before worker/_heartbeat.py (the liveness thread), 21 before execution templates (lineage/_rename.py,
    # protocol/_stamp.py, worker/_stamp.py)
    assert len(mods) <= 24, mods


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


# ------------------------------------------------ streaming: a library on drizzle_core's public names

# what stream modules may import: their own package, and these modules of drizzle_core
STREAM_MAY_IMPORT = {("api",), ("_check",), ("_errors",), ("_retained",), ("_stats",)}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _targets(node: ast.AST) -> list[ast.expr]:
    """What an assignment (or ``del``) writes: its targets, tuples unpacked."""
    if isinstance(node, (ast.Assign, ast.Delete)):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    else:
        return []
    out: list[ast.expr] = []
    for t in targets:
        out.extend(t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])
    return [e.value if isinstance(e, ast.Starred) else e for e in out]


def _defined_attrs(paths: list[pathlib.Path]) -> set[str]:
    """The attribute names these modules define.

    A class's methods and class attributes (dataclass fields), its
    ``__slots__``, and every ``x.name = ...`` assignment (instance
    attributes). Module-level names do not count: they are reached by
    import, which the import rule checks.
    """
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(item.name)
                    for t in _targets(item):
                        if isinstance(t, ast.Name):
                            names.add(t.id)
                            if t.id == "__slots__" and isinstance(item, (ast.Assign, ast.AnnAssign)) and item.value:
                                names.update(c.value for c in ast.walk(item.value)
                                             if isinstance(c, ast.Constant) and isinstance(c.value, str))
            names.update(t.attr for t in _targets(node) if isinstance(t, ast.Attribute))
    return names


def _dunder_all(init: pathlib.Path) -> set[str]:
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return set()


def stream_violations(root: pathlib.Path = ROOT) -> list[str]:
    """Where drizzle_core/stream uses more of drizzle_core than its public API (the rule is in the test's docstring)."""
    stream = sorted((root / "stream").glob("*.py"))
    api_names = _dunder_all(root / "api" / "__init__.py")
    own = _defined_attrs(stream)
    api_attrs = _defined_attrs(sorted((root / "api").glob("*.py")))
    bad = []
    for path in stream:
        where = f"stream/{path.name}"
        tree = ast.parse(path.read_text())
        from_api: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("drizzle_core")):
                if node.level:
                    base = ("stream",)[: 2 - node.level]
                    target = base + (tuple(node.module.split(".")) if node.module else ())
                else:
                    target = tuple(node.module.split(".")[1:])
                if target[:1] == ("stream",):
                    continue
                names = [a.name for a in node.names]
                if not target:  # from .. import x / from drizzle_core import x: a module or the facade
                    bad.append(f"{where}:{node.lineno}: imports {', '.join(names)} from drizzle_core")
                elif target not in STREAM_MAY_IMPORT:
                    bad.append(f"{where}:{node.lineno}: imports drizzle_core.{'.'.join(target)}")
                elif target == ("api",):
                    for n in names:
                        if n.startswith("_") or n not in api_names:
                            bad.append(f"{where}:{node.lineno}: imports {n}, not a public name of drizzle_core.api")
                    from_api.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = tuple(a.name.split("."))
                    if parts[0] == "drizzle_core" and parts[1:] not in STREAM_MAY_IMPORT:
                        bad.append(f"{where}:{node.lineno}: imports {a.name}")
        writes = {id(t) for node in ast.walk(tree) for t in _targets(node)}
        selves = set()  # the Name nodes that are a stream method's own first parameter (self, cls)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for f in cls.body:
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.args.args:
                    first = f.args.args[0].arg
                    selves.update(id(n) for n in ast.walk(f) if isinstance(n, ast.Name) and n.id == first)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for b in node.bases:
                    if isinstance(b, ast.Name) and b.id in from_api:
                        bad.append(f"{where}:{node.lineno}: class {node.name} subclasses drizzle_core.api's {b.id}")
            access: tuple[ast.expr, str, bool] | None = None  # (receiver, attribute, written)
            if isinstance(node, ast.Attribute):
                access = (node.value, node.attr, id(node) in writes)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                access = (node.args[0], node.args[1].value, node.func.id in ("setattr", "delattr"))
            if access is None:
                continue
            receiver, name, written = access
            on_self = id(receiver) in selves
            what = f"{where}:{node.lineno}: {'sets' if written else 'uses'} {ast.unparse(receiver)}.{name}"
            if on_self or not (_private(name) or written):
                continue
            if name not in own:
                bad.append(f"{what}, which drizzle_core defines, not stream code")
            elif name in api_attrs:
                bad.append(f"{what}: the API's classes define {name} too, so only self's may be touched")
    return bad


def test_stream_uses_only_public_names():
    """Streaming is a library on drizzle_core's public API, exactly as drizzle_ml is.

    Imports: a stream module imports only from its own package, the public
    names of ``drizzle_core.api`` (its ``__all__``, none ``_``-prefixed),
    ``drizzle_core._check`` and ``drizzle_core._errors`` (the root's private
    helpers, below every layer). Never another layer, a private module of
    ``api``, or the ``drizzle_core`` facade.

    Attributes (the rule, and why it is sound for this code): the objects of
    drizzle_core that stream code holds (Contexts, Datasets, job iterators,
    metrics) reach it only through those imports, so touching their insides
    takes an attribute access: ``x._name``, ``getattr(x, "_name")`` with a
    literal, or a write ``x.name = ...`` / ``setattr`` (``ds.node = ...``
    cut a lineage by hand once). Every such access is checked unless ``x``
    is ``self``/``cls``, the first parameter of a stream class's method:
    stream classes may not subclass a class from ``drizzle_core.api``, so
    that is always a stream object. Any other access passes only if the
    name is defined by stream code itself (a method, class attribute, field
    or slot of a stream class, or assigned as ``x.name = ...`` in stream
    code) — so ``ctx._scheduler`` and ``ds.node = ...`` fail — and is not
    also defined by the API layer's classes: naming a stream attribute
    ``_cached`` does not make ``ds._cached`` pass. Reading public attributes
    is the public API. Dunder names (``__reduce__``) are protocol, not
    private. Not covered: ``vars(x)``, ``x.__dict__`` and computed
    ``getattr`` names (stream code uses ``vars`` on its own DStreams only).
    """
    assert stream_violations() == []


def test_the_stream_rule_catches_a_private_access(tmp_path):
    copy = _copy_of_the_tree(tmp_path)
    stream = copy / "stream" / "_stream.py"
    stream.write_text(stream.read_text() + "\n\ndef _peek(ctx):\n    return ctx._scheduler.metrics\n")
    sources = copy / "stream" / "_sources.py"
    sources.write_text("from ..api import _dataset as D\nfrom .. import lineage as N\n"
                       "from ..driver import GroupScheduler\n" + sources.read_text())
    window = copy / "stream" / "_window.py"
    window.write_text(window.read_text() + "\n\nclass _Sneaky:\n    def grab(self, ctx):\n"
                      "        self._adaptive = ctx._adaptive\n        return getattr(ctx, '_transport')\n"
                      "\n\ndef _cut(ds, self):\n    ds.node = None\n    return self._cached\n")
    found = stream_violations(copy)
    assert any("stream/_stream.py" in v and "ctx._scheduler" in v for v in found), found
    assert any("stream/_sources.py:1" in v and "_dataset" in v for v in found), found
    assert any("stream/_sources.py:2" in v and "lineage" in v for v in found), found
    assert any("stream/_sources.py:3" in v and "drizzle_core.driver" in v for v in found), found
    assert any("stream/_window.py" in v and "ctx._adaptive" in v for v in found), found
    assert any("stream/_window.py" in v and "ctx._transport" in v for v in found), found
    assert any("stream/_window.py" in v and "sets ds.node" in v for v in found), found
    assert any("stream/_window.py" in v and "self._cached" in v for v in found), found  # not a method's self
    assert len(found) == 8, found
