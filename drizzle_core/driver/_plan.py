"""Planner: a group of jobs → stages → tasks placed on workers.

For a group of G jobs the planner, in one pass on the driver:

1. cuts each job's lineage into *stages* at shuffle dependencies (a walk with
   an explicit stack; lineages 10,000 deep are fine), parents first; a
   shuffle needed by several jobs of the group runs once (one *run*);
2. plans one *task* per stage partition. A per-partition walk follows narrow
   dependencies and stops at cached blocks that exist, or that an earlier task
   of this group will create; those are the task's block inputs, and the task
   goes where they are (locality), so state carried through a cached dataset
   stays on one worker. Tasks that must create a cached block record it in
   ``stores``. Other tasks go to ``workers[p % W]``;
3. *pre-schedules* reduce tasks: their placement fills ``routes``, which map
   tasks use to push each bucket straight to the reducer's worker — before
   any input exists, and with no driver in between.

Block ids (shared with the worker runtime):
    ("c", node_id, partition)                      a cached partition
    ("s", group, run, map_partition, reduce_part)  a shuffle bucket
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .._errors import WorkerLostError
from ..lineage import Node, ShuffleReadNode, SourceNode, combined_slots
from ..protocol import MAP, RESULT, Block, Task
from ._template import Instance, TaskTable, Template, Templates, shape_of


class Dataset(Protocol):
    """What the planner reads of a dataset: a lineage view (:class:`drizzle_core.Dataset` is one).

    Declared here so the planner depends on no API class: the layer above
    hands it anything with these attributes.
    """

    @property
    def node(self) -> Node: ...
    @property
    def parents(self) -> tuple[Dataset, ...]: ...
    @property
    def is_cached(self) -> bool: ...
    @property
    def num_partitions(self) -> int: ...
    @property
    def id(self) -> int: ...

@dataclass
class GroupPlan:
    """Everything the scheduler needs to launch and track one group."""

    group: int
    jobs: list[tuple[int, Any, Any]] = field(default_factory=list)  # (job number, dataset, function)
    tasks: TaskTable = field(default_factory=TaskTable)         # task index -> task, and its worker
    routes: dict[int, list[set[int]]] = field(default_factory=dict)  # run -> dests per reduce partition
    forwards: dict[int, list[tuple[Block, int]]] = field(default_factory=dict)  # worker -> [(block, dest)]
    forwarded: set[tuple[int, Block, int]] = field(default_factory=set)        # (worker, block, dest) in forwards
    instances: list[Instance] = field(default_factory=list)     # stamped jobs (execution templates)
    stamped_runs: dict[int, tuple[Template, int]] = field(default_factory=dict)  # run -> (template, its run)
    dirty_runs: set[int] = field(default_factory=set)   # stamped runs that jobs planned later read too
    hold: float = 0.0   # seconds workers may keep its results before sending them (batched; ``run``'s hold)
    nodes: dict[int, Node] = field(default_factory=dict)
    funcs: dict[int, Callable[..., Any]] = field(default_factory=dict)
    new_cache: dict[Block, int] = field(default_factory=dict)    # cached block -> worker, made by this group
    made_of: dict[int, list[Block]] = field(default_factory=dict)  # node -> its blocks in new_cache
    # worker -> the source partitions (node id, partition) its tasks compute, with their node: each
    # travels only to its worker, in that worker's launch, not in the program every worker gets
    sources: dict[int, dict[tuple[int, int], SourceNode]] = field(default_factory=dict)
    source_log: list[tuple[int, tuple[int, int]]] | None = None  # (worker, source key) while a job is recorded
    job_partitions: dict[int, int] = field(default_factory=dict)
    stage_labels: dict[int, str] = field(default_factory=dict)
    run_of_worker: dict[int, set[int]] = field(default_factory=dict)  # worker -> runs it maps for
    # run -> {combine slot: workers that map its partitions}, for pre-combined shuffles (ShuffleDep)
    slot_mappers: dict[int, dict[int, set[int]]] = field(default_factory=dict)
    combined: dict[int, tuple[int, ...]] = field(default_factory=dict)  # run -> the blocks its reducers read
    # node -> the last job of the group whose tasks read or make its cached blocks: an
    # unpersisted dataset's blocks can go once that job is done, not the whole group
    read_by: dict[int, int] = field(default_factory=dict)

    def forward(self, loc: int, block: Block, dest: int) -> None:
        """``loc`` sends ``block`` to ``dest`` once it exists (once per group, however many tasks read it)."""
        key = (loc, block, dest)
        if key not in self.forwarded:
            self.forwarded.add(key)
            self.forwards.setdefault(loc, []).append((block, dest))


class _Stage(NamedTuple):
    dataset: Any               # the stage's final Dataset
    reader: Any                # MAP: the ShuffleRead dataset consuming it; RESULT: None
    dep_index: int


class Planner:
    """Turns groups of jobs into GroupPlans. Keeps only id counters between groups."""

    def __init__(self) -> None:
        self._stage_ids = itertools.count()
        self._run_ids = itertools.count()
        self.next_group = 1
        #: cached blocks to move to another worker the next time a job reads them: block -> that worker.
        #: The scheduler fills it when a worker joins (a replacement, an added worker), so cached data
        #: recomputed on the survivors spreads out again instead of keeping the newcomer idle; the move
        #: rides on the reading job (the block is forwarded to the reader, which keeps it), no extra message.
        self.moves: dict[Block, int] = {}
        self.templates = Templates()

    def plan(
        self,
        jobs: Iterable[tuple[int, Dataset, Callable[[Any], Any]]],
        workers: Sequence[int],
        cache_locations: dict[Block, int],
    ) -> GroupPlan:
        """Plan ``jobs`` (``(job number, dataset, function)``) on ``workers``.

        ``jobs`` is consumed lazily, one job planned before the next is pulled.

        ``cache_locations`` maps cached blocks that exist now (or that a
        running group will leave) to their worker; it is not modified (the
        scheduler commits ``plan.new_cache`` once the group has finished).
        """
        builder = self.begin(workers, cache_locations)
        for job, ds, func in jobs:
            builder.add(job, ds, func)
        return builder.plan

    def begin(self, workers: Sequence[int], cache_locations: dict[Block, int]) -> PlanBuilder:
        """Start a group's plan and add its jobs one at a time (see :class:`PlanBuilder`)."""
        if not workers:
            raise WorkerLostError("no live worker is left to run jobs on", worker="")
        plan = GroupPlan(group=self.next_group)
        self.next_group += 1
        return PlanBuilder(self, plan, tuple(workers), dict(cache_locations))

    # ------------------------------------------------------------------ stages
    def _stages(self, final: Dataset, located: dict[Block, int], runs: dict[int, int]) -> list[_Stage]:
        """The job's stages that must run, parents before children.

        A depth-first post-order with an explicit stack: a stage is emitted
        after every shuffle it reads, and marked when emitted (a shuffle read
        both by the final stage and by another shuffle's map side is pushed
        twice and emitted once, before both).
        """
        order: list[_Stage] = []
        emitted: set[int] = set()  # shuffle ids whose map stage is in ``order``
        stack: list[tuple[_Stage, bool]] = [(_Stage(final, None, 0), False)]
        while stack:
            stage, expanded = stack.pop()
            sid = stage.reader.node.deps[stage.dep_index].shuffle_id if stage.reader is not None else None
            if expanded:
                if sid is None or sid not in emitted:
                    if sid is not None:
                        emitted.add(sid)
                    order.append(stage)
                continue
            if sid is not None and sid in emitted:
                continue
            stack.append((stage, True))
            for reader, i in _shuffle_reads(stage.dataset, located):
                dep = reader.node.deps[i]  # type: ignore[attr-defined]  # a ShuffleReadNode
                if dep.shuffle_id not in runs and dep.shuffle_id not in emitted:
                    stack.append((_Stage(reader.parents[i], reader, i), False))
        return order

    # ------------------------------------------------------------------- tasks
    def _plan_stage(self, plan: GroupPlan, job: int, ds: Dataset, kind: int, out: tuple[Any, ...],
                    workers: Sequence[int], located: dict[Block, int], runs: dict[int, int]) -> None:
        stage_id = next(self._stage_ids)
        plan.stage_labels[stage_id] = ds.node.label
        live = set(workers)
        nw = len(workers)
        combine_dep = None  # the map side of a pre-combined shuffle: its slots' workers are recorded
        if kind == MAP:
            dep = plan.nodes[out[0]].deps[out[1]]  # type: ignore[attr-defined]  # a ShuffleReadNode
            if dep.local_combine is not None:
                combine_dep = dep
        for p in range(ds.num_partitions):
            inputs: list[tuple[Block, int]] = []
            stores: list[tuple[int, int]] = []
            shuffle_in: dict[tuple[int, int], tuple[Any, ...]] = {}
            prefer = -1
            not_before = 0.0
            stack = [(ds, p, False)]
            visited: set[tuple[int, int]] = set()
            sources: list[tuple[tuple[int, int], SourceNode]] = []
            while stack:
                d, q, broadcast = stack.pop()
                key = (d.node.id, q)
                if key in visited:
                    continue
                visited.add(key)
                node = d.node
                if d.is_cached:
                    block = ("c", node.id, q)
                    loc = located.get(block)
                    if loc is not None and loc in live:
                        # read, not computed: the node (and its data) stays off the wire
                        inputs.append((block, loc))
                        if prefer < 0 and not broadcast:
                            to = self.moves.pop(block, loc) if self.moves else loc
                            if to != loc and to in live:
                                prefer = to  # moved: forwarded to the reader, which keeps it from now on
                                stores.append(key)
                            else:
                                prefer = loc  # a broadcast input (a model, a state) goes where the data is
                        continue
                    stores.append(key)
                plan.nodes[node.id] = node
                if type(node) is SourceNode:
                    sources.append((key, node))
                    here = node.prefer[q] if node.prefer is not None and prefer < 0 and not broadcast else None
                    if here is not None and here in live:
                        prefer = here
                start_at = getattr(node, "start_at", None)
                if start_at is not None and start_at > not_before:
                    not_before = start_at
                if type(node) is ShuffleReadNode:
                    for dep in node.deps:
                        run = runs[dep.shuffle_id]
                        by = None
                        if dep.local_combine is not None:
                            # pre-combined: one block per slot a single worker maps, else the slot's
                            # partitions' blocks; a tree fixed by the lineage, not by the placement
                            by = plan.combined.get(run)
                            if by is None:
                                by = plan.combined[run] = combined_slots(dep, plan.slot_mappers.get(run, {}))
                        shuffle_in[(dep.shuffle_id, q)] = (dep.shuffle_id, run, dep.num_map_partitions, by, q)
                    continue
                parents = d.parents
                bcast = node.broadcast_inputs
                # Reversed: the first input is walked first, so its block decides locality.
                inputs_of = node.narrow_inputs(q)
                for i in range(len(inputs_of) - 1, -1, -1):
                    parent_id, pq = inputs_of[i]
                    for parent in parents:
                        if parent.node.id == parent_id:
                            stack.append((parent, pq, broadcast or i in bcast))
                            break
            w = prefer if prefer >= 0 else workers[p % nw]
            index = len(plan.tasks)
            if sources:
                plan.sources.setdefault(w, {}).update(sources)
                if plan.source_log is not None:
                    plan.source_log.extend((w, k) for k, _ in sources)
            read_by = plan.read_by
            for block, loc in inputs:
                read_by[block[1]] = job
                if loc != w:
                    plan.forward(loc, block, w)
            for node_id, q in stores:
                read_by[node_id] = job
                located[("c", node_id, q)] = w
                plan.new_cache[("c", node_id, q)] = w
                plan.made_of.setdefault(node_id, []).append(("c", node_id, q))
            for entry in shuffle_in.values():
                plan.routes[entry[1]][entry[4]].add(w)
                if entry[1] in plan.stamped_runs:
                    plan.dirty_runs.add(entry[1])  # read by a reducer the template's mappers do not know of
            if kind == MAP:
                plan.run_of_worker.setdefault(w, set()).add(out[2])
                if combine_dep is not None:
                    plan.slot_mappers.setdefault(out[2], {}).setdefault(combine_dep.slot_of(p), set()).add(w)
            plan.tasks.append(Task(index, job, stage_id, ds.node.id, p, kind, out,
                                   tuple(b for b, _ in inputs), tuple(shuffle_in.values()),
                                   tuple(stores), 0, not_before), w)


class PlanBuilder:
    """One group's plan, built a job at a time.

    Why incremental: the scheduler plans the next group while the current one
    runs, and must keep reading results meanwhile (a 250-job group took 270 ms
    to plan in one piece, holding back the running group's results). It adds
    a few jobs between polls of the transport instead.
    """

    __slots__ = ("keys", "last", "located", "memo", "plan", "planner", "runs", "stamped", "workers")

    def __init__(self, planner: Planner, plan: GroupPlan, workers: tuple[int, ...],
                 located: dict[Block, int]) -> None:
        self.planner = planner
        self.plan = plan
        self.workers = workers
        self.located = located             # cached blocks that exist, or that earlier tasks make
        self.runs: dict[int, int] = {}      # shuffle_id -> run, for this group
        self.memo: dict[int, tuple[int, ...]] = {}   # externals' block locations (templates' shape walk)
        self.keys: dict[int, tuple[Any, Any]] = {}   # op keys by function id (the same)
        self.stamped: set[int] = set()      # templates this group has stamped (their nodes are in the program)
        self.last: tuple[Any, ...] | None = None  # (dataset, function, shape, ids) of the last all-cached job

    def add(self, job: int, ds: Dataset, func: Callable[[Any], Any]) -> None:
        """Plan every stage of one job that must run (shuffles already planned in the group run once).

        A job of a shape planned before is stamped from its template
        (``_template``); the first of a shape is planned here and becomes one.
        """
        plan, located, runs = self.plan, self.located, self.runs
        planner = self.planner
        plan.jobs.append((job, ds, func))
        plan.job_partitions[job] = ds.num_partitions
        templates = planner.templates
        shape = None
        if templates.enabled and not planner.moves:
            last = self.last
            if last is not None and last[0] is ds and last[1] is func and ds.is_cached:
                shape = last[2]  # the very job again, a repeated query: what shape_of would find (see below)
                template = templates.get(shape.key)
                if template is not None and template.ids == last[3] and not (
                        template.runs or template.stores or template.forwards or template.sources):
                    self._stamp_again(template, job, shape)
                    return
            else:
                shape = shape_of(ds, func, self.workers, located, runs, self.memo, self.keys)
                # A shape with nothing to compute is one cached dataset whose blocks all exist; they stay
                # where they are while the group is planned (the walk's memo relies on that too), so the
                # same dataset and function again have this shape again: no walk for each of G jobs.
                self.last = (ds, func, shape, tuple([d.node.id for d in shape.datasets])) \
                    if shape is not None and not shape.locals else None
            if shape is not None:
                template = templates.get(shape.key)
                if template is not None:
                    self._stamp(template, job, shape)
                    return
        plan.funcs.setdefault(id(func), func)
        start = len(plan.tasks)
        # What the template needs is taken from this job's own tasks (their sources logged as planned, their
        # forwards from their inputs), never from the group's plan, where what two jobs share appears once.
        record = shape is not None
        if record:
            plan.source_log = []
        for stage in planner._stages(ds, located, runs):
            if stage.reader is not None:
                dep = stage.reader.node.deps[stage.dep_index]
                runs[dep.shuffle_id] = run = next(planner._run_ids)
                plan.routes[run] = [set() for _ in range(stage.reader.num_partitions)]
                plan.nodes[stage.reader.id] = stage.reader.node
                out: tuple[Any, ...] = (stage.reader.id, stage.dep_index, run, stage.reader.num_partitions)
                kind = MAP
            else:
                out = (id(func),)
                kind = RESULT
            planner._plan_stage(plan, job, stage.dataset, kind, out, self.workers, located, runs)
        if record:
            assert shape is not None and plan.source_log is not None
            log, plan.source_log = plan.source_log, None
            end = len(plan.tasks)
            job_runs = tuple(runs.get(dep.shuffle_id, -1) for dep in shape.shuffles)
            if end > start and -1 not in job_runs:
                tasks = [plan.tasks.task(i) for i in range(start, end)]
                template = Template(templates.new_id(), shape, tasks, [plan.tasks.worker(i) for i in range(start, end)],
                                    plan.routes, plan.combined, located, log, job_runs, func, plan.stage_labels)
                templates.add(template)

    def _stamp_again(self, template: Template, job: int, shape: Any) -> None:
        """``_stamp`` for a repeated query whose template moves nothing: only the job number and first task.

        The job reads the template's very blocks where they are (no shuffle
        run, no block made, forwarded or shipped), so of ``_stamp``'s work only
        the instance and the readers remain: the per-job cost of a loop of
        identical jobs (W1), paid G times a group.
        """
        plan = self.plan
        inst = Instance(template, len(plan.tasks), job, template.ids, (), (), shape.start)
        plan.tasks.add_instance(inst)
        plan.instances.append(inst)
        read_by = plan.read_by
        for nid in template.reads:
            read_by[nid] = job

    def _stamp(self, template: Template, job: int, shape: Any) -> None:
        """Add ``job`` as an instance of ``template``: its own ids, no task planned (see ``_template``).

        Runs for every stamped job (an iterate step, a micro-batch): what is
        the same for every instance of the template (its nodes, functions and
        stage labels in the program) is added once per group.
        """
        plan, located, runs = self.plan, self.located, self.runs
        run_ids = self.planner._run_ids
        new_runs = tuple([next(run_ids) for _ in template.runs])
        shuffles = shape.shuffles
        for dep, run in zip(shuffles, new_runs):
            runs[dep.shuffle_id] = run
        order = shape.datasets
        ids = tuple([d.node.id for d in order])
        inst = Instance(template, len(plan.tasks), job, ids, tuple([dep.shuffle_id for dep in shuffles]),
                        new_runs, shape.start)
        plan.tasks.add_instance(inst)
        plan.instances.append(inst)
        if template.id not in self.stamped:
            self.stamped.add(template.id)
            plan.funcs.setdefault(id(template.func), template.func)
            for nid, node in template.nodes.items():
                plan.nodes.setdefault(nid, node)
            plan.stage_labels.update(template.stage_labels)
        same = ids == template.ids
        rename = None if same else dict(zip(template.ids, ids))
        for run_t, run in zip(template.runs, new_runs):
            plan.routes[run] = [set(d) for d in template.routes[run_t]]
            plan.stamped_runs[run] = (template, run_t)
            combined = template.combined.get(run_t)
            if combined is not None:
                plan.combined[run] = combined
        read_by = plan.read_by
        if rename is None:
            for nid in template.reads:
                read_by[nid] = job
        else:
            for nid in template.reads:
                read_by[rename[nid]] = job
        if template.stores:
            new_cache, made_of = plan.new_cache, plan.made_of
            for nid, q, w in template.stores:
                block = ("c", nid if rename is None else rename[nid], q)
                located[block] = w
                new_cache[block] = w
                made = made_of.get(block[1])
                if made is None:
                    made_of[block[1]] = [block]
                else:
                    made.append(block)
        for block, dest, loc in template.forwards:
            plan.forward(loc, block if rename is None else ("c", rename[block[1]], block[2]), dest)
        if template.sources:
            sources = plan.sources
            for w, i, q in template.sources:
                node = order[i].node
                sources.setdefault(w, {})[(node.id, q)] = node


def _shuffle_reads(ds: Dataset, located: dict[Block, int]) -> list[tuple[Dataset, int]]:
    """(ShuffleRead dataset, dep index) reachable from ``ds`` through narrow deps.

    The walk stops at cached datasets whose partitions all exist (or will, by
    an earlier task of the group): nothing behind them needs to run.
    """
    found: list[tuple[Dataset, int]] = []
    stack = [ds]
    seen: set[int] = set()
    while stack:
        d = stack.pop()
        if d.node.id in seen:
            continue
        seen.add(d.node.id)
        if d.is_cached and all(("c", d.node.id, q) in located for q in range(d.num_partitions)):
            continue
        if type(d.node) is ShuffleReadNode:
            found.extend((d, i) for i in range(len(d.node.deps)))
            continue
        stack.extend(d.parents)
    return found
