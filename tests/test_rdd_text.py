"""text_file and save_as_text_file (issue 15 part 6): globbing, splits read by the workers, parts written by them.

The driver only lists files: these tests forbid it to open them (``open``
patched in the driver's process) while worker processes read and write.
Random files are cut into random splits and every line must come back once,
in order, as the reference evaluator reads them.
"""

from __future__ import annotations

import builtins
import gzip
import os

import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import context

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)


def _write(path, text: str | bytes) -> None:
    with open(path, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def test_text_file_globs_and_directories_read_by_the_workers(tmp_path):
    for day in ("01", "02"):
        os.makedirs(tmp_path / f"logs-{day}")
        _write(tmp_path / f"logs-{day}" / "a.txt", f"{day}-a1\n{day}-a2\n")
        _write(tmp_path / f"logs-{day}" / "b.txt", f"{day}-b1\r\n{day}-b2")
        _write(tmp_path / f"logs-{day}" / "_SUCCESS", "")
        _write(tmp_path / f"logs-{day}" / ".hidden", "no\n")
    with gzip.open(tmp_path / "zipped.gz", "wb") as f:
        f.write(b"z1\nz2\n")
    ctx = context("local", 2)
    mp = pytest.MonkeyPatch()
    try:
        _forbid(mp, tmp_path)
        assert ctx.text_file(str(tmp_path / "logs-*" / "*.txt")).collect() == [
            "01-a1", "01-a2", "01-b1", "01-b2", "02-a1", "02-a2", "02-b1", "02-b2"]
        both = ctx.text_file(f"{tmp_path / 'logs-01'},{tmp_path / 'zipped.gz'}", min_partitions=4)
        assert both.collect() == ["01-a1", "01-a2", "01-b1", "01-b2", "z1", "z2"]  # no _SUCCESS, no .hidden
        assert ctx.text_file(tmp_path / "logs-02" / "a.txt", use_unicode=False).collect() == [b"02-a1", b"02-a2"]
    finally:
        mp.undo()


def _forbid(mp, tmp_path):
    """The driver's ``open`` refuses the data files under tmp_path (``_SUCCESS`` aside): only workers may."""
    real = builtins.open

    def guarded(file, *args, **kwargs):
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if name.startswith(str(tmp_path)) and not name.endswith("_SUCCESS"):
            raise AssertionError(f"the driver opened {name}")
        return real(file, *args, **kwargs)

    mp.setattr(builtins, "open", guarded)
    mp.setattr(gzip, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the driver ran gzip.open")))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=12),
                      max_size=25),
       crlf=st.booleans(), last_newline=st.booleans(), min_partitions=st.integers(1, 12))
def test_every_line_once_whatever_the_splits(tmp_path_factory, lines, crlf, last_newline, min_partitions):
    path = tmp_path_factory.mktemp("t") / "f.txt"
    text = ("\r\n" if crlf else "\n").join(lines) + ("\n" if last_newline and lines else "")
    _write(path, text)
    ctx = context("inline", 3)
    ds = ctx.text_file(str(path), min_partitions=min_partitions)
    expected = lines if text else []
    if lines and lines[-1] == "" and not last_newline:
        expected = lines[:-1]  # a file ending in a newline then nothing: no empty last line
    assert ds.collect() == expected
    assert ds.glom() == reference.partitions(ds)
    if len(text.encode()) >= min_partitions:
        assert ds.num_partitions >= min_partitions  # Hadoop's splits: at least min_partitions of them


def test_empty_files_and_bad_names(tmp_path):
    ctx = context("inline", 3)
    _write(tmp_path / "empty.txt", "")
    assert ctx.text_file(str(tmp_path / "empty.txt")).collect() == []
    with pytest.raises(FileNotFoundError, match=r"input path does not exist: .*nothing-"):
        ctx.text_file(str(tmp_path / "nothing-*"))
    with pytest.raises(FileNotFoundError, match="input path does not exist"):
        ctx.text_file(str(tmp_path / "missing.txt"))
    with pytest.raises(TypeError, match="text_file: name must be a path"):
        ctx.text_file(42)
    with pytest.raises(ValueError, match="text_file: min_partitions must be a positive int"):
        ctx.text_file(str(tmp_path / "empty.txt"), min_partitions=0)
    with pytest.raises(TypeError, match="text_file: use_unicode must be a bool"):
        ctx.text_file(str(tmp_path / "empty.txt"), use_unicode="yes")


def test_save_as_text_file_writes_one_part_per_partition_from_the_workers(tmp_path):
    ctx = context("local", 2)
    ds = ctx.parallelize([1, "two", b"three", (4, 5), None, 6.5], 4)
    out = tmp_path / "out"
    mp = pytest.MonkeyPatch()
    try:
        _forbid(mp, tmp_path)
        ds.save_as_text_file(str(out))
    finally:
        mp.undo()
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001", "part-00002", "part-00003"]
    parts = [(out / f"part-{p:05d}").read_text().splitlines() for p in range(4)]
    assert parts == [["1", "two"], ["three", "(4, 5)"], ["None"], ["6.5"]]
    assert ctx.text_file(str(out)).collect() == ["1", "two", "three", "(4, 5)", "None", "6.5"]  # _SUCCESS skipped
    with pytest.raises(FileExistsError, match=r"save_as_text_file: output directory .* already exists"):
        ds.save_as_text_file(str(out))
    ds.save_as_text_file(tmp_path / "gz", compression_codec_class="org.apache.hadoop.io.compress.GzipCodec")
    assert gzip.decompress((tmp_path / "gz" / "part-00001.gz").read_bytes()) == b"three\n(4, 5)\n"
    assert ctx.text_file(str(tmp_path / "gz" / "part-*")).count() == 6
    with pytest.raises(ValueError, match="compression_codec_class must be None, 'gzip' or"):
        ds.save_as_text_file(tmp_path / "bad", compression_codec_class="lz4")
    assert not (tmp_path / "bad").exists()


def test_a_failed_save_leaves_no_directory(tmp_path):
    ctx = context("local", 2)

    def boom(x):
        if x == 3:
            raise RuntimeError("no three")
        return x

    with pytest.raises(dz.TaskError, match="no three"):
        ctx.parallelize(range(6), 3).map(boom).save_as_text_file(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    ctx.parallelize(range(6), 3).save_as_text_file(str(tmp_path / "out"))  # the same call, retried, works
    assert ctx.text_file(str(tmp_path / "out")).map(int).collect() == list(range(6))
