"""Text files in and out: the splits that make ``text_file``'s partitions, and ``save_as_text_file``'s commit.

The driver only lists the files and their sizes; the workers read the
bytes (a partition is a split ``(path, start, end, whole)``, read by
:class:`~drizzle_core.lineage.ReadTextOp` in the task) and write them (each
task writes its partition's ``part-NNNNN``). So the paths must name the same
files on every worker: one host, or a filesystem they share (NFS, a
mounted bucket), as Spark needs HDFS.

Splits, as Hadoop's ``FileInputFormat`` cuts them: the goal is
``total bytes // min_partitions`` per split, at most 32 MiB (a local
filesystem's block) and at least 1 byte; a file is cut into splits of that
size, the last allowed to be 10% larger; an empty file is one empty split;
a gzipped file (``.gz``) cannot be cut and is one split.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from typing import TYPE_CHECKING, Any

from .. import lineage as N

if TYPE_CHECKING:
    from ._context import Context
    from ._dataset import Dataset

BLOCK_SIZE = 32 << 20  # Hadoop's fs.local.block.size
SPLIT_SLOP = 1.1  # Hadoop's: the last split of a file may be 10% larger than the others
_GLOB_CHARS = frozenset("*?[")
#: compression_codec_class values save_as_text_file takes: Hadoop's class name, or the codec's own
_CODEC_NAMES = {"gzip": "gzip", "org.apache.hadoop.io.compress.GzipCodec": "gzip"}


def _visible(name: str) -> bool:
    """Hadoop's hidden-file rule: names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc``) are not input."""
    return not name.startswith(("_", "."))


def input_files(name: Any) -> list[str]:
    """The files ``name`` means: comma-separated paths, each a file, a directory (its visible files) or a glob."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"text_file: name must be a path (str or os.PathLike), got {name!r}")
    files: list[str] = []
    for pattern in (p.strip() for p in name.split(",")):
        if not pattern:
            continue
        pattern = os.path.expanduser(pattern)
        matches = sorted(glob.glob(pattern)) if _GLOB_CHARS & set(pattern) else (
            [pattern] if os.path.exists(pattern) else [])
        if not matches:
            raise FileNotFoundError(f"text_file: input path does not exist: {pattern!r}")
        for path in matches:
            if os.path.isdir(path):
                files.extend(os.path.join(path, f) for f in sorted(os.listdir(path))
                             if _visible(f) and os.path.isfile(os.path.join(path, f)))
            else:
                files.append(path)
    return [os.path.abspath(f) for f in files]


def splits(files: list[str], min_partitions: int) -> list[tuple[str, int, int, bool]]:
    """Hadoop's splits of ``files`` for at least about ``min_partitions`` partitions (see the module docstring)."""
    sizes = [os.path.getsize(f) for f in files]
    goal = sum(sizes) // max(min_partitions, 1)
    size = max(1, min(goal, BLOCK_SIZE))
    out: list[tuple[str, int, int, bool]] = []
    for path, length in zip(files, sizes):
        if path.endswith(".gz"):
            out.append((path, 0, length, True))
            continue
        start = 0
        while (length - start) / size > SPLIT_SLOP:
            out.append((path, start, start + size, False))
            start += size
        if length - start or length == 0:
            out.append((path, start, length, False))
    return out


def text_file(ctx: Context, name: Any, min_partitions: int | None, use_unicode: bool) -> Dataset:
    from ._dataset import Dataset, _call_site, _ids

    n = min(ctx.num_workers, 2) if min_partitions is None else min_partitions
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"text_file: min_partitions must be a positive int or None, got {min_partitions!r}")
    if not isinstance(use_unicode, bool):
        raise TypeError(f"text_file: use_unicode must be a bool, got {use_unicode!r}")
    files = input_files(name)
    if not files:
        raise FileNotFoundError(f"text_file: no input files in {name!r} (names starting with _ or . are skipped)")
    parts = [[split] for split in splits(files, n)]
    where = _call_site()
    source = N.SourceNode(next(_ids), parts, f"text_file({os.fspath(name)!r}) at {where}")
    node = N.NarrowNode(next(_ids), source, N.ReadTextOp(use_unicode), f"text_file({os.fspath(name)!r}) at {where}")
    return Dataset(ctx, node, (Dataset(ctx, source, ()),))


def codec_of(compression_codec_class: Any) -> str | None:
    if compression_codec_class is None:
        return None
    codec = _CODEC_NAMES.get(compression_codec_class) if isinstance(compression_codec_class, str) else None
    if codec is None:
        raise ValueError(f"save_as_text_file: compression_codec_class must be None, 'gzip' or "
                         f"'org.apache.hadoop.io.compress.GzipCodec', got {compression_codec_class!r}")
    return codec


def save_as_text_file(ds: Dataset, path: Any, compression_codec_class: Any) -> None:
    """Write ``ds`` under ``path``: one ``part-NNNNN`` per partition, written by the workers, then ``_SUCCESS``.

    The directory must not exist (Spark refuses it too, rather than mix two
    outputs). If the job fails the directory is removed again, so the call
    can be retried as it is.
    """
    codec = codec_of(compression_codec_class)
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"save_as_text_file: path must be a str or os.PathLike, got {path!r}")
    directory = os.path.abspath(os.path.expanduser(path))
    if os.path.lexists(directory):
        raise FileExistsError(f"save_as_text_file: output directory {path!r} already exists (remove it, or "
                              f"choose another path)")
    os.makedirs(os.path.join(directory, "_temporary"))
    try:
        writer = ds._narrow(N.WriteTextOp(directory, codec), "save_as_text_file")
        writer._run(len)
        shutil.rmtree(os.path.join(directory, "_temporary"))
        with open(os.path.join(directory, "_SUCCESS"), "wb"):
            pass
    except BaseException:
        _discard(directory)
        raise


def _discard(directory: str) -> None:
    """Remove a failed save's directory while tasks of the aborted job may still be writing into it.

    A task already running when another failed still opens its temporary
    file and renames it into place. Removed in place, the directory could
    gain such a file between ``rmtree`` listing it and removing it, and
    stay (``rmtree`` then fails: "directory not empty"). Renamed away first,
    atomically, the path is gone at once: a late task's open or rename by
    that path fails, and nothing can appear in what ``rmtree`` removes.
    """
    trash = f"{directory}.failed-{uuid.uuid4().hex}"
    try:
        os.rename(directory, trash)
    except OSError:
        trash = directory
    with contextlib.suppress(OSError):
        shutil.rmtree(trash)
