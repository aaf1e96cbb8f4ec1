"""Entry point of the ``tcp`` transport (group ``drizzle``): the transport and ``drizzle worker``."""

from drizzle_core import hookimpl


@hookimpl
def drizzle_register_transports(register):
    from . import __version__
    from ._transport import TcpTransport

    register("tcp", TcpTransport, version=__version__,
             description="worker daemons over TCP (drizzle worker), HMAC-authenticated, optional TLS")


@hookimpl
def drizzle_register_commands(register):
    from . import _command

    register("worker", _command.HELP, _command.configure, _command.run)
