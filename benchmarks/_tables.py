"""Plain-text tables for the benchmark scripts (one copy; the scripts run from this folder)."""

from __future__ import annotations


def fmt(x: float | None, spec: str = ".1f") -> str:
    """``x`` formatted, or "-" when there is no figure."""
    return "-" if x is None else format(x, spec)


def table(headers: list[str], rows: list[list[object]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the rest right-aligned."""
    cells = [list(headers)] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
