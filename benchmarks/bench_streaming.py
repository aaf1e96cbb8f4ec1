"""The Yahoo Streaming Benchmark: group scheduling (G="auto") against one batch per group (G=1).

    python benchmarks/bench_streaming.py                 # about three minutes
    python benchmarks/bench_streaming.py --quick         # smoke run, under a minute
    python benchmarks/bench_streaming.py --rate 150000 --window 10 --seconds 40
    python benchmarks/bench_streaming.py --only latency      # section 0 alone, about a minute

The workload is examples/ysb.py: ad events made on the workers at a set
rate, filter views, broadcast-join ad -> campaign (100 x 10), count views per
campaign per event-time window. Window latency = time from a window's end to
its final count reaching the sink.

What is reported:

0. Latency at small batches, G=1 against G="auto" (issue 9: auto must never
   be worse than G=1): 4 ms batches at 20,000 events/s with 0.2 s windows,
   ``--latency-runs`` runs of each, interleaved; per run the p50 and p99 of
   batch latency (after a warm-up) and the largest group; then the median
   and the spread (min-max) over the runs.
1. At one event rate (``--rate``): p50 and p99 window latency for G=1 (one
   micro-batch per scheduling group, as in Spark Streaming: every batch pays
   a driver round trip) and for G="auto" (Drizzle: groups of batches
   pre-scheduled on the workers), and their ratio; also the per-batch
   processing latency and the worst lag.
2. The highest sustained rate, for both, from a doubling sweep: sustained
   means p99 window latency under 1 s and the stream not falling behind (the
   last batches' lag under 1 s).
3. A PNG of window latency over time (``--png``, when matplotlib is installed).

Every run checks that the counts equal counts computed directly from the
same generated events. The default window is 1 s rather than YSB's 10 s so a
run of a few seconds has enough windows for a p99; latency does not depend on
the window's length (a window's count is emitted by the batch that ends with
it). Runs are interleaved and repeated; medians are reported, because the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import ysb
from _tables import table

import drizzle_core as dz
from drizzle_core.stream._metrics import percentile, summarize

GROUPS: tuple[Any, ...] = (1, "auto")


def one_run(ctx: dz.Context, rate: float, g: Any, args: argparse.Namespace) -> dict:
    r = ysb.run_ysb(ctx, rate, args.seconds, g, window=args.window, interval=args.interval,
                    partitions=args.partitions)
    warm = int(args.warmup / args.interval)
    lat = r.latencies(skip_s=args.warmup)
    s = summarize(r.metrics[warm:], args.interval)
    tail = r.metrics[-max(1, int(1.0 / args.interval)):]
    sizes = [m.jobs for m in ctx.metrics[-s.groups:]] if s.groups else []
    return {
        "g": g, "rate": rate, "p50": percentile(lat, 50), "p99": percentile(lat, 99), "windows": len(lat),
        "batch_p50": s.latency_p50, "batch_p99": s.latency_p99, "lag_max": s.lag_max,
        "tail_lag": max(m.lag for m in tail), "events_per_s": s.events_per_s, "correct": r.correct,
        "group_sizes": sizes, "series": r.latency_over_time,
    }


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(x[key] for x in runs)


def sustained(runs: list[dict]) -> bool:
    return median_of(runs, "p99") < 1.0 and median_of(runs, "tail_lag") < 1.0 and all(x["correct"] for x in runs)


def measure(ctx: dz.Context, rate: float, args: argparse.Namespace) -> dict[Any, list[dict]]:
    """``args.repeat`` runs per group size, interleaved (G=1, auto, G=1, auto, ...)."""
    out: dict[Any, list[dict]] = {g: [] for g in GROUPS}
    for _ in range(args.repeat):
        for g in GROUPS:
            out[g].append(one_run(ctx, rate, g, args))
    return out


def ms(x: float) -> str:
    return f"{x * 1e3:9.1f}"


def latency_runs(ctx: dz.Context, args: argparse.Namespace) -> dict[Any, list[dict]]:
    """Section 0: ``--latency-runs`` interleaved runs of G=1 and auto at small batches."""
    out: dict[Any, list[dict]] = {g: [] for g in GROUPS}
    warm = int(args.warmup_latency / args.latency_interval)
    for _ in range(args.latency_runs):
        for g in GROUPS:
            g0 = len(ctx.metrics)
            r = ysb.run_ysb(ctx, args.latency_rate, args.latency_seconds, g, window=0.2,
                            interval=args.latency_interval, partitions=2)
            s = summarize(r.metrics[warm:], args.latency_interval)
            groups = ctx.metrics[g0:]
            out[g].append({"p50": s.latency_p50, "p99": s.latency_p99, "max": s.latency_max,
                           "largest": max((m.jobs for m in groups), default=0),
                           "median_group": statistics.median(m.jobs for m in groups) if groups else 0,
                           "correct": r.correct})
    return out


def spread(runs: list[dict], key: str) -> str:
    xs = [x[key] * 1e3 for x in runs]
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def print_latency(out: dict[Any, list[dict]], args: argparse.Namespace) -> None:
    print(f"\n0. batch latency at {args.latency_interval * 1e3:g} ms batches, {args.latency_rate:,.0f} events/s, "
          f"0.2 s windows: {args.latency_runs} interleaved runs of {args.latency_seconds:g} s "
          f"({args.warmup_latency:g} s warm-up left out)")
    rows = []
    for i in range(args.latency_runs):
        for g in GROUPS:
            x = out[g][i]
            rows.append([f"run {i + 1} G={g}", f"{x['p50'] * 1e3:.1f}", f"{x['p99'] * 1e3:.1f}",
                         f"{x['max'] * 1e3:.1f}", f"{x['median_group']:g}", str(x["largest"]), str(x["correct"])])
    print(table(["run", "p50 ms", "p99 ms", "max ms", "median group", "largest group", "correct"], rows))
    print()
    print(table(["G", "p50 ms: median (min-max)", "p99 ms: median (min-max)", "runs with p99 < G=1's"],
                [[f"G={g}", spread(out[g], "p50"), spread(out[g], "p99"),
                  "-" if g == 1 else f"{sum(a['p99'] <= b['p99'] for a, b in zip(out[g], out[1]))} of "
                                     f"{args.latency_runs}"] for g in GROUPS]))
    one, auto = statistics.median(x["p99"] for x in out[1]), statistics.median(x["p99"] for x in out["auto"])
    print(f"median p99: auto / G=1 = {auto / one:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=150_000, help="events/s for the G=1 vs auto comparison")
    ap.add_argument("--interval", type=float, default=0.02, help="batch interval, seconds")
    ap.add_argument("--window", type=float, default=1.0, help="window length, seconds (YSB: 10)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds left out of the latency figures")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sweep", type=str, default="25000,50000,100000,200000,300000,400000",
                    help="rates for the sustained-rate search (ascending)")
    ap.add_argument("--png", type=str, default="ysb_latency.png", help="latency-over-time plot ('' for none)")
    ap.add_argument("--quick", action="store_true", help="short runs, one repeat, small sweep")
    ap.add_argument("--only", choices=["all", "latency"], default="all", help="latency: section 0 alone")
    ap.add_argument("--latency-interval", type=float, default=0.004, help="section 0: batch interval, seconds")
    ap.add_argument("--latency-rate", type=float, default=20_000, help="section 0: events/s")
    ap.add_argument("--latency-runs", type=int, default=5, help="section 0: runs of each G")
    ap.add_argument("--latency-seconds", type=float, default=4.0, help="section 0: length of each run")
    ap.add_argument("--warmup-latency", type=float, default=0.4, help="section 0: seconds left out")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.repeat, args.sweep = 4.0, 1.0, 1, "50000,200000"
        args.latency_runs, args.latency_seconds = 2, 2.0
    rates = [float(r) for r in args.sweep.split(",") if r]

    print(f"YSB on {args.workers} local workers, cpus={os.cpu_count()}")
    if args.only == "all":
        print(f"sections 1-2: {args.interval * 1e3:g} ms batches, {args.window:g} s windows, "
              f"{args.partitions} source partitions, {args.seconds:g} s runs ({args.warmup:g} s warm-up left out), "
              f"median of {args.repeat}")
    t_start = time.perf_counter()
    with dz.Context(workers=args.workers) as ctx:
        print_latency(latency_runs(ctx, args), args)
        if args.only == "latency":
            print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
            return 0
        at = measure(ctx, args.rate, args)
        print(f"\n1. at {args.rate:,.0f} events/s")
        print(f"{'G':>6} {'win p50 ms':>10} {'win p99 ms':>10} {'batch p50':>10} {'batch p99':>10} "
              f"{'lag max':>9} {'windows':>8} {'groups of':>12} {'correct':>8}")
        for g, runs in at.items():
            sizes = [s for x in runs for s in x["group_sizes"]]
            print(f"{g!s:>6} {ms(median_of(runs, 'p50')):>10} {ms(median_of(runs, 'p99')):>10} "
                  f"{ms(median_of(runs, 'batch_p50')):>10} {ms(median_of(runs, 'batch_p99')):>10} "
                  f"{ms(median_of(runs, 'lag_max')):>9} {runs[0]['windows']:>8} "
                  f"{(statistics.median(sizes) if sizes else 0):>12g} {all(x['correct'] for x in runs)!s:>8}")
        one, auto = at[1], at["auto"]
        print(f"G=1 / G=auto window latency: p50 {median_of(one, 'p50') / median_of(auto, 'p50'):.2f}x, "
              f"p99 {median_of(one, 'p99') / median_of(auto, 'p99'):.2f}x")

        print("\n2. sustained rate (p99 window latency < 1 s, not falling behind)")
        best: dict[Any, float] = {g: 0.0 for g in GROUPS}
        failed: set[Any] = set()
        print(f"{'rate':>9} " + " ".join(f"{'G=' + str(g) + ' p99 ms':>14} {'ok':>4}" for g in GROUPS))
        for rate in rates:
            if len(failed) == len(GROUPS):
                break
            res = measure(ctx, rate, args)
            cells = []
            for g in GROUPS:
                ok = sustained(res[g])
                if ok and g not in failed:
                    best[g] = rate
                elif not ok:
                    failed.add(g)
                cells.append(f"{ms(median_of(res[g], 'p99')):>14} {'yes' if ok else 'no':>4}")
            print(f"{rate:>9,.0f} " + " ".join(cells), flush=True)
        for g in GROUPS:
            print(f"highest sustained rate, G={g}: {best[g]:,.0f} events/s"
                  + (" (the whole sweep)" if g not in failed else ""))

    if args.png:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("(matplotlib not installed: no plot)")
        else:
            fig, ax = plt.subplots(figsize=(7, 3.5))
            for g, runs in at.items():
                series = runs[0]["series"]
                t0 = series[0][0] if series else 0.0
                ax.plot([t - t0 for t, _ in series], [lat * 1e3 for _, lat in series], marker="o", label=f"G={g}")
            ax.set_xlabel("window end (s from the first)")
            ax.set_ylabel("window latency (ms)")
            ax.set_title(f"YSB at {args.rate:,.0f} events/s, {args.interval * 1e3:g} ms batches")
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.png, dpi=100)
            print(f"plot: {args.png}")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
