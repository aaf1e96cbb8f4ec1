"""Stamping a template's task for one instance: the rule the driver and the workers share.

A template (``driver/_template.py``) is one job's tasks under that job's ids;
an instance is a later job of the same shape, named by its own dataset ids,
shuffle ids, shuffle runs, job number, first task index and micro-batch
time. Workers stamp their share of a group's instances into tasks with this
function, and the driver stamps a task the same way when it needs one (an
error, a recovery), so both always agree on what task ``i`` is.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator
from typing import Any

from ._task import MAP, Task

_SHORT = 4  # runs up to this long are stepped tuple by tuple (see pack_instances)


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
    if len(a) != len(b):
        return None
    out: list[Any] = []
    for x, y in zip(a, b):
        if type(x) is tuple:
            if type(y) is not tuple or len(x) != len(y):
                return None
            out.append(tuple(q - p for p, q in zip(x, y)))
        elif type(y) is tuple:
            return None
        else:
            out.append(y - x)
    return tuple(out)


def _advance(a: tuple[Any, ...], step: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(tuple(p + d for p, d in zip(x, s)) if type(x) is tuple else x + s for x, s in zip(a, step))


def _run(first: tuple[Any, ...], step: tuple[Any, ...], count: int) -> Iterator[tuple[Any, ...]]:
    """``first``, ``first + step``, ``(first + step) + step``, ... (``count`` of them), lazily.

    Each scalar of the instance (a tuple field's items one by one) is its own
    ``itertools.accumulate`` column, so the additions are the same sequential
    ones, in the same order, as stepping the whole tuple ``count`` times
    (floats included); the columns are zipped back into the instance's
    nesting by one ``itemgetter`` (slices for the tuple fields). All in C: a
    group's G instances cost about a microsecond each to unpack, against
    ~5 us stepping tuple by tuple (measured at W1, G=100).
    """
    flat: list[Any] = []
    deltas: list[Any] = []
    items: list[Any] = []
    for x, d in zip(first, step):
        if type(x) is tuple:
            items.append(slice(len(flat), len(flat) + len(x)))
            flat.extend(x)
            deltas.extend(d)
        else:
            items.append(len(flat))
            flat.append(x)
            deltas.append(d)
    columns = [itertools.accumulate(itertools.repeat(d, count - 1), operator.add, initial=x)
               for x, d in zip(flat, deltas)]
    if len(items) == 1:  # itemgetter of one item returns the item itself, not a 1-tuple
        one = items[0]
        return ((row[one],) for row in zip(*columns))
    return map(operator.itemgetter(*items), zip(*columns))


def pack_instances(instances: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Instances as runs ``(first, step, count)``: a loop's jobs differ by the same ids each time.

    An ``iterate`` step or a micro-batch makes the same datasets every job,
    so job k's ids are job 0's plus k times a fixed step (and its first
    task index, job number, shuffle runs, batch time likewise): G jobs
    travel as one run, and a launch's size does not grow with G. A run is
    kept only where every member is exactly what :func:`unpack_instances`
    makes of it (``first`` stepped k times; a batch time that does not add
    up exactly starts a new run), so unpacking gives back these very values.
    The members are compared against the run, generated lazily in C
    (:func:`_run`), not stepped one Python tuple at a time.
    """
    out: list[tuple[Any, ...]] = []
    i, n = 0, len(instances)
    while i < n:
        first = instances[i]
        step = _step(first, instances[i + 1]) if i + 1 < n else None
        count = 1
        if step is not None:
            # The first members stepped in Python (a stream's float batch times often break a run early,
            # where setting up the C columns would cost more than it saves), the rest generated in C.
            cur = first
            while count < min(n - i, _SHORT):
                cur = _advance(cur, step)
                if cur != instances[i + count]:
                    break
                count += 1
            else:
                if count < n - i:
                    for want in itertools.islice(_run(first, step, n - i), count, None):
                        if want != instances[i + count]:
                            break
                        count += 1
        if count < 2:
            out.append((first, None, 1))
            i += 1
            continue
        out.append((first, step, count))
        i += count
    return out


def unpack_instances(runs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The inverse of :func:`pack_instances`."""
    out: list[tuple[Any, ...]] = []
    for first, step, count in runs:
        if step is None or count == 1:
            out.append(first)
        elif count <= _SHORT:
            cur = first
            out.append(cur)
            for _ in range(count - 1):
                cur = _advance(cur, step)
                out.append(cur)
        else:
            out.extend(_run(first, step, count))
    return out
