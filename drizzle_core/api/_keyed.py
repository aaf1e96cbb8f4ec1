"""``Context.iterate_by_key``: an iteration whose state is a keyed, partitioned dataset.

``iterate`` carries one value (a model) from iteration to iteration, and every
worker holds a copy. Some states are too big for that: PageRank's rank per
vertex, ALS's factor vector per user and per item. Here the state is a dataset
of ``(key, value)`` pairs, hash-partitioned into P partitions, one dict per
partition, that never leaves the workers. An iteration is the message-passing
step of Pregel (GraphX's ``aggregateMessages`` followed by ``joinVertices``)::

    sent_i    = Zip(data_j, state_{i-1}, send)   # j = (i - 1) % len(data): the data co-partitioned with the state
    gathered  = shuffle of sent_i into P partitions, combined per destination key
    state_i   = Zip(gathered, state_{i-1}, update).cache()

* ``send(key, value, values)`` runs for every state key that has values in
  this iteration's data (an inner join, as in Spark's PageRank example
  ``links.join(ranks)``), and yields ``(destination key, message)`` pairs.
  Without ``data``, ``send(key, value)`` runs for every key.
* Messages to one key are merged with ``combine`` on the map side and again on
  the reduce side (like ``reduce_by_key``), or listed when ``combine`` is None.
* ``update(key, old, message)`` gives the new value of each key that received
  a message (``old`` is None for a key new to the state; returning None removes
  the key, as ``update_state_by_key`` does). A key that received no message keeps
  its value: the state of Pregel's inactive vertices.
* ``aggregate=(seq, comb)``: a global value per iteration (Pregel's
  aggregators): ``seq`` is called with ``send``'s arguments for every sending
  key, its results folded with ``comb`` and handed to every update as a fourth
  argument, ``update(key, old, message, total)``. Implicit-feedback ALS needs
  Y'Y over all items; PageRank the rank held by vertices without out-links.

Why the data is a *sequence*: iteration i reads ``data[(i - 1) % len(data)]``,
so ALS alternates between its ratings keyed by item (items send their factors
to their users) and keyed by user.

Placement: the data and the initial state are hash-partitioned by the same
``portable_hash`` as every shuffle, into the same P partitions, and cached. A
shuffle's partition p goes to worker ``p % W``, so data partition p and state
partition p are on one worker; each iteration's send and update tasks go where
that state partition is (locality), and only the messages cross the network.

Determinism and recovery: a partition's messages are combined in the order of
its state's keys, and a reducer folds the map partitions' buckets in map
partition order, so a recomputed partition (after a lost worker) is the same
value, and so is a run with another group size or worker count. Every
``checkpoint_interval`` iterations the job brings the state to the driver,
which truncates the state's lineage there (``Dataset.truncate_lineage``): the
driver's lineage stays bounded, and a lost worker costs at most that many
iterations, replayed from the last checkpoint.

Convergence: with ``measure(key, old, new)`` (a number, summed over the
updated keys in partition order) each iteration's job returns that sum to the
driver: ``on_iteration(i, metric)`` sees it, and ``until(metric)`` ends the
loop. The state returned is the one of the iteration where ``until`` became
true; iterations of the same group already launched after it are discarded.
Until a state is known not to be the answer, it stays cached: at most one
group's states are cached at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import lineage as N
from .._check import check_callable
from . import _dataset as D
from ._iterate import RESULT_HOLD

if TYPE_CHECKING:
    from ._context import Context

class _Nothing:
    """Marks an aggregate no key contributed to (None may be a user's value)."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "_NOTHING"

    def __repr__(self) -> str:
        return "<nothing>"


_NOTHING = _Nothing()


@dataclass
class KeyedIterateResult:
    """What :meth:`Context.iterate_by_key` returns."""

    state: D.Dataset                                  # the last state, (key, value) pairs, cached on the workers
    iterations: int = 0                               # iterations that ran
    converged: bool = False                           # ``until`` became true
    metrics: list[Any] = field(default_factory=list)  # each iteration's summed ``measure`` (with ``measure`` only)


class _Send:
    """Map side: the messages of one state partition, combined per destination key, and its aggregate."""

    __slots__ = ("agg_comb", "combine", "has_data", "send", "seq")

    def __init__(self, send: Callable[..., Iterable[Any]], combine: Callable[[Any, Any], Any] | None,
                 seq: Callable[[Any, Any], Any] | None, agg_comb: Callable[[Any, Any], Any] | None,
                 has_data: bool) -> None:
        self.send, self.combine, self.seq, self.agg_comb, self.has_data = send, combine, seq, agg_comb, has_data

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Send, (self.send, self.combine, self.seq, self.agg_comb, self.has_data))

    def user_functions(self) -> list[Any]:
        return [f for f in (self.send, self.combine, self.seq, self.agg_comb) if f is not None]

    def __call__(self, p: int, *parts: Any) -> list[Any]:
        if self.has_data:
            data, state = parts[0][0], parts[1][0]
        else:
            data, state = None, parts[0][0]
        send, combine, seq, agg_comb = self.send, self.combine, self.seq, self.agg_comb
        out: dict[Any, Any] = {}
        agg: Any = _NOTHING
        for k, v in state.items():
            if data is None:
                args: tuple[Any, ...] = (k, v)
            else:
                values = data.get(k)
                if values is None:
                    continue
                args = (k, v, values)
            msgs = send(*args)
            if msgs is None:
                msgs = ()
            pair: Any = _NOTHING
            try:
                for pair in msgs:
                    dest, m = pair
                    if combine is None:
                        lst = out.get(dest)
                        if lst is None:
                            out[dest] = [m]
                        else:
                            lst.append(m)
                    else:
                        out[dest] = combine(out[dest], m) if dest in out else m
            except (TypeError, ValueError) as e:
                _bad_message(e, k, msgs, pair)
                raise
            if seq is not None:
                a = seq(*args)
                agg = a if agg is _NOTHING else agg_comb(agg, a)  # type: ignore[misc]
        return [out, agg]


def _bad_message(e: BaseException, key: Any, msgs: Any, pair: Any) -> None:
    """If ``e`` is the send loop's own failure to read ``send``'s output (not a user function's error), raise a
    TypeError that names the key and what ``send`` gave; otherwise return. Only errors raised in the loop's own
    frame are ours: the per-message path checks nothing, the way ``reduce_by_key`` checks its records."""
    tb = e.__traceback__
    if tb is None or tb.tb_next is not None:
        return
    if pair is _NOTHING and "not iterable" in str(e):
        raise TypeError(f"iterate_by_key: send must return an iterable of (key, message) pairs; for key "
                        f"{key!r} it returned {type(msgs).__name__}") from None
    if "unpack" in str(e):
        raise TypeError(f"iterate_by_key: send must yield (key, message) pairs; for key {key!r} it yielded "
                        f"{type(pair).__name__} {pair!r:.60}") from None
    if "unhashable" in str(e):
        raise TypeError(f"iterate_by_key: a message's key must be hashable; for key {key!r} send yielded "
                        f"{pair!r:.60}") from None


class _Split:
    """Bucket the messages by destination partition; every bucket carries the partition's aggregate."""

    __slots__ = ()

    def __call__(self, part: list[Any], R: int) -> list[Any]:
        out, agg = part
        return [(b, agg) for b in N.bucket_dict(out, R)]


class _Gather:
    """Reduce side: merge the map partitions' messages (in map partition order) and fold their aggregates."""

    __slots__ = ("agg_comb", "combine")

    def __init__(self, combine: Callable[[Any, Any], Any] | None, agg_comb: Callable[[Any, Any], Any] | None) -> None:
        self.combine, self.agg_comb = combine, agg_comb

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Gather, (self.combine, self.agg_comb))

    def user_functions(self) -> list[Any]:
        return [f for f in (self.combine, self.agg_comb) if f is not None]

    def __call__(self, p: int, deps: list[list[Any]]) -> list[Any]:
        combine, agg_comb = self.combine, self.agg_comb
        msgs: dict[Any, Any] = {}
        total: Any = _NOTHING
        for block, agg in deps[0]:
            if combine is None:
                for k, ms in block.items():
                    lst = msgs.get(k)
                    if lst is None:
                        msgs[k] = list(ms)  # a copy: the block may be read again (a retried task)
                    else:
                        lst.extend(ms)
            else:
                for k, m in block.items():
                    msgs[k] = combine(msgs[k], m) if k in msgs else m
            if agg is not _NOTHING:
                total = agg if total is _NOTHING else agg_comb(total, agg)  # type: ignore[misc]
        return [msgs, total]


class _Apply:
    """The new state partition: ``update`` for each key that received a message, the others as they were.

    ``update`` gets its own deep copy of a key's old value (``copy_state``):
    the old value is the last iteration's cached block, which ``measure``
    compares the new one with and a recovery reads. Changed in place, the
    change measured 0 (an ``until`` on it stopped a loop at once).
    """

    __slots__ = ("copy_state", "measure", "update", "with_total")

    def __init__(self, update: Callable[..., Any], measure: Callable[[Any, Any, Any], Any] | None,
                 with_total: bool, copy_state: bool = True) -> None:
        self.update, self.measure, self.with_total, self.copy_state = update, measure, with_total, copy_state

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Apply, (self.update, self.measure, self.with_total, self.copy_state))

    def user_functions(self) -> list[Any]:
        return [f for f in (self.update, self.measure) if f is not None]

    def __call__(self, p: int, gathered: list[Any], state: list[Any]) -> list[Any]:
        msgs, total = gathered[0], gathered[1]
        old = state[0]
        new = dict(old)  # the old partition is a cached block other tasks may still read: never changed in place
        update, measure = self.update, self.measure
        metric: Any = 0
        if self.with_total:
            total = None if total is _NOTHING else total
        copying = self.copy_state
        for k, m in msgs.items():
            prev = old.get(k)
            mine = copy.deepcopy(prev) if copying and prev is not None else prev
            v = update(k, mine, m, total) if self.with_total else update(k, mine, m)
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
            if measure is not None:
                metric = metric + measure(k, prev, v)
        return [new, metric]


class _InitState:
    """The initial state partition from ``(key, value)`` pairs: one dict, one value per key."""

    __slots__ = ()

    def __call__(self, p: int, deps: list[list[dict[Any, list[Any]]]]) -> list[Any]:
        state: dict[Any, Any] = {}
        for block in deps[0]:
            for k, vs in block.items():
                if len(vs) != 1 or k in state:
                    raise ValueError(f"iterate_by_key: the initial state has several values for key {k!r}; "
                                     f"give one value per key (reduce_by_key first)")
                state[k] = vs[0]
        return [state, 0]


class _GroupDict:
    """A data partition: one dict of key -> its values (in partition order), looked up by ``send``."""

    __slots__ = ()

    def __call__(self, p: int, deps: list[list[dict[Any, list[Any]]]]) -> list[dict[Any, list[Any]]]:
        return [N.merge_groups(deps[0])]


def _metric(part: list[Any]) -> Any:
    """An iteration's job result, per partition: the partition's summed ``measure``."""
    return part[1]


def _whole(part: list[Any]) -> Any:
    """A checkpoint iteration's job result: the whole partition, which the driver truncates the lineage to."""
    return (part[0], part[1])


def _items(p: int, part: list[Any]) -> list[tuple[Any, Any]]:
    return list(part[0].items())


def _hash_partitioned(ds: D.Dataset, merge: Any, P: int, label: str) -> D.Dataset:
    dep = N.ShuffleDep(next(D._shuffle_ids), ds.node, N.group_split)
    node = N.ShuffleReadNode(next(D._ids), (dep,), merge, P, label)
    return D.Dataset(ds.ctx, node, (ds,))


def _check_args(ctx: Context, state: Any, data: Any, send: Any, update: Any, combine: Any, aggregate: Any,
                measure: Any, until: Any, iterations: Any, num_partitions: Any,
                checkpoint_interval: Any) -> list[D.Dataset]:
    if not isinstance(state, D.Dataset) or state.ctx is not ctx:
        raise ValueError(f"iterate_by_key: state must be a Dataset of (key, value) pairs of this Context, "
                         f"got {type(state).__name__}")
    datas = [] if data is None else [data] if isinstance(data, D.Dataset) else list(data)
    if data is not None and not datas:
        raise ValueError("iterate_by_key: data is an empty sequence (pass None for no data)")
    for i, d in enumerate(datas):
        if not isinstance(d, D.Dataset) or d.ctx is not ctx:
            raise ValueError(f"iterate_by_key: data[{i}] must be a Dataset of this Context, got {type(d).__name__}")
    check_callable(send, "iterate_by_key send")
    check_callable(update, "iterate_by_key update")
    for name, f in (("combine", combine), ("measure", measure), ("until", until)):
        if f is not None:
            check_callable(f, f"iterate_by_key {name}")
    if aggregate is not None:
        if not isinstance(aggregate, tuple) or len(aggregate) != 2:
            raise TypeError(f"iterate_by_key: aggregate must be a (seq, comb) pair of functions, got {aggregate!r}")
        check_callable(aggregate[0], "iterate_by_key aggregate seq")
        check_callable(aggregate[1], "iterate_by_key aggregate comb")
    if until is not None and measure is None:
        raise ValueError("iterate_by_key: until needs measure (until is asked about each iteration's summed measure)")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterate_by_key: iterations must be a non-negative int, got {iterations!r}")
    if num_partitions is not None and (isinstance(num_partitions, bool) or not isinstance(num_partitions, int)
                                       or num_partitions < 1):
        raise ValueError(f"iterate_by_key: num_partitions must be a positive int, got {num_partitions!r}")
    if isinstance(checkpoint_interval, bool) or not isinstance(checkpoint_interval, int) or checkpoint_interval < 1:
        raise ValueError(f"iterate_by_key: checkpoint_interval must be a positive int, got {checkpoint_interval!r}")
    return datas


def iterate_by_key(ctx: Context, state: D.Dataset, *, send: Callable[..., Iterable[Any]],
                   update: Callable[..., Any], iterations: int, data: D.Dataset | Sequence[D.Dataset] | None = None,
                   combine: Callable[[Any, Any], Any] | None = None,
                   aggregate: tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]] | None = None,
                   measure: Callable[[Any, Any, Any], Any] | None = None, until: Callable[[Any], bool] | None = None,
                   num_partitions: int | None = None, group_size: Any = None, checkpoint_interval: int = 10,
                   on_iteration: Callable[[int, Any], None] | None = None, progress: Any = False,
                   copy_state: bool = True) -> KeyedIterateResult:
    if not isinstance(copy_state, bool):
        raise TypeError(f"iterate_by_key: copy_state must be a bool, got {type(copy_state).__name__}")
    datas = _check_args(ctx, state, data, send, update, combine, aggregate, measure, until, iterations,
                        num_partitions, checkpoint_interval)
    label = D._call_site()
    P = num_partitions or max([state.num_partitions, *(d.num_partitions for d in datas)])
    seq, agg_comb = aggregate if aggregate is not None else (None, None)
    send_op = _Send(send, combine, seq, agg_comb, bool(datas))
    split, gather = _Split(), _Gather(combine, agg_comb)
    apply_op = _Apply(update, measure, aggregate is not None, copy_state)

    grouped = [_hash_partitioned(d, _GroupDict(), P, f"iterate_by_key data at {label}").cache() for d in datas]
    state0 = _hash_partitioned(state, _InitState(), P, f"iterate_by_key initial state at {label}").cache()
    made: dict[int, D.Dataset] = {}             # iteration -> its state, until its job's result arrives
    cached: dict[int, D.Dataset] = {0: state0}  # iteration -> its state, while it is cached
    stop = [False]

    def checkpoint_at(i: int) -> bool:
        return i % checkpoint_interval == 0 and i < iterations

    def jobs() -> Iterator[tuple[D.Dataset, Any]]:
        prev = state0
        for i in range(1, iterations + 1):
            if stop[0]:
                return
            if grouped:
                d = grouped[(i - 1) % len(grouped)]
                snode: N.Node = N.ZipNode(next(D._ids), d.node, prev.node, send_op, f"iterate_by_key send at {label}")
                sent = D.Dataset(ctx, snode, (d, prev))
            else:
                snode = N.NarrowNode(next(D._ids), prev.node, send_op, f"iterate_by_key send at {label}")
                sent = D.Dataset(ctx, snode, (prev,))
            dep = N.ShuffleDep(next(D._shuffle_ids), snode, split)
            gnode = N.ShuffleReadNode(next(D._ids), (dep,), gather, P, f"iterate_by_key gather at {label}")
            gathered = D.Dataset(ctx, gnode, (sent,))
            new = D.Dataset(ctx, N.ZipNode(next(D._ids), gnode, prev.node, apply_op,
                                           f"iterate_by_key update at {label}"), (gathered, prev)).cache()
            made[i] = cached[i] = new
            yield new, (_whole if checkpoint_at(i) else _metric)
            if until is None:  # no earlier state can be the answer: the job just planned was its last reader
                cached.pop(i - 1).unpersist()
            prev = new

    result = KeyedIterateResult(state=state0)
    final = state0
    results = ctx.iter_jobs(jobs(), group_size, keep_going=lambda: not stop[0], hold_results=RESULT_HOLD,
                            progress=progress)
    try:
        for i, parts in enumerate(results, start=1):
            final = made.pop(i)
            if checkpoint_at(i):
                final.truncate_lineage([list(part) for part in parts])
                parts = [m for _, m in parts]
            metric = None
            if measure is not None:
                metric = parts[0]
                for m in parts[1:]:
                    metric = metric + m
                result.metrics.append(metric)
            result.iterations = i
            if on_iteration is not None:
                on_iteration(i, metric)
            if until is not None:
                cached.pop(i - 1).unpersist()  # state i is newer, and the loop goes on or ends with it
                if until(metric):
                    result.converged = True
                    stop[0] = True
                    break
    except BaseException:
        final = None  # type: ignore[assignment]
        raise
    finally:
        # Closing the iterator aborts what is left of the group (after convergence, iterations past the answer).
        results.close()
        for ds in cached.values():
            if ds is not final:
                ds.unpersist()
        cached.clear()
        made.clear()
        for g in grouped:
            g.unpersist()
    result.state = D.Dataset(ctx, N.NarrowNode(next(D._ids), final.node, _items, f"iterate_by_key state at {label}"),
                             (final,))
    return result
