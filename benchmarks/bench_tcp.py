"""The tcp transport beside local, same run, same workloads (issue 3).

    python benchmarks/bench_tcp.py             # about a minute
    python benchmarks/bench_tcp.py --quick     # smoke run, seconds

Part 1, per-iteration time of the two core workloads (``drizzle_core.cli._workloads``)
on 2 workers, G in 1, 10, 100, for ``local`` (Unix sockets) and ``tcp``
(daemons on loopback, started by the driver, HMAC-authenticated):

* single stage - 4 cached partitions of 10,000 float64, ``np.sum`` of each,
  200 iterations;
* running sum - a ``reduce_by_key`` shuffle every iteration into 2 reducers
  whose per-key state stays cached on the workers.

The ``tcp/local`` column is the ratio of medians (target: at most 2 at G=100).

Part 2, shuffle throughput: 4 map partitions each make one large float64
block (``--block-mb``, 64 MB by default) and send it through a
``group_by_key`` to 2 reducers. Printed: MB of the blocks that crossed
between workers (measured: each reducer reports which process made each
block) per second of the whole job (making the blocks included, so a lower
bound on the link), for local and tcp (target on tcp loopback: >= 500 MB/s).

Part 3, the cost of authenticating every frame (tcp without TLS; ``--mac-only``
runs just this): the same tcp daemons with the frame MAC on (the default) and
off (``frame_mac=False`` and ``--no-frame-mac``), in paired rounds that
alternate on, off, on, off...: W1 round trips (single stage, G=1, ms per
iteration) and shuffle MB/s. Printed: the median of the per-round ratios
on/off and their spread (min-max).

Medians of ``--repeat`` runs; the machine may be noisy, so read the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import numpy as np
from _tables import table

import drizzle_core as dz
from drizzle_core.cli._workloads import running_sum_jobs, running_sum_source, single_stage_data, single_stage_jobs

WORKERS = 2
GROUP_SIZES = (1, 10, 100)
TRANSPORTS = ("local", "tcp")


def time_single(ctx: dz.Context, g: int, iterations: int, repeat: int) -> float:
    ds = single_stage_data(ctx)
    ctx.run_jobs(single_stage_jobs(ds, g), group_size=g)  # warm: program shipped, templates built
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        ctx.run_jobs(single_stage_jobs(ds, iterations), group_size=g)
        times.append((time.perf_counter() - t) / iterations)
    ds.unpersist()
    return statistics.median(times) * 1e3


def time_running(ctx: dz.Context, g: int, iterations: int, repeat: int) -> float:
    times = []
    for _ in range(repeat + 1):
        source, state = running_sum_source(ctx)
        source.count()
        t = time.perf_counter()
        totals = ctx.run_jobs(running_sum_jobs(source, state, iterations, 2), group_size=g)
        times.append((time.perf_counter() - t) / iterations)
        assert sum(totals[-1]) == iterations * source.count()
        source.unpersist()
    return statistics.median(times[1:]) * 1e3  # the first run warms up


def _big_block(i: int, n: int) -> tuple[int, tuple[int, np.ndarray]]:
    return ((i + 1) % 2, (os.getpid(), np.full(n, float(i))))


def _where_blocks_came_from(kv: tuple[int, list]) -> tuple[int, int, list[tuple[int, float]]]:
    key, values = kv
    return (key, os.getpid(), [(pid, float(arr[0])) for pid, arr in values])


def shuffle_throughput(ctx: dz.Context, block_mb: int, repeat: int) -> tuple[float, float, float]:
    """(MB/s of blocks that crossed between workers, MB/s of all blocks, median seconds per shuffle).

    Each of 4 map tasks makes one ``block_mb`` float64 array; ``group_by_key``
    sends them to 2 reducers. Blocks whose map ran on another worker than
    their reducer crossed the transport; the reducers report where each came
    from, so the crossing count is measured, not assumed.
    """
    n = block_mb * (1 << 20) // 8
    maps = 4
    ds = ctx.parallelize(range(maps), maps).map(lambda i: _big_block(i, n)).group_by_key(2) \
        .map(_where_blocks_came_from)
    times, crossed = [], []
    for k in range(repeat + 1):
        t = time.perf_counter()
        out = ds.collect()
        took = time.perf_counter() - t
        assert sorted(v for _k, _pid, vals in out for _p, v in vals) == [0.0, 1.0, 2.0, 3.0], out
        if k:
            times.append(took)
            crossed.append(sum(1 for _k, pid, vals in out for p, _v in vals if p != pid))
    med = statistics.median(times)
    return statistics.median(crossed) * block_mb / med, maps * block_mb / med, med


def mac_cost(rounds: int, iterations: int, block_mb: int) -> None:
    """Part 3: frame MAC on vs off, paired interleaved rounds (see the module docstring)."""
    contexts = {mac: dz.Context(transport="tcp", workers=WORKERS, frame_mac=mac) for mac in (True, False)}
    w1: dict[bool, list[float]] = {True: [], False: []}
    mbs: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(rounds):
            for mac, ctx in contexts.items():
                w1[mac].append(time_single(ctx, 1, iterations, 1))
                mbs[mac].append(shuffle_throughput(ctx, block_mb, 1)[0])
    finally:
        for ctx in contexts.values():
            ctx.stop()

    def paired(xs: list[float], ys: list[float]) -> str:
        ratios = sorted(x / y for x, y in zip(xs, ys))
        return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"

    print(f"\nFrame MAC on vs off (tcp, {WORKERS} workers, {rounds} paired rounds; ratio = on/off, median "
          f"(min-max) of the per-round ratios)\n")
    rows = [["W1 single stage G=1 (ms/iter)", f"{statistics.median(w1[True]):.4f}",
             f"{statistics.median(w1[False]):.4f}", paired(w1[True], w1[False])],
            [f"shuffle {block_mb} MB blocks (MB/s crossing)", f"{statistics.median(mbs[True]):.0f}",
             f"{statistics.median(mbs[False]):.0f}", paired(mbs[True], mbs[False])]]
    print(table(["measure", "MAC on", "MAC off", "on/off"], rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few iterations, small blocks: a smoke run")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--block-mb", type=int, default=64)
    p.add_argument("--mac-only", action="store_true", help="only part 3 (frame MAC on vs off)")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.repeat, args.block_mb = 30, 2, 8
    logging.basicConfig(level=logging.WARNING)
    if args.mac_only:
        mac_cost(max(3, args.repeat), args.iterations, args.block_mb)
        return 0

    # Both contexts stay open and the runs alternate local, tcp, local, tcp...: on a
    # noisy machine, drift then hits both transports alike (idle workers cost nothing).
    results: dict[tuple[str, str, int], list[float]] = {}
    shuffle: dict[str, list[tuple[float, float, float]]] = {t: [] for t in TRANSPORTS}
    contexts = {t: dz.Context(transport=t, workers=WORKERS) for t in TRANSPORTS}
    try:
        for g in GROUP_SIZES:
            for _ in range(args.repeat):
                for t, ctx in contexts.items():
                    results.setdefault(("single", t, g), []).append(time_single(ctx, g, args.iterations, 1))
                    results.setdefault(("running", t, g), []).append(time_running(ctx, g, args.iterations, 1))
        for _ in range(max(2, args.repeat // 2)):
            for t, ctx in contexts.items():
                shuffle[t].append(shuffle_throughput(ctx, args.block_mb, 1))
    finally:
        for ctx in contexts.values():
            ctx.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    shuf = {t: tuple(statistics.median(x[i] for x in v) for i in range(3)) for t, v in shuffle.items()}

    print(f"Per iteration, {WORKERS} workers, {args.iterations} iterations, median of {args.repeat} runs "
          f"(ms; tcp/local is the ratio, target <= 2 at G=100)\n")
    rows = []
    for workload in ("single", "running"):
        for g in GROUP_SIZES:
            loc, tcp = med[(workload, "local", g)], med[(workload, "tcp", g)]
            rows.append([{"single": "single stage", "running": "running sum"}[workload], g,
                         f"{loc:.4f}", f"{tcp:.4f}", f"{tcp / loc:.2f}"])
    print(table(["workload", "G", "local ms/iter", "tcp ms/iter", "tcp/local"], rows))

    print(f"\nShuffle: 4 map blocks of {args.block_mb} MB float64, group_by_key into 2 reducers on 2 workers, "
          f"median of {max(2, args.repeat // 2)} runs (whole job: making the blocks included).\n"
          f"'crossing' counts the blocks that went from one worker to the other (target on tcp: >= 500 MB/s)\n")
    rows = [[t, f"{shuf[t][2]:.3f}", f"{shuf[t][0]:.0f}", f"{shuf[t][1]:.0f}"] for t in TRANSPORTS]
    rows.append(["tcp/local", f"{shuf['tcp'][2] / shuf['local'][2]:.2f}", "", ""])
    print(table(["transport", "s/shuffle", "MB/s crossing", "MB/s all blocks"], rows))
    mac_cost(max(3, args.repeat), args.iterations, args.block_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
