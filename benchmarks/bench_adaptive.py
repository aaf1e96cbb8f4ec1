"""group_size="auto" against every fixed G, on the single-stage and k-means workloads (issue 6).

    python benchmarks/bench_adaptive.py               # 5 repeats, a few minutes
    python benchmarks/bench_adaptive.py --quick       # smoke run
    python benchmarks/bench_adaptive.py --only single --repeat 7
    python benchmarks/bench_adaptive.py --aimd initial=16 --aimd initial=8,increase=4   # try AIMD variants

Target (issue 6): auto within 1.2x of the best fixed G.

Workloads, on 2 local workers:

* single - ``ctx.run_jobs`` over a cached 4 x 10,000 float64 array, ``np.sum``
  per partition; 1000 jobs per run (200 with --quick).
* kmeans - ``ctx.iterate`` with ``drizzle_ml.KMeans``'s Lloyd step (from
  ``KMeans.make_problem``; 200,000 x 10, k=8, 4 partitions, init = the first
  8 rows, no stopping rule); 300 iterations per run (60 on 20,000 rows with
  --quick).

Each repeat starts a fresh Context, places the data, warms up with G=10, then
runs auto and every fixed G in (1, 2, 5, 10, 20, 50, 100, 200) in a shuffled
order; before each auto run the context's controller is reset to its
defaults, so it starts from its initial size as in a new program. ms/iter
is the run's wall time on the driver / iterations; the median over
the repeats is reported. From ``ctx.metrics``: the group sizes auto
chose (``GroupMetrics.jobs`` per group, run-length coded: ``32x3`` is three
groups of 32) and the coordination share (worker time not in tasks) per group.

``--aimd KEY=VALUE,...`` adds an auto row with the context's controller's
attributes changed before the run (``initial`` sets the starting size; also
``increase``, ``decrease``, ``lower``, ``upper``, ``min_size``, ``max_size``):
an experiment on the benchmark's own instance, the engine is unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _tables import table

WORKERS = 2
PARTITIONS = 4
ROWS = 10_000
KM_SHAPE = (200_000, 10)
KM_K = 8
FIXED = (1, 2, 5, 10, 20, 50, 100, 200)
TARGET = 1.2
AIMD_KEYS = {"initial": int, "increase": float, "decrease": int, "lower": float, "upper": float,
             "min_size": int, "max_size": int}


@dataclass
class Run:
    ms: float                      # per iteration
    sizes: list[int]               # jobs per group
    coordination: list[float]      # per group


@dataclass
class Config:
    label: str                     # "G=10", "auto", "auto initial=16"
    group_size: int | str
    aimd: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return statistics.median(r.ms for r in self.runs)


def parse_aimd(spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in AIMD_KEYS or not value:
            raise argparse.ArgumentTypeError(f"--aimd: expected KEY=VALUE with KEY in {sorted(AIMD_KEYS)}, "
                                             f"got {item!r}")
        out[key] = AIMD_KEYS[key](value)
    return out


def configure(ctx: Any, aimd: dict[str, Any]) -> None:
    """Reset the context's AIMD controller to its defaults (as in a new Context), then apply ``aimd``.

    Reset in place: the scheduler's ``on_failure`` stays bound to it. ``initial`` sets its current size.
    """
    controller = ctx._adaptive
    controller.__init__()
    for key, value in aimd.items():
        setattr(controller, "size" if key == "initial" else key, value)


# ------------------------------------------------------------------ workloads


def single_parts() -> list[np.ndarray]:
    data = np.random.default_rng(0).random(PARTITIONS * ROWS)
    return [np.ascontiguousarray(p) for p in np.array_split(data, PARTITIONS)]


class Workload:
    name = ""
    title = ""

    def setup(self, ctx: Any) -> None: ...

    def run(self, ctx: Any, group_size: int | str, iterations: int) -> None: ...


class Single(Workload):
    name = "single"

    def __init__(self, quick: bool) -> None:
        self.iterations = 200 if quick else 1000
        self.want = [np.sum(p) for p in single_parts()]
        self.title = f"single stage: {PARTITIONS} partitions x {ROWS:,} float64, sum each; {self.iterations} jobs"

    def setup(self, ctx: Any) -> None:
        from drizzle_core.cli._workloads import single_stage_data

        self.ds = single_stage_data(ctx, PARTITIONS, ROWS)

    def run(self, ctx: Any, group_size: int | str, iterations: int) -> None:
        out = ctx.run_jobs([(self.ds, np.sum)] * iterations, group_size=group_size)
        if len(out) != iterations or any(r != self.want for r in out):
            raise AssertionError("single stage: wrong sums")


class KMeansWorkload(Workload):
    name = "kmeans"

    def __init__(self, quick: bool) -> None:
        from drizzle_ml import KMeans

        n, d = KM_SHAPE
        n = n // 10 if quick else n
        X = np.random.default_rng(0).normal(size=(n, d))
        self.problem = KMeans(KM_K, init=X[:KM_K].copy()).make_problem(X, PARTITIONS)
        self.iterations = 60 if quick else 300
        self.title = (f"kmeans: {n:,} x {d}, k={KM_K}, {PARTITIONS} partitions (ctx.iterate); "
                      f"{self.iterations} iterations")
        self.reference: np.ndarray | None = None

    def setup(self, ctx: Any) -> None:
        self.ds = ctx.parallelize(self.problem.blocks, PARTITIONS).cache()
        ctx.run_jobs([(self.ds, len)], group_size=1)  # spread the blocks first, as drizzle_ml.run does

    def run(self, ctx: Any, group_size: int | str, iterations: int) -> None:
        pr = self.problem
        res = ctx.iterate(self.ds, pr.init, local=pr.local, combine=pr.combine, update=pr.update,
                          iterations=iterations, group_size=group_size)
        if res.iterations != iterations:
            raise AssertionError(f"kmeans: ran {res.iterations} iterations, not {iterations}")
        if iterations == self.iterations:
            if self.reference is None:
                self.reference = res.state.centers
            elif not np.allclose(res.state.centers, self.reference, rtol=0, atol=1e-9):
                raise AssertionError("kmeans: centers differ across group sizes")


# -------------------------------------------------------------------- runs


def measure(workload: Workload, configs: list[Config], repeat: int) -> None:
    import drizzle_core as dz

    for rep in range(repeat):
        order = list(configs)
        random.Random(rep).shuffle(order)
        with dz.Context(transport="local", workers=WORKERS) as ctx:
            workload.setup(ctx)
            workload.run(ctx, 10, min(50, workload.iterations))   # warm-up: fixed G leaves auto untouched
            for config in order:
                if config.group_size == "auto":
                    configure(ctx, config.aimd)
                gc.collect()
                before = len(ctx.metrics)
                t = time.perf_counter()
                workload.run(ctx, config.group_size, workload.iterations)
                took = time.perf_counter() - t
                groups = ctx.metrics[before:]
                config.runs.append(Run(took / workload.iterations * 1e3, [m.jobs for m in groups],
                                       [m.coordination for m in groups]))
        print(f"  {workload.name}: repeat {rep + 1}/{repeat} done", flush=True)


# -------------------------------------------------------------------- table


def rle(values: list[Any]) -> str:
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        out.append(f"{values[i]}x{j - i}" if j - i > 1 else str(values[i]))
        i = j
    return " ".join(out)


def report(workload: Workload, configs: list[Config]) -> dict[str, float]:
    fixed = [c for c in configs if c.group_size != "auto"]
    autos = [c for c in configs if c.group_size == "auto"]
    best = min(fixed, key=lambda c: c.ms)
    print(f"\n== {workload.title}; {WORKERS} workers; median of {len(best.runs)} ==")
    rows = []
    for c in [*fixed, *autos]:
        coords = [x for r in c.runs for x in r.coordination]
        groups = statistics.median(len(r.sizes) for r in c.runs)
        mark = " *" if c is best else ""
        ratio = c.ms / best.ms
        verdict = ("  ok" if ratio <= TARGET else "  MISS") if c.group_size == "auto" else ""
        rows.append([c.label + mark, f"{c.ms:.4f}", f"{ratio:.2f}x{verdict}", f"{groups:.0f}",
                     f"{statistics.median(coords):.0%}" if coords else "-",
                     f"{min(r.ms for r in c.runs):.4f}..{max(r.ms for r in c.runs):.4f}"])
    print(table(["G", "ms/iter", "x best", "groups", "coordination (median)", "min..max ms/iter"], rows))
    print(f"best fixed G: {best.group_size} ({best.ms:.4f} ms/iter)")
    ratios = {}
    for a in autos:
        ratios[a.label] = a.ms / best.ms
        print(f"{a.label}: {a.ms:.4f} ms/iter = {a.ms / best.ms:.2f}x best (target <= {TARGET}x)")
        for k, r in enumerate(a.runs):
            print(f"  repeat {k + 1}: {r.ms:.4f} ms/iter; group sizes: {rle(r.sizes)}")
        r0 = a.runs[0]
        print("  coordination per group (repeat 1): "
              + " ".join(f"{s}:{c:.0%}" for s, c in zip(r0.sizes, r0.coordination)))
    return ratios


FOOTNOTES = f"""
ms/iter: the run's wall time on the driver / iterations, median over the repeats (* marks the best fixed G).
x best: ms/iter / the best fixed G's; auto is "ok" within {TARGET}x. groups: groups per run (median).
coordination: GroupMetrics.coordination, the share of worker time not spent in tasks, median over all groups
  of all repeats; the AIMD controller grows G while it is above `upper` (10%) and shrinks it below `lower` (5%).
group sizes: GroupMetrics.jobs of each group auto ran, run-length coded (32x3 = three groups of 32).
"""


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='group_size="auto" against every fixed group size.')
    p.add_argument("--repeat", type=int, default=None,
                   help="repeats, the median is reported (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    p.add_argument("--only", choices=["single", "kmeans"], help="run one workload only")
    p.add_argument("--aimd", type=parse_aimd, action="append", default=[], metavar="KEY=VALUE,...",
                   help="also run auto with these controller settings (repeatable)")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.repeat < 1:
        p.error("--repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench_adaptive: {args.repeat} repeats, {WORKERS} workers, python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    workloads: list[Workload] = []
    if args.only in (None, "single"):
        workloads.append(Single(args.quick))
    if args.only in (None, "kmeans"):
        workloads.append(KMeansWorkload(args.quick))
    summary = []
    for w in workloads:
        configs = [Config(f"G={g}", g) for g in FIXED] + [Config("auto", "auto")]
        for spec in args.aimd:
            configs.append(Config("auto " + ",".join(f"{k}={v}" for k, v in spec.items()), "auto", spec))
        measure(w, configs, args.repeat)
        for label, ratio in report(w, configs).items():
            summary.append([w.name, label, f"{ratio:.2f}x", "ok" if ratio <= TARGET else "MISS"])
    print(FOOTNOTES.rstrip())
    print()
    print(table(["workload", "auto", "auto / best fixed", f"<= {TARGET}x"], summary))
    print(f"\n(total {time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
