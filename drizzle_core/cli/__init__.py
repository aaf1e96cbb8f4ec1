"""The ``drizzle`` command, the workloads its demo and bench run, and the table printer the benchmarks share."""

from ._main import main, table

__all__ = ["main", "table"]
