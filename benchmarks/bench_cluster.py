"""Drizzle as a guest of a cluster engine: the ``ray`` and ``dask`` transports in one run (issue 12).

    python benchmarks/bench_cluster.py              # both engines, 5 paired rounds each: a few minutes
    python benchmarks/bench_cluster.py --rounds 3 --only ray

For each engine (``_cluster_ray.py``, ``_cluster_dask.py``: their docstrings
say exactly what runs), W1 (single stage, G=100) and k-means (drizzle_ml,
200k x 10, k=8) on 2 workers: on the engine's transport, on
``transport="local"`` with the same worker count, and as the same work
written as plain engine calls (Ray actor calls, Dask futures), in paired
interleaved rounds. Printed: the medians (ms per job, ms per fit) and the
medians of the per-round ratios with their min-max spread. Each engine gets
a cluster of its own on this host unless one is given (RAY_ADDRESS,
DASK_SCHEDULER_ADDRESS).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cluster_dask
import _cluster_ray
from _tables import table

COLUMNS = ["engine", "workload", "drizzle_ms", "local_ms", "peer_ms", "ratio_local", "spread", "ratio_peer",
           "spread_peer"]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, tuple):
        return "-".join(f"{v:.2f}" for v in value)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["ray", "dask"], default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result: list[dict] = []
    if args.only in (None, "ray"):
        result += _cluster_ray.rows(args.rounds)
    if args.only in (None, "dask"):
        result += _cluster_dask.rows(args.rounds)
    print(f"engine transports vs local vs the same work as plain engine calls, 2 workers, {args.rounds} paired "
          f"rounds (medians; ratios are drizzle on the engine / the other, per round, with their min-max)\n")
    print(table(COLUMNS, [[_cell(r.get(c, "")) for c in COLUMNS] for r in result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
