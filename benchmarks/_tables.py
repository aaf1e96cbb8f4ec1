"""Plain-text tables for the benchmark scripts (they run from this folder and import ``from _tables``).

``table`` is drizzle's own (``drizzle_core.cli.table``, what ``drizzle demo`` prints with), so the
benchmarks and the CLI lay tables out alike from one copy; ``fmt`` is the benchmarks' own.
"""

from __future__ import annotations

from drizzle_core.cli import table

__all__ = ["fmt", "table"]


def fmt(x: float | None, spec: str = ".1f") -> str:
    """``x`` formatted, or "-" when there is no figure."""
    return "-" if x is None else format(x, spec)
