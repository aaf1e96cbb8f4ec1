"""Renaming nodes, and telling whether two jobs' functions are the same: what execution templates need.

A template is one job's plan, reused for later jobs of the same shape (an
``iterate`` step, a stream's micro-batch, a repeated query). Those jobs
build new datasets, so their nodes have new ids; a worker stamps the
template's nodes out under the new ids (:func:`renamed`) instead of
receiving and unpickling new nodes every group. Nodes refer to their
parents by id (see ``_nodes``), so renaming is a shallow copy with the ids
mapped, and only the node kinds listed in :data:`RENAMEABLE` are
templated: a kind this module does not know is planned as it always was.

:func:`op_key` decides whether the driver may reuse a template: two jobs
are the same shape only if every node runs the *same* code. The engine's
own op wrappers are built anew by each ``map``/``reduce_by_key`` call, so
they are compared by their type and what they hold; a user function is
compared by identity (the same function object, not an equal-looking one:
two lambdas written alike may close over different values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._nodes import BroadcastZipNode, NarrowNode, Node, ShuffleDep, ShuffleReadNode, SourceNode, UnionNode, ZipNode

#: node kinds a template may hold (their id fields are known here)
RENAMEABLE = frozenset({SourceNode, NarrowNode, UnionNode, ZipNode, BroadcastZipNode, ShuffleReadNode})

_PLAIN = (int, float, str, bytes, bool, type(None), complex)
_KEY_DEPTH = 4  # op wrappers nest a few levels (a combine around a user function); deeper is compared by identity


def renamed(node: Node, ids: Mapping[int, int], shuffles: Mapping[int, int]) -> Node:
    """A copy of ``node`` under ``ids[node.id]``, its parents and shuffle dependencies renamed too.

    ``ids`` maps every node id the node refers to (itself and its parents)
    to the new job's; ``shuffles`` maps its shuffle ids. The functions and
    any data are shared with ``node``, never copied.
    """
    t = type(node)
    new = t.__new__(t)  # a copy, slot by slot: copy.copy goes through __reduce_ex__, 5x slower
    for name in _all_slots(t):
        setattr(new, name, getattr(node, name))
    new.id = ids[node.id]
    if t is NarrowNode:
        new.parent = ids[node.parent]  # type: ignore[attr-defined]
    elif t is UnionNode or t is ZipNode or t is BroadcastZipNode:
        new.parents = tuple(ids[p] for p in node.parents)  # type: ignore[attr-defined]
    elif t is ShuffleReadNode:
        deps = []
        for dep in node.deps:  # type: ignore[attr-defined]
            d = ShuffleDep.__new__(ShuffleDep)
            for name in ShuffleDep.__slots__:
                setattr(d, name, getattr(dep, name))
            d.shuffle_id = shuffles[dep.shuffle_id]
            d.parent = ids[dep.parent]
            deps.append(d)
        new.deps = tuple(deps)  # type: ignore[attr-defined]
    elif t is not SourceNode:
        raise TypeError(f"a {t.__name__} cannot be renamed (not a template node kind)")
    return new


def op_key(f: Any) -> Any:
    """A hashable key equal for two callables that compute the same thing, by construction.

    The engine's callables (classes of ``drizzle_core`` with ``__slots__``)
    are keyed by their type and, slot by slot, what they hold; plain values
    (numbers, strings) by type and value; anything else by identity. Walked
    with an explicit stack, at most ``_KEY_DEPTH`` levels deep.
    """
    out: list[Any] = []
    stack: list[tuple[Any, int]] = [(f, _KEY_DEPTH)]
    while stack:
        g, depth = stack.pop()
        t = type(g)
        if t in _PLAIN:
            out.append((t, g))
            continue
        if t is tuple:
            out.append(("(", len(g)))
            stack.extend((x, depth) for x in reversed(g))
            continue
        slots = _engine_slots(t) if depth else None
        if slots is None:
            out.append(("id", id(g)))
            continue
        out.append((t, len(slots)))
        stack.extend((getattr(g, s, None), depth - 1) for s in reversed(slots))
    return tuple(out)


_SLOTS: dict[type, tuple[str, ...] | None] = {}
_NODE_SLOTS: dict[type, tuple[str, ...]] = {}


def _all_slots(t: type) -> tuple[str, ...]:
    names = _NODE_SLOTS.get(t)
    if names is None:
        found: list[str] = []
        for c in t.__mro__:
            slots = c.__dict__.get("__slots__", ())
            found.extend((slots,) if isinstance(slots, str) else slots)
        names = _NODE_SLOTS[t] = tuple(found)
    return names


def _engine_slots(t: type) -> tuple[str, ...] | None:
    """All slot names of an engine class (its whole MRO), or None for a class that is not the engine's own."""
    hit = _SLOTS.get(t, ())
    if hit != ():
        return hit
    names: tuple[str, ...] | None = None
    mro = [c for c in t.__mro__ if c is not object]
    if t.__module__.startswith("drizzle_core.") and all("__slots__" in c.__dict__ for c in mro):
        found: list[str] = []
        for c in mro:
            slots = c.__dict__["__slots__"]
            found.extend((slots,) if isinstance(slots, str) else slots)
        names = tuple(found)
    _SLOTS[t] = names
    return names
