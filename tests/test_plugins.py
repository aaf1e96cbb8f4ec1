"""Plugin loading: through monkeypatched entry points (nothing installed), and for real."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
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


def test_the_installed_local_plugin_for_real(fresh_plugins):
    found = _plugins.transports()
    assert found["local"].plugin == "drizzle-local"
    assert found["local"].version == importlib.metadata.version("drizzle-local")


def test_cli_lists_transports_with_versions():
    out = subprocess.run([sys.executable, "-m", "drizzle_core._cli", "transports"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "local" in out and "drizzle-local" in out and importlib.metadata.version("drizzle-local") in out
    assert "inline" in out
