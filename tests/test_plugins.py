"""Plugin loading: through monkeypatched entry points (nothing installed), and for real."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time
import types

import pytest

import drizzle_core as dz
from drizzle_core.driver import _plugins
from drizzle_core.inline._inline import InlineTransport


class _FakeEntryPoint:
    def __init__(self, name, module):
        self.name = name
        self.group = "drizzle"
        self.value = module.__name__
        self._module = module

    def load(self):
        return self._module


class _FakeDist:
    def __init__(self, name, version, eps):
        self.metadata = {"name": name}
        self.version = version
        self.entry_points = eps
        self.files = []

    @property
    def name(self):
        return self.metadata["name"]


def _fake_plugin(transport_name):
    mod = types.ModuleType(f"fake_plugin_{transport_name}")

    class Transport(InlineTransport):
        name = transport_name

    @dz.hookimpl
    def drizzle_register_transports(register):
        register(transport_name, Transport, description="a test double")

    mod.drizzle_register_transports = drizzle_register_transports
    return mod


@pytest.fixture
def fresh_plugins():
    _plugins.reset()
    yield
    _plugins.reset()


def test_a_transport_found_through_an_entry_point(monkeypatch, fresh_plugins):
    dist = _FakeDist("drizzle-pigeon", "9.8.7", [_FakeEntryPoint("pigeon", _fake_plugin("pigeon"))])
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [dist])
    assert dz.transports() == {"inline": dz.__version__, "pigeon": "9.8.7"}
    info = _plugins.transports()["pigeon"]
    assert info.plugin == "drizzle-pigeon"
    with dz.Context(transport="pigeon", workers=2) as ctx:
        assert ctx.parallelize(range(10), 3).sum() == 45


def test_without_the_plugin_its_transport_is_an_error_listing_the_rest(monkeypatch, fresh_plugins):
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [])
    with pytest.raises(ValueError, match=r"unknown transport 'local'; installed transports: inline \(drizzle_core"):
        dz.Context(transport="local")


def test_two_plugins_claiming_one_name_are_named(monkeypatch, fresh_plugins):
    a = _FakeDist("drizzle-a", "1", [_FakeEntryPoint("a", _fake_plugin("dup"))])
    b = _FakeDist("drizzle-b", "2", [_FakeEntryPoint("b", _fake_plugin("dup"))])
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [a, b])
    with pytest.raises(ValueError, match="registered twice: by 'drizzle-a' and by 'drizzle-b'"):
        dz.transports()


def test_drizzle_plugins_env_restricts_loading(monkeypatch, fresh_plugins):
    dist = _FakeDist("drizzle-pigeon", "1.0", [_FakeEntryPoint("pigeon", _fake_plugin("pigeon"))])
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [dist])
    monkeypatch.setenv("DRIZZLE_PLUGINS", "")
    assert dz.transports() == {"inline": dz.__version__}


def _providers(entry_point: str) -> set[str]:
    """The installed distributions with a ``drizzle`` entry point of that name."""
    return {d.metadata["Name"] for d in importlib.metadata.distributions()
            for ep in d.entry_points if ep.group == "drizzle" and ep.name == entry_point}


def test_the_built_in_local_and_tcp_plugins_for_real(fresh_plugins):
    # drizzle-core ships its default transport and the tcp one (`drizzle worker`), registered through the
    # same entry-point group as any third-party plugin
    groups = {ep.name: ep.value for ep in importlib.metadata.distribution("drizzle-core").entry_points
              if ep.group == "drizzle"}
    assert groups == {"local": "drizzle_local.plugin", "tcp": "drizzle_tcp.plugin"}
    found = _plugins.transports()
    for name in ("local", "tcp"):
        # an environment that still holds the drizzle-local/drizzle-tcp of the old layout loads the one plugin
        # module once, under whichever distribution comes first
        assert found[name].plugin in _providers(name)
        assert found[name].version == importlib.metadata.version(found[name].plugin)
    assert "worker" in _plugins.commands()


def test_cli_lists_transports_with_versions():
    out = subprocess.run([sys.executable, "-m", "drizzle_core._cli", "transports"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    lines = out.split("\n\n")[0].splitlines()  # the table; notes (if any) follow a blank line
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["local"][2] in _providers("local")
    assert rows["local"][1] == importlib.metadata.version(rows["local"][2])
    assert "inline" in rows
    # aligned: every column starts at the same offset in every row as in the header
    starts = [i for i, c in enumerate(lines[0]) if c != " " and (i == 0 or lines[0][i - 1] == " ")]
    for line in lines[2:]:
        assert all(line[s] != " " and (s == 0 or line[s - 1] == " ") for s in starts), line


# ---------------------------------------------------------------- the local transport's socket folders

DRIVER = """
import sys, time
import drizzle_core as dz
ctx = dz.Context(workers=1)
assert ctx.parallelize(range(4), 2).sum() == 6
print("ready", flush=True)
time.sleep(120)
"""


def _folders_of(pid: int) -> list[str]:
    tmp = tempfile.gettempdir()
    return [os.path.join(tmp, n) for n in os.listdir(tmp) if n.startswith(f"drizzle-local-{pid}-")]


def _start_driver() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.mark.timeout(90)
def test_a_killed_drivers_socket_folder_is_removed_by_the_next_context_and_a_live_ones_is_kept(no_orphans):
    killed, live = _start_driver(), _start_driver()
    try:
        [killed_dir], [live_dir] = _folders_of(killed.pid), _folders_of(live.pid)
        assert os.path.isdir(killed_dir) and os.path.isdir(live_dir)
        killed.kill()                     # kill -9: it cannot remove its folder, nor can its workers
        deadline = time.monotonic() + 10  # (not reaped yet: a zombie is a dead driver too)
        while _zombie(killed.pid) is False:
            assert time.monotonic() < deadline, "the killed driver did not die"
            time.sleep(0.01)
        assert os.path.isdir(killed_dir)
        with dz.Context(workers=1) as ctx:   # the next local transport, in another process
            assert ctx.parallelize(range(3), 1).sum() == 3
            assert not os.path.exists(killed_dir)
            assert os.path.isdir(live_dir)   # never another live driver's
            assert len(_folders_of(os.getpid())) == 1  # its own, until it closes
        assert _folders_of(os.getpid()) == []
    finally:
        for proc in (killed, live):
            proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()
    with dz.Context(workers=1) as ctx:       # the reaped driver's folder goes too
        assert not os.path.exists(live_dir)


def _zombie(pid: int) -> bool | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return None


def test_which_socket_folders_are_orphans(tmp_path):
    from drizzle_local import _folders

    gone = subprocess.Popen(["true"])
    gone.wait()
    parent = os.getppid()
    start = _folders._start_time(parent)
    keep = [f"drizzle-local-{parent}-{start}-abc_1",        # a live process, the same one
            "drizzle-local-abc123",                          # another shape (older versions): not ours to judge
            f"drizzle-local-{os.getpid()}-x-abc"]            # this process's own
    drop = [f"drizzle-local-{gone.pid}-123-abc",            # no such process
            f"drizzle-local-{parent}-{int(start) + 1}-abc"]  # the pid of a process that started at another time
    for name in keep + drop:
        (tmp_path / name).mkdir()
        (tmp_path / name / "w0.0.sock").write_text("")
    (tmp_path / f"drizzle-local-{gone.pid}-1-file").write_text("")  # not a folder
    removed = _folders.remove_orphans(str(tmp_path))
    assert sorted(removed) == sorted(str(tmp_path / n) for n in drop)
    assert sorted(os.listdir(tmp_path)) == sorted([*keep, f"drizzle-local-{gone.pid}-1-file"])
