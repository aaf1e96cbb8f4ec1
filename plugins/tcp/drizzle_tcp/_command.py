"""``drizzle worker``: run a TCP worker daemon (registered through ``drizzle_register_commands``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from drizzle_core.transport import DEFAULT_MAX_FRAME, die_with_parent

from . import _handshake, _net
from ._daemon import LOG_WINDOW, MAX_PREAUTH, MAX_PREAUTH_PER_SOURCE, PREAUTH_TIMEOUT, WorkerDaemon
from ._launcher import ADDRESS_LINE

log = logging.getLogger("drizzle.tcp.worker")

HELP = "run a TCP worker daemon that serves one driver at a time"
DESCRIPTION = """\
Run a Drizzle worker daemon for the tcp transport. It listens on HOST:PORT
(127.0.0.1:7078 by default) and serves one driver at a time; when that
driver disconnects, the worker drops its cached data and waits for the next.
Drive it with

    dz.Context(transport="tcp", workers=["host1:7078", "host2:7078"], secret_file="secret.txt")

Every connection is authenticated by an HMAC challenge both ways on a
shared secret before anything is unpickled: give the secret in a file
(--secret-file) or in $DRIZZLE_SECRET; surrounding whitespace (a final
newline) is stripped, on the driver too. Listening on anything but loopback
requires a secret. Optional TLS: --tls-cert, --tls-key and --tls-ca.

Start every worker of a session with the same PYTHONHASHSEED (e.g. export
PYTHONHASHSEED=0 first): keys of classes with their own __hash__ are
bucketed by Python's hash(), salted per process, and a driver refuses a
worker that hashes unlike the session's first one.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--listen", default="127.0.0.1:7078", metavar="HOST:PORT",
                        help="address to listen on (default 127.0.0.1:7078; port 0 picks a free port)")
    parser.add_argument("--secret-file", metavar="PATH",
                        help="file holding the shared secret, surrounding whitespace stripped "
                             "(default: $DRIZZLE_SECRET)")
    parser.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME, metavar="BYTES",
                        help=f"largest message accepted, in bytes (default {DEFAULT_MAX_FRAME})")
    parser.add_argument("--handshake-timeout", type=float, default=_net.HANDSHAKE_TIMEOUT, metavar="SECONDS",
                        help=f"drop a client that has not finished its handshake by then "
                             f"(default {_net.HANDSHAKE_TIMEOUT:g})")
    parser.add_argument("--keepalive", default=_net.format_keepalive(_net.KEEPALIVE), metavar="IDLE,INTERVAL,COUNT",
                        help=f"TCP keepalive on every connection: probe after IDLE idle seconds, every INTERVAL "
                             f"seconds, give up after COUNT unanswered probes; a vanished host is noticed after "
                             f"about IDLE + INTERVAL * COUNT seconds; 'off' disables "
                             f"(default {_net.format_keepalive(_net.KEEPALIVE)})")
    parser.add_argument("--preauth-timeout", type=float, default=PREAUTH_TIMEOUT, metavar="SECONDS",
                        help=f"drop a client that has not proven the secret by then (default {PREAUTH_TIMEOUT:g}); "
                             f"at most {MAX_PREAUTH_PER_SOURCE} such clients per address and {MAX_PREAUTH} in "
                             f"all wait at once, the oldest evicted first")
    parser.add_argument("--no-frame-mac", action="store_true",
                        help="grant drivers that ask for it (frame_mac=False) frames without a MAC; only for a "
                             "network you trust (with TLS, or without a secret, frames carry no MAC anyway)")
    parser.add_argument("--tls-cert", metavar="PATH", help="TLS certificate (PEM) of this worker")
    parser.add_argument("--tls-key", metavar="PATH", help="TLS private key (PEM) of this worker")
    parser.add_argument("--tls-ca", metavar="PATH", help="CA certificate (PEM) that signs the drivers' and workers'")
    parser.add_argument("--log-level", dest="worker_log_level", default=None, metavar="LEVEL",
                        help="logging level of the worker (default WARNING; INFO shows sessions)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--refusal-log-window", type=float, default=LOG_WINDOW, help=argparse.SUPPRESS)
    parser.add_argument("--one-session", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--connect-deadline", type=float, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    level = args.worker_log_level or getattr(args, "log_level", None) or "WARNING"
    logging.getLogger("drizzle").setLevel(level.upper())
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    try:
        secret = _handshake.read_secret(secret_file=args.secret_file)
        tls = _net.make_tls(args.tls_cert, args.tls_key, args.tls_ca)
        keepalive = _net.parse_keepalive(args.keepalive)
        daemon = WorkerDaemon(args.listen, secret, max_frame=args.max_frame,
                              handshake_timeout=args.handshake_timeout, tls=tls, one_session=args.one_session,
                              keepalive=keepalive, preauth_timeout=args.preauth_timeout,
                              allow_no_frame_mac=args.no_frame_mac, log_window=args.refusal_log_window,
                              connect_deadline=args.connect_deadline if args.one_session else None)
        address = daemon.bind()
    except (OSError, ValueError) as e:
        print(f"drizzle worker: {e}", file=sys.stderr)
        return 2
    # The one line on stdout: a driver that started this daemon reads the port from it.
    try:
        print(f"{ADDRESS_LINE}{address}", flush=True)
    except BrokenPipeError:  # the driver that started us gave up on us (its launcher closed) before we were up
        log.info("nobody reads the address of this daemon; exiting")
        return 0
    try:
        daemon.serve_forever()
    except KeyboardInterrupt:
        log.info("interrupted; exiting")
    if args.one_session and daemon.session_exit is not None and daemon.session_exit < 0:
        # A daemon started by a driver stands for its one session: if the session process was killed
        # (a task that SIGKILLs itself, or kill -9 of the pid the driver knows), end the same way, so
        # the driver's WorkerLost says "was killed by signal 9" rather than "exited with status 0".
        sig = -daemon.session_exit
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    return 0
