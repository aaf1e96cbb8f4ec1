"""Soak (issue 11): does a long session stay flat — memory, file descriptors, threads, processes, shared memory?

    python benchmarks/soak.py                        # full size, local transport: a few minutes
    python benchmarks/soak.py --quick --transport tcp   # 10x smaller, a smoke run
    python benchmarks/soak.py --only a,c --trace     # tracemalloc on the driver (slower), for a leak hunt

A script that prints figures, not a timed test. Three parts (each in a
Context of its own; "start" is once the context is open, its data cached
and one job of each kind run, so that connections opened on first use —
the workers' peer connections, at the first shuffle — are not counted):

* **a** — 100,000 tiny jobs through one ``ctx.iter_jobs`` loop with
  ``group_size="auto"`` (the idiomatic loop: a lazy generator of
  ``(dataset, function)`` pairs, consumed a group at a time). The jobs cycle
  through four kinds over a cached 2-partition array: a sum of the cached
  partitions, a fresh ``map_partitions`` of them, a fresh
  ``map``/``reduce_by_key`` shuffle, and ``len``; every 1,000th job also
  calls an action (``data.count()``) inside the loop, which runs as a group
  of its own. Every result is checked.
* **b** — 1,000 Context open/close cycles (2 workers), each running one
  small action and checking ``ctx.bookkeeping()``.
* **c** — a 10,000-batch stateful stream: ``benchmarks/soak_stream.py``'s
  (2 keys, a 1 MB float64 state per key in ``update_state_by_key``, a
  4 ms batch interval, so 10,000 batches take about a minute); the sink
  checks every state value.

For each part it prints, per process (driver, each worker): RSS
(``VmRSS``, /proc/<pid>/status), open file descriptors (/proc/<pid>/fd) and
threads (/proc/<pid>/task), at start and end; the driver's descendant processes
(/proc/*/stat, ppid chains from the driver: a tcp daemon's forked session
process is the worker that runs tasks, and is the one measured as the
worker; zombies counted apart), POSIX
shared-memory entries (/dev/shm) and SysV segments (``ipcs -m``) and the
local transport's socket directories (/tmp/drizzle-local-*). RSS is sampled
at every 10% of progress, so a slow leak shows as a slope (MB per 10,000
jobs, per 100 cycles, per 1,000 batches: a least-squares fit over the
samples after the first). ``ctx.bookkeeping()`` is printed before each
context closes (only ``cached_blocks`` may be non-zero).

Verdict per part — **flat** when every process's RSS grows less than 50 MB
from the start of the part (context open, data cached) to its end, and
nothing is left: after the context closes the driver has the fds, threads,
children, /dev/shm entries, SysV segments and socket directories it had
before it opened; the workers' fds and threads at the end equal those at
the start; the bookkeeping is empty but for cached blocks.

``ctx.metrics`` and ``Stream.metrics`` keep one record per group and per
batch, the last 10,000 of each (``drizzle_core._retained``); their size
(bytes per record, deep ``sys.getsizeof``) is printed apart from the verdict. The driver's live objects by type (``gc``)
and the workers' (a probe task that counts ``gc.get_objects()`` where it
runs) are compared between start and end: the types that grew name what a
leak keeps.

One Context is opened and closed before anything is measured
(:func:`warm_up`), so what a process sets up once — imports, plugin
discovery, the worker spawner thread — is not counted as growth.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tables import table
from soak_stream import AddCounts, Events, first_element

import drizzle_core as dz

BUDGET_MB = 50.0
SAMPLES = 10  # RSS samples per part: one at every 10% of progress


# ------------------------------------------------------------------ probes (/proc)
def _status(pid: int | str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of ``pid`` in MB (nan if it is gone)."""
    v = _status(pid).get("VmRSS")
    return int(v.split()[0]) / 1024 if v else float("nan")


def count_entries(path: str) -> int:
    """Entries of a /proc directory (fd, task); -1 if the process is gone."""
    try:
        return len(os.listdir(path))
    except OSError:
        return -1


def fd_kinds(pid: int | str = "self") -> Counter[str]:
    """What ``pid``'s open fds point at, by kind (socket, pipe, anon_inode:[eventpoll], a file path)."""
    kinds: Counter[str] = Counter()
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue  # the fd listdir itself used
        kinds[target.split(":[", 1)[0] + ":" if ":[" in target else target] += 1
    return kinds


@dataclass(frozen=True)
class Proc:
    """One process's figures at one moment."""

    rss_mb: float
    fds: int
    threads: int
    peak_mb: float = float("nan")  # VmHWM: the largest RSS the process ever had

    @classmethod
    def of(cls, pid: int | str) -> Proc:
        st = _status(pid)
        rss, hwm = (int(st[k].split()[0]) / 1024 if k in st else float("nan") for k in ("VmRSS", "VmHWM"))
        return cls(rss, count_entries(f"/proc/{pid}/fd"), count_entries(f"/proc/{pid}/task"), hwm)


def descendants(pid: int | None = None) -> dict[int, tuple[int, str, str]]:
    """Every process below ``pid`` (default: this one), at any depth: pid -> (ppid, state letter, command line).

    At any depth because a tcp daemon forks a session process per driver:
    that grandchild is the worker that runs tasks, and one left behind is a
    leak like a child.
    """
    root = os.getpid() if pid is None else pid
    table_: dict[int, tuple[int, str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table_[int(entry)] = (int(fields[1]), fields[0], cmd)
    found: dict[int, tuple[int, str, str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for p, info in table_.items():
            if info[0] == parent and p not in found:
                found[p] = info
                frontier.append(p)
    return found


def _workers_of(procs: dict[int, tuple[int, str, str]]) -> list[int]:
    """The live worker processes that run tasks: ``_worker_main`` processes with no ``_worker_main`` child.

    A local worker is one process; a tcp daemon started by the driver is a
    supervisor whose forked session process does the work.
    """
    live = {p: info for p, info in procs.items() if info[1] != "Z" and "_worker_main" in info[2]}
    parents = {info[0] for info in live.values()}
    return sorted(p for p in live if p not in parents)


def worker_pids() -> list[int]:
    """This process's drizzle workers (local processes, tcp session processes)."""
    return _workers_of(descendants())


def shm_entries() -> set[str]:
    """POSIX shared memory (and semaphores) in /dev/shm, any process's."""
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def sysv_segments() -> dict[str, int]:
    """SysV shared-memory segments (``ipcs -m -p``): shmid -> creator pid; empty without ipcs."""
    if shutil.which("ipcs") is None:
        return {}
    try:
        out = subprocess.run(["ipcs", "-m", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 3 and f[0].isdigit() and f[2].isdigit():
            found[f[0]] = int(f[2])
    return found


def shm_in_use(pid: int | str) -> set[str]:
    """The /dev/shm entries ``pid`` has mapped or open (what ties an entry to this session)."""
    found = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                i = line.find("/dev/shm/")
                if i >= 0:
                    found.add(line[i + 9:].split()[0])
        for name in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{name}")
                if target.startswith("/dev/shm/"):
                    found.add(target[9:].split()[0])
    except OSError:
        pass
    return found


class Tracker:
    """What one part's processes were seen to own: their pids, socket directories, /dev/shm entries.

    Other sessions share this machine (and /tmp, /dev/shm): only what this
    part's own processes created or used can be "left" by it. A worker's
    socket directory is on its command line (``drizzle_local._worker_main
    INDEX DIR PARENT``); a /dev/shm entry is ours if one of our processes
    mapped or opened it; a SysV segment if one of our processes created it.
    """

    def __init__(self) -> None:
        self.pids: set[int] = {os.getpid()}
        self.dirs: set[str] = set()
        self.shm: set[str] = set()

    def observe(self, kids: dict[int, tuple[int, str, str]]) -> None:
        tmp = tempfile.gettempdir()
        for pid, (_ppid, _state, cmd) in kids.items():
            self.pids.add(pid)
            for arg in cmd.split():
                if arg.startswith(os.path.join(tmp, "drizzle-")):
                    self.dirs.add(arg)
        for pid in [os.getpid(), *kids]:
            self.shm |= shm_in_use(pid)


@dataclass
class Snapshot:
    """Everything the verdict compares, at one moment."""

    driver: Proc
    workers: dict[int, Proc]
    children: dict[int, tuple[int, str, str]]  # every descendant: pid -> (ppid, state, command line)
    shm: set[str]                  # /dev/shm, any process's
    sysv: dict[str, int]           # SysV segment -> creator pid, any process's
    dirs: set[str]                 # the tracker's socket directories that exist now
    fd_kinds: Counter[str]

    @classmethod
    def take(cls, tracker: Tracker) -> Snapshot:
        kids = descendants()
        tracker.observe(kids)
        workers = {p: Proc.of(p) for p in _workers_of(kids)}
        return cls(Proc.of("self"), workers, kids, shm_entries(), sysv_segments(),
                   {d for d in tracker.dirs if os.path.exists(d)}, fd_kinds())


def leftovers(before: Snapshot, after: Snapshot, tracker: Tracker) -> list[str]:
    """What ``after`` (a context closed) holds that ``before`` (not opened yet) did not, in words."""
    out = []
    if after.driver.fds > before.driver.fds:
        grown = after.fd_kinds - before.fd_kinds
        out.append(f"driver fds {before.driver.fds} -> {after.driver.fds} ({dict(grown)})")
    if after.driver.threads > before.driver.threads:
        out.append(f"driver threads {before.driver.threads} -> {after.driver.threads}")
    new = {p: v for p, v in after.children.items() if p not in before.children}
    if new:
        out.append(f"processes left: {[(p, s, c[:60]) for p, (_pp, s, c) in new.items()]}")
    shm = (after.shm - before.shm) & tracker.shm
    sysv = {k for k, cpid in after.sysv.items() if k not in before.sysv and cpid in tracker.pids}
    for what, left in (("/dev/shm entries", shm), ("SysV segments", sysv), ("socket directories", after.dirs)):
        if left:
            out.append(f"{what} left: {sorted(left)[:5]}")
    return out


def settled(before: Snapshot, tracker: Tracker, wait: float = 2.0) -> tuple[Snapshot, list[str], float]:
    """A snapshot after a close, taken again (up to ``wait`` s) while something is still left.

    Returns the snapshot, what was left at the first look, and how long it
    took to clear: a worker still exiting just after ``close()`` returned is
    reported, but only what is still there after ``wait`` is a leak.
    """
    t0 = time.monotonic()
    snap = Snapshot.take(tracker)
    first = leftovers(before, snap, tracker)
    while leftovers(before, snap, tracker) and time.monotonic() - t0 < wait:
        time.sleep(0.02)
        snap = Snapshot.take(tracker)
    return snap, first, time.monotonic() - t0


# -------------------------------------------------------------- object counts
def type_counts() -> Counter[str]:
    """Live gc-tracked objects of this process, by type name."""
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def worker_type_counts(part: Any) -> list[tuple[int, dict[str, int]]]:
    """A task: the live objects of the process it runs in, by type (for the worker side of the diff)."""
    return [(os.getpid(), dict(type_counts()))]


def malloc_trim() -> float:
    """Give freed heap memory back to the OS (glibc ``malloc_trim(0)``); returns this process's RSS after, MB.

    RSS that falls back after a trim was freed memory the allocator kept (a
    high-water mark, e.g. of superseded 1 MB states), not live objects.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def worker_trim(part: Any) -> list[tuple[int, float]]:
    """A task: :func:`malloc_trim` in the process it runs in."""
    gc.collect()
    return [(os.getpid(), malloc_trim())]


def grown_types(before: Counter[str], after: Counter[str], top: int = 5) -> str:
    diff = [(after[k] - before.get(k, 0), k) for k in after if after[k] - before.get(k, 0) > 0]
    diff.sort(reverse=True)
    return ", ".join(f"{k} +{d}" for d, k in diff[:top]) or "none"


def deep_size(obj: Any) -> int:
    """Bytes of ``obj`` and everything it references that only it could own (explicit stack, no recursion).

    Types, modules, functions and interned small values are shared and not counted.
    """
    seen: set[int] = set()
    stack = [obj]
    total = 0
    skip = (type, type(sys), type(deep_size), type(None), bool)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
        if hasattr(o, "__slots__") and not isinstance(o, type):
            stack.extend(getattr(o, s) for s in o.__slots__ if hasattr(o, s))
    return total


# ------------------------------------------------------------------ results
@dataclass
class Sample:
    progress: int                  # jobs, cycles or batches done
    seconds: float
    driver: Proc
    workers: list[Proc]
    note: str = ""                 # a part's own column (live Datasets, latency)


@dataclass
class PartResult:
    name: str
    unit: str                      # "jobs", "cycles", "batches"
    per: int                       # slope unit: MB per `per` units
    total: int
    transport: str
    tracker: Tracker = field(default_factory=Tracker)
    seconds: float = 0.0
    before: Snapshot | None = None          # before the context opened
    start: Snapshot | None = None           # context open, data cached, nothing run yet
    end: Snapshot | None = None             # all work done, context still open
    after: Snapshot | None = None           # context closed (settled)
    transient: list[str] = field(default_factory=list)  # left just after close, gone within 2 s
    settle_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    bookkeeping: dict[str, Any] = field(default_factory=dict)
    bookkeeping_problems: list[str] = field(default_factory=list)
    metrics: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (records, bytes per record)
    driver_types: str = ""
    worker_types: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)      # results that were not what they must be
    extra: list[str] = field(default_factory=list)      # more lines to print
    per_cycle_left: list[str] = field(default_factory=list)  # part b: cycles that left something
    trimmed: dict[str, float] = field(default_factory=dict)  # process -> RSS MB at the end after malloc_trim(0)

    # ------------------------------------------------------------ verdict
    def worker_pairs(self) -> list[tuple[int, Proc, Proc | None]]:
        """(pid at start, worker at start, the same worker at the end or None if it is gone).

        Matched by pid, so a worker replaced mid-part shows; in part b every
        cycle has new workers, so the first cycle's are matched with the
        last's by position.
        """
        assert self.start is not None and self.end is not None
        first, last = sorted(self.start.workers.items()), sorted(self.end.workers.items())
        if self.name == "b":
            return [(pid, p, last[i][1] if i < len(last) else None) for i, (pid, p) in enumerate(first)]
        return [(pid, p, self.end.workers.get(pid)) for pid, p in first]

    def rss_growth(self) -> list[tuple[str, float]]:
        """(process, MB) from the start of the part to its end."""
        assert self.start is not None and self.end is not None
        out = [("driver", self.end.driver.rss_mb - self.start.driver.rss_mb)]
        for i, (_pid, p, q) in enumerate(self.worker_pairs()):
            out.append((f"worker {i}", (q.rss_mb - p.rss_mb) if q else float("nan")))
        return out

    def left(self) -> list[str]:
        """Everything left behind (the resource half of the verdict)."""
        assert self.before is not None and self.after is not None and self.start is not None and self.end is not None
        out = leftovers(self.before, self.after, self.tracker)
        for i, (pid, p, q) in enumerate(self.worker_pairs()):
            if q is None:
                out.append(f"worker {i} (pid {pid}) was gone by the end (replaced?)")
            elif q.fds > p.fds or q.threads > p.threads:
                out.append(f"worker {i} fds {p.fds} -> {q.fds}, threads {p.threads} -> {q.threads}")
        return out + self.bookkeeping_problems + self.per_cycle_left

    def flat(self) -> bool:
        growth = [g for _, g in self.rss_growth()]
        return all(g < BUDGET_MB for g in growth if not math.isnan(g)) and not self.left() and not self.wrong

    def slopes(self) -> list[float]:
        """MB per ``per`` units for the driver and each worker, fitted over the samples after the first."""
        pts = self.samples[1:] if len(self.samples) > 2 else self.samples
        xs = [s.progress for s in pts]
        series = [[s.driver.rss_mb for s in pts]]
        nw = min((len(s.workers) for s in pts), default=0)
        series += [[s.workers[i].rss_mb for s in pts] for i in range(nw)]
        return [_slope(xs, ys) * self.per for ys in series]


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def check_bookkeeping(report: dict[str, Any]) -> list[str]:
    """What a between-jobs ``ctx.bookkeeping()`` holds that it must not (all but cached blocks)."""
    problems = []
    driver = {k: v for k, v in report["driver"].items() if k != "cached_blocks" and v}
    if driver:
        problems.append(f"driver bookkeeping left: {driver}")
    held = 0
    for name, w in report["workers"].items():
        if w is None:
            problems.append(f"{name} did not answer DESCRIBE")
            continue
        held += w.get("cached_blocks", 0)
        # stage_durations is a bounded per-stage history (<= 256), not a leak
        left = {k: v for k, v in w.items() if k not in ("cached_blocks", "stage_durations") and v}
        if left:
            problems.append(f"{name} bookkeeping left: {left}")
        if w.get("stage_durations", 0) > 256:
            problems.append(f"{name} stage_durations {w['stage_durations']} > 256")
    if held != report["driver"].get("cached_blocks", 0):
        problems.append(f"workers hold {held} cached blocks, the driver knows of {report['driver']['cached_blocks']}")
    return problems


def _bookkeeping(ctx: dz.Context, res: PartResult) -> None:
    gc.collect()  # datasets gone out of scope drop their blocks now
    res.bookkeeping = ctx.bookkeeping()
    res.bookkeeping_problems = check_bookkeeping(res.bookkeeping)


def _probe_workers(ctx: dz.Context, probe: dz.Dataset) -> dict[int, Counter[str]]:
    """Each worker's live objects by type (the probe dataset has one partition per worker)."""
    out: dict[int, Counter[str]] = {}
    for part in ctx.run_jobs([(probe, worker_type_counts)], group_size=1)[0]:
        for pid, counts in part:
            out[pid] = Counter(counts)
    return out


def _sample(progress: int, t0: float, note: str = "") -> Sample:
    return Sample(progress, time.perf_counter() - t0, Proc.of("self"), [Proc.of(p) for p in worker_pids()], note)


def _live_datasets() -> int:
    gc.collect()
    return sum(isinstance(o, dz.Dataset) for o in gc.get_objects())


# ------------------------------------------------------------------ part a
def kv_mod3(x: float) -> tuple[int, int]:
    return int(x) % 3, 1


def part_sums(p: np.ndarray) -> list[float]:
    return [float(p.sum())]


def _jobs_of(data: dz.Dataset, n: int) -> Iterator[tuple[dz.Dataset, Callable[[Any], Any]]]:
    """Job i: kind i % 4 (see the module docstring); the shuffle and the map are fresh datasets each time."""
    for i in range(n):
        k = i % 4
        if k == 0:
            yield data, np.sum
        elif k == 1:
            yield data.map_partitions(part_sums), list
        elif k == 2:
            yield data.map(kv_mod3).reduce_by_key(operator.add, 2), sorted
        else:
            yield data, len


def soak_jobs(transport: str = "local", jobs: int = 100_000, workers: int = 2, samples: int = SAMPLES,
              action_every: int = 1000) -> PartResult:
    """Part a: ``jobs`` tiny jobs in one ``iter_jobs`` loop, ``group_size="auto"``."""
    res = PartResult("a", "jobs", 10_000, jobs, transport)
    values = np.arange(8.0)
    expected = _expected_jobs(values, workers)
    res.before = Snapshot.take(res.tracker)
    t0 = time.perf_counter()
    with dz.Context(transport=transport, workers=workers) as ctx:
        data = ctx.parallelize(values, workers).cache()
        # one of each kind first: the workers' peer connections open at the first shuffle (not a leak)
        ctx.run_jobs(list(_jobs_of(data, 8)), group_size=8)
        probe = ctx.parallelize(range(workers), workers).cache()
        w0 = _probe_workers(ctx, probe)
        d0 = type_counts()
        res.start = Snapshot.take(res.tracker)
        res.samples.append(_sample(0, t0))
        step = max(1, jobs // samples)
        results = ctx.iter_jobs(_jobs_of(data, jobs), group_size="auto")
        for job, out in enumerate(results):
            done = job + 1
            if job % 4 == 2:
                out = sorted(kv for part in out for kv in part)  # which reducer holds a key is the engine's choice
            if out != expected[job % 4] and len(res.wrong) < 5:
                res.wrong.append(f"job {job}: {out!r}, expected {expected[job % 4]!r}")
            if done % action_every == 0 and data.count() != len(values):
                res.wrong.append(f"data.count() inside the loop at job {job} was not {len(values)}")
            if done % step == 0 or done == jobs:
                res.samples.append(_sample(done, t0))
        _finish(ctx, res, probe, w0, d0)
        res.metrics["ctx.metrics (per group)"] = _metrics_size(ctx.metrics)
        sizes = Counter(m.jobs for m in ctx.metrics)
        res.extra.append(f"{sum(sizes.values())} groups; jobs per group (the nested count() actions are groups of 1): "
                         + ", ".join(f"{n} x {g}" for g, n in sorted(sizes.items(), key=lambda t: -t[1])[:5]))
        data.unpersist()
        probe.unpersist()
        del data, probe, results
    res.seconds = time.perf_counter() - t0
    res.after, res.transient, res.settle_s = settled(res.before, res.tracker)
    return res


def _expected_jobs(values: np.ndarray, workers: int) -> list[Any]:
    parts = np.array_split(values, workers)
    counts = Counter(int(x) % 3 for x in values)
    return [[float(p.sum()) for p in parts], [[float(p.sum())] for p in parts], sorted(counts.items()),
            [len(p) for p in parts]]


def _metrics_size(records: Sequence[Any]) -> tuple[int, float]:
    """Records appended (kept or not), and the bytes each kept one takes."""
    kept = list(records)
    if not kept:
        return len(records), 0.0
    return len(records), (deep_size(kept) - sys.getsizeof(kept)) / len(kept) + 8  # + its list slot


def _finish(ctx: dz.Context, res: PartResult, probe: dz.Dataset, w0: dict[int, Counter[str]],
            d0: Counter[str]) -> None:
    """End of a part with its context still open: object diffs, the end snapshot, bookkeeping."""
    w1 = _probe_workers(ctx, probe)
    res.driver_types = grown_types(d0, type_counts())
    res.worker_types = [f"pid {pid}: {grown_types(w0.get(pid, Counter()), c)}" for pid, c in sorted(w1.items())]
    res.end = Snapshot.take(res.tracker)
    _bookkeeping(ctx, res)
    res.trimmed = {"driver": malloc_trim()}
    pids = sorted(res.end.workers)
    for part in ctx.run_jobs([(probe, worker_trim)], group_size=1)[0]:
        for pid, mb in part:
            if pid in pids:
                res.trimmed[f"worker {pids.index(pid)}"] = mb


# ------------------------------------------------------------------ part b
def soak_cycles(transport: str = "local", cycles: int = 1000, workers: int = 2, samples: int = SAMPLES) -> PartResult:
    """Part b: ``cycles`` Context open/close cycles, each running one action and checking the bookkeeping.

    After every close the driver must be back where it was before the first
    open (fds, threads, children, our /dev/shm and SysV segments, socket
    directories). Something still there is looked at again for up to 2 s (a
    worker still exiting): what clears is reported as transient, what stays
    is left behind.
    """
    res = PartResult("b", "cycles", 100, cycles, transport)
    res.before = Snapshot.take(res.tracker)
    d0 = type_counts()
    step = max(1, cycles // samples)
    t0 = time.perf_counter()
    res.samples.append(_sample(0, t0))
    for c in range(cycles):
        sampled = (c + 1) % step == 0 or c + 1 == cycles
        with dz.Context(transport=transport, workers=workers) as ctx:
            if ctx.parallelize(range(10), workers).sum() != 45 and len(res.wrong) < 5:
                res.wrong.append(f"cycle {c}: sum was not 45")
            res.tracker.observe(descendants())
            if c == 0:
                res.start = Snapshot.take(res.tracker)
            if sampled:
                s = _sample(c + 1, t0)  # this cycle's workers; the driver is sampled again after the close
            if c + 1 == cycles:
                res.end = Snapshot.take(res.tracker)
            report = ctx.bookkeeping()
            problems = check_bookkeeping(report)
            if problems and len(res.bookkeeping_problems) < 5:
                res.bookkeeping_problems += [f"cycle {c}: {p}" for p in problems]
            if c + 1 == cycles:
                res.bookkeeping = report
        left = leftovers(res.before, Snapshot.take(res.tracker), res.tracker)
        if left:
            snap, _first, waited = settled(res.before, res.tracker)
            still = leftovers(res.before, snap, res.tracker)
            if still:
                if len(res.per_cycle_left) < 5:
                    res.per_cycle_left.append(f"cycle {c}: {still}")
            else:
                res.transient.append(f"cycle {c}: {left[0]} (cleared in {waited:.2f} s)")
        if sampled:
            s.driver = Proc.of("self")
            res.samples.append(s)
    res.seconds = time.perf_counter() - t0
    res.driver_types = grown_types(d0, type_counts())
    res.after, first, res.settle_s = settled(res.before, res.tracker)
    if first:
        res.transient.append(f"after the last cycle: {first}")
    res.extra.append(f"{cycles / res.seconds:.2f} cycles/s ({1e3 * res.seconds / cycles:.0f} ms per open, action, "
                     f"bookkeeping, close, and the checks)")
    return res


# ------------------------------------------------------------------ part c
def soak_stream(transport: str = "local", batches: int = 10_000, workers: int = 2, samples: int = SAMPLES,
                interval: float = 0.004, keys: int = 2, state_mb: float = 1.0) -> PartResult:
    """Part c: a ``batches``-batch stateful stream (soak_stream.py's), every state value checked."""
    res = PartResult("c", "batches", 1000, batches, transport)
    n = int(state_mb * (1 << 20) / 8)
    step = max(1, batches // samples)
    res.before = Snapshot.take(res.tracker)
    t0 = time.perf_counter()
    with dz.Context(transport=transport, workers=workers) as ctx:
        probe = ctx.parallelize(range(workers), workers).cache()
        w0 = _probe_workers(ctx, probe)
        d0 = type_counts()
        s = ctx.stream(dz.GeneratorSource(Events(keys, 2), 2), batch_interval=interval, group_size="auto")
        state = s.update_state_by_key(AddCounts(n), 2).map(first_element)

        def sink(records: list[tuple[str, float]], m: dz.BatchMetrics) -> None:
            if len(records) != keys and len(res.wrong) < 5:
                res.wrong.append(f"batch {m.batch}: {len(records)} keys, expected {keys}")
            for key, v in records:
                if v != m.batch + 1 and len(res.wrong) < 5:
                    res.wrong.append(f"batch {m.batch}: {key} = {v}, expected {m.batch + 1}")
            done = m.batch + 1
            if done % step == 0 or done == batches:
                res.samples.append(_sample(done, t0, f"{_live_datasets()} Datasets, latency {1e3 * m.latency:.1f} ms"))

        state.foreach_batch(sink)
        warm = max(1, min(batches // 50, 100))  # opens the workers' peer connections (the first shuffle)
        s.run(batches=warm)
        res.start = Snapshot.take(res.tracker)
        res.samples.append(_sample(warm, t0, f"{_live_datasets()} Datasets"))
        s.run(batches=batches - warm)
        summary = s.metrics_summary(skip=min(batches // 5, 2000))
        _finish(ctx, res, probe, w0, d0)
        res.metrics["Stream.metrics (per batch)"] = _metrics_size(s.metrics)
        res.metrics["ctx.metrics (per group)"] = _metrics_size(ctx.metrics)
        sizes = [m.jobs for m in ctx.metrics]
        res.extra.append(f"{interval * 1e3:g} ms batches, {keys} keys x {state_mb:g} MB state, checkpoint every "
                         f"{s.checkpoint_every}; {len(sizes)} groups, median {sorted(sizes)[len(sizes) // 2]} "
                         f"batches; latency p50 {summary.latency_p50 * 1e3:.1f} ms, p99 "
                         f"{summary.latency_p99 * 1e3:.1f} ms")
        probe.unpersist()
        del s, state, probe
    res.seconds = time.perf_counter() - t0
    res.after, res.transient, res.settle_s = settled(res.before, res.tracker)
    return res


# ------------------------------------------------------------------ report
def report(res: PartResult) -> None:
    assert res.start is not None and res.end is not None and res.before is not None and res.after is not None
    title = {"a": f"{res.total:,} tiny jobs, one iter_jobs loop, group_size=\"auto\"",
             "b": f"{res.total:,} Context open/close cycles",
             "c": f"{res.total:,}-batch stateful stream"}[res.name]
    print(f"\n=== part {res.name}: {title} ({res.transport}, {res.seconds:.0f} s)")
    for line in res.extra:
        print(line)
    nw = max((len(s.workers) for s in res.samples), default=0)
    headers = [res.unit, "s", "driver MB", *[f"worker {i} MB" for i in range(nw)], "driver fds", "driver threads",
               *[f"w{i} fds/threads" for i in range(nw)], ""]
    rows = []
    for s in res.samples:
        ws = s.workers + [Proc(float("nan"), -1, -1)] * (nw - len(s.workers))
        rows.append([f"{s.progress:,}", f"{s.seconds:.1f}", f"{s.driver.rss_mb:.1f}", *[f"{w.rss_mb:.1f}" for w in ws],
                     s.driver.fds, s.driver.threads, *[f"{w.fds}/{w.threads}" for w in ws], s.note])
    print(table(headers, rows))
    slopes = res.slopes()
    names = ["driver"] + [f"worker {i}" for i in range(len(slopes) - 1)]
    print(f"RSS slope after the first sample (MB per {res.per:,} {res.unit}): "
          + ", ".join(f"{n} {x:+.2f}" for n, x in zip(names, slopes)))
    if res.name == "b":
        print("(part b's workers are new in every cycle: their columns are that cycle's fresh workers)")
    growth = res.rss_growth()
    if res.trimmed:
        start = {"driver": res.start.driver.rss_mb}
        start.update({f"worker {i}": p.rss_mb for i, (_pid, p, _q) in enumerate(res.worker_pairs())})
        trimmed = sorted(res.trimmed.items(), key=lambda t: (t[0] != "driver", t[0]))
        print("RSS at the end after malloc_trim(0), growth from start (MB): "
              + ", ".join(f"{n} {mb:.1f} ({mb - start.get(n, float('nan')):+.1f})" for n, mb in trimmed)
              + "  (what falls back was freed memory the allocator kept, not live data)")
    peaks = [("driver", res.end.driver.peak_mb)] + [(f"worker {i}", q.peak_mb if q else float("nan"))
                                                    for i, (_pid, _p, q) in enumerate(res.worker_pairs())]
    print("peak RSS over the process's life (VmHWM, MB): " + ", ".join(f"{n} {mb:.1f}" for n, mb in peaks))
    print("RSS growth from start to end (MB): " + ", ".join(f"{n} {g:+.1f}" for n, g in growth)
          + f"; driver before open {res.before.driver.rss_mb:.1f} MB, after close {res.after.driver.rss_mb:.1f} MB")
    b, a = res.before, res.after
    print(f"driver before open -> after close: fds {b.driver.fds} -> {a.driver.fds}, threads {b.driver.threads} -> "
          f"{a.driver.threads}, descendant processes {len(b.children)} -> {len(a.children)} "
          f"(zombies {sum(s == 'Z' for _pp, s, _c in a.children.values())}), /dev/shm {len(b.shm)} -> {len(a.shm)}, "
          f"SysV segments {len(b.sysv)} -> {len(a.sysv)}, socket dirs {len(b.dirs)} -> {len(a.dirs)}")
    for i, (pid, p, q) in enumerate(res.worker_pairs()):
        span = "first cycle -> last cycle" if res.name == "b" else "start -> end"
        print(f"worker {i} (pid {pid}) {span}: fds {p.fds} -> {q.fds if q else '-'}, threads {p.threads} -> "
              f"{q.threads if q else '-'}")
    print(f"live objects grown, driver: {res.driver_types}")
    for line in res.worker_types:
        print(f"live objects grown, worker {line}")
    for name, (count, per) in res.metrics.items():
        print(f"{name}: {count:,} records, {per:.0f} bytes each, {count * per / 2**20:.2f} MB "
              f"(kept by design; not part of the verdict)")
    print(f"bookkeeping before close: driver {res.bookkeeping.get('driver')}")
    for name, w in res.bookkeeping.get("workers", {}).items():
        print(f"  {name}: {w}")
    if res.transient:
        print(f"left just after close, gone within {max(res.settle_s, 0):.2f} s: {res.transient[:3]}"
              + (f" (+{len(res.transient) - 3} more)" if len(res.transient) > 3 else ""))
    left = res.left()
    worst = max(growth, key=lambda t: -1e9 if math.isnan(t[1]) else t[1])
    verdict = "FLAT" if res.flat() else "NOT FLAT"
    print(f"{verdict}: largest RSS growth {worst[1]:+.1f} MB ({worst[0]}), budget {BUDGET_MB:g} MB; "
          f"left behind: {left if left else 'nothing'}" + (f"; WRONG results: {res.wrong}" if res.wrong else ""))


def warm_up(transport: str = "local", workers: int = 2) -> None:
    """Open and close one Context, so what a process sets up once is not counted as a part's growth.

    Once per process: imports, plugin discovery, and the spawner thread
    (``drizzle_core.net._process``: the one thread that starts every worker
    process, so the parent-death signal outlives the thread that made a
    Context; it lives as long as the process, by design).
    """
    with dz.Context(transport=transport, workers=workers) as ctx:
        ctx.parallelize(range(4), workers).count()
    tracker = Tracker()
    settled(Snapshot.take(tracker), tracker, wait=2.0)


def _short(path: str) -> str:
    """A traceback file name without its site-packages (or working directory) prefix."""
    _head, sep, tail = path.rpartition("site-packages/")
    return tail if sep else os.path.relpath(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--transport", default="local", choices=["local", "tcp", "inline"])
    ap.add_argument("--quick", action="store_true", help="10x smaller, a smoke run")
    ap.add_argument("--only", default="a,b,c", help="comma-separated parts: a, b, c")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trace", action="store_true", help="tracemalloc on the driver: top growth by file:line")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if not parts or any(p not in ("a", "b", "c") for p in parts):
        ap.error(f"--only takes a comma-separated subset of a,b,c, got {args.only!r}")
    scale = 10 if args.quick else 1
    print(f"soak: parts {','.join(parts)}, {args.transport} transport, {args.workers} workers"
          f"{', quick (10x smaller)' if args.quick else ''}; pid {os.getpid()}")
    warm_up(args.transport, args.workers)
    runs: dict[str, Callable[[], PartResult]] = {
        "a": lambda: soak_jobs(args.transport, 100_000 // scale, args.workers),
        "b": lambda: soak_cycles(args.transport, 1000 // scale, args.workers),
        "c": lambda: soak_stream(args.transport, 10_000 // scale, args.workers),
    }
    verdicts = []
    for p in parts:
        if args.trace:
            tracemalloc.start(10)
            snap0 = tracemalloc.take_snapshot()
        res = runs[p]()
        report(res)
        if args.trace:
            snap1 = tracemalloc.take_snapshot()
            tracemalloc.stop()
            print("tracemalloc, driver, top growth over the part:")
            for stat in snap1.compare_to(snap0, "traceback")[:8]:
                frames = " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in list(stat.traceback)[-3:])
                print(f"  {stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks: {frames}")
        verdicts.append(f"part {p}: {'FLAT' if res.flat() else 'NOT FLAT'}")
    print("\n" + "; ".join(verdicts))
    return 0 if all(v.endswith(": FLAT") for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
