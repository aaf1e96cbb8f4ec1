"""Kernels of text_file and save_as_text_file: a worker reads its split of a file, or writes its partition's file.

Reading: a partition of ``text_file`` is a list of splits ``(path, start,
end, whole)``. A line belongs to the split holding its first byte (Hadoop's
rule), so a split starting inside a line skips to the next one and the last
line of a split may run past its end: every line is read exactly once
whatever the split sizes. ``whole`` splits (compressed files, which cannot
be cut) are read from start to end. A line ends at ``\\n``; a ``\\r`` before
it is dropped too (files written on Windows).

Writing: partition p goes to ``part-NNNNN`` (p, five digits) in the output
directory, written first under ``_temporary`` and renamed into place, so a
file is either absent or complete, and a task that runs twice (a retry, a
recomputation after a lost worker) leaves one copy of the same content.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import uuid
from collections.abc import Iterable
from typing import Any

#: the compression codecs save_as_text_file writes: name -> file suffix
CODECS = {"gzip": ".gz"}


def _line(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    return raw


def read_split(path: str, start: int, end: int, whole: bool) -> list[bytes]:
    """The lines of ``path`` whose first byte is in ``[start, end)`` (all of them when ``whole``), undecoded."""
    if whole:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            return [_line(raw) for raw in f]
    out: list[bytes] = []
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the rest of a line that started in the split before
        pos = f.tell()
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            pos += len(raw)
            out.append(_line(raw))
    return out


class ReadTextOp:
    """A text_file partition: its splits' lines, decoded from UTF-8 unless ``use_unicode`` is False (bytes)."""

    __slots__ = ("use_unicode",)

    def __init__(self, use_unicode: bool) -> None:
        self.use_unicode = use_unicode

    def __call__(self, p: int, splits: Iterable[Any]) -> list[Any]:
        out: list[Any] = []
        for path, start, end, whole in splits:
            lines = read_split(path, start, end, whole)
            out.extend([raw.decode("utf-8") for raw in lines] if self.use_unicode else lines)
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReadTextOp, (self.use_unicode,))


def part_name(p: int, codec: str | None) -> str:
    """The file partition ``p`` is saved to, as Spark names it: ``part-00007`` (``.gz`` when gzipped)."""
    return f"part-{p:05d}" + (CODECS[codec] if codec else "")


def _encoded(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    return (x if isinstance(x, str) else str(x)).encode("utf-8")


class WriteTextOp:
    """Partition p's records, one line each (``str(x)``, bytes as they are), to ``directory/part-NNNNN``.

    Returns ``[number of lines written]``.
    """

    __slots__ = ("codec", "directory")

    def __init__(self, directory: str, codec: str | None) -> None:
        self.directory = directory
        self.codec = codec

    def __call__(self, p: int, it: Iterable[Any]) -> list[int]:
        name = part_name(p, self.codec)
        tmp = os.path.join(self.directory, "_temporary", f"{name}.{uuid.uuid4().hex}")
        n = 0
        opener = gzip.open if self.codec == "gzip" else open
        try:
            with opener(tmp, "wb") as f:
                for x in it:
                    f.write(_encoded(x) + b"\n")
                    n += 1
            os.replace(tmp, os.path.join(self.directory, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return [n]

    def __reduce__(self) -> tuple[Any, ...]:
        return (WriteTextOp, (self.directory, self.codec))
