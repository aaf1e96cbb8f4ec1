"""Memory and speed of large arrays (issue 11): peak RSS per process, and local against tcp.

Part 1, memory. For each case, the peak RSS growth of the driver and of every
worker process (VmHWM, the kernel's exact high-water mark, reset with
``/proc/PID/clear_refs`` once the context is warm, minus the RSS then), and the
sum as a multiple of the data size:

* ``cache``: ``parallelize`` a float64 array over 2 workers, ``.cache()``, and
  run ``.map(lambda row: row.sum()).collect()`` twice. The floor is 2x: the
  user's array in the driver, and one copy of each partition on its worker.
* ``return``: a task returns a 1 GiB array. The floor is 2x: the worker's
  array, and the driver's received copy.

Part 2, speed. A task returning 1 GiB on ``local`` and on ``tcp`` (frame MAC
on, as by default, and off), in interleaved rounds; each round also times the
same task returning only the array's sum (its compute, the floor). Quoted:
medians over rounds, and the median [min-max] of each round's ratio
local/tcp, and of transfer/floor.

Run: ``python benchmarks/bench_memory.py [--size-mb 1024] [--rounds 5]``.
Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from typing import Any

import numpy as np
from _tables import table

import drizzle_core as dz


# ----------------------------------------------------------------- /proc
def _status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(f"{field} not in /proc/{pid}/status")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (tcp's daemons and their session processes too), walked iteratively."""
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


class PeakRss:
    """Peak RSS growth of this process and its descendants from :meth:`start` to :meth:`stop`."""

    def start(self) -> None:
        self.pids = [os.getpid(), *descendants(os.getpid())]
        for pid in self.pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        self.base = {pid: _status(pid, "VmRSS") for pid in self.pids}

    def stop(self) -> dict[int, int]:
        """pid -> peak growth in bytes (read before the processes end)."""
        return {pid: _status(pid, "VmHWM") - self.base[pid] for pid in self.pids}


# ------------------------------------------------------------- workloads
def _row_sum(row: np.ndarray) -> float:
    return float(row.sum())


def cache_case(ctx: dz.Context, nbytes: int) -> None:
    data = np.random.default_rng(0).random((nbytes // 8000, 1000))
    ds = ctx.parallelize(data, 2).cache()
    expected = data.sum(axis=1)
    for _ in range(2):
        assert np.allclose(ds.map(_row_sum).collect(), expected)
    ds.unpersist()


def returning(n: int) -> Any:
    return lambda _: np.ones(n)


def summing(n: int) -> Any:
    return lambda _: float(np.ones(n).sum())


def return_case(ctx: dz.Context, nbytes: int) -> None:
    out = ctx.parallelize(range(1), 1).map(returning(nbytes // 8)).collect()
    assert out[0].nbytes == nbytes // 8 * 8


def memory(nbytes: int) -> None:
    rows = []
    for case, fn, transports in [("cache", cache_case, ["local", "tcp"]), ("return", return_case, ["local", "tcp"])]:
        for transport in transports:
            with dz.Context(transport=transport, workers=2) as ctx:
                ctx.parallelize(range(4), 2).map(_row_sum_int).collect()  # warm: imports, connections
                gc.collect()
                peak = PeakRss()
                peak.start()
                fn(ctx, nbytes)
                growth = peak.stop()
            me = os.getpid()
            workers = [g for pid, g in growth.items() if pid != me]
            workers.sort(reverse=True)
            rows.append([case, transport, f"{growth[me] / 1e6:.0f}", " ".join(f"{g / 1e6:.0f}" for g in workers[:4]),
                         f"{growth[me] / nbytes:.2f}", f"{sum(workers) / nbytes:.2f}",
                         f"{sum(growth.values()) / nbytes:.2f}"])
            gc.collect()
    print(f"\npeak RSS growth, {nbytes / 1e6:.0f} MB of data, 2 workers (floor: 2.00x in total)")
    print(table(["case", "transport", "driver MB", "workers MB (largest first)", "driver x", "workers x",
                 "total x"], rows))


def _row_sum_int(x: int) -> int:
    return x


# ----------------------------------------------------------------- speed
def speed(nbytes: int, rounds: int) -> None:
    n = nbytes // 8
    setups = {"local": {"transport": "local"}, "tcp": {"transport": "tcp"},
              "tcp, no MAC": {"transport": "tcp", "frame_mac": False}}
    ctxs = {name: dz.Context(workers=2, **kw) for name, kw in setups.items()}
    times: dict[str, list[float]] = {name: [] for name in ctxs}
    floors: dict[str, list[float]] = {name: [] for name in ctxs}
    try:
        one = {name: ctx.parallelize(range(1), 1) for name, ctx in ctxs.items()}
        for name in ctxs:
            one[name].map(summing(1000)).collect()
        for r in range(rounds):
            order = list(ctxs) if r % 2 == 0 else list(reversed(ctxs))
            for name in order:
                t = time.perf_counter()
                out = one[name].map(returning(n)).collect()
                times[name].append(time.perf_counter() - t)
                assert out[0].shape == (n,)
                del out
                gc.collect()
                t = time.perf_counter()
                one[name].map(summing(n)).collect()
                floors[name].append(time.perf_counter() - t)
    finally:
        for ctx in ctxs.values():
            ctx.stop()

    def spread(xs: list[float]) -> str:
        return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"

    rows = []
    for name in ctxs:
        transfer = [t - f for t, f in zip(times[name], floors[name])]
        rows.append([name, f"{statistics.median(times[name]):.2f}", f"{statistics.median(floors[name]):.2f}",
                     f"{statistics.median(transfer):.2f}",
                     spread([a / b for a, b in zip(times["local"], times[name])]),
                     spread([t / f for t, f in zip(times[name], floors[name])])])
    print(f"\na task returning {nbytes / 2**30:.2f} GiB, 2 workers, {rounds} interleaved rounds (medians; "
          f"floor: the same task returning the array's sum)")
    print(table(["transport", "return s", "floor s", "return - floor s", "local/this, per round",
                 "return/floor, per round"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024.0, help="data size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["memory", "speed"], default=None)
    args = parser.parse_args()
    nbytes = int(args.size_mb * 2**20) // 8000 * 8000
    if args.only != "speed":
        memory(nbytes)
    if args.only != "memory":
        speed(nbytes, args.rounds)


if __name__ == "__main__":
    main()
