"""Op kernels: the callables nodes run on a partition (narrow ops and the two sides of shuffles).

Module-level classes, pickled by reference, so a group's program carries only
the user's code.
"""

from __future__ import annotations

import itertools
import reprlib
from collections.abc import Callable, Iterable, Mapping, Set
from typing import Any

from ._hash import portable_hash

# ---------------------------------------------------------------- narrow ops
# Module-level callables (pickled by reference, not by value) wrapping the
# user's function, so a group's program carries only the user's code.


class Wraps:
    """A callable holding one function ``f``, pickled as ``type(self)(f)``: the base of every such engine callable.

    Why ``__reduce__``: with ``__slots__`` (no per-instance dict), pickle's default is ``copyreg.__newobj__`` and a
    ``(None, {"f": f})`` state, which puts the slot's name in every pickled op and is slower to load; ``(cls, (f,))``
    is the least a program can carry. Written out, not generated from the slots: 300 ops pickle in the same time as
    with a hand-written ``__reduce__`` per class (a generic one reading the slot names took 2x as long, measured
    with ``pickle.dumps``, python 3.11). A subclass adds no slot (``__slots__ = ()``) and writes ``__call__``.
    """

    __slots__ = ("f",)

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f

    def __reduce__(self) -> tuple[type, tuple[Callable[..., Any]]]:
        return (type(self), (self.f,))


class MapOp(Wraps):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return map(self.f, it)


class FilterOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return filter(self.f, it)


class FlatMapOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        return itertools.chain.from_iterable(map(self.f, it))


class KeyByOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        f = self.f
        return ((f(x), x) for x in it)


class MapPartitionsOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        out: Iterable[Any] = self.f(it)
        return out


class MapPartitionsWithIndexOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, it: Iterable[Any]) -> Iterable[Any]:
        out: Iterable[Any] = self.f(p, it)
        return out


class ZipOp(MapOp):
    __slots__ = ()

    def __call__(self, p: int, a: Iterable[Any], b: Iterable[Any]) -> Iterable[Any]:  # type: ignore[override]
        out: Iterable[Any] = self.f(a, b)
        return out


# -------------------------------------------------------------- shuffle ops
# The map side of a shuffle unpacks every record as ``k, v``. A record that is
# not a (key, value) pair must fail with an error naming it and what to do,
# yet records that are pairs must pay nothing for the check. So the first
# record of each partition is checked once (``_check_pair``: a dict with two
# keys, or a two-character str, would unpack without complaint into garbage),
# and a later bad record is caught as the error its unpacking raises
# (``_bad_record``), never pre-checked. Measured (python 3.11): the bytecodes
# executed grow by a constant 31 (CombineSplit) and 27 (group_split) per
# partition, the same for 10, 1,000 and 100,000 records; wall clock for 1,000
# records over 100 keys, paired runs, median new/old 1.000 and 1.004; for a
# 10-record partition about +0.15 us (+5%).


class CombineSplit(MapOp):
    """Map side of reduce_by_key: combine values per key, then bucket the keys.

    Combining first means each distinct key is hashed once, not each record
    (measured: 97 -> 69 us for 1,000 records over 100 keys).
    """

    __slots__ = ()

    def __call__(self, it: Iterable[Any], R: int) -> list[dict[Any, Any]]:  # type: ignore[override]
        f = self.f
        d: dict[Any, Any] = {}
        it = iter(it)
        k: Any = _NO_KEY
        try:
            for first in it:  # at most once: the first record is checked, the others are not
                _check_pair(first, "reduce_by_key")
                k, v = first
                d[k] = v
                break
            for k, v in it:
                d[k] = f(d[k], v) if k in d else v
        except (TypeError, ValueError) as e:
            _bad_record(e, "reduce_by_key", k)
            raise
        return bucket_dict(d, R)


class CombineMerge(MapOp):
    """Reduce side of reduce_by_key: merge the map-side dicts in map order."""

    __slots__ = ()

    def __call__(self, p: int, deps: list[list[dict[Any, Any]]]) -> list[tuple[Any, Any]]:  # type: ignore[override]
        f = self.f
        blocks = deps[0]
        out = dict(blocks[0]) if blocks else {}
        for d in blocks[1:]:
            for k, v in d.items():
                out[k] = f(out[k], v) if k in out else v
        return list(out.items())


def group_split(it: Iterable[Any], R: int) -> list[dict[Any, Any]]:
    """Map side of group_by_key / join: values listed per key, keys bucketed."""
    d: dict[Any, Any] = {}
    it = iter(it)
    k: Any = _NO_KEY
    try:
        for first in it:  # at most once, as in CombineSplit
            _check_pair(first, "group_by_key/join")
            k, v = first
            d[k] = [v]
            break
        for k, v in it:
            lst = d.get(k)
            if lst is None:
                d[k] = [v]
            else:
                lst.append(v)
    except (TypeError, ValueError) as e:
        _bad_record(e, "group_by_key/join", k)
        raise
    return bucket_dict(d, R)


_NO_KEY = object()  # no record unpacked yet
_repr = reprlib.Repr()  # a record in an error message: its shape, not all of it
_repr.maxstring = _repr.maxother = 40
_repr.maxdict, _repr.maxlist, _repr.maxtuple = 3, 4, 4
_short = _repr.repr


def _check_pair(rec: Any, op: str) -> None:
    """Raise TypeError unless ``rec`` looks like a (key, value) pair; called once per partition."""
    if type(rec) is tuple and len(rec) == 2:
        return
    if isinstance(rec, (Mapping, str, bytes, bytearray, Set)):
        ok = False  # these unpack, but into keys, characters or an arbitrary order
    else:
        try:
            ok = len(rec) == 2  # a list or an ndarray row of two is a pair
        except TypeError:  # no length: an iterator may still unpack into two, anything else cannot
            ok = hasattr(type(rec), "__iter__")
    if not ok:
        raise TypeError(_not_a_pair(rec, op))


def _not_a_pair(rec: Any, op: str) -> str:
    if isinstance(rec, Mapping) and rec:
        hint = f".key_by(lambda d: d[{next(iter(rec))!r}])"
    elif isinstance(rec, (str, bytes)):
        hint = ".map(lambda s: (s, 1)) to count them, or .key_by(f)"
    elif isinstance(rec, tuple):
        hint = ".map(lambda t: (t[0], t[1:]))"
    else:
        hint = ".key_by(f) (pairs (f(x), x)) or .map(lambda x: (key, value))"
    return f"{op} needs (key, value) pairs; got {_a(rec)} {_short(rec)}: use {hint} first"


def _a(x: Any) -> str:
    """The type of ``x`` with its article, for a message: "a dict", "an int"."""
    name = type(x).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _bad_record(e: BaseException, op: str, key: Any) -> None:
    """If ``e`` was raised by the shuffle's own unpacking or hashing of a record (not by a user
    function, not by ``_check_pair``), raise a TypeError that says so; otherwise return.

    Only an error raised in the split function's own frame can be ours (a user
    function's has its frame further down the traceback), and only these two
    kinds: unpacking says "unpack", hashing "unhashable".
    """
    tb = e.__traceback__
    if tb is None or tb.tb_next is not None:
        return
    msg = str(e)
    if "unpack" in msg:
        raise TypeError(f"{op} needs (key, value) pairs, but a record is not one ({msg}): make pairs with "
                        f".key_by(f) or .map(lambda x: (key, value)) first") from None
    if "unhashable" in msg and key is not _NO_KEY:
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"{op}: a key must be hashable; got {_a(key)} {_short(key)} "
                            f"(use a tuple for a list key)") from None


def bucket_dict(d: dict[Any, Any], R: int) -> list[dict[Any, Any]]:
    """Split a per-key dict into R dicts by the portable hash of the key (insertion order kept)."""
    if R == 1:
        return [d]
    buckets: list[dict[Any, Any]] = [{} for _ in range(R)]
    for k, v in d.items():
        # ints hash to themselves in every process: skip the function call
        buckets[(hash(k) if type(k) is int else portable_hash(k)) % R][k] = v
    return buckets


def merge_groups(blocks: list[dict[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for d in blocks:
        for k, vs in d.items():
            lst = out.get(k)
            if lst is None:
                out[k] = list(vs)
            else:
                lst.extend(vs)
    return out


def group_merge(p: int, deps: list[list[dict[Any, Any]]]) -> list[tuple[Any, list[Any]]]:
    return list(merge_groups(deps[0]).items())


def join_merge(p: int, deps: list[list[dict[Any, Any]]]) -> list[tuple[Any, tuple[Any, ...]]]:
    left = merge_groups(deps[0])
    right = merge_groups(deps[1])
    out = []
    for k, vs in left.items():
        ws = right.get(k)
        if ws:
            for v in vs:
                for w in ws:
                    out.append((k, (v, w)))
    return out
