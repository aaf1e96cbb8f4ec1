"""A one-line progress bar on stderr, fed by ``ctx.iterate``'s ``on_iteration``.

``on_iteration`` runs on the driver as each iteration's state arrives, so the
bar shows real progress of the workers (a group of G iterations arrives one
by one, not all at once at the end of the group). It redraws at most every
``interval`` seconds: the driver must not become the bottleneck of a loop
that runs thousands of iterations per second. No dependency (no tqdm).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class ProgressBar:
    """``on_iteration(i, state)`` that draws ``desc |####    | i/total loss=... it/s``."""

    def __init__(self, total: int, loss: Callable[[Any], float], desc: str = "",
                 stream: TextIO | None = None, width: int = 24, interval: float = 0.1) -> None:
        self.total = total
        self.loss = loss
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval = interval
        self._start = time.perf_counter()
        self._last_draw = float("-inf")
        self._i = 0
        self._state: Any = None

    def __call__(self, i: int, state: Any) -> None:
        self._i, self._state = i, state
        now = time.perf_counter()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        done = min(self._i, self.total)
        filled = int(self.width * done / self.total) if self.total else self.width
        bar = "#" * filled + " " * (self.width - filled)
        rate = self._i / (now - self._start) if now > self._start else 0.0
        loss = f" loss={self.loss(self._state):.6g}" if self._state is not None else ""
        self.stream.write(f"\r{self.desc} |{bar}| {done}/{self.total}{loss} {rate:,.0f} it/s{end}")
        self.stream.flush()

    def close(self, note: str = "") -> None:
        """Draw the final state (always, whatever the throttle skipped) and end the line."""
        self._draw(time.perf_counter(), end=(f" {note}" if note else "") + "\n")
