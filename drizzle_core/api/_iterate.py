"""``Context.iterate``: dependent iterations, one hop between workers each, no driver inside a group.

Iteration i is one job over three datasets, with S = the number of *slots*
(``min(ctx.num_workers, data partitions)`` when ``iterate`` is called)::

    partials_i = BroadcastZip(data, state_{i-1}, local, slots=S)  # partition p reads state copy p % S
    reduced_i  = shuffle of partials_i into S partitions,         # every slot's partial to every copy,
                 pre-combined on each worker                      # each worker folding its own first
    state_i    = Zip(reduced_i, state_{i-1}, update).cache()      # S copies, one per slot

An all-reduce. Round-robin placement puts data partition p, and copy
``p % S`` of the state, on worker ``p % S``; each worker folds the partials
of its slot (``local_combine``) and sends the one value to every other
worker; each worker folds the S slot values, in slot order, and applies
``update`` itself. So an iteration costs one hop between workers (a
single reducer that then forwards the new state costs two: partials in,
state out), and the next iteration's partials read the state beside them.
``update`` and ``until`` must be deterministic (they run on every worker).
With more than ``ALL_REDUCE_MAX`` slots the all-to-all exchange (S * (S-1)
blocks an iteration) would cost more than the second hop saves, and the
state has one copy on one reducer, forwarded to the workers that need it.

Order of combination: partition p's partial belongs to slot ``p % S``;
each slot folds its partitions in increasing order, then the slots are
folded in slot order (``ShuffleDep.combine_slots``). The tree is fixed by
the lineage, not by where tasks ran, so every copy of the state is the same
bit for bit, and so is a run that lost a worker, or ran with another group
size. With at most S partitions it is the plain left fold, partition by
partition.

The driver: each job's result is copy 0 of the state, and workers hold an
iterate's results for a while (``_result_hold``: 0.1 s for a state of up
to 16 KiB, else ``RESULT_HOLD``), so the driver wakes once per batch of
iterations, not once per iteration (on a 2-core machine, each wake-up
preempts a worker, and a synchronous loop waits for the preempted one).
When it receives ``state_i`` it truncates that dataset's lineage to the
value (``_checkpoint``), so a lost worker costs at most the iterations
after the last one the driver saw.

Convergence: the state travels as ``(converged, state)``. Each copy's
update evaluates ``until``; once true, later iterations of the same group
pass the state through without calling ``local`` or ``update``; the
driver, seeing the converged state, aborts the rest of the group and starts
no new one.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import lineage as N
from . import _dataset as D

if TYPE_CHECKING:
    from ._context import Context

_SKIP = None
ALL_REDUCE_MAX = 16   # slots up to which the state is all-reduced (a copy per slot); one reducer beyond
RESULT_HOLD = 0.02    # seconds a worker may hold an iterate's states before sending them to the driver
SMALL_STATE_HOLD = 0.1          # the same for a small state (see _result_hold)
SMALL_STATE_BYTES = 16 * 1024   # pickled size up to which a state is small


@dataclass
class IterateResult:
    """What :meth:`Context.iterate` returns."""

    state: Any                                    # the last state
    history: list[Any] = field(default_factory=list)  # every state, in order (``keep_history=True`` only)
    iterations: int = 0                           # iterations that ran
    converged: bool = False                       # ``until`` became true


class _Local(N.Wraps):
    """``local(part, state)`` on each data partition, skipped once the state has converged."""

    __slots__ = ()

    def __call__(self, p: int, part: Any, state_part: Any) -> list[Any]:
        converged, state = state_part[0]
        return [_SKIP if converged else self.f(part, state)]


class _Split:
    """Map side of the reduction: the task's one partial goes to every copy of the state (R of them)."""

    __slots__ = ()

    def __call__(self, part: Any, R: int) -> list[Any]:
        return [part[0]] * R


class _Copy0:
    """Copy 0 of the state is the job's result; the other copies stay where they are."""

    __slots__ = ()

    def __call__(self, p: int, part: Any) -> Any:
        return part if p == 0 else ()


class _Combine(N.Wraps):
    """``combine(a, b)``, where a skipped partial (a converged iteration's) is the identity."""

    __slots__ = ()

    def __call__(self, a: Any, b: Any) -> Any:
        if a is _SKIP:
            return b
        if b is _SKIP:
            return a
        return self.f(a, b)


class _Merge(N.Wraps):
    """Reduce side: fold the slots' pre-combined partials (in slot order) with ``f``, a ``_Combine``."""

    __slots__ = ()

    def __call__(self, p: int, deps: list[list[Any]]) -> list[Any]:
        blocks = deps[0]
        total = blocks[0] if blocks else _SKIP
        combine = self.f
        for b in blocks[1:]:
            total = combine(total, b)
        return [total]


class _Update:
    """``update(state, total)``, and ``until`` on its result; ``update`` gets a copy of the state (``copy_state``).

    The state it is given is the last iteration's cached block: the value a
    held result still has to send to the driver, and what a recovery of the
    next iteration reads. An ``update`` that changed it in place (``w -= lr
    * g``) would have sent the driver later states under earlier iterations'
    numbers, and had a recovery resume from the wrong one.
    """

    __slots__ = ("copy_state", "until", "update")

    def __init__(self, update: Callable[[Any, Any], Any], until: Callable[[Any], bool] | None,
                 copy_state: bool = True) -> None:
        self.update = update
        self.until = until
        self.copy_state = copy_state

    def __call__(self, p: int, reduced: Any, prev: Any) -> list[Any]:
        converged, state = prev[0]
        if converged:
            return [(True, state)]
        new = self.update(copy.deepcopy(state) if self.copy_state else state, reduced[0])
        return [(bool(self.until(new)) if self.until is not None else False, new)]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Update, (self.update, self.until, self.copy_state))


def _result_hold(state: Any) -> float:
    """Seconds workers may hold this loop's states: longer when the state is small.

    Each batch of states wakes the driver, and a wake-up arrives with cold
    caches: measured on 2 cores, the driver's CPU per logistic iteration fell
    from 276-328 us to 149-166 us going from 0.02 s to 0.1 s, CPU a worker
    of a synchronous loop no longer waits for. What a worker holds is
    states: at most 0.1 s of 16 KiB ones is a few MB even at 10,000
    iterations a second; a larger state keeps the short hold (20 ms of a
    1 MB state is already 20 MB at 1,000 a second). The size is the pickled
    state's, its arrays measured in place (out of band, not copied).
    """
    buffers: list[pickle.PickleBuffer] = []
    try:
        size = len(pickle.dumps(state, protocol=5, buffer_callback=buffers.append))
    except Exception:  # only cloudpickle takes it (as it ships): the default hold
        return RESULT_HOLD
    size += sum(memoryview(b).nbytes for b in buffers)
    return SMALL_STATE_HOLD if size <= SMALL_STATE_BYTES else RESULT_HOLD


def _first(part: Any) -> Any:
    if type(part) is list:
        return part[0] if part else None
    return next(iter(part), None)


def _checkpoint(ds: D.Dataset, converged: bool, state: Any) -> None:
    """Cut ``ds``'s lineage to the state the driver just received.

    The dataset stays cached where it is; if a worker holding it is lost,
    recovery recomputes it from this value instead of replaying every
    iteration since ``init``: ``iterate`` resumes from the last completed
    iteration's state.
    """
    ds.node = N.SourceNode(ds.id, [[(converged, state)]] * ds.node.num_partitions, f"checkpoint of {ds.node.label}")
    ds.parents = ()


def iterate(ctx: Context, data: D.Dataset, init: Any, *, local: Callable[[Any, Any], Any],
            combine: Callable[[Any, Any], Any], update: Callable[[Any, Any], Any], iterations: int,
            group_size: Any = None, until: Callable[[Any], bool] | None = None,
            on_iteration: Callable[[int, Any], None] | None = None, keep_history: bool = False,
            copy_state: bool = True) -> IterateResult:
    for name, f in (("local", local), ("combine", combine), ("update", update)):
        if not callable(f):
            raise TypeError(f"iterate: {name} must be callable, got {type(f).__name__}")
    if until is not None and not callable(until):
        raise TypeError(f"iterate: until must be callable or None, got {type(until).__name__}")
    if not isinstance(data, D.Dataset) or data.ctx is not ctx:
        raise ValueError("iterate: data must be a Dataset of this Context")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterate: iterations must be a non-negative int, got {iterations!r}")
    data.cache()
    label = D._call_site()
    local_op, comb = _Local(local), _Combine(combine)
    merge, upd = _Merge(comb), _Update(update, until, copy_state)
    result = IterateResult(state=init)
    slots = max(1, min(ctx.num_workers, data.num_partitions))  # fixed for the whole loop: see the module doc
    copies = slots if slots <= ALL_REDUCE_MAX else 1
    state0 = ctx.parallelize([(False, init)] * copies, copies).cache()
    stop = [False]
    copy0, split = _Copy0(), _Split()  # one object each for the whole loop: templates key ops by identity

    pending: dict[int, D.Dataset] = {}  # iteration -> its state dataset, until its state arrives

    def jobs() -> Iterator[tuple[D.Dataset, Any]]:
        state = state0
        for i in range(1, iterations + 1):
            if stop[0]:
                return
            node = N.BroadcastZipNode(next(D._ids), data.node, state.node, local_op, f"iterate local at {label}",
                                      slots=copies)
            partials = D.Dataset(ctx, node, (data, state))
            dep = N.ShuffleDep(next(D._shuffle_ids), partials.node, split, local_combine=comb,
                               combine_slots=slots)
            rnode = N.ShuffleReadNode(next(D._ids), (dep,), merge, copies, f"iterate combine at {label}")
            reduced = D.Dataset(ctx, rnode, (partials,))
            znode = N.ZipNode(next(D._ids), reduced.node, state.node, upd, f"iterate update at {label}")
            new = D.Dataset(ctx, znode, (reduced, state)).cache()
            pending[i] = new
            out = new if copies == 1 else D.Dataset(ctx, N.NarrowNode(next(D._ids), new.node, copy0,
                                                                     f"iterate state at {label}"), (new,))
            yield out, _first
            state.unpersist()  # the job just yielded is planned: its input can go after the group
            state = new

    states = ctx.iter_jobs(jobs(), group_size, keep_going=lambda: not stop[0], hold_results=_result_hold(init))
    try:
        for i, [(converged, state), *_] in enumerate(states, start=1):
            _checkpoint(pending.pop(i), converged, state)
            if keep_history:
                result.history.append(state)
            result.state = state
            result.iterations = i
            if on_iteration is not None:
                on_iteration(i, state)
            if converged:
                result.converged = True
                stop[0] = True
                break
    finally:
        # After convergence the rest of the group would only pass the state
        # through: closing the stream aborts it (and the group, cut short,
        # does not feed the group-size tuner with what looks like overhead).
        states.close()
        state0.unpersist()
    return result
