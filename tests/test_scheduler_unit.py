"""The group scheduler driven by events against a fake transport, its whole state asserted after each.

As Spark's DAGSchedulerSuite drives its scheduler with a fake backend: no
worker runs anything. :class:`FakeTransport` records every message the
scheduler sends (launches per worker, aborts, drops) and, when the scheduler
waits for something to happen, plays the next step of the test's *script*:
a generator that asserts the state the scheduler is in and yields the
events that happen next (RESULTS, DONE, FAILED as the worker runtime sends
them, per protocol/_messages.py; ``WorkerLost`` and ``WorkerJoined`` as a
transport reports them). Code after the script's last yield runs at
``fake.finish()``, once the scheduler is done.

The lineage is the planner's ``Dataset`` Protocol and nothing more
(``support.Lineage``); job results are whatever the script says a worker
computed: ``(job, partition)`` here, so a wrong routing shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import cloudpickle
import pytest
from support import Lineage

import drizzle_core as dz
from drizzle_core.driver import GroupScheduler
from drizzle_core.lineage import SourceNode
from drizzle_core.net import Transport, WorkerJoined, WorkerLost
from drizzle_core.protocol import MAP, RESULT, Task, roundtrip
from drizzle_core.protocol import messages as M
from drizzle_core.worker._stamp import Templates as WorkerTemplates
from drizzle_core.worker._stamp import expand

pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------ the fake
class Stalled(AssertionError):
    """The scheduler waits for an event the script did not provide: it would hang here."""


class Launch(NamedTuple):
    """A LAUNCH message, field by field (the table in protocol/_messages.py)."""

    tag: str
    wire: int
    program_id: int
    program: Any            # the pickled program, or None when the worker holds it
    tasks: list[Task]
    routes: dict
    forwards: list
    drops: list
    epochs: dict
    trace: bool
    sources: dict           # (source node, partition) -> its data, for this worker's tasks
    stamps: list            # jobs stamped from templates (``tasks`` holds them stamped out, as the worker would)
    hold: float             # seconds the worker may keep the group's results


class FakeTransport(Transport):
    """Records what the scheduler sends; ``poll`` returns what the test's script says happens."""

    name = "fake"

    def __init__(self, workers: int = 2, replace: bool | None = False) -> None:
        self.names = [f"fake worker {i}" for i in range(workers)]
        self.replace = replace          # what replace_worker answers
        self.replaced: list[tuple[int, int]] = []  # (worker, epoch) asked for
        self.sent: list[tuple[int, Any]] = []      # every (worker, message) not taken by take() yet
        self.inbox: list[tuple[int, Any]] = []     # events the next poll returns
        self.script: Iterator[list[tuple[int, Any]]] | None = None
        self.count = 0
        self.templates: dict[int, WorkerTemplates] = {}  # each worker's templates, as it would hold them

    def start(self) -> None:
        pass

    @property
    def worker_names(self) -> list[str]:
        return self.names

    def send(self, worker: int, message: Any) -> int:
        message = roundtrip(message)  # what a real transport does with it (it must pickle)
        self.count += 1
        if message[0] == M.LAUNCH:
            # Stamped out as the worker does, with the worker's own LRU of templates: the tests read every
            # task of a launch, whether it was planned or stamped from a template.
            tasks = [Task._make(t) for t in message[4]]
            routes = dict(message[5])
            held = self.templates.setdefault(worker, WorkerTemplates()).take(message[11])
            for part, instances in held:
                assert part is not None, "the scheduler named a template this worker does not hold"
                expand(part, instances, _AnyNodes(), tasks, routes)
            tasks.sort(key=lambda t: t.index)
            message = Launch(*message[:4], tasks, {**routes, **message[5]}, *message[6:])
        if message[0] == M.DESCRIBE:  # answered at once, as an idle worker would
            self.inbox.append((worker, (M.DESCRIBED, message[1], {})))
        else:
            self.sent.append((worker, message))
        return 0

    def poll(self, timeout: float | None) -> list[tuple[int, Any]]:
        if not self.inbox and timeout != 0:
            # The scheduler would wait: the script decides what happens next.
            if self.script is None:
                raise Stalled("the scheduler waits for an event, and no script is playing")
            try:
                self.inbox.extend(next(self.script))
            except StopIteration:
                raise Stalled("the scheduler waits for an event the script did not provide") from None
        out, self.inbox = self.inbox, []
        return out

    def close(self) -> None:
        pass

    def replace_worker(self, worker: int, epoch: int) -> bool | None:
        self.replaced.append((worker, epoch))
        return self.replace

    @property
    def messages_sent(self) -> int:
        return self.count

    # --------------------------------------------------------- for the tests
    def play(self, script: Iterator[list[tuple[int, Any]]]) -> None:
        self.script = script

    def finish(self) -> None:
        """Run the script's code after its last yield; fail if it had more events to play."""
        assert self.script is not None
        for events in self.script:
            raise AssertionError(f"the scheduler finished, but the script had more events: {events}")
        self.script = None

    def take(self) -> list[tuple[int, Any]]:
        """What was sent since the last take, in order."""
        out, self.sent = self.sent, []
        return out

    def take_launches(self) -> dict[int, Launch]:
        """The launches sent since the last take, by worker; fails if anything else was sent."""
        sent = self.take()
        assert all(isinstance(m, Launch) for _, m in sent), sent
        launches = {w: m for w, m in sent}
        assert len(launches) == len(sent), f"two launches to one worker: {sent}"
        return launches


# What the worker runtime sends (protocol/_messages.py).
def results(wire: int, tasks: list[Task]) -> tuple:
    return (M.RESULTS, wire, [(t.index, t.attempt, (t.job, t.partition)) for t in tasks])


def done(wire: int, ran: int, last: list[Task] = ()) -> tuple:
    items = [(t.index, t.attempt, (t.job, t.partition)) for t in last]
    return (M.DONE, wire, 0.001, ran, {"bytes_sent": 0, "spans": None}, items)


def failed(wire: int, task: Task, exc: BaseException) -> tuple:
    tb = f"Traceback (most recent call last):\n  ...\n{type(exc).__name__}: {exc}\n"
    return (M.FAILED, wire, task.index, task.attempt, tb, cloudpickle.dumps(exc))


def finish_all(launches: dict[int, Launch]) -> list[tuple[int, Any]]:
    """Every worker of a launch runs all its tasks: last results ride in its DONE."""
    return [(w, done(m.wire, len(m.tasks), [t for t in m.tasks if t.kind == RESULT]))
            for w, m in sorted(launches.items())]


def job_tasks(launches: dict[int, Launch], job: int) -> dict[int, list[Task]]:
    """A job's result tasks, by worker."""
    out = {w: [t for t in m.tasks if t.job == job and t.kind == RESULT] for w, m in launches.items()}
    return {w: ts for w, ts in out.items() if ts}


def job_results(launches: dict[int, Launch], job: int) -> list[tuple[int, Any]]:
    return [(w, results(launches[w].wire, ts)) for w, ts in sorted(job_tasks(launches, job).items())]


def brief(t: Task) -> tuple:
    """What a task is asked to do: (job, partition, kind, cached inputs, stores)."""
    return (t.job, t.partition, "map" if t.kind == MAP else "result", t.inputs, t.stores)


def answers(n: int, partitions: int) -> list[list[tuple[int, int]]]:
    """What the fake's workers compute for jobs 0..n-1: (job, partition) per partition."""
    return [[(j, p) for p in range(partitions)] for j in range(n)]


# ----------------------------------------------------------------- the state
def state(s: GroupScheduler) -> dict[str, Any]:
    """Every container of the scheduler's state (the module docstring's list), in comparable form."""
    return {
        "live": list(s.live),
        "cache_locations": dict(s.cache_locations),
        "pending_drops": {w: list(bs) for w, bs in s.pending_drops.items()},
        "epochs": dict(s.epochs),
        "runs": {wire: {"group": r.plan.group, "remaining": dict(r.remaining), "awaiting_done": set(r.awaiting_done),
                        "done": sorted(r.done), "next_job": r.next_job, "unfinished": sorted(r.unfinished),
                        "recoveries": r.recoveries, "error": type(r.error).__name__ if r.error else None}
                 for wire, r in s._runs.items()},
        "run_of": {group: r.wire for group, r in s._run_of.items()},
        "open_plans": sorted(s._open_plans),
        "deferred": [(d.node_id, d.copy, d.pulled_for) for d in s._deferred],
        "pulling": list(s._pulling),
        "gc_drops": list(s._gc_drops),
    }


def idle(live=(0, 1), cache_locations=None, epochs=None) -> dict[str, Any]:
    """The state between jobs: nothing but live workers and cached blocks."""
    return {"live": list(live), "cache_locations": cache_locations or {}, "pending_drops": {},
            "epochs": epochs or {}, "runs": {}, "run_of": {}, "open_plans": [], "deferred": [], "pulling": [],
            "gc_drops": []}


def run_state(group, remaining, awaiting_done, *, done=(), next_job=0, unfinished=None, recoveries=0, error=None):
    return {"group": group, "remaining": remaining, "awaiting_done": set(awaiting_done), "done": list(done),
            "next_job": next_job, "unfinished": sorted(remaining) if unfinished is None else unfinished,
            "recoveries": recoveries, "error": error}


def assert_driver_empty(s: GroupScheduler) -> None:
    """``bookkeeping()``'s driver side: all zero but cached blocks (the fake's workers answer {})."""
    report = s.bookkeeping(timeout=1.0)
    driver = dict(report["driver"])
    driver.pop("cached_blocks")
    assert all(v == 0 for v in driver.values()), driver
    assert all(w == {} for w in report["workers"].values()), report


class _AnyNodes(dict):
    """A node table where renaming a template's node is a no-op: these tests read tasks, not nodes."""

    def __missing__(self, key):
        return SourceNode(key, [None], "a template's node")

    def __setitem__(self, key, value):
        pass


def scheduler(workers: int = 2, replace: bool | None = False, *,
              pipeline: bool = False) -> tuple[FakeTransport, GroupScheduler]:
    """A scheduler on a scripted transport. These scripts pin each decision of one group at a time, so the
    next group waits for the current one (``pipeline=False``) unless a test asks for pipelining."""
    fake = FakeTransport(workers, replace)
    s = GroupScheduler(fake, workers)
    s.pipeline = pipeline
    return fake, s


def _partition_values(it):
    return list(it)


# ------------------------------------------------------------------ the tests
def test_a_group_is_one_launch_per_worker_with_all_its_tasks():
    fake, s = scheduler()
    lin = Lineage()
    src = lin.source([1], [2], [3], [4])
    ds = lin.map(src, abs)
    handed: list = []

    def script():
        launches = fake.take_launches()
        assert sorted(launches) == [0, 1]
        # three jobs of four partitions: partition p on worker p % 2, all of them in one message
        for w, m in launches.items():
            assert (m.wire, m.program_id) == (1, 1) and m.program is not None
            assert [(t.job, t.partition) for t in m.tasks] == [(j, p) for j in range(3) for p in (w, w + 2)]
            assert all(t.kind == RESULT and t.inputs == () and t.stores == () for t in m.tasks)
            assert (m.routes, m.forwards, m.drops, m.epochs, m.trace) == ({}, [], [], {}, False)
            # each source partition travels to the worker that reads it, and to no other
            assert m.sources == {(src.id, p): [p + 1] for p in (w, w + 2)}
        assert sorted(t.index for m in launches.values() for t in m.tasks) == list(range(12))
        # the next group is planned (and serialized) while this one runs
        assert state(s) == idle() | {
            "runs": {1: run_state(1, {0: 4, 1: 4, 2: 4}, {0, 1})}, "run_of": {1: 1}, "open_plans": [1, 2]}
        yield finish_all(launches)
        # the second group repeats the first one's shape: the workers hold its program already
        assert handed == answers(3, 4)
        second = fake.take_launches()
        assert sorted(second) == [0, 1]
        assert all((m.wire, m.program_id, m.program) == (2, 1, None) for m in second.values())
        assert all([t.job for t in m.tasks] == [3, 3, 4, 4, 5, 5] for m in second.values())
        assert state(s) == idle() | {
            "runs": {2: run_state(2, {3: 4, 4: 4, 5: 4}, {0, 1}, next_job=3)}, "run_of": {2: 2}, "open_plans": [2]}
        yield finish_all(second)

    fake.play(script())
    for out in s.run([(ds, _partition_values)] * 6, lambda: 3):
        handed.append(out)
    fake.finish()
    assert handed == answers(6, 4)
    assert fake.take() == []
    assert [(m.group, m.jobs, m.tasks, m.workers, m.messages_sent, m.recoveries) for m in s.metrics] == [
        (1, 3, 12, 2, 2, 0), (2, 3, 12, 2, 2, 0)]
    assert state(s) == idle()
    assert_driver_empty(s)


def _two_groups(pipeline_stop: bool):
    fake, s = scheduler(pipeline=True)
    lin = Lineage()
    ds = lin.map(lin.source([1], [2], [3], [4]), abs)
    handed: list = []

    def script():
        sent = fake.take()
        # the second group went out as soon as it was planned, before any DONE of the first
        assert sorted((w, m.wire) for w, m in sent) == [(0, 1), (0, 2), (1, 1), (1, 2)]
        first = {w: m for w, m in sent if m.wire == 1}
        second = {w: m for w, m in sent if m.wire == 2}
        assert all(m.program is not None for m in first.values())
        assert all(m.program is None for m in second.values())  # the shape repeats: not sent again
        assert [t.job for t in second[0].tasks] == [3, 3, 4, 4, 5, 5]
        if not pipeline_stop:
            yield finish_all(second)  # the second group may end first: its jobs wait for the first's
            assert handed == []
        yield finish_all(first)

    fake.play(script())
    for out in s.run([(ds, _partition_values)] * 6, lambda: 3, keep_going=lambda: not (pipeline_stop and handed)):
        handed.append(out)
    fake.finish()
    return fake, s, handed


def test_pipelined_the_next_group_goes_out_while_the_current_one_runs():
    fake, s, handed = _two_groups(pipeline_stop=False)
    assert handed == answers(6, 4)
    assert fake.take() == []
    # each group counts its own launch messages, though they went out overlapping
    assert [(m.group, m.jobs, m.messages_sent) for m in s.metrics] == [(1, 3, 2), (2, 3, 2)]
    assert state(s) == idle()
    assert_driver_empty(s)


def test_pipelined_a_caller_that_stops_after_the_first_group_aborts_the_second_unseen():
    fake, s, handed = _two_groups(pipeline_stop=True)
    assert handed == answers(3, 4)  # what keep_going decided at the end of the first group, as before
    assert sorted(fake.take()) == [(0, (M.ABORT, 2, [])), (1, (M.ABORT, 2, []))]
    assert [m.group for m in s.metrics] == [1]
    assert state(s) == idle()
    assert_driver_empty(s)


def test_a_jobs_results_are_handed_out_as_soon_as_it_and_those_before_it_are_in():
    fake, s = scheduler()
    lin = Lineage()
    ds = lin.source([1], [2])
    handed: list = []

    def script():
        launches = fake.take_launches()
        # job 1 finishes first: it waits for job 0 (results come in job order)
        yield job_results(launches, 1)
        assert handed == []
        assert state(s)["runs"] == {1: run_state(1, {0: 2}, {0, 1}, done=[1], unfinished=[0])}
        # one of job 0's two results: still nothing to hand out
        yield [job_results(launches, 0)[0]]
        assert handed == []
        assert state(s)["runs"] == {1: run_state(1, {0: 1}, {0, 1}, done=[1], unfinished=[0])}
        yield [job_results(launches, 0)[1]]
        # both out, before any worker said DONE
        assert handed == answers(2, 2)
        assert state(s)["runs"] == {1: run_state(1, {}, {0, 1}, next_job=2, unfinished=[])}
        yield [(w, done(1, 2)) for w in (0, 1)]

    fake.play(script())
    for out in s.run([(ds, _partition_values)] * 2, lambda: 2):
        handed.append(out)
    fake.finish()
    assert handed == answers(2, 2)
    assert state(s) == idle()
    assert fake.take() == []


def test_a_failed_task_hands_out_the_jobs_before_it_then_raises_and_aborts_everywhere():
    fake, s = scheduler()
    lin = Lineage()
    ds = lin.map(lin.source([1], [2]), abs, cached=True)
    handed: list = []
    seen: dict[int, Launch] = {}

    def script():
        launches = fake.take_launches()
        seen.update(launches)
        assert state(s)["runs"] == {1: run_state(1, {0: 2, 1: 2, 2: 2}, {0, 1})}
        bad = job_tasks(launches, 1)[1][0]
        # job 0 is in, then job 1 fails on worker 1 (job 2's results never come)
        yield [*job_results(launches, 0), (1, failed(1, bad, KeyError("bad record 7")))]

    fake.play(script())
    with pytest.raises(dz.TaskError) as info:
        for out in s.run([(ds, _partition_values)] * 3, lambda: 3):
            handed.append(out)
    fake.finish()
    assert handed == answers(1, 2)
    err = info.value
    assert (err.job, err.stage, err.partition, err.worker) == (1, 1, 1, "fake worker 1")
    assert isinstance(err.exception, KeyError) and isinstance(err.__cause__, dz.RemoteTraceback)
    assert "job 1" in str(err) and "KeyError" in str(err) and "bad record 7" in err.remote_traceback
    # every live worker is told to forget the group (and keep nothing of it), and to drop the cached
    # blocks the group made (a worker that finished its share before the ABORT would still hold them)
    assert fake.take() == [(0, (M.ABORT, 1, [])), (1, (M.ABORT, 1, [])),
                           (0, (M.DROP, [("c", ds.id, 0)])), (1, (M.DROP, [("c", ds.id, 1)]))]
    # the cached blocks the group would have made are not recorded: nothing is left
    assert state(s) == idle()
    assert_driver_empty(s)
    # late messages of the failed group change nothing
    fake.inbox = [(0, results(1, job_tasks(seen, 2)[0])), (0, done(1, 3))]
    s.check_workers()
    assert state(s) == idle()
    assert fake.take() == []


def _state_chain():
    """S1 = S0.map, S2 = S1.map, both cached; job j reads S(j+1): state carried from job to job."""
    lin = Lineage()
    s0 = lin.source([1], [2])
    s1 = lin.map(s0, abs, cached=True)
    s2 = lin.map(s1, abs, cached=True)
    return s1, s2


def test_a_worker_lost_mid_group_aborts_keeping_finished_jobs_blocks_and_replans_on_the_survivor():
    fake, s = scheduler()
    s1, s2 = _state_chain()
    a, b = s1.id, s2.id
    handed: list = []

    def script():
        first = fake.take_launches()
        # job 1 runs where job 0 leaves its state: partition p on worker p, reading ("c", S1, p)
        assert {w: [brief(t) for t in m.tasks] for w, m in first.items()} == {
            w: [(0, w, "result", (), ((a, w),)), (1, w, "result", (("c", a, w),), ((b, w),))] for w in (0, 1)}
        yield job_results(first, 0)
        assert handed == answers(1, 2)
        yield [(1, WorkerLost("killed by the test"))]
        # The attempt is aborted on the survivor, which keeps what finished job 0 cached there;
        # job 1 is planned again on worker 0: partition 1 of S1 (lost with worker 1) from lineage.
        abort, *rest = fake.take()
        assert abort == (0, (M.ABORT, 1, [("c", a, 0)]))
        second = dict(rest)
        assert sorted(second) == [0] and second[0].wire == 2
        assert [brief(t) for t in second[0].tasks] == [
            (1, 0, "result", (("c", a, 0),), ((b, 0),)), (1, 1, "result", (), ((b, 1), (a, 1)))]
        assert fake.replaced == [(1, 1)]  # a replacement was asked for (the fake has none)
        assert state(s) == idle(live=[0], cache_locations={("c", a, 0): 0}) | {
            "runs": {2: run_state(3, {1: 2}, {0}, next_job=1, recoveries=1)}, "run_of": {3: 2}, "open_plans": [3]}
        before = state(s)
        # late: the aborted attempt's results and DONE, and a duplicate of the new attempt's first result
        late = [(0, results(1, job_tasks(first, 1)[0])), (0, done(1, 2))]
        yield [*late, (0, results(2, second[0].tasks[:1])), (0, results(2, second[0].tasks[:1]))]
        assert state(s)["runs"] == {2: run_state(3, {1: 1}, {0}, next_job=1, recoveries=1)}
        assert {k: v for k, v in state(s).items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}
        assert handed == answers(1, 2)
        yield [(0, done(2, 2, second[0].tasks[1:]))]

    fake.play(script())
    for out in s.run([(s1, _partition_values), (s2, _partition_values)], lambda: 2):
        handed.append(out)
    fake.finish()
    assert handed == answers(2, 2)
    assert [m.recoveries for m in s.metrics] == [1]
    # every block the group made on a live worker is known, and only those
    assert state(s) == idle(live=[0], cache_locations={
        ("c", a, 0): 0, ("c", a, 1): 0, ("c", b, 0): 0, ("c", b, 1): 0})
    assert fake.take() == []
    assert_driver_empty(s)


def test_a_replacement_that_joins_takes_tasks_from_the_next_group_and_is_sent_the_program():
    fake, s = scheduler(replace=None)  # None: a replacement is starting; it joins later
    lin = Lineage()
    ds = lin.source([1], [2])
    handed: list = []

    def script():
        assert sorted(fake.take_launches()) == [0, 1]
        yield [(1, WorkerLost("connection reset"))]
        abort, replan = fake.take()
        assert abort == (0, (M.ABORT, 1, []))
        assert replan[0] == 0 and [brief(t) for t in replan[1].tasks] == [
            (0, 0, "result", (), ()), (0, 1, "result", (), ())]
        assert replan[1].program is None  # worker 0 holds the program already
        assert state(s) == idle(live=[0], epochs={1: 1}) | {
            "runs": {2: run_state(3, {0: 2}, {0}, recoveries=1)}, "run_of": {3: 2}, "open_plans": [2, 3]}
        yield [(1, WorkerJoined())]
        assert state(s)["live"] == [0, 1]
        assert fake.take() == []  # the running group is not re-planned: the newcomer waits for the next
        yield finish_all({0: replan[1]})
        # the group planned ahead (on both workers, before the loss) is planned again, and the
        # newcomer, whose program cache is empty, is sent the program
        nxt = fake.take_launches()
        assert sorted(nxt) == [0, 1]
        assert nxt[0].program is None and nxt[1].program is not None
        assert all(m.epochs == {1: 1} for m in nxt.values())  # connections to the dead incarnation close
        assert [(t.job, t.partition) for t in nxt[1].tasks] == [(1, 1)]
        yield finish_all(nxt)

    fake.play(script())
    for out in s.run([(ds, _partition_values)] * 2, lambda: 1):
        handed.append(out)
    fake.finish()
    assert handed == answers(2, 2)
    assert state(s) == idle(epochs={1: 1})


def test_a_deferred_unpersist_is_released_when_the_last_job_reading_it_is_handed_out():
    fake, s = scheduler()
    lin = Lineage()
    src = lin.source([1], [2])
    cached = lin.map(src, abs, cached=True)
    other = lin.map(src, abs)
    c = cached.id
    blocks = {("c", c, 0): 0, ("c", c, 1): 1}

    # a first group makes the cached blocks
    def make():
        yield finish_all(fake.take_launches())

    fake.play(make())
    assert list(s.run([(cached, _partition_values)], lambda: 1)) == answers(1, 2)
    fake.finish()
    assert state(s) == idle(cache_locations=blocks)

    # jobs 0 and 1 read it, job 2 does not; it is unpersisted while the group runs
    handed: list = []
    uncached: list = []

    def script():
        launches = fake.take_launches()
        s.unpersist(c, lambda: uncached.append(True))
        assert uncached == []
        assert state(s) == idle(cache_locations=blocks) | {
            "runs": {2: run_state(3, {0: 2, 1: 2, 2: 2}, {0, 1})}, "run_of": {3: 2}, "open_plans": [3],
            "deferred": [(c, None, None)]}
        yield job_results(launches, 0)
        assert len(handed) == 1 and uncached == []  # job 1 still reads it
        assert state(s)["deferred"] == [(c, None, None)]
        yield job_results(launches, 1)
        # job 1 was handed out: the cached flag is cleared and its blocks are to go, with the next message
        assert len(handed) == 2 and uncached == [True]
        assert state(s) == idle() | {
            "runs": {2: run_state(3, {2: 2}, {0, 1}, next_job=2)}, "run_of": {3: 2}, "open_plans": [3],
            "pending_drops": {0: [("c", c, 0)], 1: [("c", c, 1)]}}
        assert fake.take() == []
        yield finish_all(launches)

    fake.play(script())
    for out in s.run([(cached, _partition_values), (cached, _partition_values), (other, _partition_values)],
                     lambda: 3):
        handed.append(out)
    fake.finish()
    assert handed == answers(3, 2)
    # idle now: the drops go at once
    assert fake.take() == [(0, (M.DROP, [("c", c, 0)])), (1, (M.DROP, [("c", c, 1)]))]
    assert state(s) == idle()
    assert_driver_empty(s)


def test_a_run_launched_inside_another_gets_its_own_wire_id_and_messages_are_routed_by_it():
    fake, s = scheduler()
    lin = Lineage()
    outer_ds = lin.source([1], [2])
    inner_ds = lin.map(outer_ds, abs)
    got: list = []
    launched: dict[str, dict[int, Launch]] = {}

    def script():
        launched["outer"] = outer = fake.take_launches()
        assert state(s)["runs"].keys() == {1}
        yield job_results(outer, 0)
        # the caller, holding job 0, runs a job of its own while job 1 of the outer run is unfinished
        launched["inner"] = inner = fake.take_launches()
        assert sorted(inner) == [0, 1] and all(m.wire == 2 for m in inner.values())
        assert state(s) | {"runs": None} == idle() | {"run_of": {1: 1, 3: 2}, "open_plans": [1, 3], "runs": None}
        assert state(s)["runs"] == {1: run_state(1, {1: 2}, {0, 1}, next_job=1),
                                    2: run_state(3, {0: 2}, {0, 1})}
        # the same task indexes in both groups: only the wire id tells them apart
        assert [t.index for t in inner[0].tasks] == [t.index for t in job_tasks(outer, 0)[0]]
        yield [*job_results(outer, 1), *finish_all(inner), *finish_all(outer)]

    fake.play(script())
    for res in s.run([(outer_ds, _partition_values)] * 2, lambda: 2):
        got.append(("outer", res))
        if len(got) == 1:
            got.append(("inner", list(s.run([(inner_ds, _partition_values)], lambda: 1))))
    fake.finish()
    assert got == [("outer", [(0, 0), (0, 1)]), ("inner", [[(0, 0), (0, 1)]]), ("outer", [(1, 0), (1, 1)])]
    assert state(s) == idle()
    assert_driver_empty(s)


def test_a_shuffle_is_pre_scheduled_each_mapper_told_where_every_reduce_partition_runs():
    fake, s = scheduler()
    lin = Lineage()
    reduced = lin.reduce_by_key(lin.source([("a", 1)], [("b", 2)], [("a", 3)]), 2)
    rid = reduced.id

    def script():
        launches = fake.take_launches()
        for w, m in launches.items():
            maps = [t for t in m.tasks if t.kind == MAP]
            reduces = [t for t in m.tasks if t.kind == RESULT]
            # map partitions p on worker p % 2 push bucket r straight to reduce partition r's worker
            assert [t.partition for t in maps] == [p for p in range(3) if p % 2 == w]
            assert all(t.out == (rid, 0, 0, 2) for t in maps)
            assert m.routes == {0: ((0,), (1,))}
            # reduce partition w waits for its bucket of every map partition (pre-combined by no one)
            assert [(t.partition, t.shuffle_in) for t in reduces] == [(w, ((1, 0, 3, None, w),))]
        yield finish_all(launches)

    fake.play(script())
    assert list(s.run([(reduced, _partition_values)], lambda: 1)) == answers(1, 2)
    fake.finish()
    assert state(s) == idle()


def test_losing_the_last_worker_fails_the_group_with_worker_lost_and_leaves_nothing():
    fake, s = scheduler(workers=1)
    lin = Lineage()
    ds = lin.map(lin.source([1], [2]), abs, cached=True)

    def script():
        fake.take_launches()
        yield [(0, WorkerLost("process exited with SIGKILL"))]

    fake.play(script())
    with pytest.raises(dz.WorkerLostError, match=r"lost fake worker 0: process exited with SIGKILL; no worker is left"):
        list(s.run([(ds, _partition_values)], lambda: 1))
    fake.finish()
    assert fake.take() == []  # no live worker to tell
    assert state(s) == idle(live=[])


def test_a_group_failing_re_plans_a_nested_group_waiting_on_the_blocks_it_would_have_made():
    fake, s = scheduler()
    lin = Lineage()
    src = lin.source([1], [2])
    cached = lin.map(src, abs, cached=True)
    c = cached.id
    got: list = []

    def script():
        outer = fake.take_launches()
        yield job_results(outer, 0)
        # the nested job reads the blocks the outer group's job 1 is making: it waits for them there
        inner = fake.take_launches()
        assert {w: [brief(t) for t in m.tasks] for w, m in inner.items()} == {
            w: [(0, w, "result", (("c", c, w),), ())] for w in (0, 1)}
        yield [(0, failed(1, job_tasks(outer, 1)[0][0], ValueError("job 1 is bad")))]
        # both attempts are aborted; the nested job is planned again, computing the blocks itself
        sent = fake.take()
        assert sent[:4] == [(0, (M.ABORT, 1, [])), (1, (M.ABORT, 1, [])), (0, (M.ABORT, 2, [])),
                            (1, (M.ABORT, 2, []))]
        again = dict(sent[4:])
        assert sorted(again) == [0, 1] and all(m.wire == 3 for m in again.values())
        assert {w: [brief(t) for t in m.tasks] for w, m in again.items()} == {
            w: [(0, w, "result", (), ((c, w),))] for w in (0, 1)}
        # the failed group stays open until its owner raises (after handing out what came before)
        assert state(s) == idle() | {"runs": {3: run_state(5, {0: 2}, {0, 1})}, "run_of": {1: 1, 5: 3},
                                     "open_plans": [1, 5]}
        yield finish_all(again)

    fake.play(script())
    with pytest.raises(dz.TaskError, match="job 1 is bad"):
        for res in s.run([(src, _partition_values), (cached, _partition_values)], lambda: 2):
            got.append(("outer", res))
            got.append(("inner", list(s.run([(cached, _partition_values)], lambda: 1))))
    fake.finish()
    assert got == [("outer", [(0, 0), (0, 1)]), ("inner", [[(0, 0), (0, 1)]])]
    # the nested group made the blocks, and they are known; the failed group left nothing
    assert state(s) == idle(cache_locations={("c", c, 0): 0, ("c", c, 1): 1})
    assert fake.take() == []
    assert_driver_empty(s)
