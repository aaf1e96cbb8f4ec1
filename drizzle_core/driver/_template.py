"""Execution templates: a job that repeats a shape already planned is stamped, not planned again.

Why. The jobs of an iterative or streaming program repeat: iteration i of
``iterate`` builds the same three datasets as iteration i-1 over a new
state, a micro-batch the same pipeline over new data, a repeated query the
very same datasets. Planning walks every partition of every job (2.7 us a
task) and the launch pickles every task (1.5-2.2 us, 47 bytes) and, for new
datasets, every node again (76 us a k-means iteration): driver work that
grows with G and with the task count, on the path of every group.

What. The first job of a shape is planned as always, and its plan becomes a
:class:`Template`: its tasks, placement, routes and forwards, its nodes
under the ids they had. A later job of the same :class:`Shape` gets only
what is its own: the ids of its datasets and shuffles, its job number,
its first task index and its micro-batch time (an *instance*, about a dozen
integers). Each worker receives its share of a template once and keeps it
(an LRU mirrored by the driver, like programs), and stamps a group's
instances into tasks itself. The driver records each instance in the plan
as one segment of :class:`TaskTable` and computes a task only when it needs
one (an error, a recovery, a trace).

When a job has the same shape. Walking the job's datasets from its final
one, stopping at cached datasets whose blocks all exist (*externals*: the
cached input data, the state the previous iteration left), two jobs have
the same shape when, position by position in that walk, the nodes are of
the same kind and run the same code (:func:`~drizzle_core.lineage.op_key`),
with the same partitions, caching and parents, and every external's blocks
are on the same workers; and the live workers are the same. So placement,
which depends on nothing else (once no cached block is waiting to move,
``Planner.moves``), comes out the same, and a stamped job is planned exactly
as the planner would have planned it. Anything the walk does not know (a
node kind it cannot rename, a cached dataset half made, a shuffle another
job of the group already runs, two micro-batch times in one job) is
planned as always.
"""

from __future__ import annotations

import itertools
import pickle
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..lineage import RENAMEABLE, ShuffleDep, ShuffleReadNode, SourceNode, op_key
from ..protocol import MAP, RESULT, Block, Task, pack_instances, stamp

TEMPLATES_KEPT = 64  # templates the driver keeps (least recently used goes); workers keep as many


class Shape(NamedTuple):
    """One job's shape (``key``) and what a stamped copy of it needs from this job."""

    key: tuple[Any, ...]
    datasets: list[Any]                # the walk's datasets, in walk order (locals and externals)
    shuffles: list[ShuffleDep]         # the local shuffle dependencies, in walk order
    locals: tuple[int, ...]            # walk positions of the datasets the job computes (not externals)
    start: float                       # the job's micro-batch time (SourceNode.start_at), 0.0 for none


def shape_of(ds: Any, func: Any, workers: tuple[int, ...], located: dict[Block, int], runs: dict[int, int],
             memo: dict[int, tuple[int, ...]], keys: dict[int, tuple[Any, Any]]) -> Shape | None:
    """``ds``'s job's shape, or None when the job cannot be templated (see the module docstring).

    ``memo`` keeps the locations of externals found whole, for the life of
    one group's plan: blocks that exist stay where they are while it is
    planned, so ``data``'s 512 partitions are looked up once, not per job.
    ``keys`` keeps op keys by function id (with the function, so the id
    stays its own): an iterate's ops are the same objects every iteration.
    """

    def key(f: Any) -> Any:
        hit = keys.get(id(f))
        if hit is None:
            hit = keys[id(f)] = (f, op_key(f))
        return hit[1]

    # (Written for speed: it runs for every job of every group, ~10 us for an iterate step.)
    order: list[Any] = []
    pos: dict[int, int] = {}
    ext: dict[int, tuple[int, ...]] = {}
    live = frozenset(workers)
    stack = [ds]
    while stack:
        d = stack.pop()
        node = d.node
        nid = node.id
        if nid in pos:
            continue
        pos[nid] = len(order)
        order.append(d)
        if d.is_cached:
            locs = memo.get(nid)  # found whole before: all on live workers (no per-job walk of 512 partitions)
            if locs is None:
                locs = tuple([located.get(("c", nid, q), -1) for q in range(node.num_partitions)])
                if live.issuperset(locs):
                    memo[nid] = locs
                elif any(w >= 0 for w in locs):
                    return None  # partly made: the planner reads some partitions and computes others
                else:
                    locs = None
            if locs is not None:
                ext[len(order) - 1] = locs
                continue
        if type(node) not in RENAMEABLE:
            return None
        parents = d.parents
        if len(parents) == 1:
            stack.append(parents[0])
        else:
            stack.extend(reversed(parents))
    entries: list[Any] = []
    shuffles: list[ShuffleDep] = []
    start = 0.0
    for i, d in enumerate(order):
        locs = ext.get(i)
        if locs is not None:
            entries.append(locs)
            continue
        node = d.node
        t = type(node)
        parents = tuple([pos[p.node.id] for p in d.parents])
        if t is SourceNode:
            at = node.start_at
            if at is not None:
                if start and at != start:
                    return None  # two micro-batch times in one job: not one instance value
                start = at
            prefer = tuple(node.prefer) if node.prefer is not None else None
            entries.append((t, node.num_partitions, at is not None, prefer, d.is_cached))
        elif t is ShuffleReadNode:
            deps = []
            for dep in node.deps:
                if dep.shuffle_id in runs:
                    return None  # another job of this group runs that shuffle: this job reads it only
                shuffles.append(dep)
                deps.append((key(dep.split), key(dep.local_combine), dep.combine_slots, dep.num_map_partitions))
            entries.append((t, node.num_partitions, key(node.merge), tuple(deps), d.is_cached, parents))
        else:
            fn = getattr(node, "fn", None)
            hit = keys.get(id(fn))
            entries.append((t, node.num_partitions, hit[1] if hit is not None else key(fn),
                            getattr(node, "counts", None), d.is_cached, parents))
    n = len(order)
    local = () if len(ext) == n else tuple(range(n)) if not ext else tuple([i for i in range(n) if i not in ext])
    return Shape((key(func), workers, tuple(entries)), order, shuffles, local, start)


class _Slice(NamedTuple):
    """One worker's share of a template, as it travels (once) to that worker."""

    ids: tuple[int, ...]               # the template job's dataset ids, in walk order
    shuffles: tuple[int, ...]          # its shuffle ids
    runs: tuple[int, ...]              # its shuffle runs, aligned with ``shuffles``
    start: float                       # its micro-batch time (0.0: none)
    locals: tuple[int, ...]            # walk positions of the nodes it computes (to stamp out renamed)
    tasks: tuple[tuple[Any, ...], ...]  # its tasks on this worker (index relative to the job's first task)
    routes: dict[int, tuple[tuple[int, ...], ...]]  # run -> dests per reduce partition, for runs mapped here


class Template:
    """One job's plan, made reusable; see the module docstring."""

    def __init__(self, tid: int, shape: Shape, tasks: list[Task], worker_of: list[int], routes: dict[int, Any],
                 combined: dict[int, tuple[int, ...]], located: dict[Block, int], sources: list[tuple[int, Any]],
                 runs: tuple[int, ...], func: Any, stage_labels: dict[int, str]) -> None:
        self.id = tid
        self.key = shape.key
        order = shape.datasets
        self.ids = tuple(d.node.id for d in order)
        self.local_pos = shape.locals
        # Nodes as they go into programs: sources without their data (each batch brings its own).
        self.nodes = {}
        for i in self.local_pos:
            n = order[i].node
            self.nodes[n.id] = SourceNode(n.id, [None] * n.num_partitions, n.label, n.start_at, n.prefer) \
                if type(n) is SourceNode else n
        self.shuffles = tuple(dep.shuffle_id for dep in shape.shuffles)
        self.runs = runs
        self.start = shape.start
        self.func = func
        self.stage_labels = {t.stage: stage_labels[t.stage] for t in tasks}
        base = tasks[0].index
        rel = [(t.index - base, 0, *t[2:]) for t in tasks]
        self.tasks = [Task._make(t) for t in rel]
        self.worker_of = list(worker_of)
        self.results = {r: t.partition for r, t in enumerate(self.tasks) if t.kind == RESULT}
        self.routes = {run: tuple(frozenset(s) for s in routes[run]) for run in runs}
        self.combined = {run: combined[run] for run in runs if run in combined}
        stores: list[tuple[int, int, int]] = []
        forwards: list[tuple[Block, int, int]] = []
        reads: set[int] = set()
        seen: set[tuple[Block, int]] = set()
        for t, w in zip(self.tasks, self.worker_of):
            for block in t.inputs:
                reads.add(block[1])
                loc = located[block]
                if loc != w and (block, w) not in seen:
                    seen.add((block, w))
                    forwards.append((block, w, loc))
            for nid, q in t.stores:
                reads.add(nid)
                stores.append((nid, q, w))
        self.stores = stores
        self.forwards = forwards
        self.reads = tuple(reads)
        # a source partition's data comes from the stamped job's own node, found by its walk position
        where = {nid: i for i, nid in enumerate(self.ids)}
        self.sources: list[tuple[int, int, int]] = [(w, where[key[0]], key[1]) for w, key in sources]
        self.slices: dict[int, _Slice] = {}
        per: dict[int, list[tuple[Any, ...]]] = {}
        for r, w in zip(rel, self.worker_of):
            per.setdefault(w, []).append(r)
        mapped: dict[int, set[int]] = {}  # worker -> the runs it maps for
        for task, w in zip(self.tasks, self.worker_of):
            if task.kind == MAP:
                mapped.setdefault(w, set()).add(task.out[2])
        for w, ts in per.items():
            self.slices[w] = _Slice(self.ids, self.shuffles, self.runs, self.start, self.local_pos, tuple(ts),
                                    {run: tuple(tuple(sorted(d)) for d in self.routes[run])
                                     for run in sorted(mapped.get(w, ()))})


class Instance(NamedTuple):
    """A stamped job: what it has of its own (the wire form, minus ``template``)."""

    template: Template
    base: int                          # its first task index in the group
    job: int
    ids: tuple[int, ...]               # its datasets' ids, aligned with Template.ids
    shuffles: tuple[int, ...]
    runs: tuple[int, ...]
    start: float

    def wire(self) -> tuple[Any, ...]:
        return (self.base, self.job, self.ids, self.shuffles, self.runs, self.start)


class TaskTable:
    """A group's tasks: those planned one by one, and stamped jobs kept as one segment each.

    Indexes are contiguous over both. A stamped task is made only when asked
    for (``task``): results need only ``result_of`` and ``worker``, which a
    segment answers by arithmetic.
    """

    __slots__ = ("_explicit", "_last", "_len", "_segs", "_starts", "_workers")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._segs: list[Any] = []           # list[Task] (explicit), or an Instance
        self._workers: list[Any] = []        # list[int] aligned with an explicit segment, or None
        self._explicit: list[Task] | None = None
        self._len = 0
        self._last: tuple[int, int, Any, int] = (0, 0, None, -1)  # (start, end, Instance, segment) result_of found last

    def __len__(self) -> int:
        return self._len

    def append(self, task: Task, worker: int) -> None:
        if self._explicit is None:
            self._explicit = []
            self._starts.append(self._len)
            self._segs.append(self._explicit)
            self._workers.append([])
        self._explicit.append(task)
        self._workers[-1].append(worker)
        self._len += 1

    def add_instance(self, inst: Instance) -> None:
        self._explicit = None
        self._starts.append(self._len)
        self._segs.append(inst)
        self._workers.append(None)
        self._len += len(inst.template.tasks)

    def _find(self, index: int) -> tuple[Any, int, int]:
        if not 0 <= index < self._len:
            raise IndexError(index)
        s = bisect_right(self._starts, index) - 1
        return self._segs[s], index - self._starts[s], s

    def task(self, index: int) -> Task:
        seg, off, _ = self._find(index)
        if type(seg) is list:
            return seg[off]  # type: ignore[no-any-return]
        inst: Instance = seg
        tm = inst.template
        return stamp(tm.tasks[off], inst.base, inst.job, dict(zip(tm.ids, inst.ids)),
                     dict(zip(tm.shuffles, inst.shuffles)), dict(zip(tm.runs, inst.runs)), tm.start, inst.start)

    def worker(self, index: int) -> int:
        seg, off, s = self._find(index)
        if type(seg) is list:
            return self._workers[s][off]  # type: ignore[no-any-return]
        return seg.template.worker_of[off]  # type: ignore[no-any-return]

    def result_of(self, index: int) -> tuple[int, int] | None:
        """``(job, partition)`` of a result task; None for a map task."""
        start, end, inst, s = self._last
        if start <= index < end:  # results arrive in runs of a segment's tasks: skip the search
            p = inst.template.results.get(index - start)
            return None if p is None else (inst.job, p)
        starts = self._starts
        n = s + 1
        if index >= end and n < len(starts) and (n + 1 == len(starts) or index < starts[n + 1]) \
                and index < self._len:
            seg, off, s = self._segs[n], index - starts[n], n  # the segment after the last one: no search
        else:
            seg, off, s = self._find(index)
        if type(seg) is list:
            t = seg[off]
            return (t.job, t.partition) if t.kind == RESULT else None
        self._last = (starts[s], starts[s] + len(seg.template.tasks), seg, s)
        p = seg.template.results.get(off)
        return None if p is None else (seg.job, p)

    def __iter__(self) -> Iterator[Task]:
        for i in range(self._len):
            yield self.task(i)

    def __getitem__(self, index: int) -> Task:
        return self.task(index)

    def explicit(self) -> Iterator[tuple[Task, int]]:
        """The tasks planned one by one, with their workers."""
        for seg, ws in zip(self._segs, self._workers):
            if type(seg) is list:
                yield from zip(seg, ws)

    def instances(self) -> Iterator[Instance]:
        for seg in self._segs:
            if type(seg) is not list:
                yield seg


class Templates:
    """The driver's templates (an LRU by shape key), and the mirror of which worker holds which."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], Template] = {}
        self._ids = itertools.count(1)
        self.enabled = True

    def get(self, key: tuple[Any, ...]) -> Template | None:
        t = self.by_key.get(key)
        if t is not None:
            self.by_key[key] = self.by_key.pop(key)  # most recently used last
        return t

    def new_id(self) -> int:
        return next(self._ids)

    def add(self, t: Template) -> None:
        self.by_key[t.key] = t
        while len(self.by_key) > TEMPLATES_KEPT:
            del self.by_key[next(iter(self.by_key))]

    def clear(self) -> None:
        self.by_key.clear()


def encode_instances(instances: list[Instance]) -> dict[int, bytes]:
    """Per template id, its instances' wire form pickled once (every worker of the group shares the bytes).

    Packed as arithmetic runs (``protocol.pack_instances``): a loop's G jobs
    are one run, so the bytes do not grow with G.
    """
    per: dict[int, list[tuple[Any, ...]]] = {}
    for inst in instances:
        per.setdefault(inst.template.id, []).append(inst.wire())
    return {tid: pickle.dumps(pack_instances(v), protocol=5) for tid, v in per.items()}
