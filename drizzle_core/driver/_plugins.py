"""Plugin loading: transports and CLI commands from the ``drizzle`` entry points.

Loaded lazily, once, on first need. ``DRIZZLE_PLUGINS`` (comma-separated
entry-point names) restricts which third-party plugins load, ``""`` loads
none; built-in plugins (``inline``) register through the same hook.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from .. import hookspecs as hookspecs

log = logging.getLogger("drizzle.plugins")

ENTRY_POINT_GROUP = "drizzle"


@dataclass(frozen=True)
class TransportInfo:
    """An installed transport: its name, version, where it came from."""

    name: str
    version: str
    plugin: str
    description: str
    factory: Callable[..., Any]


@dataclass(frozen=True)
class CommandInfo:
    name: str
    help: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]
    plugin: str


_manager: pluggy.PluginManager | None = None
# Plugins that ship with drizzle_core, registered by the package (this layer does not import them).
_builtins: dict[str, Any] = {}


def register_builtin(name: str, plugin: Any) -> None:
    """Add a plugin that ships inside drizzle_core; it registers through the same hooks as third-party ones."""
    global _manager
    _builtins[name] = plugin
    _manager = None


def get_manager() -> pluggy.PluginManager:
    """The plugin manager, created and loaded on first use."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager("drizzle")
        pm.add_hookspecs(hookspecs)
        for name, plugin in _builtins.items():
            pm.register(plugin, name=name)
        allowed = os.environ.get("DRIZZLE_PLUGINS")
        if allowed is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            for name in filter(None, (n.strip() for n in allowed.split(","))):
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        _manager = pm
    return _manager


def reset() -> None:
    """Forget loaded plugins (tests use this after changing what is installed)."""
    global _manager
    _manager = None


def _dist_versions(pm: pluggy.PluginManager) -> dict[int, tuple[str, str]]:
    return {id(plugin): (dist.project_name, dist.version) for plugin, dist in pm.list_plugin_distinfo()}


def _plugin_name(pm: pluggy.PluginManager, plugin: Any) -> str:
    return pm.get_name(plugin) or repr(plugin)


def transports() -> dict[str, TransportInfo]:
    """Installed transports by name."""
    pm = get_manager()
    dists = _dist_versions(pm)
    found: dict[str, TransportInfo] = {}
    for impl in pm.hook.drizzle_register_transports.get_hookimpls():
        plugin = impl.plugin

        def register(name: str, factory: Callable[..., Any], *, version: str | None = None,
                     description: str = "", _plugin: Any = plugin) -> None:
            dist = dists.get(id(_plugin))
            who = dist[0] if dist else _plugin_name(pm, _plugin)
            if not isinstance(name, str) or not name:
                raise ValueError(f"plugin {who!r} registered a transport with a bad name {name!r}")
            if not callable(factory):
                raise TypeError(f"plugin {who!r}: the factory of transport {name!r} is not callable")
            if name in found:
                raise ValueError(
                    f"transport {name!r} is registered twice: by {found[name].plugin!r} "
                    f"and by {who!r}"
                )
            found[name] = TransportInfo(
                name=name, version=version or (dist[1] if dist else "unknown"),
                plugin=dist[0] if dist else _plugin_name(pm, _plugin), description=description, factory=factory,
            )

        impl.function(register)
    return found


def commands() -> dict[str, CommandInfo]:
    pm = get_manager()
    found: dict[str, CommandInfo] = {}
    for impl in pm.hook.drizzle_register_commands.get_hookimpls():
        plugin = impl.plugin

        def register(name: str, help: str, configure: Callable[[Any], None], run: Callable[[Any], int],
                     _plugin: Any = plugin) -> None:
            found[name] = CommandInfo(name, help, configure, run, _plugin_name(pm, _plugin))

        impl.function(register)
    return found


def get_transport(name: str) -> TransportInfo:
    """The transport called ``name``, or a ValueError listing the installed ones."""
    if not isinstance(name, str):
        raise ValueError(f"transport must be a name (str), got {name!r}")
    found = transports()
    if name not in found:
        listing = ", ".join(f"{t.name} ({t.plugin} {t.version})" for t in found.values()) or "none"
        raise ValueError(f"unknown transport {name!r}; installed transports: {listing}")
    return found[name]
