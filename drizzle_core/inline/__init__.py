"""The ``inline`` transport, shipped inside drizzle_core: workers as objects in the driver's process.

Importing this package registers them with the plugin loader, through the
same hook third-party transports implement.
"""

from ..driver import register_builtin
from ._inline import InlineTransport, inline_plugin

register_builtin("drizzle_core.inline", inline_plugin)

__all__ = ["InlineTransport", "inline_plugin"]
