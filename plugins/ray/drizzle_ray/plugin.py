"""Entry point of the ``ray`` transport (group ``drizzle``)."""

from drizzle_core import hookimpl


@hookimpl
def drizzle_register_transports(register):
    from . import __version__

    register("ray", _ray, version=__version__,
             description="tcp worker daemons hosted by Ray actors in one placement group (from_ray reads Ray Data)")


def _ray(**options):
    """The transport's factory: imports ray only when a Context asks for it."""
    from ._transport import RayTransport

    return RayTransport(**options)
