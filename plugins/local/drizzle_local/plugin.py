"""Entry point of the ``local`` transport (group ``drizzle``)."""

from drizzle_core import hookimpl


@hookimpl
def drizzle_register_transports(register):
    from . import __version__
    from ._transport import LocalTransport

    register("local", LocalTransport, version=__version__,
             description="worker processes on this host, Unix sockets (the default)")
