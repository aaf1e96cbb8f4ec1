"""Entry point of the ``dask`` transport (group ``drizzle``)."""

from drizzle_core import hookimpl


@hookimpl
def drizzle_register_transports(register):
    from . import __version__
    from ._transport import DaskTransport

    register("dask", DaskTransport, version=__version__,
             description="tcp worker daemons hosted by long-running tasks on a Dask cluster (distributed.Client)")
