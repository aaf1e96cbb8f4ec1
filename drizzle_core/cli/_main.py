"""The ``drizzle`` command: ``demo``, ``bench``, ``transports``, and plugin commands."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import statistics
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

from .. import inline as _inline  # noqa: F401  (registers the inline transport)
from .._errors import DrizzleError
from .._version import __version__
from ..driver import commands, transports
from ._args import ArgumentParser, positive_int

log = logging.getLogger("drizzle.cli")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
COORDINATION_SHARE = ("Coordination share: the part of the workers' time not spent running tasks, 1 - busy / (wall x "
                      "workers): waiting for the driver to plan, serialize and launch, and for results to travel. "
                      "Group scheduling pays that once per group rather than once per iteration.")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """Plain-text columns padded to their widest cell.

    ``align`` has one letter per column, ``l`` or ``r``; by default the first column is left-aligned and the
    rest right-aligned (numbers line up on their last digit), and text columns pass ``l``. The one table
    printer: the commands here and the benchmark scripts (``benchmarks/_tables.py``) print with it.
    """
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one of 'l'/'r' per column ({len(headers)}), got {align!r}")
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_transports(args: argparse.Namespace) -> int:
    found = dict(sorted(transports().items()))
    print(table(["transport", "version", "from", "description"],
                [[t.name, t.version, t.plugin, t.description] for t in found.values()], align="llll"))
    for name, dists in sorted(_entry_point_providers().items()):
        if len(dists) > 1:
            print(f"\nnote: {len(dists)} distributions provide plugin {name!r}: {', '.join(sorted(dists))}; only the "
                  f"first loads. drizzle-core ships 'local' and 'tcp' itself: pip uninstall drizzle-local "
                  f"drizzle-tcp, then reinstall drizzle-core.")
    return 0


def _entry_point_providers() -> dict[str, set[str]]:
    """Entry-point name -> the installed distributions that declare it in group ``drizzle``."""
    found: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == "drizzle":  # the entry-point group plugins are found in
                found.setdefault(ep.name, set()).add(f"{dist.metadata['Name']} {dist.version}")
    return found


def _measure_running_sum(ctx: Any, g: int, iterations: int, partitions: int, reducers: int) -> tuple[float, float]:
    from ._workloads import running_sum_jobs, running_sum_source

    source, state = running_sum_source(ctx, partitions, reducers)
    source.count()
    n0 = len(ctx.metrics)
    t = time.perf_counter()
    totals = ctx.run_jobs(running_sum_jobs(source, state, iterations, reducers), group_size=g)
    wall = time.perf_counter() - t
    expected = iterations * source.count()
    if sum(totals[-1]) != expected:
        raise AssertionError(f"running sum is wrong: {sum(totals[-1])} != {expected}")
    groups = ctx.metrics[n0:]
    busy = sum(m.busy_s for m in groups)
    share = max(0.0, 1.0 - busy / (wall * ctx.num_workers))
    return wall / iterations * 1e3, share


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..api import Context

    print(f"drizzle {__version__}: running sum (reduce_by_key into {args.reducers} partitions, "
          f"state carried on the workers), {args.iterations} iterations, {args.partitions} partitions, "
          f"{args.workers} workers, transport {args.transport}\n")
    rows = []
    with Context(transport=args.transport, workers=args.workers) as ctx:
        base = None
        for g in args.group_sizes:
            ms, share = _measure_running_sum(ctx, g, args.iterations, args.partitions, args.reducers)
            base = base or ms
            rows.append([g, f"{ms:.3f}", f"{base / ms:.1f}x", f"{share:.0%}"])
    print(table(["group size", "ms/iteration", "speedup vs G=1", "coordination share"], rows))
    print()
    print(textwrap.fill("G=1 asks the driver once per iteration, like Spark; larger groups plan and launch many "
                        "iterations at once and the workers run the shuffle between them by themselves.", 100))
    print(textwrap.fill(COORDINATION_SHARE, 100))
    return 0


def _batch_of(p: int, b: int, bt: Any) -> list[int]:
    return [b * 10 + p]


def _stream_latencies(ctx: Any, group_size: int | str, batches: int) -> list[float]:
    """Each batch's latency (seconds) of a small stream run at ``group_size``."""
    from ..stream import GeneratorSource

    s = ctx.stream(GeneratorSource(_batch_of, 2), batch_interval=0.02, group_size=group_size)
    s.foreach_batch(lambda records, m: None)
    return [m.latency for m in s.run(batches=batches)]


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..api import Context
    from ._workloads import single_stage_data, single_stage_jobs

    if args.plot is not None:
        from . import _plots

        _plots._pyplot()  # no matplotlib: say so before anything runs
    rows = []
    single: list[tuple[int, float]] = []
    running: list[tuple[int, float]] = []
    shares: list[tuple[int, float]] = []  # the running sum's
    with Context(transport=args.transport, workers=args.workers) as ctx:
        ds = single_stage_data(ctx)
        for g in args.group_sizes:
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                ctx.run_jobs(single_stage_jobs(ds, args.iterations), group_size=g)
                times.append((time.perf_counter() - t) / args.iterations * 1e3)
            rs, share = _measure_running_sum(ctx, g, args.iterations, 4, 2)
            single.append((g, statistics.median(times)))
            running.append((g, rs))
            shares.append((g, share))
            rows.append([g, f"{statistics.median(times):.4f}", f"{rs:.4f}", f"{share:.0%}"])
        latencies = {f"G={g}": _stream_latencies(ctx, g, 60) for g in (1, "auto")} if args.plot is not None else {}
    print(table(["group size", "single stage ms/iter", "running sum ms/iter", "coordination share"], rows))
    if args.plot is not None:
        written = [_plots.ms_per_iteration(args.plot, {"single stage": single, "running sum": running}),
                   _plots.coordination_share(args.plot, {"running sum": shares}),
                   _plots.latency_cdf(args.plot, latencies)]
        print("\nplots: " + ", ".join(written))
    print("\nThe full comparison with numpy, multiprocessing, Dask and Ray: python benchmarks/bench_core.py "
          "(--plot DIR draws the peers too)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="drizzle", description="Drizzle for Python: group-scheduled jobs.")
    parser.add_argument("--version", action="version", version=f"drizzle {__version__}")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("transports", help="list the installed transports with their versions")
    p.set_defaults(run=_cmd_transports)

    for name, fn, helptext, iters in (
        ("demo", _cmd_demo, "run the running-sum workload for group sizes 1, 10, 100 and print a table", 300),
        ("bench", _cmd_bench, "quick single-stage and running-sum timings", 200),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext + ".",
                           epilog=COORDINATION_SHARE if name == "demo" else None)
        p.add_argument("--transport", default="local", help="an installed transport (drizzle transports)")
        p.add_argument("--workers", type=positive_int, default=2)
        p.add_argument("--iterations", type=positive_int, default=iters)
        p.add_argument("--group-sizes", type=positive_int, nargs="+", default=[1, 10, 100], metavar="G")
        if name == "demo":
            p.add_argument("--partitions", type=positive_int, default=4)
            p.add_argument("--reducers", type=positive_int, default=2)
        else:
            p.add_argument("--repeat", type=positive_int, default=3)
            p.add_argument("--plot", metavar="DIR", default=None,
                           help="also write ms/iteration and coordination share against G, and a stream's "
                                "latency CDF at G=1 and auto, as PNG files in DIR (needs matplotlib)")
        p.set_defaults(run=fn)

    for cmd in commands().values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``drizzle`` command; its exit status.

    A bad option, or a value only the library can judge (an unknown transport), is one line on stderr and
    status 2; the traceback is logged at DEBUG (``drizzle --log-level DEBUG ...``), for a bug report.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, DrizzleError, OSError, ImportError) as e:  # ImportError: an optional package missing
        log.debug("drizzle %s failed", args.command, exc_info=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"drizzle {args.command}: error: {first} (drizzle --log-level DEBUG shows the traceback)",
              file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        print(f"drizzle {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
