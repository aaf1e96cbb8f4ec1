"""Deterministic key hashing for shuffles.

Python's ``hash`` of ``str`` and ``bytes`` is salted per process
(PYTHONHASHSEED), so two workers would send the same key to different
reducers. ``portable_hash`` gives the same answer in every process on every
host, for the key types people shuffle by: ints, floats, strings, bytes,
None, booleans, and tuples of those (frozen-dataclass and other keys fall back
to ``hash``, which is stable when their fields are).
"""

from __future__ import annotations

import zlib
from typing import Any

_MASK = (1 << 61) - 1
_NONE_HASH = 0x5DEECE66D


def portable_hash(key: Any) -> int:
    """Hash ``key`` identically in every process (see the module docstring)."""
    t = type(key)
    if t is int or t is float or t is bool:
        return hash(key)
    if key is None:
        return _NONE_HASH  # hash(None) is None's address before Python 3.12: differs per process
    if t is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if t is bytes:
        return zlib.crc32(key)
    if t is tuple:
        # Keys are shallow; a loop, not recursion, over nested tuples.
        h = 0x345678
        stack = [key]
        while stack:
            item = stack.pop()
            if type(item) is tuple:
                stack.extend(item)
                h = (h * 1000003 + len(item)) & _MASK
            else:
                h = (h * 1000003 ^ portable_hash(item)) & _MASK
        return h
    return hash(key)


def bucket_of(key: Any, num_partitions: int) -> int:
    """The reduce partition a key belongs to."""
    return portable_hash(key) % num_partitions
