"""Entry point of the ``dask`` transport (group ``drizzle``)."""

from drizzle_core import hookimpl


@hookimpl
def drizzle_register_transports(register):
    from . import __version__

    register("dask", _dask, version=__version__,
             description="tcp worker daemons hosted by long-running tasks on a Dask cluster (distributed.Client)")


def _dask(**options):
    """The transport's factory: imports distributed only when a Context asks for it."""
    from ._transport import DaskTransport

    return DaskTransport(**options)
