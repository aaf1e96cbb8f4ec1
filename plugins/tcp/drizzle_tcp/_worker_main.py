"""``python -m drizzle_tcp._worker_main ARGS``: ``drizzle worker ARGS`` without loading plugins.

The driver starts its loopback daemons this way (``workers=N``), so they do
not depend on the ``drizzle`` script being on PATH.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._command import configure, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drizzle worker")
    configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
