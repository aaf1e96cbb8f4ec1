"""Deterministic key hashing for shuffles.

Every map task buckets its records by key, on its own worker; a key meets
its equals in one reducer only if every worker puts equal keys in the same
bucket. Python's ``hash`` cannot decide that: its hash of ``str``, ``bytes``
and of everything built from them (dates, enums, dataclasses, frozensets)
is salted per process (PYTHONHASHSEED). So ``portable_hash`` computes its
own, the same in every process on every host, and consistent with ``==``
(``a == b`` implies ``portable_hash(a) == portable_hash(b)``):

==========================================  ===================================================
key                                         hashed as
==========================================  ===================================================
``str``; ``numpy.str_``, and subclasses     CRC-32 of its UTF-8 (surrogates passed through)
that keep str's ``==`` (``StrEnum``)
``bytes``; ``numpy.bytes_``                 CRC-32
numbers: ``int``, ``bool``, ``float``,      Python's numeric ``hash``, which is not salted and
``complex``, ``Decimal``, ``Fraction``,     makes ``1 == 1.0 == True == Decimal(1)`` one key;
numpy scalars (``numbers.Number``),         a NaN (never equal to anything, but hashed by its
``IntEnum``/``IntFlag``                     address since Python 3.10) is one constant
``None``                                    a constant (``hash(None)`` was an address < 3.12)
``tuple`` and namedtuples                   its items, in order
``frozenset``                               its items, in any order (a commutative sum)
``enum.Enum`` members                       class ``__qualname__`` and member name (members
                                            compare by identity)
dataclasses whose ``__eq__`` is generated   class ``__qualname__`` and the compared fields, in
(frozen, or ``unsafe_hash=True``)           order
``datetime`` (and ``pandas.Timestamp``)     its UTC instant when aware (equal across zones, as
                                            ``==`` says), its fields when naive
``date``, ``time``, ``timedelta``           day ordinal; microseconds (less the UTC offset)
anything else: classes with their own       ``hash(key)``: right only when every worker runs
``__hash__``, subclasses that change        with the same PYTHONHASHSEED, which the transports
``==``                                      see to: ``_process.worker_env`` gives the workers a
                                            driver starts one seed, and the tcp handshake
                                            refuses daemons that hash differently
==========================================  ===================================================

A type is classified once, on first sight, into ``type_to_leaf_hash`` (a
function of the value) or ``type_to_container`` (how to list its parts).
Containers are walked with an explicit stack, not recursion (a deeply nested
key cannot hit the recursion limit): each leaves a :class:`_Combine` marker
below its parts and folds their hashes when the marker is popped. A flat
tuple or dataclass of strs and ints, the usual compound key, is folded
without the walk (``_fold_flat``, the same arithmetic).

``int`` and ``str`` keys are tested first: this is the per-record path of
every shuffle. Measured (min of 25 interleaved runs of 200k keys, in ms per
1M keys, before -> after this table): str 191 -> 170, int 71 -> 66,
(str, int) 994 -> 760, float 88 -> 102, date 128 -> 111 and a frozen
dataclass of one str 240 -> 734 (both were Python's salted ``hash``).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import numbers
import operator
import zlib
from collections.abc import Callable
from typing import Any

_MASK = (1 << 61) - 1
_MULT = 1000003
_NONE_HASH = 0x5DEECE66D
_NAN_HASH = 0x7FF8DEAD
_TUPLE_SEED = 0x345678
_SET_SEED = 0x1B873593
_crc32 = zlib.crc32


@dataclasses.dataclass(frozen=True, slots=True)
class _Container:
    """How to walk a value of one container type: its parts (in order unless ``unordered``) and a seed."""

    seed: int
    parts: Callable[[Any], tuple[Any, ...]] | None = None  # a dataclass's compared fields; None: iterate the value
    unordered: bool = False


class _Combine:
    """On the walk's stack, below a container's parts: fold the last ``n`` hashes into one."""

    __slots__ = ("n", "seed", "unordered")

    def __init__(self, seed: int, n: int, unordered: bool) -> None:
        self.seed = seed
        self.n = n
        self.unordered = unordered


def _str_hash(s: str) -> int:
    return _crc32(str.encode(s, "utf-8", "surrogatepass"))


def _number_hash(x: Any) -> int:
    return hash(x) if x == x else _NAN_HASH


def _none_hash(_: None) -> int:
    return _NONE_HASH


def _timedelta_us(d: datetime.timedelta) -> int:
    """Microseconds: what ``timedelta.__eq__`` compares."""
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _datetime_hash(d: datetime.datetime) -> int:
    """Of the microseconds since 0001-01-01, in UTC when aware: what ``datetime.__eq__`` compares."""
    if d.fold:
        d = d.replace(fold=0)  # as datetime.__hash__: the offset of the first of two repeated times
    us = (d.toordinal() * 86400 + d.hour * 3600 + d.minute * 60 + d.second) * 1_000_000 + d.microsecond
    offset = d.utcoffset() if d.tzinfo is not None else None
    return hash(us if offset is None else us - _timedelta_us(offset))


def _time_hash(t: datetime.time) -> int:
    """Of the microseconds since midnight, less the UTC offset when aware: what ``time.__eq__`` compares."""
    if t.fold:
        t = t.replace(fold=0)
    us = (t.hour * 3600 + t.minute * 60 + t.second) * 1_000_000 + t.microsecond
    offset = t.utcoffset() if t.tzinfo is not None else None
    return hash(us if offset is None else us - _timedelta_us(offset))


def _timedelta_hash(d: datetime.timedelta) -> int:
    return hash(_timedelta_us(d))


_BUILTIN_LEAVES: dict[type, Callable[[Any], int]] = {
    str: _str_hash, bytes: _crc32, int: hash, bool: hash, float: _number_hash, complex: _number_hash,
    type(None): _none_hash, datetime.date: datetime.date.toordinal, datetime.datetime: _datetime_hash,
    datetime.time: _time_hash, datetime.timedelta: _timedelta_hash,
}
_BUILTIN_CONTAINERS: dict[type, _Container] = {
    tuple: _Container(_TUPLE_SEED), frozenset: _Container(_SET_SEED, unordered=True),
}
#: What is known of each type seen: a hash function for a leaf, or how to walk a container. User
#: classes are added on first sight; bounded, as a long-lived tcp daemon sees new classes (pickled
#: by value from each driver's ``__main__``) in every session.
type_to_leaf_hash: dict[type, Callable[[Any], int]] = dict(_BUILTIN_LEAVES)
type_to_container: dict[type, _Container] = dict(_BUILTIN_CONTAINERS)
_MAX_TYPES = 4096


def portable_hash(key: Any) -> int:
    """Hash ``key`` identically in every process, consistently with ``==`` (see the module docstring)."""
    t = type(key)
    if t is int:
        return hash(key)  # ints hash to themselves (mod 2**61 - 1) in every process
    if t is str:
        return _crc32(key.encode("utf-8", "surrogatepass"))
    if t is float:
        return hash(key) if key == key else _NAN_HASH
    leaf = type_to_leaf_hash.get(t)
    if leaf is not None:
        return leaf(key)
    container = type_to_container.get(t)
    if container is not None and not container.unordered:  # a flat tuple or dataclass: no walk
        h = _fold_flat(container.seed, key if container.parts is None else container.parts(key))
        if h is not None:
            return h
    return _walk(key)


def bucket_of(key: Any, num_partitions: int) -> int:
    """The reduce partition a key belongs to."""
    return portable_hash(key) % num_partitions


def _fold_flat(h: int, parts: Any) -> int | None:
    """The ordered fold of ``parts`` if all are strs and ints (the usual tuple key), else None.

    Equal to what the walk's :class:`_Combine` gives, without the walk.
    """
    n = 0
    for x in parts:
        tx = type(x)
        if tx is str:
            h = (h * _MULT ^ _crc32(x.encode("utf-8", "surrogatepass"))) & _MASK
        elif tx is int:
            h = (h * _MULT ^ hash(x)) & _MASK
        else:
            return None
        n += 1
    return (h * _MULT + n) & _MASK


def _walk(key: Any) -> int:
    """``portable_hash`` of any key: an explicit-stack walk of its containers."""
    values: list[int] = []  # hashes of finished parts, the innermost container's last
    stack: list[Any] = [key]  # parts still to hash, and _Combine markers
    while stack:
        item = stack.pop()
        t = type(item)
        if t is _Combine:
            start = len(values) - item.n
            h = item.seed
            if item.unordered:
                total = 0
                for v in values[start:]:
                    total += ((v ^ (v << 16) ^ 89869747) * 3644798167) & _MASK  # spread before summing
                h = (h * _MULT ^ total) & _MASK
            else:
                for v in values[start:]:
                    h = (h * _MULT ^ v) & _MASK
            del values[start:]
            values.append((h * _MULT + item.n) & _MASK)
            continue
        leaf = type_to_leaf_hash.get(t)
        if leaf is None:
            container = type_to_container.get(t)
            if container is None:
                leaf, container = _classify(t)
            if leaf is not None:
                values.append(leaf(item))
                continue
            assert container is not None
            parts = item if container.parts is None else container.parts(item)
            h = None if container.unordered else _fold_flat(container.seed, parts)
            if h is None:
                stack.append(_Combine(container.seed, len(parts), container.unordered))
                # popped first to last, so their hashes are in order (for a frozenset, any order)
                stack.extend(parts if container.unordered else reversed(parts))
            else:
                values.append(h)
        else:
            values.append(leaf(item))
    return values[0]


def _classify(t: type) -> tuple[Callable[[Any], int] | None, _Container | None]:
    """How to hash a type not seen before (remembered in ``type_to_leaf_hash`` or ``type_to_container``)."""
    leaf, container = _leaf_or_container(t)
    if len(type_to_leaf_hash) + len(type_to_container) >= _MAX_TYPES:
        type_to_leaf_hash.clear()
        type_to_leaf_hash.update(_BUILTIN_LEAVES)
        type_to_container.clear()
        type_to_container.update(_BUILTIN_CONTAINERS)
    if leaf is not None:
        type_to_leaf_hash[t] = leaf
    else:
        assert container is not None
        type_to_container[t] = container
    return leaf, container


def _leaf_or_container(t: type) -> tuple[Callable[[Any], int] | None, _Container | None]:
    # A subclass of a value type is hashed as that type only if it keeps the type's ==: then it
    # equals plain values of it (a namedtuple equals the tuple of its fields, StrEnum.A == "a").
    # numpy.str_ and numpy.bytes_ have their own == and hash, which are str's and bytes'.
    leaves: tuple[tuple[type, Callable[[Any], int]], ...] = ((str, _str_hash), (bytes, _crc32), (int, int.__hash__))
    for base, leaf in leaves:
        if issubclass(t, base):
            same = t.__eq__ is base.__eq__ or (t.__module__ == "numpy" and base is not int)  # type: ignore[comparison-overlap]
            return (leaf if same else hash), None
    for cbase, container in _BUILTIN_CONTAINERS.items():
        if issubclass(t, cbase):
            return (None, container) if t.__eq__ is cbase.__eq__ else (hash, None)  # type: ignore[comparison-overlap]
    # datetime subclasses (pandas.Timestamp) compare as datetimes do, with more precision
    dates: tuple[type, ...] = (datetime.datetime, datetime.date, datetime.time, datetime.timedelta)
    for dbase in dates:
        if issubclass(t, dbase):
            return _BUILTIN_LEAVES[dbase], None
    if issubclass(t, numbers.Number):  # numeric hashes agree across numeric types and are not salted
        return _number_hash, None
    seed = _crc32(t.__qualname__.encode("utf-8", "surrogatepass"))
    if issubclass(t, enum.Enum):
        # members of an enum without a value-type mixin are equal only to themselves: hash their
        # class and name (a Flag's unnamed combination before Python 3.11: its int value)
        if t.__eq__ is not object.__eq__:
            return hash, None
        return (lambda m: _fold_flat(seed, (m._name_ if m._name_ is not None else m._value_,)) or 0), None
    if dataclasses.is_dataclass(t):
        params = getattr(t, "__dataclass_params__", None)
        if params is not None and params.eq and _made_by_dataclasses(t.__eq__):
            return None, _Container(seed, _getter(tuple(f.name for f in dataclasses.fields(t) if f.compare)))
    return hash, None


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """``obj -> (obj.<name> for name in names)`` as a tuple, at the speed of ``attrgetter``."""
    if len(names) >= 2:
        return operator.attrgetter(*names)
    if names:
        get = operator.attrgetter(names[0])
        return lambda obj: (get(obj),)
    return lambda obj: ()


def _made_by_dataclasses(fn: Any) -> bool:
    """Is ``fn`` the ``__eq__`` that ``dataclasses`` generates (class identity, then the compared fields)?

    The generated methods are compiled from source text by ``exec``; one the user wrote in the
    class body (which ``@dataclass`` keeps) has a real file name.
    """
    code = getattr(fn, "__code__", None)
    return code is not None and code.co_filename == "<string>" and fn.__name__ == "__eq__"
