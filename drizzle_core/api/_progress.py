"""Progress bars: ``progress=True`` on ``run_jobs``, ``iter_jobs``, ``iterate`` and ``Stream.run``.

One line on the terminal: jobs (or iterations, or batches) done, the rate,
the current group size G, and what the loop adds (a stream's latency, a
model's loss)::

    iterate:  42%|########            | 42/100 [00:01<00:01, 40.6 it/s, G=16]

Nothing at all when the output is not a terminal (a log file, CI, a pipe):
a bar there is only noise. The line is drawn by tqdm when it is installed
(``pip install drizzle-core[progress]``), else by a plain renderer here with
the same fields: tqdm is the bar users know, but an engine should not need
it, so it stays an optional dependency. Either way the line is redrawn in
place and erased to its end, and fitted to the terminal's width, so no
stale characters are left behind when it gets shorter (a smaller rate, a
shorter loss) or would wrap; :meth:`ProgressBar.close` draws the final
state and ends the line.

Cost: counting a job is an increment and a clock read; the line is drawn
at most every ``interval`` seconds (0.1 by default), never once per job,
so a loop of thousands of jobs a second is not slowed by its bar.

Current G: the sizes the scheduler asks for (:meth:`ProgressBar.track`) are
queued, and the k-th group owns the k-th size: groups run and hand out
their jobs in order, and only the last group of a loop can be short.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

#: the renderer: "auto" (tqdm when importable, else plain), "tqdm" or "plain"
BACKENDS = ("auto", "tqdm", "plain")


def _tqdm_class() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class ProgressBar:
    """A one-line bar on a terminal, or nothing (see the module docstring).

    ``total``: jobs, iterations or batches expected (None: unknown, no
    percentage). ``desc`` starts the line; ``unit`` names what is counted.
    ``status(item)``, asked only when the line is drawn, gives text to
    show after G: it gets the last item counted (a job's results, an
    iteration's state). ``file``: where to draw (default ``sys.stderr``);
    the bar draws only if it is a terminal. ``backend``: ``"auto"``,
    ``"tqdm"`` or ``"plain"``.

    Pass one as ``progress=`` to choose these, or use it directly: call
    :meth:`advance` per item (or the bar itself as ``on_iteration(i,
    state)``), then :meth:`close`.
    """

    def __init__(self, total: int | None = None, desc: str = "", *, unit: str = "job",
                 status: Callable[[Any], str] | None = None, file: TextIO | None = None,
                 interval: float = 0.1, backend: str = "auto") -> None:
        if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
            raise ValueError(f"ProgressBar: total must be a non-negative int or None, got {total!r}")
        if backend not in BACKENDS:
            raise ValueError(f"ProgressBar: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if status is not None and not callable(status):
            raise TypeError(f"ProgressBar: status must be callable or None, got {type(status).__name__}")
        self.total = total
        self.desc = desc
        self.unit = unit
        self.status = status
        self.file: TextIO = file if file is not None else sys.stderr
        self.interval = float(interval)
        self.n = 0                       # items counted
        self.group_size: int | None = None  # G of the group the last item belongs to
        self._sizes: deque[int] = deque()   # sizes asked for, of groups not reached yet
        self._group_end = 0              # items up to the end of the current group
        self._item: Any = None
        self._start = time.perf_counter()
        self._next_draw = self._start    # the first item draws at once
        self._width = 0                  # plain: length of the line drawn last
        self._closed = False
        isatty = getattr(self.file, "isatty", None)
        try:
            self.active = bool(isatty()) if isatty is not None else False
        except (ValueError, OSError):    # a closed file
            self.active = False
        tqdm = None if backend == "plain" or not self.active else _tqdm_class()
        if backend == "tqdm" and self.active and tqdm is None:
            raise ImportError("ProgressBar(backend='tqdm') needs tqdm: pip install drizzle-core[progress]")
        self.backend = "off" if not self.active else ("tqdm" if tqdm is not None else "plain")
        self._tqdm: Any = None
        if tqdm is not None:
            # drawn only when this class says so (mininterval=0, miniters=1): the throttle is ours
            # and so is the width (the terminal's, asked at each draw: tqdm asks stdout's, or nobody's)
            self._tqdm = tqdm(total=total, desc=desc or None, unit=unit, file=self.file, mininterval=0,
                              miniters=1, ncols=self._columns(), leave=True, disable=False)

    # ------------------------------------------------------------ feeding
    def track(self, next_size: Callable[[], int]) -> Callable[[], int]:
        """``next_size`` that also tells the bar each group size asked (the scheduler calls it per group)."""
        sizes = self._sizes

        def asked() -> int:
            n = next_size()
            sizes.append(n)
            return n
        return asked

    def advance(self, item: Any = None) -> None:
        """One more job (or batch) done; ``item`` is what ``status`` is shown for."""
        self.n += 1
        self._item = item
        if self.n > self._group_end:
            self._next_group()
        if self.active and time.perf_counter() >= self._next_draw:
            self._draw()

    def __call__(self, i: int, state: Any) -> None:
        """``on_iteration(i, state)``: iteration ``i`` (from 1) is done, its state is ``state``."""
        self.n = i
        self._item = state
        while self.n > self._group_end and self._next_group():
            pass
        if self.active and time.perf_counter() >= self._next_draw:
            self._draw()

    def _next_group(self) -> bool:
        if not self._sizes:
            return False
        self.group_size = self._sizes.popleft()
        self._group_end += self.group_size
        return True

    # ------------------------------------------------------------ drawing
    def _fields(self) -> tuple[str, float]:
        """The text after G (group size and status), and the rate."""
        g = f"G={self.group_size}" if self.group_size is not None else ""
        status = ""
        if self.status is not None and self._item is not None:
            try:
                status = str(self.status(self._item))
            except Exception as e:  # a bar must never end the loop it shows
                status = f"(status failed: {type(e).__name__})"
        elapsed = time.perf_counter() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        return " ".join(s for s in (g, status) if s), rate

    def _draw(self, end: str = "") -> None:
        self._next_draw = time.perf_counter() + self.interval
        post, rate = self._fields()
        if self._tqdm is not None:
            bar = self._tqdm
            bar.ncols = self._columns()
            bar.set_postfix_str(post + end, refresh=False)
            if self.n != bar.n:
                bar.update(self.n - bar.n)
            else:
                bar.refresh()
            return
        line = self._plain_line(post + end, rate)
        try:
            self.file.write("\r" + line + "\x1b[K")  # erase to the end of the line: nothing stale is left
            self.file.flush()
        except (ValueError, OSError):  # the terminal went away: stop drawing, never fail the loop
            self.active = False

    def _plain_line(self, post: str, rate: float) -> str:
        elapsed = time.perf_counter() - self._start
        head = f"{self.desc}: " if self.desc else ""
        speed = f"{rate:,.1f} {self.unit}/s"
        if self.total:
            done = min(self.n, self.total)
            eta = (self.total - done) / rate if rate > 0 else 0.0
            times = f"[{_clock(elapsed)}<{_clock(eta)}, {speed}{', ' + post if post else ''}]"
            count = f"{done}/{self.total}"
            columns = self._columns()
            room = columns - len(head) - len(count) - len(times) - 10
            width = max(0, min(30, room))
            filled = int(width * done / self.total)
            pct = f"{100 * done / self.total:3.0f}%"
            line = f"{head}{pct}|{'#' * filled}{' ' * (width - filled)}| {count} {times}"
        else:
            columns = self._columns()
            line = f"{head}{self.n} {self.unit} [{_clock(elapsed)}, {speed}{', ' + post if post else ''}]"
        return line[:max(1, columns)]

    def _columns(self) -> int:
        """Columns the line may use: the terminal's width (of ``file``, else $COLUMNS), less the last column,
        which would wrap a line that fills it on some terminals."""
        try:
            columns = os.get_terminal_size(self.file.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a real terminal (io.UnsupportedOperation is an OSError)
            columns = shutil.get_terminal_size((80, 24)).columns
        return max(10, columns - 1)

    def close(self, note: str = "") -> None:
        """Draw the final state (whatever the throttle skipped) and end the line. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self.active:
            return
        self._draw(end=f" {note}" if note else "")
        if self._tqdm is not None:
            self._tqdm.close()
            return
        try:
            self.file.write("\n")
            self.file.flush()
        except (ValueError, OSError):
            pass

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("failed" if exc_type is not None and not issubclass(exc_type, GeneratorExit) else "")

    def __repr__(self) -> str:
        total = "?" if self.total is None else self.total
        return f"<ProgressBar {self.desc or self.unit}: {self.n}/{total} ({self.backend})>"


def _clock(seconds: float) -> str:
    s = int(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def progress_bar(progress: bool | ProgressBar, total: int | None, desc: str, unit: str,
                 status: Callable[[Any], str] | None = None) -> ProgressBar | None:
    """What a ``progress=`` argument asks for: a bar that draws, or None (off, or not a terminal)."""
    if isinstance(progress, ProgressBar):
        return progress if progress.active else None
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool or a ProgressBar, got {type(progress).__name__}")
    if not progress:
        return None
    bar = ProgressBar(total, desc, unit=unit, status=status)
    return bar if bar.active else None
