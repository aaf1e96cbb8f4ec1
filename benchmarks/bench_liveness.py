"""Hung workers: how long from SIGSTOP to "worker lost", and what the heartbeats cost (issue 11).

    python benchmarks/bench_liveness.py            # 3 stops per setting, a couple of minutes
    python benchmarks/bench_liveness.py --quick    # 1 stop per setting, fewer settings

Detection. Each repeat opens a 2-worker Context with ``worker_timeout=T``,
starts a job of 8 tasks that sleep 0.2 s, and SIGSTOPs worker 1 while it
runs. Columns (medians over the repeats, min..max):

* detect s - from the SIGSTOP to the driver's transport reporting the worker
  lost (a hook on its ``poll``): about T, a little less when the stopped
  worker's last heartbeat came just before the stop (silence is timed from
  the last byte read, and checked every min(0.1, T/10) s);
* job s - from the SIGSTOP to the job's exact result (detection, the fenced
  worker's replacement, the lost tasks re-run);
* ok - runs whose result was right.

Cost. Heartbeats are one tiny frame per worker per min(1, T/5) s, read by
the driver's poll; the per-task path gains one attribute store. Measured as
tiny jobs (``parallelize(range(8), 2).sum()``) per second with
``worker_timeout=None`` (no heartbeats, no silence checks) against the
default 60 s, in interleaved rounds on two open contexts; the ratio is
default/none per round, its median and range printed (1.00 = no cost).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tables import fmt, table

import drizzle_core as dz
from drizzle_core.transport import WorkerLost


def _pid(it: Any) -> list[int]:
    return [os.getpid()]


def _nap(x: int) -> int:
    time.sleep(0.2)
    return x


def detect_once(transport: str, timeout: float) -> tuple[float | None, float, bool]:
    with dz.Context(transport, 2, worker_timeout=timeout) as ctx:
        pids = [p[0] for p in ctx.parallelize(range(2), 2).map_partitions(_pid).glom()]
        lost_at: list[float] = []
        transport = ctx._transport  # benchmark-only hook: the moment poll reports the worker lost
        poll = transport.poll

        def timed_poll(timeout: float | None) -> list:
            events = poll(timeout)
            if any(isinstance(m, WorkerLost) for _, m in events):
                lost_at.append(time.monotonic())
            return events

        transport.poll = timed_poll  # type: ignore[method-assign]
        stopped_at: list[float] = []

        def stop() -> None:
            time.sleep(0.1)
            stopped_at.append(time.monotonic())
            os.kill(pids[1], signal.SIGSTOP)

        threading.Thread(target=stop, daemon=True).start()
        result = ctx.parallelize(range(8), 8).map(_nap).collect()
        done = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[1], signal.SIGCONT)  # it was killed when fenced; harmless if so
        detect = lost_at[0] - stopped_at[0] if lost_at and stopped_at else None
        return detect, done - stopped_at[0], result == list(range(8))


def cost(transport: str, rounds: int, jobs: int) -> list[float]:
    ratios = []
    with dz.Context(transport, 2, worker_timeout=None) as off, dz.Context(transport, 2) as on:
        for ctx in (off, on):
            for _ in range(50):
                ctx.parallelize(range(8), 2).sum()
        for r in range(rounds):
            rates = {}
            order = (off, on) if r % 2 == 0 else (on, off)
            for ctx in order:
                t0 = time.perf_counter()
                for _ in range(jobs):
                    ctx.parallelize(range(8), 2).sum()
                rates[id(ctx)] = jobs / (time.perf_counter() - t0)
            ratios.append(rates[id(on)] / rates[id(off)])
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--transports", default="local,tcp")
    args = parser.parse_args(argv)
    transports = args.transports.split(",")
    settings = [1.0, 2.0] if args.quick else [0.5, 1.0, 2.0, 5.0]
    repeats = 1 if args.quick else 3
    rows = []
    for transport in transports:
        for t in settings:
            runs = [detect_once(transport, t) for _ in range(repeats)]
            detects = [d for d, _, _ in runs if d is not None]
            jobs = [j for _, j, _ in runs]
            rows.append([transport, fmt(t, "g"), fmt(statistics.median(detects) if detects else None, ".2f"),
                         f"{min(detects):.2f}..{max(detects):.2f}" if detects else "-",
                         fmt(statistics.median(jobs), ".2f"), f"{sum(ok for _, _, ok in runs)}/{len(runs)}"])
    print("SIGSTOP of one of 2 workers during a job of 8 x 0.2 s tasks")
    print(table(["transport", "worker_timeout s", "detect s", "range", "job s", "ok"], rows))
    rows = []
    for transport in transports:
        ratios = cost(transport, 5 if args.quick else 9, 100 if args.quick else 300)
        rows.append([transport, fmt(statistics.median(ratios), ".3f"), f"{min(ratios):.3f}..{max(ratios):.3f}"])
    print("\ntiny jobs per second, heartbeats on (worker_timeout=60) / off (None), paired rounds")
    print(table(["transport", "median ratio", "range"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
