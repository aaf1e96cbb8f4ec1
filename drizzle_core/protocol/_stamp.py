"""Stamping a template's task for one instance: the rule the driver and the workers share.

A template (``driver/_template.py``) is one job's tasks under that job's ids;
an instance is a later job of the same shape, named by its own dataset ids,
shuffle ids, shuffle runs, job number, first task index and micro-batch
time. Workers stamp their share of a group's instances into tasks with this
function, and the driver stamps a task the same way when it needs one (an
error, a recovery), so both always agree on what task ``i`` is.
"""

from __future__ import annotations

from typing import Any

from ._task import MAP, Task


def stamp(t: tuple[Any, ...], base: int, job: int, ids: dict[int, int], shuffles: dict[int, int],
          runs: dict[int, int], template_start: float, start: float) -> Task:
    """Template task ``t`` (index relative to its job's first task) as the instance's task.

    ``ids``, ``shuffles``, ``runs``: template id -> instance id. A task the
    template's micro-batch time held back (``not_before``) waits for the
    instance's time instead.
    """
    index, _job, stage, node, partition, kind, out, inputs, shuffle_in, stores, attempt, nb = t
    if kind == MAP:
        out = (ids[out[0]], out[1], runs[out[2]], out[3])
    if nb and template_start and nb == template_start:
        nb = start
    return Task(base + index, job, stage, ids[node], partition, kind, out,
                tuple(("c", ids[b[1]], b[2]) for b in inputs),
                tuple((shuffles[e[0]], runs[e[1]], e[2], e[3], e[4]) for e in shuffle_in),
                tuple((ids[n], q) for n, q in stores), attempt, nb)


def _step(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``b - a`` field by field (tuples element-wise), or None when the two differ in shape."""
    out: list[Any] = []
    for x, y in zip(a, b):
        if type(x) is tuple:
            if type(y) is not tuple or len(x) != len(y):
                return None
            out.append(tuple(q - p for p, q in zip(x, y)))
        else:
            out.append(y - x)
    return tuple(out)


def _advance(a: tuple[Any, ...], step: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(tuple(p + d for p, d in zip(x, s)) if type(x) is tuple else x + s for x, s in zip(a, step))


def pack_instances(instances: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Instances as runs ``(first, step, count)``: a loop's jobs differ by the same ids each time.

    An ``iterate`` step or a micro-batch makes the same datasets every job,
    so job k's ids are job 0's plus k times a fixed step (and its first
    task index, job number, shuffle runs, batch time likewise): G jobs
    travel as one run, and a launch's size does not grow with G. A run is
    kept only where every member is exactly ``first + k * step`` (a batch
    time that does not add up exactly starts a new run).
    """
    out: list[tuple[Any, ...]] = []
    i, n = 0, len(instances)
    while i < n:
        first = instances[i]
        if i + 1 == n:
            out.append((first, None, 1))
            break
        step = _step(first, instances[i + 1])
        if step is None:
            out.append((first, None, 1))
            i += 1
            continue
        count, cur = 2, instances[i + 1]
        while i + count < n:
            nxt = _advance(cur, step)
            if nxt != instances[i + count]:
                break
            cur = nxt
            count += 1
        out.append((first, step, count))
        i += count
    return out


def unpack_instances(runs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The inverse of :func:`pack_instances`."""
    out: list[tuple[Any, ...]] = []
    for first, step, count in runs:
        cur = first
        out.append(cur)
        for _ in range(count - 1):
            cur = _advance(cur, step)
            out.append(cur)
    return out
