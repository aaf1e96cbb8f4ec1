"""Recovery from a lost worker: time from a kill -9 to the next completed iteration (issue 6).

    python benchmarks/bench_recovery.py              # 5 kills per case, a few minutes
    python benchmarks/bench_recovery.py --quick      # smoke run (2 kills per case, short runs)
    python benchmarks/bench_recovery.py --only kmeans --repeat 9

Each repeat starts a fresh 2-worker local Context, runs a long sequence of
iterations with a fixed group size G, and SIGKILLs one worker from a timer
thread at a random moment in the middle of the run. The driver timestamps
every iteration as it completes:

* single - ``ctx.iter_jobs`` over a cached 4 x 10,000 float64 array, ``np.sum``
  per partition (4 tasks per job); the job stream is open-ended and stops a
  little after the recovery. Every job's sums must equal numpy's exactly.
* kmeans - 300 Lloyd iterations of ``drizzle_ml.KMeans`` (200,000 x 10 (20,000 with --quick), k=8, 4
  partitions, init = the first 8 rows, no stopping rule) run by
  ``ctx.iterate`` with an ``on_iteration`` timestamp; the problem's functions
  come from ``KMeans.make_problem``. Every iteration's centers must equal those
  of a run without failure in the same context, to 1e-9. Two cases: the
  victim is the worker that holds iterate's state (the reducer) or the other.

Columns (medians over the repeats, min..max where shown):

* normal ms/iter - driver wall time per iteration before the kill;
* kill->next - from the kill to the next iteration the driver sees complete
  (what the issue asks for). Results already sent before the kill but not yet
  read by the driver count, so at small per-iteration cost this is often
  near zero: it does not show the stall;
* kill->resume - from the kill to the first iteration completed after the
  recovery (the stall a user sees), split into detect (kill -> the driver
  sees the worker lost), replace (the transport's ``replace_worker``: a new
  process started and connected) and rerun (the rest: re-plan, recompute the
  lost blocks from lineage, run the first unfinished job);
* after ms/iter - per iteration after the recovery (placement may differ);
* recoveries - ``GroupMetrics.recoveries`` summed over the run's groups;
* ok - runs whose results were right / runs (a run that raised is not ok).

The breakdown hooks the transport's ``poll``/``replace_worker`` and the
scheduler's ``on_failure`` on the context object (benchmark-only
instrumentation; nothing in the engine changes). The machine is small and
shared: read medians.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _tables import fmt, table

WORKERS = 2
PARTITIONS = 4
ROWS = 10_000
KM_SHAPE = (200_000, 10)
KM_K = 8
GROUP_SIZES = (10, 100)
TOLERANCE = 1e-9


# ------------------------------------------------------------ instrumentation


def worker_pid(it: Any) -> list[int]:
    return [os.getpid()]


def worker_pids(ctx: Any) -> list[int]:
    """Worker p's pid at index p (partition p of 2 goes to worker p)."""
    return [p[0] for p in ctx.parallelize(range(WORKERS), WORKERS).map_partitions(worker_pid).glom()]


@dataclass
class Probe:
    """Timestamps of one run: the kill, the loss seen by the driver, the replacement, completions."""

    kill: float | None = None
    lost: float | None = None
    replace_start: float | None = None
    replace_end: float | None = None
    recovered: float | None = None
    victim_held_state: bool | None = None
    stamps: list[float] = field(default_factory=list)

    def record(self) -> None:
        self.stamps.append(time.perf_counter())


def instrument(ctx: Any, box: list[Probe]) -> None:
    """Hook the driver's view of a loss and a recovery; ``box[0]`` is the current run's probe."""
    transport, scheduler = ctx._transport, ctx._scheduler
    poll, replace, on_failure = transport.poll, transport.replace_worker, scheduler.on_failure

    def timed_poll(timeout: float | None) -> list:
        events = poll(timeout)
        probe = box[0]
        if probe.kill is not None and probe.lost is None and any(type(m).__name__ == "WorkerLost" for _, m in events):
            probe.lost = time.perf_counter()
        return events

    def timed_replace(worker: int, epoch: int) -> bool:
        box[0].replace_start = time.perf_counter()
        try:
            return replace(worker, epoch)
        finally:
            box[0].replace_end = time.perf_counter()

    def timed_failure() -> None:
        box[0].recovered = time.perf_counter()
        if on_failure is not None:
            on_failure()

    transport.poll = timed_poll
    transport.replace_worker = timed_replace
    scheduler.on_failure = timed_failure


def state_worker(ctx: Any) -> int | None:
    """The worker holding the newest cached block (during ``iterate``: the latest state)."""
    for _ in range(100):  # read from the timer thread while the driver's thread may be changing it
        try:
            locations = dict(ctx._scheduler.cache_locations)
            break
        except RuntimeError:
            continue
    else:
        return None
    if not locations:
        return None
    return locations[max(locations, key=lambda b: b[1])]


def start_killer(ctx: Any, probe: Probe, pid: int, victim: int, delay: float, state: bool) -> threading.Thread:
    def kill() -> None:
        time.sleep(delay)
        if state:
            probe.victim_held_state = state_worker(ctx) == victim
        probe.kill = time.perf_counter()
        os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t


# ------------------------------------------------------------------ results


@dataclass
class Outcome:
    normal_ms: float | None = None
    next_ms: float | None = None
    resume_ms: float | None = None
    detect_ms: float | None = None
    replace_ms: float | None = None
    rerun_ms: float | None = None
    after_ms: float | None = None
    recoveries: int = 0
    ok: bool = False
    held_state: bool | None = None
    error: str | None = None


def rate_ms(stamps: list[float]) -> float | None:
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3 if len(stamps) > 2 else None


def analyse(probe: Probe, recoveries: int, ok: bool, skip_after: int) -> Outcome:
    st = probe.stamps
    k = probe.kill
    out = Outcome(recoveries=recoveries, ok=ok, held_state=probe.victim_held_state)
    if k is None:
        out.error = "the run ended before the kill"
        out.ok = False
        return out
    before = [t for t in st if t < k]
    out.normal_ms = rate_ms(before)
    later = [t for t in st if t > k]
    if later:
        out.next_ms = (later[0] - k) * 1e3
    if probe.recovered is not None:
        resumed = [t for t in st if t > probe.recovered]
        if resumed:
            out.resume_ms = (resumed[0] - k) * 1e3
            out.rerun_ms = (resumed[0] - probe.recovered) * 1e3
            out.after_ms = rate_ms(resumed[skip_after:])
    if probe.lost is not None:
        out.detect_ms = (probe.lost - k) * 1e3
    if probe.replace_start is not None and probe.replace_end is not None:
        out.replace_ms = (probe.replace_end - probe.replace_start) * 1e3
    return out


# ------------------------------------------------------------------ workloads


def single_parts() -> list[np.ndarray]:
    """The same partitions as ``_workloads.single_stage_data``."""
    data = np.random.default_rng(0).random(PARTITIONS * ROWS)
    return [np.ascontiguousarray(p) for p in np.array_split(data, PARTITIONS)]


def run_single(g: int, seed: int, quick: bool) -> Outcome:
    import drizzle_core as dz
    from drizzle_core.cli._workloads import single_stage_data

    want = [np.sum(p) for p in single_parts()]
    rng = random.Random(seed)
    victim = seed % WORKERS
    box = [Probe()]
    tail_s = 0.15 if quick else 0.4          # keep going this long after the recovery
    cap = 200_000                            # jobs; a safety stop if the kill never lands
    with dz.Context(transport="local", workers=WORKERS, group_size=g) as ctx:
        ds = single_stage_data(ctx, PARTITIONS, ROWS)
        ctx.run_jobs([(ds, np.sum)] * (2 * g), group_size=g)   # warm-up: programs loaded, data placed
        instrument(ctx, box)
        pid = worker_pids(ctx)[victim]
        probe = box[0] = Probe()
        before = len(ctx.metrics)
        results: list[list[float]] = []

        def jobs() -> Any:
            for _ in range(cap):
                if probe.recovered is not None and probe.stamps and probe.stamps[-1] > probe.recovered + tail_s:
                    return
                yield ds, np.sum

        killer = start_killer(ctx, probe, pid, victim, rng.uniform(0.2, 0.4) if quick else rng.uniform(0.4, 0.8),
                             False)
        error = None
        try:
            for r in ctx.iter_jobs(jobs(), group_size=g):
                probe.record()
                results.append(r)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        killer.join()
        recoveries = sum(m.recoveries for m in ctx.metrics[before:])
    ok = error is None and bool(results) and all(r == want for r in results)
    out = analyse(probe, recoveries, ok, skip_after=g)
    out.error = out.error or error
    return out


@dataclass
class KMeansCase:
    problem: Any
    iterations: int


def kmeans_case(quick: bool) -> KMeansCase:
    from drizzle_ml import KMeans

    n, d = KM_SHAPE
    X = np.random.default_rng(0).normal(size=(n // 10 if quick else n, d))
    problem = KMeans(KM_K, init=X[:KM_K].copy()).make_problem(X, PARTITIONS)
    return KMeansCase(problem, 300)


def run_kmeans(case: KMeansCase, g: int, seed: int, victim_role: str) -> Outcome:
    import drizzle_core as dz

    pr = case.problem
    rng = random.Random(seed)
    box = [Probe()]

    def fit(ctx: Any, ds: Any, probe: Probe) -> Any:
        return ctx.iterate(ds, pr.init, local=pr.local, combine=pr.combine, update=pr.update,
                           iterations=case.iterations, group_size=g, on_iteration=lambda i, s: probe.record(),
                           keep_history=True)

    with dz.Context(transport="local", workers=WORKERS, group_size=g) as ctx:
        ds = ctx.parallelize(pr.blocks, PARTITIONS).cache()
        ctx.run_jobs([(ds, len)], group_size=1)  # spread the blocks over the workers first (as drizzle_ml.run)
        instrument(ctx, box)
        reference_probe = box[0] = Probe()
        t = time.perf_counter()
        reference = fit(ctx, ds, reference_probe)    # the run without failure; also the warm-up
        duration = time.perf_counter() - t
        holder = state_worker(ctx)
        holder = 0 if holder is None else holder
        victim = holder if victim_role == "state" else (holder + 1) % WORKERS
        pid = worker_pids(ctx)[victim]
        probe = box[0] = Probe()
        before = len(ctx.metrics)
        killer = start_killer(ctx, probe, pid, victim, duration * rng.uniform(0.25, 0.5), True)
        error = None
        res = None
        try:
            res = fit(ctx, ds, probe)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        killer.join()
        recoveries = sum(m.recoveries for m in ctx.metrics[before:])
    ok = False
    if res is not None and len(res.history) == len(reference.history) == case.iterations:
        diff = max(float(np.abs(a.centers - b.centers).max()) for a, b in zip(res.history, reference.history))
        ok = diff <= TOLERANCE
    out = analyse(probe, recoveries, ok, skip_after=10)
    out.error = out.error or error
    return out


# -------------------------------------------------------------------- table


def med(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def spread(values: list[float | None], spec: str = ".0f") -> str:
    vs = [v for v in values if v is not None]
    if not vs:
        return "-"
    return f"{statistics.median(vs):{spec}} ({min(vs):{spec}}..{max(vs):{spec}})"


def report(results: list[tuple[str, int, list[Outcome]]]) -> None:
    main_rows, parts_rows = [], []
    for label, g, outs in results:
        recs = sorted({o.recoveries for o in outs})
        held = [o.held_state for o in outs if o.held_state is not None]
        main_rows.append([label, str(g), fmt(med([o.normal_ms for o in outs]), ".3f"),
                          spread([o.next_ms for o in outs]), spread([o.resume_ms for o in outs]),
                          "/".join(map(str, recs)), f"{sum(o.ok for o in outs)}/{len(outs)}",
                          f"{sum(held)}/{len(held)}" if held else "-"])
        parts_rows.append([label, str(g), fmt(med([o.detect_ms for o in outs])),
                           fmt(med([o.replace_ms for o in outs])), fmt(med([o.rerun_ms for o in outs])),
                           fmt(med([o.after_ms for o in outs]), ".3f"),
                           fmt(med([o.normal_ms for o in outs]), ".3f")])
    print(f"\n== kill -9 of one of {WORKERS} local workers mid-run; ms, median (min..max) over the repeats ==")
    print(table(["workload", "G", "normal ms/iter", "kill->next ms", "kill->resume ms", "recoveries", "ok",
                 "victim held state"], main_rows))
    print("\n== where kill->resume goes (medians, ms) ==")
    print(table(["workload", "G", "detect", "replace", "rerun", "after ms/iter", "normal ms/iter"], parts_rows))
    errors = {(label, g, o.error) for label, g, outs in results for o in outs if o.error}
    for label, g, err in sorted(errors):
        print(f"error: {label} G={g}: {err}")


FOOTNOTES = """
kill->next: kill to the next iteration completed on the driver (results already in flight count).
kill->resume: kill to the first iteration completed after the recovery = detect + replace + rerun (+ the
  driver's time between them); detect: kill -> WorkerLost seen by the driver's poll; replace: the transport's
  replace_worker (new process started and connected); rerun: recovery done -> first job of the new attempt done.
after ms/iter: per iteration after the recovery (the first G (single) or 10 (kmeans) iterations left out).
recoveries: GroupMetrics.recoveries summed over the run (distinct values over the repeats).
ok: runs with exact results (single: every job's sums == numpy's; kmeans: every iteration's centers within
  1e-9 of a run without failure); victim held state: kills that hit the worker holding the newest cached block.
"""


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time from a worker kill to the next completed iteration.")
    p.add_argument("--repeat", type=int, default=None, help="kills per case (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    p.add_argument("--only", choices=["single", "kmeans"], help="run one workload only")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.repeat < 1:
        p.error("--repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("drizzle").setLevel(logging.ERROR)  # the scheduler's "lost worker" warnings
    print(f"bench_recovery: {args.repeat} kills per case, {WORKERS} workers, python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    cases: list[tuple[str, int, Callable[[int], Outcome]]] = []
    if args.only in (None, "single"):
        for g in GROUP_SIZES:
            cases.append(("single", g, lambda seed, g=g: run_single(g, seed, args.quick)))
    if args.only in (None, "kmeans"):
        km = kmeans_case(args.quick)
        for role, label in (("other", "kmeans, kill other worker"), ("state", "kmeans, kill state's worker")):
            for g in GROUP_SIZES:
                cases.append((label, g, lambda seed, g=g, role=role: run_kmeans(km, g, seed, role)))
    results = []
    for label, g, run in cases:
        outs = [run(seed) for seed in range(args.repeat)]
        results.append((label, g, outs))
        print(f"  {label} G={g}: kill->resume ms {[round(o.resume_ms) if o.resume_ms else None for o in outs]}",
              flush=True)
    report(results)
    print(FOOTNOTES.rstrip())
    print(f"\n(total {time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
