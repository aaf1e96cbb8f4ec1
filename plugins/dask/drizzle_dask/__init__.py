"""The ``dask`` transport: Drizzle workers hosted by long-running tasks on a Dask cluster.

``Context(transport="dask", client=client, workers=N)``: each worker is a
``drizzle_tcp`` daemon, the child process of a long-running task on a Dask
worker (``DaskLauncher``); Dask places, watches and cleans up, Drizzle keeps
its own authenticated worker-to-worker protocol. ``ctx.from_dask(coll)``
reads a Dask collection's partitions beside the Dask workers that hold them.
See docs/dask.md.
"""

__version__ = "0.1.0"

from ._input import DaskBlock
from ._launcher import DaskLauncher
from ._transport import DaskTransport

__all__ = ["DaskBlock", "DaskLauncher", "DaskTransport", "__version__"]
