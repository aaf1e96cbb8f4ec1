"""``progress=True``: a bar on a terminal (count, rate, current G), nothing elsewhere, no stale characters.

What a user sees is checked on what a terminal would show: the bytes the
bar wrote are replayed through a small terminal model (carriage return,
erase to end of line, cursor up, wrapping at the width), so a bar that
leaves characters of a longer earlier line behind, or wraps, fails here.
Both renderers are checked: tqdm (the test extra installs it) and the plain
one used without it.
"""

from __future__ import annotations

import io
import operator
import os
import pty
import re
import subprocess
import sys
import textwrap

import pytest

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["plain", "tqdm"]
COLUMNS = 80


class FakeTerminal(io.StringIO):
    """A file that says it is a terminal and keeps what was written to it."""

    def isatty(self) -> bool:
        return True


def screen(text: str, columns: int = COLUMNS) -> list[str]:
    """The lines a terminal of ``columns`` shows after ``text`` (CR, LF, ESC[K, ESC[nA; wraps at the edge)."""
    rows: list[list[str]] = [[]]
    r = c = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = re.match(r"\x1b\[(\d*)([A-Za-z])", text[i:])
            assert m, f"unknown escape sequence at {text[i:i + 8]!r}"
            n, op = int(m.group(1) or 1), m.group(2)
            if op == "K":
                del rows[r][c:]
            elif op == "A":
                r = max(0, r - n)
            i += len(m.group(0))
            continue
        if ch == "\r":
            c = 0
        elif ch == "\n":
            r += 1
            c = 0  # a tty's output processing turns \n into \r\n
        else:
            if c >= columns:  # auto-wrap
                r, c = r + 1, 0
            while len(rows) <= r:
                rows.append([])
            row = rows[r]
            row.extend(" " * (c - len(row)))
            if c < len(row):
                row[c] = ch
            else:
                row.append(ch)
            c += 1
        while len(rows) <= r:
            rows.append([])
        i += 1
    lines = ["".join(x).rstrip() for x in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.fixture(scope="module")
def ctx():
    with dz.Context(workers=2) as c:
        yield c


@pytest.fixture(autouse=True)
def _columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", str(COLUMNS))  # what shutil.get_terminal_size (and tqdm's fallback) read


def test_nothing_is_drawn_when_stderr_is_not_a_terminal(ctx, capsys):
    ds = ctx.parallelize(range(8), 2)
    assert ctx.run_jobs([(ds, sum)] * 5, group_size=2, progress=True) == [[6, 22]] * 5
    ctx.iterate(ds, 0, local=lambda p, s: 1, combine=operator.add, update=lambda s, t: s + t,
                iterations=3, group_size=2, progress=True)
    assert capsys.readouterr().err == ""
    bar = dz.ProgressBar(10, file=io.StringIO())
    assert not bar.active and bar.backend == "off"


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_jobs_bar_shows_jobs_rate_and_group_size(ctx, backend):
    term = FakeTerminal()
    ds = ctx.parallelize(range(8), 2).cache()
    out = ctx.run_jobs([(ds, sum)] * 30, group_size=5,
                       progress=dz.ProgressBar(30, "jobs", file=term, backend=backend))
    assert out == [[6, 22]] * 30
    lines = screen(term.getvalue())
    assert len(lines) == 1, lines  # redrawn in place, one line, ended
    line = lines[0]
    assert line.startswith("jobs:") and "100%" in line and "30/30" in line, line
    assert "job/s" in line and "G=5" in line, line
    assert term.getvalue().endswith("\n")


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_group_size_shown_is_the_one_the_last_group_was_planned_with(ctx, backend):
    term = FakeTerminal()
    ds = ctx.parallelize(range(4), 2).cache()
    ctx.run_jobs([(ds, len)] * 200, group_size="auto",
                 progress=dz.ProgressBar(200, "auto", file=term, backend=backend))
    [line] = screen(term.getvalue())
    assert f"G={ctx.metrics[-1].planned_size}" in line, (line, ctx.metrics[-1])
    assert "200/200" in line


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_stale_characters_when_the_line_gets_shorter(backend):
    """A status that shrinks (a loss from 0.6931471 to 0.1) must not leave the tail of the longer one."""
    term = FakeTerminal()
    bar = dz.ProgressBar(41, "fit", unit="it", status=lambda i: "loss=" + ("9" * (41 - i) if i < 41 else "0.1"),
                         file=term, interval=0, backend=backend)
    for i in range(1, 42):
        bar(i, state=i)
    bar.close("converged")
    [line] = screen(term.getvalue())
    assert "loss=0.1" in line and "9" * 5 not in line, line
    assert line.endswith("converged]") or line.endswith("converged"), line


def test_a_line_longer_than_the_terminal_is_cut_not_wrapped():
    term = FakeTerminal()
    bar = dz.ProgressBar(5, "x" * 200, file=term, interval=0, backend="plain")
    for _ in range(5):
        bar.advance()
    bar.close()
    lines = screen(term.getvalue())
    assert len(lines) == 1 and len(lines[0]) < COLUMNS, lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_iterate_bar_counts_iterations_and_says_converged(ctx, backend):
    term = FakeTerminal()
    ds = ctx.parallelize(range(4), 2)
    seen = []
    res = ctx.iterate(ds, 0, local=lambda p, s: 1, combine=operator.add, update=lambda s, t: s + t,
                      iterations=40, group_size=5, until=lambda s: s >= 14, on_iteration=lambda i, s: seen.append(i),
                      progress=dz.ProgressBar(40, "iterate", unit="it", status=lambda s: f"state={s}",
                                              file=term, backend=backend))
    assert res.converged and res.iterations == 7 and seen == list(range(1, 8))  # the user's callback still runs
    [line] = screen(term.getvalue())
    assert "7/40" in line and "it/s" in line and "G=5" in line and "state=14" in line, line
    assert "converged" in line


def test_iterate_bar_follows_an_auto_group_size(ctx):
    term = FakeTerminal()
    ds = ctx.parallelize(range(4), 2)
    res = ctx.iterate(ds, 0, local=lambda p, s: 1, combine=operator.add, update=lambda s, t: s + t,
                      iterations=60, group_size="auto", progress=dz.ProgressBar(60, file=term, backend="plain"))
    assert res.state == 120
    [line] = screen(term.getvalue())
    assert "60/60" in line and f"G={ctx.metrics[-1].planned_size}" in line, (line, ctx.metrics[-1])


def test_stream_bar_shows_batches_group_size_and_latency(ctx, monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)  # progress=True draws on sys.stderr
    s = ctx.stream(dz.GeneratorSource(lambda p, b, t: range(3)), 0.02, group_size=4)
    sink = s.collect_sink()
    s.run(8, progress=True)
    assert len(sink.batches) == 8
    [line] = screen(term.getvalue())
    assert line.startswith("stream:") and "8/8" in line and "batch/s" in line and "G=4" in line, line
    assert re.search(r"latency [\d,]+ ms", line), line


def test_a_stopped_or_failed_loop_ends_its_line_and_says_so(ctx):
    ds = ctx.parallelize(range(4), 2)
    term = FakeTerminal()
    it = ctx.iter_jobs([(ds, len)] * 20, group_size=2, progress=dz.ProgressBar(20, file=term, backend="plain"))
    for i, _ in enumerate(it):
        if i == 2:
            break
    it.close()
    [line] = screen(term.getvalue())
    assert "stopped" in line and term.getvalue().endswith("\n")

    term = FakeTerminal()
    with pytest.raises(dz.TaskError):
        ctx.run_jobs([(ds, len), (ds, lambda part: 1 / 0)], group_size=1,
                     progress=dz.ProgressBar(2, file=term, backend="plain"))
    [line] = screen(term.getvalue())
    assert "failed" in line and term.getvalue().endswith("\n")


def test_bad_progress_arguments_are_named(ctx):
    ds = ctx.parallelize(range(4), 2)
    with pytest.raises(TypeError, match="progress must be a bool or a ProgressBar"):
        ctx.run_jobs([(ds, len)], progress="yes")
    with pytest.raises(ValueError, match="total"):
        dz.ProgressBar(-1)
    with pytest.raises(ValueError, match="backend"):
        dz.ProgressBar(3, backend="rich")


SCRIPT = textwrap.dedent("""
    import operator, drizzle_core as dz
    with dz.Context(workers=2) as ctx:
        ds = ctx.parallelize(range(8), 2).cache()
        ctx.run_jobs([(ds, sum)] * 50, group_size=10, progress=True)
        ctx.iterate(ds, 0, local=lambda p, s: 1, combine=operator.add, update=lambda s, t: s + t,
                    iterations=30, group_size=5, progress=True)
    print("done")
""")


def _on_a_terminal(args: list[str]) -> str:
    """Run ``args`` with stdout and stderr on a pseudo-terminal of COLUMNS columns; what it wrote."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        proc.wait(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode()


def test_a_real_terminal_shows_one_clean_line_per_bar_and_a_pipe_shows_none(tmp_path):
    script = tmp_path / "bars.py"
    script.write_text(SCRIPT)
    lines = screen(_on_a_terminal([sys.executable, str(script)]))
    assert len(lines) == 3 and lines[2] == "done", lines
    assert lines[0].startswith("jobs:") and "50/50" in lines[0] and "G=10" in lines[0], lines
    assert lines[1].startswith("iterate:") and "30/30" in lines[1] and "G=5" in lines[1], lines
    piped = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout == "done\n" and piped.stderr == "", piped.stderr
