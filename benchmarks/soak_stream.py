"""Soak test of a stateful stream: does memory stay flat over 10,000 batches?

    python benchmarks/soak_stream.py                          # 10,000 batches, about a minute
    python benchmarks/soak_stream.py --batches 2000 --report-every 250   # quick look
    python benchmarks/soak_stream.py --transport inline       # also counts worker blocks

The target (issue 9): "10,000 batches of a 2-key stream with a 1 MB state
per key: driver and worker RSS grow less than 50 MB after warm-up."

The stream: a generator source of 2 partitions gives every key one event
per batch; ``update_state_by_key`` keeps, per key, a float64 array of
``--state-mb`` MB to which each batch adds its event count (a new array per
batch, as a real state update makes). The sink gets ``(key, first element)``
only, and checks it: after batch b it must be b + 1.

Every ``--report-every`` batches (from the sink, while the stream runs: a
leak that only lasts while a loop runs shows too) it prints the driver's RSS,
each worker's RSS (``VmRSS`` of the driver's child processes that are
workers, from /proc), the live Datasets on the driver (``gc``) and, on the
inline transport, the blocks the workers hold. The last line is PASS or
FAIL: each process's RSS growth from the first report after ``--warmup``
batches to the end must stay under ``--budget-mb``. When it fails, the
columns say which part grows: driver Datasets (lineage kept alive), worker
blocks (superseded state not dropped), or neither (allocator, metrics).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any

import numpy as np
from _tables import table

import drizzle_core as dz


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of ``pid`` in MB, from /proc (nan if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def worker_pids() -> list[int]:
    """This process's children that are drizzle worker processes (local transport)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me and b"drizzle" in cmdline:
            found.append(int(entry))
    return sorted(found)


def live_datasets() -> int:
    gc.collect()
    return sum(isinstance(o, dz.Dataset) for o in gc.get_objects())


class Events:
    """Partition p's events of every batch: one ``(key, 1)`` per key that hashes to p."""

    def __init__(self, keys: int, partitions: int) -> None:
        self.keys = keys
        self.partitions = partitions

    def __call__(self, p: int, b: int, bt: dz.BatchTime) -> list[tuple[str, int]]:
        return [(f"key{k}", 1) for k in range(self.keys) if k % self.partitions == p]


class AddCounts:
    """``update_state_by_key``: a float64 array of ``n`` elements, plus this batch's event count."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, values: list[int], old: Any) -> np.ndarray:
        base = np.zeros(self.n) if old is None else old
        return base + sum(values)


def first_element(kv: tuple[str, np.ndarray]) -> tuple[str, float]:
    return kv[0], float(kv[1][0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=0.004, help="batch interval, seconds")
    ap.add_argument("--keys", type=int, default=2)
    ap.add_argument("--state-mb", type=float, default=1.0, help="state per key, MB")
    ap.add_argument("--group-size", default="auto", help='an int, or "auto"')
    ap.add_argument("--checkpoint-every", type=int, default=None, help="batches (default: the Stream's)")
    ap.add_argument("--transport", default="local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-every", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=2000, help="batches before the baseline report")
    ap.add_argument("--budget-mb", type=float, default=50.0)
    args = ap.parse_args(argv)
    g: Any = args.group_size if args.group_size == "auto" else int(args.group_size)
    n = int(args.state_mb * (1 << 20) / 8)

    rows: list[dict[str, Any]] = []
    wrong: list[tuple[int, str, float]] = []
    t0 = time.perf_counter()
    with dz.Context(transport=args.transport, workers=args.workers) as ctx:
        pids = worker_pids() if args.transport != "inline" else []
        s = ctx.stream(dz.GeneratorSource(Events(args.keys, 2), 2), batch_interval=args.interval, group_size=g)
        if args.checkpoint_every is not None:
            s.checkpoint_every = args.checkpoint_every
        state = s.update_state_by_key(AddCounts(n), 2).map(first_element)

        def sink(records: list[tuple[str, float]], m: dz.BatchMetrics) -> None:
            if len(records) != args.keys:
                wrong.append((m.batch, "keys", len(records)))
            for key, v in records:
                if v != m.batch + 1:
                    wrong.append((m.batch, key, v))
            done = m.batch + 1
            if done % args.report_every == 0 or done == args.batches:
                row: dict[str, Any] = {"batch": done, "s": time.perf_counter() - t0, "driver": rss_mb(),
                                       "workers": [rss_mb(p) for p in pids], "datasets": live_datasets(),
                                       "latency_ms": 1e3 * m.latency}
                runtimes = getattr(ctx._transport, "_runtimes", None)  # inline only: the workers' block stores
                row["blocks"] = sum(len(rt.blocks) for rt in runtimes) if runtimes else None
                rows.append(row)
                w = " ".join(f"{x:7.1f}" for x in row["workers"])
                print(f"batch {done:6d}  {row['s']:6.1f} s  driver {row['driver']:7.1f} MB  workers {w} MB  "
                      f"datasets {row['datasets']:5d}  blocks {row['blocks'] if row['blocks'] is not None else '-'}"
                      f"  latency {row['latency_ms']:.1f} ms", flush=True)

        state.foreach_batch(sink)
        every = s.checkpoint_every
        s.run(batches=args.batches)
        summary = s.metrics_summary(skip=min(args.warmup, args.batches // 2))
        groups = [m.jobs for m in ctx.metrics]

    print(f"\n{args.batches} batches of {args.interval * 1e3:g} ms, {args.keys} keys x {args.state_mb:g} MB state, "
          f"G={g} (median group {sorted(groups)[len(groups) // 2] if groups else 0}), checkpoint every "
          f"{every} batches, "
          f"{args.transport} transport, {args.workers} workers; {time.perf_counter() - t0:.0f} s")
    print(f"latency p50 {summary.latency_p50 * 1e3:.1f} ms, p99 {summary.latency_p99 * 1e3:.1f} ms; "
          f"state values {'all correct' if not wrong else f'WRONG in {len(wrong)} cases, first {wrong[:3]}'}")
    base = next((r for r in rows if r["batch"] >= args.warmup), rows[0] if rows else None)
    if base is None or base is rows[-1]:
        print("FAIL: too few reports after warm-up to measure growth (more --batches or a smaller --report-every)")
        return 1
    last = rows[-1]
    names = ["driver"] + [f"worker {i}" for i in range(len(base["workers"]))]
    before = [base["driver"], *base["workers"]]
    after = [last["driver"], *last["workers"]]
    growth = [a - b for a, b in zip(after, before)]
    print()
    print(table(["process", f"RSS at batch {base['batch']} MB", f"at batch {last['batch']} MB", "growth MB"],
                [[nm, f"{b:.1f}", f"{a:.1f}", f"{d:+.1f}"] for nm, b, a, d in zip(names, before, after, growth)]))
    print(f"live Datasets: {base['datasets']} -> {last['datasets']}"
          + (f"; worker blocks: {base['blocks']} -> {last['blocks']}" if last["blocks"] is not None else ""))
    ok = all(d < args.budget_mb for d in growth) and not wrong
    worst = max(zip(growth, names))
    print(f"{'PASS' if ok else 'FAIL'}: largest RSS growth after warm-up {worst[0]:+.1f} MB ({worst[1]}), "
          f"budget {args.budget_mb:g} MB" + ("" if not wrong else "; state values wrong"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
