"""Hook specifications: how a plugin adds transports and CLI commands.

A plugin is a module (found through the ``drizzle`` entry-point group, or
registered directly) with functions or methods marked ``@hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("drizzle")
hookimpl = pluggy.HookimplMarker("drizzle")


@hookspec
def drizzle_register_transports(register: Callable[..., None]) -> None:
    """Register transports by calling ``register`` once for each.

    Called once, the first time any transport is needed.

    :param register: ``register(name, factory, *, version=None, description="")``.
        ``factory(workers=..., **options)`` returns a
        :class:`drizzle_core.transport.Transport`; ``workers`` and the options
        are what the user passed to ``Context(transport=name, ...)``.
        ``version`` defaults to the plugin distribution's version.
    """


@hookspec
def drizzle_register_commands(register: Callable[..., None]) -> None:
    """Register ``drizzle`` CLI subcommands by calling ``register`` once for each.

    :param register: ``register(name, help, configure, run)``: ``configure(parser)``
        adds arguments to an ``argparse`` subparser; ``run(args) -> int`` runs
        the command and returns its exit status.
    """
