"""Plots of the benchmarks' figures: what ``drizzle bench --plot`` and ``benchmarks/bench_core.py --plot`` write.

Three pictures answer the questions a user asks of group scheduling:

* ``ms_per_iteration.png``: milliseconds per iteration against the group size G
  (log axes), one line per workload, with the peers measured in the same run
  as horizontal lines: where G starts to pay, and how far ahead it gets;
* ``coordination_share.png``: the share of worker time not spent in tasks,
  against G: what grouping removes;
* ``stream_latency_cdf.png``: the distribution of micro-batch latency at G=1
  and with the adaptive group size: what grouping costs a stream, if anything.

matplotlib is optional (not a dependency of drizzle-core): it is imported only
here, with the non-interactive Agg backend, and its absence is one clear error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

MS_PER_ITERATION = "ms_per_iteration.png"
COORDINATION_SHARE = "coordination_share.png"
STREAM_LATENCY_CDF = "stream_latency_cdf.png"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib, which is not installed: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, directory: str, name: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    return path


def ms_per_iteration(directory: str, series: Mapping[str, Sequence[tuple[int, float]]],
                     peers: Mapping[str, float] | None = None, name: str = MS_PER_ITERATION,
                     title: str = "Time per iteration against G") -> str:
    """``series``: per workload, ``(G, ms per iteration)``; ``peers``: ``name -> ms per iteration`` (flat lines)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in series.items():
        pts = sorted(points)
        ax.plot([g for g, _ in pts], [ms for _, ms in pts], marker="o", label=f"drizzle, {label}")
    for label, ms in (peers or {}).items():
        ax.axhline(ms, linestyle="--", linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("group size G (jobs planned and launched at once)")
    ax.set_ylabel("ms per iteration")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path = _save(fig, directory, name)
    plt.close(fig)
    return path


def coordination_share(directory: str, series: Mapping[str, Sequence[tuple[int, float]]],
                       name: str = COORDINATION_SHARE) -> str:
    """``series``: per workload, ``(G, share of worker time not spent in tasks)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, points in series.items():
        pts = sorted(points)
        ax.plot([g for g, _ in pts], [100 * s for _, s in pts], marker="o", label=label)
    ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("group size G")
    ax.set_ylabel("coordination share (%)")
    ax.set_title("Worker time not spent in tasks, against G")
    ax.grid(True, which="both", alpha=0.3)
    path = _save(fig, directory, name)
    plt.close(fig)
    return path


def latency_cdf(directory: str, latencies: Mapping[str, Sequence[float]]) -> str:
    """``latencies``: per configuration (``"G=1"``, ``"G=auto"``), each batch's latency in seconds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, values in latencies.items():
        xs = sorted(1e3 * v for v in values)
        if xs:
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=f"{name} ({len(xs)} batches)")
    ax.set_xlabel("batch latency (ms): output at the sink minus the batch's end")
    ax.set_ylabel("fraction of batches")
    ax.set_title("Stream latency, CDF")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = _save(fig, directory, STREAM_LATENCY_CDF)
    plt.close(fig)
    return path
