"""An iterative fit stated as ``ctx.iterate``'s arguments, runnable on a context or serially.

Every estimator reduces ``fit`` to one :class:`Problem`: the training data
cut into row blocks (one per partition), an initial state, and the four
functions ``iterate`` takes. Keeping the statement separate from the running
gives three runners of the *same* functions:

* :meth:`Problem.run` on a :class:`drizzle_core.Context` (what ``fit`` does);
* :meth:`Problem.run_serial`, one process, blocks combined left to right: the
  reference the tests compare the engine against, and the benchmark's
  one-process floor;
* the benchmark's two-process floor, which calls ``local`` directly.

Each partition holds exactly one block (``parallelize`` of a list of P blocks
into P partitions), so ``local`` receives a one-element list. A block is
whatever the kernel wants resident on the worker: ``(X_rows, y_rows)``, a CSR
row slice, ... The blocks are shipped and cached once, by a plain job before
the loop; iterations send only the state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

import drizzle_core as dz


@dataclass(frozen=True)
class Problem:
    """One iterative fit: ``blocks`` and iterate's ``init``/``local``/``combine``/``update``/``until``."""

    blocks: list[Any]                              # one per partition; local gets [block]
    init: Any                                      # the state before iteration 1
    local: Callable[[list[Any], Any], Any]         # ([block], state) -> partial
    combine: Callable[[Any, Any], Any]             # associative: (partial, partial) -> partial
    update: Callable[[Any, Any], Any]              # (state, combined partial) -> next state
    until: Callable[[Any], bool] | None            # state -> converged?
    loss: Callable[[Any], float]                   # state -> the loss shown and recorded per iteration
    finish: Callable[[list[Any], Any], Any] | None = None   # ([block], final state) -> per-partition result
    #: what a fit keeps of each iteration's state for its loss curve (None: ``loss``): the states themselves
    #: would be every iteration's model on the driver (100 L-BFGS iterations of 10,000 parameters: 180 MB)
    record: Callable[[Any], Any] | None = None


@dataclass
class Fit:
    """What running a :class:`Problem` gives the estimator."""

    state: Any
    records: list[Any]                              # ``problem.record`` (or ``loss``) of each iteration's state
    iterations: int
    converged: bool
    seconds: float                                  # wall time of the iteration loop alone
    finished: list[Any] = field(default_factory=list)   # ``finish`` per partition, in partition order
    history: list[Any] = field(default_factory=list)    # every state, with ``keep_history=True`` only


def row_blocks(n_rows: int, num_partitions: int) -> list[tuple[int, int]]:
    """``num_partitions`` contiguous ``(start, stop)`` row ranges, as ``np.array_split`` cuts them.

    Never more ranges than rows, so no partition is empty.
    """
    p = max(1, min(num_partitions, n_rows))
    size, extra = divmod(n_rows, p)
    out, start = [], 0
    for i in range(p):
        stop = start + size + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def slice_rows(X: np.ndarray | sp.csr_matrix, start: int, stop: int) -> np.ndarray | sp.csr_matrix:
    """Rows ``start:stop`` as a compact object to ship: a contiguous array or a CSR copy."""
    if sp.issparse(X):
        return X[start:stop]        # CSR row slicing copies just those rows' entries
    return np.ascontiguousarray(X[start:stop])


def _bar(problem: Problem, max_iter: int, desc: str, verbose: bool) -> dz.ProgressBar | None:
    """The engine's progress bar for a fit (``verbose=True``): iterations, rate, G and the loss; on a terminal only.

    The engine's bar, not one of drizzle_ml's own: it erases its line to the end on every redraw and cuts it
    to the terminal's width, so a shorter line leaves no stale characters behind.
    """
    if not verbose:
        return None
    bar = dz.ProgressBar(max_iter, desc, unit="it", status=lambda s: f"loss={problem.loss(s):.6g}")
    return bar if bar.active else None


def _recorder(problem: Problem) -> Callable[[Any], Any]:
    return problem.record if problem.record is not None else problem.loss


def run(problem: Problem, ctx: dz.Context, *, max_iter: int, group_size: int | str,
        verbose: bool = False, desc: str = "", keep_history: bool = False) -> Fit:
    """Run ``problem`` with ``ctx.iterate``; the data is cached for the loop and dropped after.

    Each iteration's state is reduced to ``problem.record`` as it arrives; ``keep_history=True`` keeps the
    states as well (``Fit.history``: what the bit-for-bit tests compare, iteration by iteration).
    """
    ds = ctx.parallelize(problem.blocks, len(problem.blocks)).cache()
    # Ship and cache the blocks with a plain job first: the shipping stays out of
    # the timed loop (Fit.seconds, iterate_seconds_), and the blocks are spread
    # by the scheduler's placement, not by iterate's locality to the state (which
    # once put every block on the state's worker: 9.0 instead of 5.5 ms per
    # k-means iteration on 2 workers, benchmarks/bench_ml.py).
    ctx.run_jobs([(ds, len)], group_size=1)
    bar = _bar(problem, max_iter, desc, verbose)
    record, records = _recorder(problem), []
    try:
        start = time.perf_counter()
        res = ctx.iterate(ds, problem.init, local=problem.local, combine=problem.combine,
                          update=problem.update, iterations=max_iter, group_size=group_size,
                          until=problem.until, keep_history=keep_history,
                          on_iteration=lambda i, state: records.append(record(state)),
                          progress=bar if bar is not None else False,
                          copy_state=False)  # every update here returns a new state (tests/test_ml_common.py)
        seconds = time.perf_counter() - start  # the bar is closed by iterate ("converged", or "failed")
        fit = Fit(res.state, records, res.iterations, bool(getattr(res, "converged", False)), seconds,
                  history=list(res.history))
        if problem.finish is not None:
            fit.finished = ctx.run_jobs([(ds, _Finish(problem.finish, res.state))], group_size=1)[0]
        return fit
    finally:
        ds.unpersist()


def run_serial(problem: Problem, *, max_iter: int, verbose: bool = False, desc: str = "",
               keep_history: bool = False) -> Fit:
    """Run ``problem`` in this process: the single-process reference for ``run``.

    Same functions, same stopping rule; partials are combined left to right.
    The engine combines in ``iterate``'s fixed tree (partition p in slot
    ``p % workers``, each slot folded in partition order, then the slots):
    with at most one partition per worker that is this left fold, bit for
    bit; with more, the last bits may differ from this one, but never between
    two engine runs of the same fit (any group size, any lost worker).
    """
    bar = _bar(problem, max_iter, desc, verbose)
    state, history, converged = problem.init, [], False
    record, records = _recorder(problem), []
    start = time.perf_counter()
    for i in range(1, max_iter + 1):
        total = None
        for block in problem.blocks:
            partial = problem.local([block], state)
            total = partial if total is None else problem.combine(total, partial)
        state = problem.update(state, total)
        records.append(record(state))
        if keep_history:
            history.append(state)
        if bar is not None:
            bar(i, state)
        if problem.until is not None and problem.until(state):
            converged = True
            break
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close("converged" if converged else "")
    fit = Fit(state, records, len(records), converged, seconds, history=history)
    if problem.finish is not None:
        fit.finished = [problem.finish([block], state) for block in problem.blocks]
    return fit


class _Finish:
    """The per-partition job after the loop; a class so it pickles by reference plus the state."""

    __slots__ = ("f", "state")

    def __init__(self, f: Callable[[list[Any], Any], Any], state: Any) -> None:
        self.f = f
        self.state = state

    def __call__(self, partition: list[Any]) -> Any:
        return self.f(partition, self.state)

    def __reduce__(self):
        return (_Finish, (self.f, self.state))
