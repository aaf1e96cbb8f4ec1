"""The ``drizzle`` command and the workloads its demo and bench run."""

from ._main import main

__all__ = ["main"]
