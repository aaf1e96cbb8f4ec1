"""The ``dask`` transport: Drizzle workers hosted by long-running tasks on a Dask cluster.

``Context(transport="dask", client=client, workers=N)``: each worker is a
``drizzle_tcp`` daemon, the child process of a long-running task on a Dask
worker (``DaskLauncher``); Dask places, watches and cleans up, Drizzle keeps
its own authenticated worker-to-worker protocol. ``ctx.from_dask(coll)``
reads a Dask collection's partitions beside the Dask workers that hold them.
See docs/dask.md.
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._input import DaskBlock
    from ._launcher import DaskLauncher
    from ._transport import DaskTransport

# Loaded on first use (PEP 562): every Context loads the transport plugins to list them, and importing
# distributed there would cost each one 0.7 s whatever transport it runs on.
_LAZY = {"DaskBlock": "_input", "DaskLauncher": "_launcher", "DaskTransport": "_transport"}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["DaskBlock", "DaskLauncher", "DaskTransport", "__version__"]
