"""Entry point of the ``ray`` transport (group ``drizzle``)."""

from drizzle_core import hookimpl


@hookimpl
def drizzle_register_transports(register):
    from . import __version__
    from ._transport import RayTransport

    register("ray", RayTransport, version=__version__,
             description="tcp worker daemons hosted by Ray actors in one placement group (from_ray reads Ray Data)")
