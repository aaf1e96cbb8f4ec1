"""Dataset: a partitioned, immutable, lazy collection with lineage (an RDD).

Transformations build new datasets and run nothing; actions (``collect``,
``count``, ...) run one job through the context's group scheduler. A dataset
owns one flat :mod:`node <drizzle_core._nodes>` (what a worker executes) and
keeps its parent datasets alive (what the planner walks).
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
import operator
import os
import random
import sys
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import reduce as _reduce
from types import FrameType
from typing import TYPE_CHECKING, Any

from .. import lineage as N
from .._check import check_callable, fn_name
from .._errors import TaskError
from . import _actions as A
from . import _text
from ._stats import StatCounter

if TYPE_CHECKING:
    from ._context import Context

_ids = itertools.count(1)
_shuffle_ids = itertools.count(1)
# drizzle_core's own folder (this module is in drizzle_core/api): frames under it are the engine's
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


_inside: dict[str, bool] = {}  # code file name -> is it drizzle_core's (abspath is slow; files are few)


def _is_ours(filename: str) -> bool:
    ours = _inside.get(filename)
    if ours is None:
        ours = _inside[filename] = os.path.abspath(filename).startswith(_PKG_DIR)
    return ours


def _call_site() -> str:
    """``file:line`` of the first frame outside drizzle_core, like Spark's call sites."""
    f: FrameType | None = sys._getframe(2)
    while f is not None and _is_ours(f.f_code.co_filename):
        f = f.f_back
    if f is None:
        return "<unknown>"
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


def _action_site() -> str:
    """``"sum() at etl.py:12"``: the Dataset method the user called, and where (asked on failure only).

    The outermost drizzle_core frame is the method the user's code called
    (``mean()`` runs ``stats()``, which runs the job: the user wrote ``mean()``).
    """
    f: FrameType | None = sys._getframe(1)
    method = "<action>"
    while f is not None and _is_ours(f.f_code.co_filename):
        method = f.f_code.co_name
        f = f.f_back
    if f is None:
        return f"{method}()"
    return f"{method}() at {os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


_CAPTURED = ("a {what} cannot be used inside a task (a function or data sent to the workers: it is the "
             "driver's handle{why}); pass data with ds.zip_partitions(other, f), ds.zip_broadcast(small, f) or "
             "ds.join(other), or collect() the values on the driver and use those in the function")


class Dataset:
    """A partitioned collection computed lazily on the workers.

    Build one with :meth:`Context.parallelize`; derive others with the
    transformations below; get results with an action. ``cache()`` keeps the
    computed partitions in the workers' block stores across jobs, which is how
    iterative programs carry training data and per-key state from one
    iteration to the next without the driver.
    """

    __slots__ = ("__weakref__", "_cached", "ctx", "node", "parents")

    def __init__(self, ctx: Context, node: N.Node, parents: tuple[Dataset, ...]) -> None:
        self.ctx = ctx
        self.node = node
        self.parents = parents
        self._cached = False

    # ------------------------------------------------------------ properties
    @property
    def id(self) -> int:
        return self.node.id

    @property
    def num_partitions(self) -> int:
        return self.node.num_partitions

    @property
    def is_cached(self) -> bool:
        return self._cached

    def __repr__(self) -> str:
        return f"<Dataset #{self.id} {self.node.label} partitions={self.num_partitions}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled only when a task's function or data captured it: say so on the driver, before anything
        # is sent (the scheduler names the function and where it was defined), not as a worker-side mystery.
        raise TypeError(_CAPTURED.format(what="Dataset", why=f" on {self!r}, whose partitions live on the workers"))

    def __copy__(self) -> Dataset:
        return self  # immutable: a copy would be the same dataset (sklearn's clone deep-copies parameters)

    def __deepcopy__(self, memo: dict[int, Any]) -> Dataset:
        return self

    # ------------------------------------------------------ narrow transforms
    def _narrow(self, op: Callable[[int, Any], Iterable[Any]], label: str) -> Dataset:
        node = N.NarrowNode(next(_ids), self.node, op, f"{label} at {_call_site()}")
        return Dataset(self.ctx, node, (self,))

    def map(self, f: Callable[[Any], Any]) -> Dataset:
        """Apply ``f`` to every element."""
        check_callable(f, "map")
        return self._narrow(N.MapOp(f), f"map({fn_name(f)})")

    def filter(self, f: Callable[[Any], bool]) -> Dataset:
        """Keep the elements for which ``f`` is true."""
        check_callable(f, "filter")
        return self._narrow(N.FilterOp(f), f"filter({fn_name(f)})")

    def flat_map(self, f: Callable[[Any], Iterable[Any]]) -> Dataset:
        """Apply ``f`` to every element and flatten the iterables it returns."""
        check_callable(f, "flat_map")
        return self._narrow(N.FlatMapOp(f), f"flat_map({fn_name(f)})")

    def map_partitions(self, f: Callable[..., Iterable[Any]], *, with_index: bool = False) -> Dataset:
        """Apply ``f`` to each whole partition (``f(p, part)`` with ``with_index``).

        A partition from ``parallelize(ndarray)`` arrives as its ndarray row
        slice, so vectorized code runs at numpy speed. ``f`` returns an
        iterable (a list, a generator or an ndarray).

        With ``with_index`` the worker calls ``f`` itself (it has the
        signature of a node's function), with no wrapper. So a callable that
        wraps user code (a library's reader around a user's generator) may
        define ``user_functions()``, returning the user callables it runs: a
        serialization error then names the one that does not pickle, and
        where it was defined, rather than the wrapper.
        """
        check_callable(f, "map_partitions")
        op: Callable[[int, Any], Iterable[Any]] = f if with_index else N.MapPartitionsOp(f)
        return self._narrow(op, f"map_partitions({fn_name(f)})")

    def key_by(self, f: Callable[[Any], Any]) -> Dataset:
        """Pair every element with a key: ``(f(x), x)``."""
        check_callable(f, "key_by")
        return self._narrow(N.KeyByOp(f), f"key_by({fn_name(f)})")

    def map_values(self, f: Callable[[Any], Any]) -> Dataset:
        """``(k, f(v))`` for every ``(k, v)`` pair: the values mapped, the keys kept."""
        check_callable(f, "map_values")
        return self._narrow(N.MapValuesOp(f), f"map_values({fn_name(f)})")

    def flat_map_values(self, f: Callable[[Any], Iterable[Any]]) -> Dataset:
        """``(k, w)`` for every ``w`` of ``f(v)``, for every ``(k, v)`` pair."""
        check_callable(f, "flat_map_values")
        return self._narrow(N.FlatMapValuesOp(f), f"flat_map_values({fn_name(f)})")

    def keys(self) -> Dataset:
        """The key of every ``(k, v)`` pair."""
        return self._narrow(N.pair_keys, "keys")

    def values(self) -> Dataset:
        """The value of every ``(k, v)`` pair."""
        return self._narrow(N.pair_values, "values")

    def sample(self, with_replacement: bool, fraction: float, seed: int | None = None) -> Dataset:
        """A random sample: each element kept with probability ``fraction`` (Bernoulli), or, with replacement,
        repeated a Poisson(``fraction``) number of times (``fraction`` is then the expected count, any >= 0).

        Deterministic: partition p draws from a generator seeded by ``(seed,
        p)`` (``drizzle_core.lineage.sample_draws``), so a recomputed
        partition (after a lost worker) is the same sample. ``seed=None``
        picks one now, on the driver, as PySpark does. The size of the
        result is random, not ``fraction`` times the count. Differs from
        Spark: the random numbers are numpy's (PCG64), not Java's XORShift,
        so a seed gives another sample than in Spark. An ndarray partition
        stays an ndarray (a vectorized selection).
        """
        if not isinstance(with_replacement, bool):
            raise TypeError(f"sample: with_replacement must be a bool, got {with_replacement!r}")
        if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real)
                or not fraction >= 0 or fraction == float("inf")):
            raise ValueError(f"sample: fraction must be a finite number >= 0, got {fraction!r}")
        if not with_replacement and fraction > 1:
            raise ValueError(f"sample: fraction must be in [0, 1] without replacement, got {fraction!r}")
        if seed is None:
            seed = random.randrange(sys.maxsize)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"sample: seed must be an int or None, got {seed!r}")
        return self._narrow(N.SampleOp(with_replacement, float(fraction), seed),
                            f"sample({with_replacement}, {fraction}, {seed})")

    def zip_with_index(self) -> Dataset:
        """``(element, index)``: indexes 0, 1, ... in partition order, then element order.

        Runs a job now (to count each partition, unless there is only one),
        as Spark does; cache the dataset first if computing it is costly, or
        it is computed twice.
        """
        if self.num_partitions == 1:
            starts = [0]
        else:
            counts = self._run(_count)
            starts = list(itertools.accumulate(counts[:-1], initial=0))
        return self._narrow(N.ZipWithIndexOp(starts), "zip_with_index")

    def union(self, *others: Dataset) -> Dataset:
        """The partitions of this dataset followed by those of ``others``."""
        for o in others:
            self._check_same_context(o, "union")
        parents = (self, *others)
        node = N.UnionNode(next(_ids), [d.node for d in parents], f"union at {_call_site()}")
        return Dataset(self.ctx, node, parents)

    def zip_partitions(self, other: Dataset, f: Callable[[Any, Any], Iterable[Any]]) -> Dataset:
        """``f(a_p, b_p)`` for each pair of partitions with the same index.

        The two datasets must have the same number of partitions. This is how
        state is carried from iteration to iteration: ``state_i =
        state_{i-1}.zip_partitions(update_i, merge).cache()`` runs partition p
        where state p lives, so the state never leaves its worker.
        """
        check_callable(f, "zip_partitions")
        self._check_same_context(other, "zip_partitions")
        if other.num_partitions != self.num_partitions:
            raise ValueError(
                f"zip_partitions needs equal partition counts: {self!r} has {self.num_partitions}, "
                f"{other!r} has {other.num_partitions}"
            )
        node = N.ZipNode(next(_ids), self.node, other.node, N.ZipOp(f),
                         f"zip_partitions({fn_name(f)}) at {_call_site()}")
        return Dataset(self.ctx, node, (self, other))

    def zip_broadcast(self, small: Dataset, f: Callable[[Any, Any], Iterable[Any]]) -> Dataset:
        """``f(part, small_part)`` for every partition of this dataset, all with the one partition of ``small``.

        For a small value every partition needs: a model, a lookup table, a
        stream's dimension table for a join without a shuffle. ``small`` must
        have exactly one partition (``ctx.parallelize([value], 1)``; cache it,
        so it is computed once). It is not shipped with every task: it is
        computed where it lives and forwarded once to each worker that runs
        partitions of this dataset, which then zip it with the partitions
        they hold (the data stays where it is). ``small_part`` is that
        partition as is, e.g. ``[value]``.
        """
        check_callable(f, "zip_broadcast")
        self._check_same_context(small, "zip_broadcast")
        if small.num_partitions != 1:
            raise ValueError(f"zip_broadcast needs a one-partition dataset to broadcast: {small!r} has "
                             f"{small.num_partitions} (make it with parallelize([value], 1))")
        node = N.BroadcastZipNode(next(_ids), self.node, small.node, N.ZipOp(f),
                                  f"zip_broadcast({fn_name(f)}) at {_call_site()}")
        return Dataset(self.ctx, node, (self, small))

    def truncate_lineage(self, partitions: Sequence[Any]) -> Dataset:
        """Forget how this dataset was computed: from now on it is ``partitions``, its value held by the caller.

        Why: a loop that computes each state from the previous one
        (``state = state.zip_partitions(update, merge).cache()``) adds a step
        to the state's lineage every round, and the driver keeps the whole
        lineage alive to recompute lost blocks. In an endless loop (a
        stream's per-key state, ``iterate``'s model) that is unbounded memory
        on the driver, and a lost worker would replay every round since the
        start. Once a job has brought the state's value to the driver,
        truncating the lineage there bounds both: recovery recomputes the
        dataset from this value (the driver is the reliable store, where
        Spark's checkpoint writes to HDFS), and the datasets it came from
        can be freed.

        ``partitions`` is one value per partition, in order: what a job over
        this dataset returned (``glom()``, or a job function returning its
        partition as a list). It is not checked against the old lineage: it
        is what recovery will use. The dataset keeps its id, so partitions
        cached on the workers stay where they are and are still read there.
        Returns self.
        """
        parts = _partitions_arg(partitions, "truncate_lineage")
        if len(parts) != self.num_partitions:
            raise ValueError(f"truncate_lineage: {self!r} has {self.num_partitions} partitions, "
                             f"got {len(parts)} values")
        self.node = N.SourceNode(self.id, parts, f"checkpoint of {self.node.label}")
        self.parents = ()
        return self

    # ----------------------------------------------------- shuffle transforms
    def _shuffle(self, parents: tuple[Dataset, ...], splits: list[Any], merge: Any,
                 num_partitions: int | None, label: str) -> Dataset:
        n = self.num_partitions if num_partitions is None else num_partitions
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"{label.split('(')[0]}: num_partitions must be a positive int, got {n!r}")
        deps = tuple(N.ShuffleDep(next(_shuffle_ids), d.node, s) for d, s in zip(parents, splits))
        node = N.ShuffleReadNode(next(_ids), deps, merge, n, f"{label} at {_call_site()}")
        return Dataset(self.ctx, node, parents)

    def reduce_by_key(self, f: Callable[[Any, Any], Any], num_partitions: int | None = None) -> Dataset:
        """Merge the values of each key with the associative function ``f``.

        Values are combined on the map side first, so only one value per key
        per map partition crosses the shuffle.
        """
        check_callable(f, "reduce_by_key")
        return self._shuffle((self,), [N.CombineSplit(f)], N.CombineMerge(f), num_partitions,
                             f"reduce_by_key({fn_name(f)})")

    def group_by_key(self, num_partitions: int | None = None) -> Dataset:
        """``(key, [values])`` per key, values in partition order."""
        return self._shuffle((self,), [N.group_split], N.group_merge, num_partitions, "group_by_key")

    def join(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """Inner join of two key-value datasets: ``(k, (v, w))`` per matching pair."""
        self._check_same_context(other, "join")
        return self._shuffle((self, other), [N.group_split, N.group_split], N.join_merge,
                             num_partitions, "join")

    def _whole_partitions(self, label: str) -> Dataset:
        """Each partition as one record ``(p, partition)``: the map side of the shuffles that route by position."""
        return self._narrow(N.tag_partition, label)

    def repartition(self, num_partitions: int) -> Dataset:
        """The elements in ``num_partitions`` partitions, spread evenly by a shuffle (round robin).

        Record j of partition m goes to partition ``(m + j) % num_partitions``:
        deterministic, where Spark starts each partition at a random one. An
        ndarray dataset stays one (rows are sliced, not listed).
        """
        _check_partitions(num_partitions, "repartition")
        tagged = self._whole_partitions("repartition")
        return tagged._shuffle((tagged,), [N.round_robin_split], N.chain_merge, num_partitions, "repartition")

    def coalesce(self, num_partitions: int, shuffle: bool = False) -> Dataset:
        """At most ``num_partitions`` partitions, each a run of consecutive ones: the elements keep their order.

        ``shuffle=True`` is :meth:`repartition` (and may increase the
        count). Differs from Spark: there, coalesce without a shuffle is a
        narrow dependency (a task reads its parent partitions where they
        are); here each parent partition is moved whole, through a shuffle,
        to the task that concatenates its run (the engine's nodes read at
        most one partition of a parent per narrow input). The result is the
        same; the data crosses once.
        """
        _check_partitions(num_partitions, "coalesce")
        if not isinstance(shuffle, bool):
            raise TypeError(f"coalesce: shuffle must be a bool, got {shuffle!r}")
        if shuffle:
            return self.repartition(num_partitions)
        n = min(num_partitions, self.num_partitions)
        tagged = self._whole_partitions("coalesce")
        return tagged._shuffle((tagged,), [N.CoalesceSplit(self.num_partitions)], N.chain_merge, n, "coalesce")

    def distinct(self, num_partitions: int | None = None) -> Dataset:
        """Each element once (equal elements are one, shown as first seen); elements must be hashable."""
        if num_partitions is not None:
            _check_partitions(num_partitions, "distinct")
        return (self._narrow(N.MapOp(_with_none), "distinct")
                .reduce_by_key(_keep_first, num_partitions).keys())

    def combine_by_key(self, create_combiner: Callable[[Any], Any], merge_value: Callable[[Any, Any], Any],
                       merge_combiners: Callable[[Any, Any], Any], num_partitions: int | None = None) -> Dataset:
        """``(k, combiner)`` per key: on the map side ``create_combiner(v)`` of a key's first value and
        ``merge_value(c, v)`` of the others; the map partitions' combiners merged with ``merge_combiners``
        in partition order. Differs from PySpark: no ``partitionFunc`` (keys go by ``portable_hash``)."""
        check_callable(create_combiner, "combine_by_key")
        check_callable(merge_value, "combine_by_key")
        check_callable(merge_combiners, "combine_by_key")
        return self._shuffle((self,), [N.CombineByKeySplit(create_combiner, merge_value)],
                             N.CombineMerge(merge_combiners), num_partitions,
                             f"combine_by_key({fn_name(create_combiner)})")

    def aggregate_by_key(self, zero_value: Any, seq_func: Callable[[Any, Any], Any],
                         comb_func: Callable[[Any, Any], Any], num_partitions: int | None = None) -> Dataset:
        """``(k, aggregate)`` per key: values folded into a copy of ``zero_value`` with ``seq_func`` per map
        partition, those merged with ``comb_func``. ``zero_value`` is deep-copied for every key of every
        partition, so a mutable one may be updated in place."""
        check_callable(seq_func, "aggregate_by_key")
        check_callable(comb_func, "aggregate_by_key")
        return self._shuffle((self,), [N.CombineByKeySplit(N.ZeroThen(zero_value, seq_func), seq_func)],
                             N.CombineMerge(comb_func), num_partitions, f"aggregate_by_key({fn_name(seq_func)})")

    def fold_by_key(self, zero_value: Any, func: Callable[[Any, Any], Any],
                    num_partitions: int | None = None) -> Dataset:
        """``aggregate_by_key(zero_value, func, func)``: ``zero_value`` must be neutral for ``func``
        (it is folded in once per key per map partition)."""
        check_callable(func, "fold_by_key")
        return self._shuffle((self,), [N.CombineByKeySplit(N.ZeroThen(zero_value, func), func)],
                             N.CombineMerge(func), num_partitions, f"fold_by_key({fn_name(func)})")

    def cogroup(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """``(k, ([values here], [values in other]))`` for every key of either dataset.

        Differs from PySpark: the groups are lists, not ``ResultIterable`` objects.
        """
        self._check_same_context(other, "cogroup")
        return self._shuffle((self, other), [N.group_split, N.group_split], N.cogroup_merge, num_partitions,
                             "cogroup")

    def _outer_join(self, other: Dataset, how: str, num_partitions: int | None) -> Dataset:
        self._check_same_context(other, f"{how}_outer_join")
        return self._shuffle((self, other), [N.group_split, N.group_split], N.OuterJoinMerge(how),
                             num_partitions, f"{how}_outer_join")

    def left_outer_join(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """``(k, (v, w))`` per matching pair, and ``(k, (v, None))`` for a key of this dataset absent from ``other``."""
        return self._outer_join(other, "left", num_partitions)

    def right_outer_join(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """``(k, (v, w))`` per matching pair, and ``(k, (None, w))`` for a key of ``other`` absent from this one."""
        return self._outer_join(other, "right", num_partitions)

    def full_outer_join(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """``(k, (v, w))`` per matching pair, ``(k, (v, None))`` and ``(k, (None, w))`` for keys on one side only."""
        return self._outer_join(other, "full", num_partitions)

    def subtract_by_key(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """The pairs here whose key no pair of ``other`` has (PySpark's ``subtractByKey``)."""
        self._check_same_context(other, "subtract_by_key")
        return self.cogroup(other, num_partitions).flat_map(_pairs_only_here)

    def subtract(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """The elements here that ``other`` does not contain, each as often as it occurs here (PySpark's
        ``subtract``); elements must be hashable."""
        self._check_same_context(other, "subtract")
        return self.map(_with_none).cogroup(other.map(_with_none), num_partitions).flat_map(_only_here)

    def intersection(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """The elements both datasets contain, each once (PySpark's ``intersection``); hashable elements."""
        self._check_same_context(other, "intersection")
        return self.map(_with_none).cogroup(other.map(_with_none), num_partitions).flat_map(_in_both)

    def cartesian(self, other: Dataset) -> Dataset:
        """Every pair ``(a, b)`` of an element of this dataset and one of ``other``.

        ``M * N`` partitions: partition ``i * N + j`` pairs partition i here
        with partition j of ``other``, as Spark's. Each partition of either
        side is sent to every task that needs it (N or M copies), through a
        shuffle.
        """
        self._check_same_context(other, "cartesian")
        left, right = self._whole_partitions("cartesian"), other._whole_partitions("cartesian")
        m, n = self.num_partitions, other.num_partitions
        return left._shuffle((left, right), [N.CartesianSplit(0, m, n), N.CartesianSplit(1, m, n)],
                             N.cartesian_merge, m * n, "cartesian")

    def sort_by_key(self, ascending: bool = True, num_partitions: int | None = None,
                    keyfunc: Callable[[Any], Any] | None = None) -> Dataset:
        """The ``(k, v)`` pairs sorted by ``keyfunc(k)`` (the key itself by default), across partitions:
        every key of partition r orders before every key of partition r + 1.

        As Spark does, this runs a job now: it samples the keys (up to
        ``60 * num_partitions / partitions`` per partition, evenly spaced:
        deterministic, where Spark draws at random) to choose the ranges;
        then a shuffle sends each record to its range and each range is
        sorted (stable: equal keys keep their order). Keys must be orderable
        with ``<``. Cache the dataset first if it is costly to compute.
        """
        if not isinstance(ascending, bool):
            raise TypeError(f"sort_by_key: ascending must be a bool, got {ascending!r}")
        if keyfunc is not None:
            check_callable(keyfunc, "sort_by_key")
        n = self.num_partitions if num_partitions is None else num_partitions
        _check_partitions(n, "sort_by_key")
        size = max(1, -(-3 * min(20 * n, 1_000_000) // self.num_partitions))  # Spark's sample size per partition
        bounds = A.range_bounds(self._run(A.KeySample(size, keyfunc)), n) if n > 1 else []
        return self._shuffle((self,), [N.RangeSplit(bounds, ascending, keyfunc)], N.SortMerge(ascending, keyfunc),
                             n, "sort_by_key")

    def sort_by(self, keyfunc: Callable[[Any], Any], ascending: bool = True,
                num_partitions: int | None = None) -> Dataset:
        """The elements sorted by ``keyfunc(x)``: ``key_by(keyfunc).sort_by_key(...).values()``, as in Spark."""
        check_callable(keyfunc, "sort_by")
        return self.key_by(keyfunc).sort_by_key(ascending, num_partitions).values()

    # ---------------------------------------------------------------- caching
    def cache(self) -> Dataset:
        """Keep computed partitions on the workers for later jobs. Returns self.

        The blocks are freed by :meth:`unpersist`, or when this dataset is
        garbage-collected on the driver.
        """
        if not self._cached:
            self._cached = True
            self.ctx._register_cached(self)
        return self

    persist = cache

    def _uncache(self) -> None:
        self._cached = False

    def unpersist(self) -> Dataset:
        """Drop this dataset's cached partitions from the workers. Returns self."""
        if self._cached:
            self.ctx._unpersist(self)
        return self

    # ---------------------------------------------------------------- actions
    def _run(self, f: Callable[[Any], Any]) -> list[Any]:
        try:
            return self.ctx.run_jobs([(self, f)], group_size=1)[0]
        except TaskError as e:
            e.add_call_site(_action_site())  # the error names the user's sum() line, not parallelize's
            raise

    def collect(self) -> Any:
        """All elements, in partition order: a list, or an ndarray when every partition is one.

        A dataset made from an ndarray (``parallelize(array)``, or partitions
        that stay arrays through ``map_partitions``, ``sample``,
        ``repartition`` ...) collects back as an ndarray, its partitions
        concatenated (rows of a 2-d array stay rows); its buffers cross as
        they are. Differs from Spark, which always returns a list.
        """
        return A.concatenated(self._run(A.collect_part))

    def count(self) -> int:
        """The number of elements."""
        return sum(self._run(_count))

    def sum(self) -> Any:
        """The sum of all elements (column sums for numpy partitions)."""
        parts = [s for n, s in self._run(_sum) if n]
        return _reduce(operator.add, parts) if parts else 0

    def reduce(self, f: Callable[[Any, Any], Any]) -> Any:
        """Fold the elements with the associative function ``f``.

        Raises ValueError on an empty dataset, as ``functools.reduce`` does.
        """
        check_callable(f, "reduce")
        parts = [v for ok, v in self._run(_PartitionReduce(f)) if ok]
        if not parts:
            raise ValueError(f"reduce() of an empty dataset: {self!r}")
        return _reduce(f, parts)

    def fold(self, zero_value: Any, op: Callable[[Any, Any], Any]) -> Any:
        """PySpark's ``fold``: each partition folded into a copy of ``zero_value`` with ``op``, then the
        partitions' values folded with ``op`` into another copy, in partition order.

        ``op(acc, x)`` may update ``acc`` in place and return it (each fold
        starts from its own deep copy of ``zero_value``; the caller's is never
        changed). An empty dataset gives a copy of ``zero_value``. As in
        Spark, ``zero_value`` enters once per partition and once more: it
        must be ``op``'s identity (0 for ``+``, not 1).
        """
        check_callable(op, "fold")
        return _reduce(op, self._run(A.FoldPartition(zero_value, op)), copy.deepcopy(zero_value))

    def aggregate(self, zero_value: Any, seq_op: Callable[[Any, Any], Any], comb_op: Callable[[Any, Any], Any]) -> Any:
        """PySpark's ``aggregate``: each partition's elements folded into a copy of ``zero_value`` with
        ``seq_op(acc, element)``, the partitions' accumulators folded with ``comb_op(acc, other)`` into
        another copy, in partition order; the result may be of another type than the elements
        (``(sum, count)`` for a mean).

        Both functions may update their first argument in place and return
        it, as Spark allows (each fold starts from its own deep copy of
        ``zero_value``). An empty dataset gives a copy of ``zero_value``.
        """
        check_callable(seq_op, "aggregate")
        check_callable(comb_op, "aggregate")
        return _reduce(comb_op, self._run(A.FoldPartition(zero_value, seq_op)), copy.deepcopy(zero_value))

    def tree_aggregate(self, zero_value: Any, seq_op: Callable[[Any, Any], Any],
                       comb_op: Callable[[Any, Any], Any], depth: int = 2) -> Any:
        """``aggregate`` with the partitions' accumulators combined on the workers, in a tree of ``depth``
        levels (PySpark's ``treeAggregate``): the driver folds a few values, not one per partition.

        As in PySpark, each level keys partition p's values ``p % n`` and
        combines them with ``comb_op`` into ``n`` partitions (``n`` shrinking
        by ``ceil(P ** (1 / depth))`` a level), and ``zero_value`` (deep-copied)
        enters once per partition, not at the end. ``comb_op`` must be
        associative and commutative: a level combines partitions p, p + n, ...
        first. The tree is fixed by the partition count, so the result is the
        same on every run.
        """
        check_callable(seq_op, "tree_aggregate")
        check_callable(comb_op, "tree_aggregate")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"tree_aggregate: depth must be an int >= 1, got {depth!r}")
        n = self.num_partitions
        if n == 0:
            return copy.deepcopy(zero_value)
        level = self.map_partitions(A.FoldEach(zero_value, seq_op))
        scale = max(math.ceil(n ** (1.0 / depth)), 2)
        while n > scale + n / scale:
            n //= scale
            level = level.map_partitions(A.ByIndex(n), with_index=True).reduce_by_key(comb_op, n).values()
        return level.reduce(comb_op)

    def tree_reduce(self, f: Callable[[Any, Any], Any], depth: int = 2) -> Any:
        """``reduce`` with the partitions' values combined on the workers in a tree of ``depth`` levels
        (PySpark's ``treeReduce``). Raises ValueError on an empty dataset, as ``reduce`` does."""
        check_callable(f, "tree_reduce")
        op = A.Defined(f)
        value, dummy = self.map(A.undummied).tree_aggregate((None, True), op, op, depth)
        if dummy:
            raise ValueError(f"tree_reduce() of an empty dataset: {self!r}")
        return value

    def foreach(self, f: Callable[[Any], Any]) -> None:
        """PySpark's ``foreach``: ``f(element)`` for every element, on the worker holding it, for its side
        effects (a write to a store, a metric); nothing comes back but an error. Returns when every
        partition is done."""
        check_callable(f, "foreach")
        self._run(A.ForEach(f, whole=False))

    def foreach_partition(self, f: Callable[[Any], Any]) -> None:
        """PySpark's ``foreachPartition``: ``f(iterator)`` once per partition, on its worker (one
        connection or transaction per partition, not per element); nothing comes back but an error."""
        check_callable(f, "foreach_partition")
        self._run(A.ForEach(f, whole=True))

    def is_empty(self) -> bool:
        """Whether the dataset has no element."""
        return not self.take(1)

    def collect_as_map(self) -> dict[Any, Any]:
        """The pairs of a key-value dataset as a dict: a repeated key keeps its last value (in partition
        order), as PySpark's ``collectAsMap``."""
        return dict(self.collect())

    def lookup(self, key: Any) -> list[Any]:
        """The values of the pairs whose key is ``key``, in partition order (PySpark's ``lookup``; every
        partition is searched: no partitioner is known to narrow it)."""
        return self.filter(A.KeyIs(key)).values().collect()  # type: ignore[no-any-return]

    def take(self, n: int) -> list[Any]:
        """The first ``n`` elements, in partition order."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"take needs a non-negative int, got {n!r}")
        if n == 0:
            return []
        out: list[Any] = []
        for part in self._run(_Take(n)):
            out.extend(part)
            if len(out) >= n:
                break
        return out[:n]

    def first(self) -> Any:
        """The first element. Raises ValueError on an empty dataset."""
        got = self.take(1)
        if not got:
            raise ValueError(f"first() of an empty dataset: {self!r}")
        return got[0]

    def count_by_value(self) -> defaultdict[Any, int]:
        """``{element: number of times it occurs}`` (a ``defaultdict(int)``), counted per partition where it lives."""
        return A.merge_counts(self._run(A.count_values))

    def count_by_key(self) -> defaultdict[Any, int]:
        """``{key: number of pairs with it}`` (a ``defaultdict(int)``) of a key-value dataset."""
        return self.keys().count_by_value()

    def top(self, num: int, key: Callable[[Any], Any] | None = None) -> list[Any]:
        """The ``num`` largest elements (by ``key``), largest first."""
        return self._ordered(num, True, key, "top")

    def take_ordered(self, num: int, key: Callable[[Any], Any] | None = None) -> list[Any]:
        """The ``num`` smallest elements (by ``key``), smallest first."""
        return self._ordered(num, False, key, "take_ordered")

    def _ordered(self, num: int, largest: bool, key: Callable[[Any], Any] | None, op: str) -> list[Any]:
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise ValueError(f"{op}: num must be a non-negative int, got {num!r}")
        if key is not None:
            check_callable(key, op)
        if num == 0:
            return []
        job = A.Ordered(num, largest, key)
        return job.merged(self._run(job))

    def max(self, key: Callable[[Any], Any] | None = None) -> Any:
        """The largest element (by ``key``). Raises ValueError on an empty dataset."""
        return self._extreme(True, key, "max")

    def min(self, key: Callable[[Any], Any] | None = None) -> Any:
        """The smallest element (by ``key``). Raises ValueError on an empty dataset."""
        return self._extreme(False, key, "min")

    def _extreme(self, largest: bool, key: Callable[[Any], Any] | None, op: str) -> Any:
        if key is not None:
            check_callable(key, op)
        parts = [v for ok, v in self._run(A.Extreme(largest, key)) if ok]
        if not parts:
            raise ValueError(f"{op}() of an empty dataset: {self!r}")
        pick = max if largest else min
        return pick(parts, key=key) if key is not None else pick(parts)

    def stats(self) -> StatCounter:
        """Count, mean, variance, max and min of the (numeric) elements, in one job (a :class:`StatCounter`).

        Per column (arrays) for the rows of a 2-d ndarray dataset.
        """
        out = StatCounter()
        for part in self._run(A.partition_stats):
            out.merge_stats(part)
        return out

    def mean(self) -> Any:
        """The mean of the elements (nan for an empty dataset, as PySpark's)."""
        return self.stats().mean()

    def variance(self) -> Any:
        """The population variance of the elements."""
        return self.stats().variance()

    def stdev(self) -> Any:
        """The population standard deviation of the elements."""
        return self.stats().stdev()

    def sample_variance(self) -> Any:
        """The sample variance of the elements (divided by n - 1)."""
        return self.stats().sample_variance()

    def sample_stdev(self) -> Any:
        """The sample standard deviation of the elements (divided by n - 1)."""
        return self.stats().sample_stdev()

    def save_as_text_file(self, path: str | os.PathLike[str], compression_codec_class: str | None = None) -> None:
        """Write every element as a line (``str(x)``; bytes as they are) under the directory ``path``.

        One ``part-NNNNN`` file per partition, each written by the worker
        computing that partition (the driver only makes the directory), then
        an empty ``_SUCCESS``, as Spark does. ``path`` must not exist
        (FileExistsError) and must be on a filesystem the workers share
        with the driver. ``compression_codec_class``: None, or ``"gzip"``
        (or Hadoop's ``"org.apache.hadoop.io.compress.GzipCodec"``) for
        ``part-NNNNN.gz`` files. Differs from Spark: a failed job removes
        the directory (Spark leaves it, without ``_SUCCESS``).
        """
        _text.save_as_text_file(self, path, compression_codec_class)

    def glom(self) -> list[Any]:
        """Every partition: a list, or the ndarray / sparse row slice it is."""
        return self._run(_as_is)

    def _check_same_context(self, other: Any, op: str) -> None:
        if not isinstance(other, Dataset):
            raise TypeError(f"Dataset.{op} needs a Dataset, got {type(other).__name__}")
        if other.ctx is not self.ctx:
            raise ValueError(f"Dataset.{op}: {other!r} belongs to another Context")


_PLAIN_PARTITIONS = (list, tuple)


def _partitions_arg(partitions: Any, where: str) -> list[Any]:
    """``partitions`` as a list of partition values, or an error naming the first bad one.

    A partition is any iterable of records (a list, a tuple, an ndarray row
    slice, a sparse matrix), except those whose iteration is not what was
    meant: a str or bytes (characters) and a mapping (only its keys), as in
    ``parallelize``.
    """
    if type(partitions) is not list and (isinstance(partitions, (str, bytes, bytearray, Mapping))
                                         or not isinstance(partitions, Sequence)):
        raise TypeError(f"{where} needs a list of partitions, got {type(partitions).__name__}")
    parts = list(partitions)
    for i, part in enumerate(parts):
        if type(part) in _PLAIN_PARTITIONS:
            continue  # the common case, without the ABC checks (a stream makes a batch's source per batch)
        if isinstance(part, (str, bytes, bytearray, Mapping)) or not isinstance(part, Iterable):
            raise TypeError(f"{where}: partition {i} must be an iterable of records (a list, a tuple, an "
                            f"ndarray), got {type(part).__name__}: wrap a single value as [value]")
    return parts


# Job functions used by the actions: module-level so they pickle by reference.
def _as_is(it: Iterable[Any]) -> Any:
    return it if isinstance(it, list) or hasattr(it, "shape") else list(it)


def _count(it: Iterable[Any]) -> int:
    if hasattr(it, "__len__"):
        return len(it)  # type: ignore[arg-type]
    return sum(1 for _ in it)


def _sum(it: Iterable[Any]) -> tuple[int, Any]:
    if hasattr(it, "sum") and hasattr(it, "shape"):
        n_rows = len(it)  # type: ignore[arg-type]  # an ndarray
        return (n_rows, it.sum(axis=0)) if n_rows else (0, 0)
    n = 0
    total: Any = 0
    for x in it:
        total = x if n == 0 else total + x
        n += 1
    return n, total


class _PartitionReduce:
    __slots__ = ("f",)

    def __init__(self, f: Callable[[Any, Any], Any]) -> None:
        self.f = f

    def __call__(self, it: Iterable[Any]) -> tuple[bool, Any]:
        iterator: Iterator[Any] = iter(it)
        sentinel = object()
        first = next(iterator, sentinel)
        if first is sentinel:
            return False, None
        return True, _reduce(self.f, iterator, first)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_PartitionReduce, (self.f,))


class _Take:
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, it: Iterable[Any]) -> list[Any]:
        return list(itertools.islice(it, self.n))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Take, (self.n,))


def _check_partitions(n: Any, op: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"{op}: num_partitions must be a positive int, got {n!r}")


def _with_none(x: Any) -> tuple[Any, None]:
    return (x, None)


def _keep_first(a: Any, b: Any) -> Any:
    return a


def _pairs_only_here(kv: tuple[Any, tuple[list[Any], list[Any]]]) -> list[tuple[Any, Any]]:
    """A cogrouped key's pairs from the first side, when the second has none (``subtract_by_key``)."""
    k, (here, there) = kv
    return [] if there else [(k, v) for v in here]


def _only_here(kv: tuple[Any, tuple[list[Any], list[Any]]]) -> list[Any]:
    """An element as often as the first side has it, when the second has none (``subtract``)."""
    k, (here, there) = kv
    return [] if there else [k] * len(here)


def _in_both(kv: tuple[Any, tuple[list[Any], list[Any]]]) -> list[Any]:
    """An element once, when both sides have it (``intersection``)."""
    k, (here, there) = kv
    return [k] if here and there else []


def _finalizer(ctx_ref: weakref.ref[Context], ds_id: int) -> None:
    ctx = ctx_ref()
    if ctx is not None:
        ctx._unregister_cached(ds_id)
