"""Command-line parsing shared by ``drizzle`` and the examples: a bad option is one line, never a traceback.

argparse prints the whole usage block before its error, and a wrong value that only the library notices (an
unknown transport, ``--workers 0``) would end in a traceback. Here both are one line naming the culprit and
where to read more (``PROG: error: MESSAGE (PROG --help)``), and every command answers ``--help``.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line on stderr, exit status 2.

    Its sub-command parsers are of this class too (argparse makes them with ``type(self)``).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse ``type=``: a whole number of at least 1 (``--workers 0`` is a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type=``: a number above 0 (seconds, rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def group_size(text: str) -> int | str:
    """An argparse ``type=``: a group size, a whole number of at least 1 or ``auto``."""
    return "auto" if text == "auto" else positive_int(text)
