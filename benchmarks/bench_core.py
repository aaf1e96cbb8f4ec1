"""Drizzle vs. its peers on the two core workloads (issue 2).

    python benchmarks/bench_core.py                  # everything, a couple of minutes
    python benchmarks/bench_core.py --quick          # smoke run, seconds
    python benchmarks/bench_core.py --only single --no-peers

Workloads (the same per-partition code in every system):

* single  - 4 partitions of 10,000 float64 placed on the workers once; every
  iteration sums each partition (4 tasks).
* running - 4 partitions of 1,000 ``(key, 1)`` records (100 keys) placed on the
  workers once; every iteration counts the keys of each partition into 2
  buckets (map side of ``reduce_by_key``), moves bucket r to reducer r (the
  shuffle), merges the buckets and folds the counts into reducer r's per-key
  state, and reports each reducer's total. Drizzle runs
  ``drizzle_core.cli._workloads.running_sum_jobs``; the peers run the same
  functions (``CombineSplit``/``CombineMerge``/``merge_state``).

Systems: the single-process floor (numpy / plain Python in one process),
drizzle with G in 1, 10, 100 on 2 local workers, multiprocessing.Pool(2),
concurrent.futures.ProcessPoolExecutor(2), Dask distributed (LocalCluster of
2 single-threaded worker processes) and Ray (2 actors), the last two only when
importable (``pip install "dask[distributed]" ray``). See benchmarks/README.md.

Times are medians of ``--repeat`` runs; the machine may be noisy, so read the
ratios, not a single absolute time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import multiprocessing
import operator
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _tables import fmt, table

WORKERS = 2
PARTITIONS = 4
ROWS = 10_000          # float64 per partition (single stage)
REDUCERS = 2
KEYS = 100
RECORDS = 1_000        # records per partition (running sum)
GROUP_SIZES = (1, 10, 100)
REFERENCE_G = 100      # the "x G=100" column divides by this drizzle row
PEER_REPEAT_BUDGET_S = 1.5  # a slow peer runs fewer iterations so one repeat takes about this long

# ------------------------------------------------------------------ the data


def single_parts() -> list[np.ndarray]:
    """The same partitions as ``_workloads.single_stage_data``."""
    data = np.random.default_rng(0).random(PARTITIONS * ROWS)
    return [np.ascontiguousarray(p) for p in np.array_split(data, PARTITIONS)]


def running_parts() -> list[list[tuple[int, int]]]:
    """The same records as ``_workloads.running_sum_source``: ``(x % KEYS, 1)``, contiguous split."""
    items = [(x % KEYS, 1) for x in range(PARTITIONS * RECORDS)]
    return [items[p * RECORDS:(p + 1) * RECORDS] for p in range(PARTITIONS)]


# ------------------------------------------- the per-partition code (shared)


def _ops() -> tuple[Callable, Callable, Callable, Callable]:
    from drizzle_core.cli._workloads import merge_state, state_total
    from drizzle_core.lineage import CombineMerge, CombineSplit

    return CombineSplit(operator.add), CombineMerge(operator.add), merge_state, state_total


def part_sum(part: np.ndarray) -> float:
    return float(np.sum(part))


def split_part(part: list) -> list[dict]:
    """Map side: per-key counts of one partition, in REDUCERS buckets."""
    split, _, _, _ = _ops()
    return split(part, REDUCERS)


def fold(r: int, state: dict, buckets: list[dict]) -> tuple[dict, int]:
    """Reduce side: merge reducer r's buckets and fold them into its state; (new state, total)."""
    _, merge, merge_state, state_total = _ops()
    counts = merge(r, [buckets])
    new = merge_state([state], counts)
    return new[0], state_total(new)


# ------------------------------------------------------------------ results


@dataclass
class Row:
    workload: str
    system: str
    iterations: int
    ms: float                      # median ms per iteration
    tasks_per_iter: float | None = None
    msgs_per_worker_group: float | None = None
    group_size: int | None = None
    breakdown: dict[str, float] = field(default_factory=dict)  # drizzle: per-group driver costs (median)


def median_ms(run: Callable[[int], float | None], iterations: int, repeat: int) -> float:
    """Median over ``repeat`` runs of ``run(iterations)``, in ms per iteration (after one warm-up).

    ``run`` may return the seconds it measured itself (to leave setup out); else its wall time counts.
    """
    run(min(iterations, 20))
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        took = run(iterations)
        if took is None:
            took = time.perf_counter() - t
        times.append(took / iterations * 1e3)
    return statistics.median(times)


def seconds_per_iteration(run: Callable[[int], Any], probe: int) -> float:
    """``run(probe)`` once to warm up, then once timed: seconds per iteration."""
    run(probe)
    t = time.perf_counter()
    run(probe)
    return (time.perf_counter() - t) / probe


def peer_iterations(run: Callable[[int], Any], iterations: int, quick: bool) -> int:
    """Warm up, then cap the iteration count so a slow peer's repeat stays within the budget."""
    per = seconds_per_iteration(run, max(2, min(iterations, 10)))
    budget = PEER_REPEAT_BUDGET_S / (5 if quick else 1)
    return max(min(iterations, 10), min(iterations, int(budget / max(per, 1e-9))))


def floor_iterations(run: Callable[[int], Any], iterations: int, quick: bool) -> int:
    """The floor is cheap: run at least enough iterations for a repeat of about 0.3 s, so noise averages out."""
    per = seconds_per_iteration(run, max(2, min(iterations, 20)))
    return max(iterations, min(100 * iterations, int((0.05 if quick else 0.3) / max(per, 1e-9))))


def check_running(totals: list[list[int]] | list[int], iterations: int) -> None:
    last = totals[-1]
    got = sum(last)
    want = iterations * PARTITIONS * RECORDS
    if got != want:
        raise AssertionError(f"running sum is wrong: {got} != {want}")


# -------------------------------------------------------------------- floor


def bench_floor(workloads: list[str], iterations: int, repeat: int, quick: bool) -> list[Row]:
    rows = []
    if "single" in workloads:
        parts = single_parts()

        def run_single(n: int) -> None:
            for _ in range(n):
                [np.sum(p) for p in parts]

        its = floor_iterations(run_single, iterations, quick)
        rows.append(Row("single", "floor: numpy, 1 process", its, median_ms(run_single, its, repeat)))
    if "running" in workloads:
        rparts = running_parts()

        def run_running(n: int) -> None:
            state: list[dict] = [{} for _ in range(REDUCERS)]
            totals = []
            for _ in range(n):
                maps = [split_part(p) for p in rparts]
                out = [0] * REDUCERS
                for r in range(REDUCERS):
                    state[r], out[r] = fold(r, state[r], [m[r] for m in maps])
                totals.append(out)
            check_running(totals, n)

        its = floor_iterations(run_running, iterations, quick)
        rows.append(Row("running", "floor: same code, 1 process", its, median_ms(run_running, its, repeat)))
    return rows


# ------------------------------------------------------------------ drizzle


def bench_drizzle(workloads: list[str], iterations: int, repeat: int) -> list[Row]:
    import drizzle_core as dz
    from drizzle_core.cli._workloads import running_sum_jobs, running_sum_source, single_stage_data, single_stage_jobs

    rows = []
    with dz.Context(transport="local", workers=WORKERS) as ctx:

        def timed(jobs: Any, g: int, runs: list[list[Any]]) -> tuple[list[list[Any]], float]:
            before = len(ctx.metrics)
            t = time.perf_counter()
            out = ctx.run_jobs(jobs, group_size=g)
            took = time.perf_counter() - t
            runs.append(ctx.metrics[before:])
            return out, took

        if "single" in workloads:
            ds = single_stage_data(ctx, PARTITIONS, ROWS)
            for g in GROUP_SIZES:
                runs: list[list[Any]] = []

                def run_single(n: int, g: int = g, runs: list = runs) -> float:
                    out, took = timed(single_stage_jobs(ds, n), g, runs)
                    assert len(out) == n
                    return took

                ms = median_ms(run_single, iterations, repeat)
                rows.append(_drizzle_row("single", g, iterations, ms, runs[1:]))
            ds.unpersist()
        if "running" in workloads:
            for g in GROUP_SIZES:
                runs = []

                def run_running(n: int, g: int = g, runs: list = runs) -> float:
                    source, state = running_sum_source(ctx, PARTITIONS, REDUCERS, KEYS, RECORDS)
                    source.count()  # place the records on the workers before timing, as the peers do
                    totals, took = timed(running_sum_jobs(source, state, n, REDUCERS), g, runs)
                    check_running(totals, n)
                    source.unpersist()
                    return took

                ms = median_ms(run_running, iterations, repeat)
                rows.append(_drizzle_row("running", g, iterations, ms, runs[1:]))
    return rows


def _drizzle_row(workload: str, g: int, iterations: int, ms: float, runs: list[list[Any]]) -> Row:
    groups = [m for run in runs for m in run]
    jobs = sum(m.jobs for m in groups) or 1
    worker_groups = sum(m.workers for m in groups) or 1

    def per_job_us(attr: str) -> float:
        return statistics.median(getattr(m, attr) / m.jobs for m in groups) * 1e6 if groups else 0.0

    breakdown = {
        "plan_us": per_job_us("plan_s"),
        "serialize_us": per_job_us("serialize_s"),
        "launch_us": per_job_us("launch_s"),
        "coordination": statistics.median(m.coordination for m in groups) if groups else 0.0,
        "bytes_per_group": sum(m.bytes_sent for m in groups) / max(1, len(groups)),
    }
    return Row(workload, f"drizzle G={g}", iterations, ms, sum(m.tasks for m in groups) / jobs,
               sum(m.messages_sent for m in groups) / worker_groups, g, breakdown)


# ------------------------------------------------- multiprocessing / futures

_DATA: list[Any] = []


def _init_worker() -> None:
    """Place the data in the worker process once (both workloads; indices pick a partition)."""
    _DATA[:] = [single_parts(), running_parts()]


def _mp_sum(i: int) -> float:
    return part_sum(_DATA[0][i])


def _mp_split(i: int) -> list[dict]:
    return split_part(_DATA[1][i])


def _driver_reduce(state: list[dict], maps: list[list[dict]]) -> list[int]:
    """The shuffle's reduce side on the driver (the fastest a driver-centric pool allows)."""
    out = [0] * REDUCERS
    for r in range(REDUCERS):
        state[r], out[r] = fold(r, state[r], [m[r] for m in maps])
    return out


def bench_pool_like(name: str, mapper: Callable[[Callable, list[int]], list[Any]], workloads: list[str],
                    iterations: int, repeat: int, quick: bool) -> list[Row]:
    rows = []
    idx = list(range(PARTITIONS))
    if "single" in workloads:
        def run_single(n: int) -> None:
            for _ in range(n):
                mapper(_mp_sum, idx)

        its = peer_iterations(run_single, iterations, quick)
        rows.append(Row("single", name, its, median_ms(run_single, its, repeat)))
    if "running" in workloads:
        def run_running(n: int) -> None:
            state: list[dict] = [{} for _ in range(REDUCERS)]
            totals = [_driver_reduce(state, mapper(_mp_split, idx)) for _ in range(n)]
            check_running(totals, n)

        its = peer_iterations(run_running, iterations, quick)
        rows.append(Row("running", name, its, median_ms(run_running, its, repeat)))
    return rows


def bench_multiprocessing(workloads: list[str], iterations: int, repeat: int, quick: bool) -> list[Row]:
    ctx = multiprocessing.get_context("spawn")
    chunk = PARTITIONS // WORKERS
    with ctx.Pool(WORKERS, initializer=_init_worker) as pool:
        rows = bench_pool_like(f"multiprocessing.Pool({WORKERS})",
                               lambda f, idx: pool.map(f, idx, chunksize=chunk), workloads, iterations, repeat, quick)
    with ProcessPoolExecutor(WORKERS, mp_context=ctx, initializer=_init_worker) as ex:
        rows += bench_pool_like(f"ProcessPoolExecutor({WORKERS})",
                                lambda f, idx: list(ex.map(f, idx, chunksize=chunk)), workloads, iterations, repeat,
                                quick)
    return rows


# --------------------------------------------------------------------- dask


def _dask_fold(r: int, prev: tuple[dict, int], *maps: list[dict]) -> tuple[dict, int]:
    return fold(r, prev[0], [m[r] for m in maps])


def bench_dask(workloads: list[str], iterations: int, repeat: int, quick: bool) -> list[Row]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        print(f"note: Dask distributed skipped (not importable: {e}); pip install 'dask[distributed]'")
        return []
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        addrs = sorted(client.scheduler_info()["workers"])
        where = [addrs[p % len(addrs)] for p in range(PARTITIONS)]
        if "single" in workloads:
            parts = [client.scatter(p, workers=[w]) for p, w in zip(single_parts(), where)]

            def sync_single(n: int) -> None:
                for _ in range(n):
                    client.gather([client.submit(part_sum, f, pure=False) for f in parts])

            def pipelined_single(n: int) -> None:
                futs = [client.submit(part_sum, f, pure=False) for _ in range(n) for f in parts]
                client.gather(futs)

            for label, run in (("per-iteration gather", sync_single), ("all submitted, one gather", pipelined_single)):
                its = peer_iterations(run, iterations, quick)
                rows.append(Row("single", f"dask ({label})", its, median_ms(run, its, repeat)))
        if "running" in workloads:
            rparts = [client.scatter(p, workers=[w]) for p, w in zip(running_parts(), where)]

            def submit_iteration(state: list[Any]) -> list[Any]:
                maps = [client.submit(split_part, f, pure=False) for f in rparts]
                return [client.submit(_dask_fold, r, state[r], *maps, pure=False,
                                      workers=[addrs[r % len(addrs)]], allow_other_workers=True)
                        for r in range(REDUCERS)]

            def initial() -> list[Any]:
                return [client.scatter(({}, 0), workers=[addrs[r % len(addrs)]]) for r in range(REDUCERS)]

            def sync_running(n: int) -> None:
                state = initial()
                totals = []
                for _ in range(n):
                    state = submit_iteration(state)
                    totals.append([t for _s, t in client.gather(state)])
                check_running(totals, n)

            def pipelined_running(n: int) -> None:
                state = initial()
                every = []
                for _ in range(n):
                    state = submit_iteration(state)
                    every.append(state)
                totals = [[t for _s, t in it] for it in client.gather(every)]
                check_running(totals, n)

            for label, run in (("per-iteration gather", sync_running),
                               ("all submitted, one gather", pipelined_running)):
                its = peer_iterations(run, iterations, quick)
                rows.append(Row("running", f"dask ({label})", its, median_ms(run, its, repeat)))
    return rows


# ---------------------------------------------------------------------- ray


class _PartitionActor:
    """Holds this worker's partitions of both workloads and one reducer's state."""

    def __init__(self, owned: list[int]) -> None:
        singles, records = single_parts(), running_parts()
        self.single = {p: singles[p] for p in owned}
        self.records = {p: records[p] for p in owned}
        self.state: dict = {}

    def ready(self) -> bool:
        return True

    def part_sum(self, p: int) -> float:
        return part_sum(self.single[p])

    def split(self, p: int) -> tuple[dict, ...]:
        return tuple(split_part(self.records[p]))

    def reset(self) -> None:
        self.state = {}

    def fold(self, r: int, *buckets: dict) -> int:
        self.state, total = fold(r, self.state, list(buckets))
        return total


def bench_ray(workloads: list[str], iterations: int, repeat: int, quick: bool) -> list[Row]:
    try:
        import ray
    except ImportError as e:
        print(f"note: Ray skipped (not importable: {e}); pip install ray")
        return []
    rows = []
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             configure_logging=True)
    try:
        actor_cls = ray.remote(num_cpus=1)(_PartitionActor)
        actor_cls = actor_cls.options(num_cpus=1)
        actors = [actor_cls.remote([p for p in range(PARTITIONS) if p % WORKERS == w]) for w in range(WORKERS)]
        ray.get([a.ready.remote() for a in actors])
        owner = [actors[p % WORKERS] for p in range(PARTITIONS)]
        if "single" in workloads:
            def sync_single(n: int) -> None:
                for _ in range(n):
                    ray.get([owner[p].part_sum.remote(p) for p in range(PARTITIONS)])

            def pipelined_single(n: int) -> None:
                ray.get([owner[p].part_sum.remote(p) for _ in range(n) for p in range(PARTITIONS)])

            for label, run in (("per-iteration get", sync_single), ("all submitted, one get", pipelined_single)):
                its = peer_iterations(run, iterations, quick)
                rows.append(Row("single", f"ray actors ({label})", its, median_ms(run, its, repeat)))
        if "running" in workloads:
            splitters = [o.split.options(num_returns=REDUCERS) for o in owner]

            def submit_iteration() -> list[Any]:
                maps = [splitters[p].remote(p) for p in range(PARTITIONS)]
                return [actors[r % WORKERS].fold.remote(r, *[m[r] for m in maps]) for r in range(REDUCERS)]

            def reset() -> None:
                ray.get([a.reset.remote() for a in actors])

            def sync_running(n: int) -> None:
                reset()
                check_running([ray.get(submit_iteration()) for _ in range(n)], n)

            def pipelined_running(n: int) -> None:
                reset()
                refs = [submit_iteration() for _ in range(n)]
                check_running([ray.get(r) for r in refs], n)

            if REDUCERS > WORKERS:
                raise AssertionError("one reducer state per actor: REDUCERS must not exceed WORKERS")
            for label, run in (("per-iteration get", sync_running), ("all submitted, one get", pipelined_running)):
                its = peer_iterations(run, iterations, quick)
                rows.append(Row("running", f"ray actors ({label})", its, median_ms(run, its, repeat)))
    finally:
        ray.shutdown()
    return rows


# -------------------------------------------------------------------- table


def report(workload: str, rows: list[Row]) -> None:
    rows = [r for r in rows if r.workload == workload]
    if not rows:
        return
    floor = rows[0].ms
    ref = next((r.ms for r in rows if r.group_size == REFERENCE_G), None)
    title = {"single": f"single stage: {PARTITIONS} partitions x {ROWS:,} float64, sum each",
             "running": f"running sum: {PARTITIONS} partitions x {RECORDS:,} records, {KEYS} keys, "
                        f"reduce_by_key into {REDUCERS} partitions + per-key state"}[workload]
    print(f"\n== {title}; {WORKERS} workers ==")
    out = []
    for r in rows:
        overhead = None
        if r.tasks_per_iter:
            overhead = (r.ms - floor) / r.tasks_per_iter * WORKERS * 1e3
        out.append([r.system, str(r.iterations), fmt(r.ms, ".4f"), fmt(r.ms / floor, ".1f") + "x",
                    (fmt(r.ms / ref, ".2f") + "x") if ref else "-",
                    fmt(r.tasks_per_iter, ".0f"), fmt(overhead, ".1f"), fmt(r.msgs_per_worker_group, ".2f")])
    print(table(["system", "iters", "ms/iter", "x floor", f"x G={REFERENCE_G}", "tasks/iter",
                 "overhead us/task", "msgs/worker/group"], out))
    dz_rows = [r for r in rows if r.breakdown]
    if dz_rows:
        print(table(["drizzle driver, per job", "plan us", "serialize us", "launch us", "coordination",
                     "launch bytes/group"],
                    [[r.system, fmt(r.breakdown["plan_us"], ".1f"), fmt(r.breakdown["serialize_us"], ".1f"),
                      fmt(r.breakdown["launch_us"], ".1f"), fmt(r.breakdown["coordination"], ".0%"),
                      fmt(r.breakdown["bytes_per_group"], ",.0f")] for r in dz_rows]))


FOOTNOTES = f"""
ms/iter: median of the repeats, wall time per iteration on the driver (iters: iterations per repeat; the
  floor runs more so a repeat lasts about 0.3s, slow peers fewer so a repeat stays near {PEER_REPEAT_BUDGET_S}s).
x floor: ms/iter / floor ms/iter.  x G={REFERENCE_G}: ms/iter / drizzle G={REFERENCE_G} ms/iter (>1: slower).
overhead us/task (drizzle) = (ms/iter - floor ms/iter) / tasks per iteration * workers ({WORKERS}), in microseconds
  (negative: faster than the one-process floor, the compute being split over the workers).
msgs/worker/group (drizzle) = messages the driver sent / (workers launched per group, summed over groups).
drizzle driver, per job: median per-group planning, serialization and launch time on the driver divided by G;
  coordination: the share of worker time not spent in tasks (GroupMetrics.coordination).
Peers: data placed on the workers once (Pool/executor: process initializer; Dask: scatter; Ray: actors).
  Pool/executor map with chunksize {PARTITIONS // WORKERS} (one message per worker per iteration) and reduce the
  running sum's buckets on the driver; Dask and Ray keep the reducer state on the workers.
"""


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Drizzle vs numpy, multiprocessing, concurrent.futures, Dask, Ray.")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per repeat (default 200; 20 with --quick)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed repeats, the median is reported (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    p.add_argument("--only", choices=["single", "running"], help="run one workload only")
    p.add_argument("--no-peers", action="store_true", help="floor and drizzle only")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help="write ms/iteration against G with the floor and peers, and coordination share against G, "
                        "as PNG files in DIR (needs matplotlib)")
    args = p.parse_args(argv)
    if args.iterations is None:
        args.iterations = 20 if args.quick else 200
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.iterations < 1 or args.repeat < 1:
        p.error("--iterations and --repeat must be positive")
    return args


def plot(directory: str, workloads: list[str], rows: list[Row]) -> list[str]:
    """One picture per workload of ms/iteration against G (floor and peers as flat lines), one of coordination."""
    from drizzle_core.cli import _plots

    written, shares = [], {}
    for w in workloads:
        mine = [r for r in rows if r.workload == w]
        drizzle = [(r.group_size, r.ms) for r in mine if r.group_size is not None]
        peers = {r.system: r.ms for r in mine if r.group_size is None}
        written.append(_plots.ms_per_iteration(directory, {w: drizzle}, peers, name=f"ms_per_iteration_{w}.png",
                                               title=f"{w}: time per iteration against G, with the floor and peers"))
        shares[w] = [(r.group_size, r.breakdown["coordination"]) for r in mine if r.group_size is not None]
    written.append(_plots.coordination_share(directory, shares))
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = [args.only] if args.only else ["single", "running"]
    if args.plot is not None:
        from drizzle_core.cli import _plots

        _plots._pyplot()  # no matplotlib: say so before the minutes of measuring
    print(f"bench_core: {args.iterations} iterations x {args.repeat} repeats, {WORKERS} workers, "
          f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    rows = bench_floor(workloads, args.iterations, args.repeat, args.quick)
    rows += bench_drizzle(workloads, args.iterations, args.repeat)
    if args.no_peers:
        print("note: peers skipped (--no-peers)")
    else:
        rows += bench_multiprocessing(workloads, args.iterations, args.repeat, args.quick)
        for bench in (bench_dask, bench_ray):
            try:
                rows += bench(workloads, args.iterations, args.repeat, args.quick)
            except Exception as e:  # a broken optional peer must not lose the other rows
                print(f"note: {bench.__name__[6:]} failed and was skipped: {type(e).__name__}: {e}")
    for w in workloads:
        report(w, rows)
    if args.plot is not None:
        print("plots: " + ", ".join(plot(args.plot, workloads, rows)))
    print(FOOTNOTES.rstrip())
    print(f"\n(total {time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
