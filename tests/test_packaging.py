"""What `pip install` gives: every distribution builds offline without a setuptools warning, carries its metadata
and LICENSE, nothing built is committed, and drizzle-core alone has its default transport and `drizzle worker`.

The wheels are built from a copy of the committed files (what a clone has), with the build backend of the
environment (``--no-build-isolation``: no network in tests).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.timeout(240)
ROOT = pathlib.Path(__file__).resolve().parent.parent
DISTRIBUTIONS = {".": "drizzle_core", "ml": "drizzle_ml", "plugins/ray": "drizzle_ray", "plugins/dask": "drizzle_dask"}


def _tracked() -> list[str] | None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def _copy_of_the_checkout(dest: pathlib.Path) -> pathlib.Path:
    files = _tracked()
    if files is None:  # not a git checkout: the tree less what builds and tests leave behind
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", "_build", ".*_cache", ".hypothesis"))
        return dest
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    tree = _copy_of_the_checkout(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheels")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                            "--no-cache-dir", "-w", str(out), *[f"./{d}" for d in DISTRIBUTIONS]],
                           cwd=tree, capture_output=True, text=True, timeout=200)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert sorted(found) == sorted(DISTRIBUTIONS.values()), found
    return found, build.stdout + build.stderr


def test_every_distribution_builds_without_a_setuptools_warning(wheels):
    _, log = wheels
    bad = [line for line in log.splitlines()
           if "SetuptoolsDeprecationWarning" in line or "SetuptoolsWarning" in line or "deprecated" in line.lower()]
    assert not bad, bad


@pytest.mark.parametrize("dist", DISTRIBUTIONS.values())
def test_every_distribution_has_its_metadata_and_license(wheels, dist):
    with zipfile.ZipFile(wheels[0][dist]) as whl:
        info = next(n.split("/")[0] for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        meta = whl.read(f"{info}/METADATA").decode()
        assert "Apache License" in whl.read(f"{info}/licenses/LICENSE").decode()
    fields = [line.split(": ", 1) for line in meta.split("\n\n")[0].splitlines() if ": " in line]
    assert ["License-Expression", "Apache-2.0"] in fields
    assert ["Requires-Python", ">=3.11"] in fields
    classifiers = [v for k, v in fields if k == "Classifier"]
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(k == "Project-URL" for k, _ in fields)
    assert any(k == "Summary" and v for k, v in fields)


def test_drizzle_core_ships_the_local_and_tcp_transports(wheels):
    with zipfile.ZipFile(wheels[0]["drizzle_core"]) as whl:
        names = whl.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert "drizzle_local/_worker_main.py" in names and "drizzle_tcp/_daemon.py" in names
    assert "local = drizzle_local.plugin" in entry_points and "tcp = drizzle_tcp.plugin" in entry_points
    assert "drizzle = drizzle_core._cli:main" in entry_points
    for dist in ("drizzle_ray", "drizzle_dask"):  # the engines' transports need no drizzle-tcp any more
        with zipfile.ZipFile(wheels[0][dist]) as whl:
            meta = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        assert "Requires-Dist: drizzle-core" in meta and "drizzle-tcp" not in meta


@pytest.mark.timeout(120)
def test_drizzle_core_alone_runs_a_context_on_its_default_transport(wheels, tmp_path, no_orphans):
    """The wheel installed by itself (next to its four dependencies, and nothing else of this project)."""
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                              str(site), str(wheels[0]["drizzle_core"])], capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    for dep in ("numpy", "scipy", "pluggy", "cloudpickle"):
        spec = importlib.util.find_spec(dep)
        assert spec is not None and spec.origin is not None
        where = pathlib.Path(spec.origin).parent
        for path in (where, where.parent / f"{dep}.libs"):
            if path.exists():
                (site / path.name).symlink_to(path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("DRIZZLE_PLUGINS", None)
    code = ("import drizzle_core as dz, drizzle_local\n"
            f"assert drizzle_local.__file__.startswith({str(site)!r}), drizzle_local.__file__\n"
            "print(sorted(dz.transports()))\n"
            "with dz.Context(workers=2) as ctx:\n"
            "    print(ctx.parallelize(range(10), 2).sum())\n")
    # -S: no site-packages, so only what that wheel installed (and its dependencies) can be found
    run = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=90,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["['inline', 'local', 'tcp']", "45"]
    worker = subprocess.run([sys.executable, "-S", "-m", "drizzle_core._cli", "worker", "--help"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert worker.returncode == 0 and "usage: drizzle worker" in worker.stdout, worker.stderr


def test_nothing_built_is_committed():
    files = _tracked()
    if files is None:
        pytest.skip("not a git checkout: nothing is committed here")
    built = [f for f in files if ".egg-info/" in f or f.startswith(("build/", "dist/")) or "/build/" in f]
    assert not built, built
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"*.egg-info/", "build/", "dist/"} <= set(ignored)
