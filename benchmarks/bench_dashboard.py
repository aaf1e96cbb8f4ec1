"""What the live dashboard costs: the same loops with ``dashboard=`` off and on, a page open (issue 15).

    python benchmarks/bench_dashboard.py              # 7 rounds
    python benchmarks/bench_dashboard.py --rounds 3

Two 2-worker local Contexts live side by side, one without a dashboard, one
with (and a reader of its ``/events`` stream, as an open page: states are
built and pushed twice a second, task spans converted). Each round runs every
workload on both, in alternating order:

* ``run_jobs``: sum over 4 cached partitions of 10k floats, G=10;
* ``iterate``: a 4-vector state over 4 cached partitions of 2.5k x 4 floats, G=100
  (the dashboard's ``on_iteration`` runs for every state);
* ``stream``: a 20 ms micro-batch stream of 2 partitions x 100 records for 2 s: latency p50.

Printed: each workload's median figure off and on, and the median (range)
of the paired ratios on / off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tables import table
from _w12 import med

import drizzle_core as dz


def _grad(part: np.ndarray, w: np.ndarray) -> np.ndarray:
    return part.T @ (part @ w) * 1e-9


def _step(w: np.ndarray, g: np.ndarray) -> np.ndarray:
    return w - g


def _records(p: int, b: int, t: object) -> list[int]:
    return list(range(100))


def _viewer(url: str, stop: threading.Event) -> threading.Thread:
    """Reads the dashboard's event stream as an open page does, until the Context closes it."""
    def read() -> None:
        with urllib.request.urlopen(url + "events", timeout=60) as r:
            while not stop.is_set() and r.readline():
                pass
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def workloads(ctx: dz.Context) -> dict[str, object]:
    floats = ctx.parallelize(np.random.default_rng(0).random(40_000), 4).cache()
    floats.count()
    rows = ctx.from_partitions([np.random.default_rng(i).random((2_500, 4)) for i in range(4)]).cache()
    rows.count()

    def jobs() -> float:
        t = time.perf_counter()
        ctx.run_jobs([(floats, np.sum)] * 500, group_size=10)
        return (time.perf_counter() - t) * 1e3 / 500

    def iterate() -> float:
        t = time.perf_counter()
        ctx.iterate(rows, np.ones(4), local=_grad, combine=np.add, update=_step, iterations=1000, group_size=100)
        return (time.perf_counter() - t) * 1e3 / 1000

    def stream() -> float:
        s = ctx.stream(dz.GeneratorSource(_records, 2), batch_interval=0.02)
        s.map(lambda x: (x % 10, 1)).reduce_by_key(lambda a, b: a + b).collect_sink()
        s.run(duration=2.0)
        return s.metrics_summary(skip=10).latency_p50 * 1e3

    return {"run_jobs G=10, ms/job": jobs, "iterate G=100, ms/iteration": iterate,
            "stream 20 ms, latency p50 ms": stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    stop = threading.Event()
    with dz.Context(transport="local", workers=2) as off, \
            dz.Context(transport="local", workers=2, dashboard="127.0.0.1:0") as on:
        viewer = _viewer(on.dashboard_url, stop)
        loads = {False: workloads(off), True: workloads(on)}
        for w in (off, on):  # warm: programs and templates on the workers
            for f in loads[w is on].values():
                if f is not loads[w is on]["stream 20 ms, latency p50 ms"]:
                    f()
        figures: dict[str, dict[bool, list[float]]] = {name: {False: [], True: []} for name in loads[False]}
        for r in range(args.rounds):
            for name in figures:
                for dash in ((False, True) if r % 2 == 0 else (True, False)):
                    figures[name][dash].append(loads[dash][name]())  # type: ignore[operator]
        stop.set()
    viewer.join(10)
    rows = [[name, f"{statistics.median(f[False]):.4f}", f"{statistics.median(f[True]):.4f}",
             med([a / b for a, b in zip(f[True], f[False])])] for name, f in figures.items()]
    print(table(["workload", "off", "on, page open", "on / off"], rows))


if __name__ == "__main__":
    main()
