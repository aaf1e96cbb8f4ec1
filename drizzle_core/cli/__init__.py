"""The ``drizzle`` command, the workloads its demo and bench run, the table printer the benchmarks share, and
the argument parsing the examples share (one-line errors)."""

from ._args import ArgumentParser, group_size, positive_float, positive_int
from ._main import main, table

__all__ = ["ArgumentParser", "group_size", "main", "positive_float", "positive_int", "table"]
