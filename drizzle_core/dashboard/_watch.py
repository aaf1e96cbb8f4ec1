"""What the dashboard follows besides the scheduler: streams and iterate loops, told to it by the Context.

A stream records its :class:`~drizzle_core.BatchMetrics` in ``stream.metrics``
already; the dashboard only keeps a weak reference to the stream and reads
that list from its own thread. An iterate loop's states arrive on the driver
one by one (``on_iteration``); :class:`IterateWatch` is that callback, and
keeps the iteration number, a reference to the latest state, and, for a
number or a small vector (at most :data:`SMALL` numbers), its values, for the
convergence plot. That is a few microseconds per iteration, on the thread
that runs the loop; a larger state is summarized (its norm) by the
dashboard's thread, from the latest state only, a few times a second.
"""

from __future__ import annotations

import numbers
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

SMALL = 8           # a state of at most this many numbers is plotted component by component
MAX_POINTS = 2000   # convergence points kept per loop: halved (every other one) when twice this


class StreamLike(Protocol):
    """What the dashboard reads of a :class:`~drizzle_core.Stream` (a Protocol: the stream layer is above it)."""

    metrics: list[Any]
    interval: float
    source: Any

    @property
    def running(self) -> bool: ...


class StreamWatch:
    """A stream the dashboard shows, held weakly (a stream the user dropped keeps its last figures)."""

    def __init__(self, number: int, stream: StreamLike) -> None:
        self.number = number
        self.ref = weakref.ref(stream)
        self.label = f"stream {number} ({type(stream.source).__name__}, every {stream.interval * 1e3:g} ms)"
        self.interval = float(stream.interval)


def small_values(state: Any) -> tuple[float, ...] | None:
    """The state as at most :data:`SMALL` floats, or None when it is not a number or a small numeric vector."""
    if isinstance(state, numbers.Real) and not isinstance(state, bool):
        return (float(state),)
    if isinstance(state, np.ndarray):
        if state.size <= SMALL and state.dtype.kind in "fiu":
            return tuple(float(x) for x in state.ravel())
        return None
    if isinstance(state, (tuple, list)) and 0 < len(state) <= SMALL and all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) for x in state):
        return tuple(float(x) for x in state)
    return None


def describe(state: Any) -> str:
    """A short description of a state's type (and shape), for the page."""
    if isinstance(state, np.ndarray):
        return f"ndarray {state.dtype} {'x'.join(map(str, state.shape)) or 'scalar'}"
    if isinstance(state, (tuple, list)):
        return f"{type(state).__name__} of {len(state)}"
    return type(state).__name__


def sample_norm(watch: IterateWatch) -> None:
    """Add the latest state's norm to ``watch.norms`` if it is a large numeric ndarray not sampled yet."""
    state, i = watch.latest, watch.iteration
    if isinstance(state, np.ndarray) and state.size > SMALL and state.dtype.kind in "fiu" and (
            not watch.norms or watch.norms[-1][0] != i):
        watch.norms.append((i, float(np.linalg.norm(state))))
        if len(watch.norms) >= 2 * MAX_POINTS:
            watch.norms = watch.norms[::2]


class IterateWatch:
    """The ``on_iteration`` of one ``ctx.iterate`` loop while the dashboard is on (it calls the user's too).

    A context manager around the loop: leaving it marks the loop finished.
    """

    def __init__(self, number: int, iterations: int, user: Callable[[int, Any], None] | None) -> None:
        self.number = number
        self.iterations = iterations
        self.user = user
        self.iteration = 0
        self.latest: Any = None
        self.kind = ""                                   # describe(state) of the first state
        self.points: list[tuple[int, tuple[float, ...]]] = []   # (iteration, values) of small states
        self.norms: list[tuple[int, float]] = []         # (iteration, norm) of a large ndarray state, sampled
        self.started = time.time()
        self.first_at = 0.0                              # perf_counter of the first state's arrival
        self.last_at = 0.0                               # ... and of the latest
        self.finished: float | None = None               # epoch seconds the loop ended
        self.converged = False
        self.error = ""

    def __call__(self, i: int, state: Any) -> None:
        now = time.perf_counter()
        if not self.first_at:
            self.first_at = now
            self.kind = describe(state)
        self.last_at = now
        self.iteration = i
        self.latest = state
        values = small_values(state)
        if values is not None:
            self.points.append((i, values))
            if len(self.points) >= 2 * MAX_POINTS:
                self.points = self.points[::2]  # one swap: the dashboard's thread reads either list whole
        if self.user is not None:
            self.user(i, state)

    def __enter__(self) -> IterateWatch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        sample_norm(self)
        self.finished = time.time()
        self.latest = None  # the loop's result holds the state now; do not keep a big one alive here
        if exc is not None:
            self.error = f"{type(exc).__name__}: {exc}"

    def done(self, iterations: int, converged: bool) -> None:
        """The loop returned: its :class:`~drizzle_core.IterateResult`'s ``iterations`` and ``converged``."""
        self.iteration = iterations
        self.converged = converged
