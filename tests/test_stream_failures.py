"""Streams after an error (issue 9): a run that failed, bad time parameters, an unpicklable generator.

What a user sees: running a stream again after a sink or a task raised
continues with the first batch not delivered, with the state exactly that
after the last delivered batch; non-finite or non-positive times are refused
by name before anything runs; a generator that cannot be pickled is named,
with where it was defined.
"""

from __future__ import annotations

import math
import os
import threading

import pytest
from support import once

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)

I = 0.01  # noqa: E741  (batch interval, seconds)


def _count(values, old):
    return (old or 0) + len(values)


def _one_key(p, b, bt):
    return [("k", b)]


class FlakySink:
    """A sink that raises ConnectionError the first time it sees batch ``fail_at``, then works."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.failed = False
        self.delivered: list[int] = []

    def __call__(self, records, m):
        if m.batch == self.fail_at and not self.failed:
            self.failed = True
            raise ConnectionError("database down")
        self.delivered.append(m.batch)


class FailOnce:
    """A generator that raises in batch ``fail_at`` the first time (across processes: a marker file)."""

    def __init__(self, directory: str, fail_at: int) -> None:
        self.marker = os.path.join(directory, "failed")
        self.fail_at = fail_at

    def __call__(self, p, b, bt):
        if b == self.fail_at and once(self.marker):
            raise ValueError(f"batch {b} is bad")
        return [("k", b)]


def _check_state_and_windows(state, window, metrics, n):
    """Each delivered state is the count after its batch; each window the last 3 batches' records."""
    for records, m in zip(state.batches, state.metrics):
        assert dict(records) == {"k": m.batch + 1}, f"batch {m.batch}"
    for records, m in zip(window.batches, window.metrics):
        assert records == [("k", b) for b in range(max(0, m.batch - 2), m.batch + 1)], f"batch {m.batch}"
    assert [m.batch for m in metrics] == list(range(n))  # each batch delivered once, none skipped


@pytest.mark.parametrize("transport", ["inline", "local"])
@pytest.mark.parametrize("g", [1, 3])
def test_a_run_after_a_sink_error_continues_with_the_batch_not_delivered(transport, g, no_orphans):
    with dz.Context(transport=transport, workers=2) as ctx:
        s = ctx.stream(dz.GeneratorSource(_one_key, 1), batch_interval=I, group_size=g)
        state = s.update_state_by_key(_count).collect_sink()
        window = s.window(3 * I, I).collect_sink()
        flaky = FlakySink(fail_at=4)
        s.foreach_batch(flaky)
        with pytest.raises(ConnectionError, match="database down"):
            s.run(batches=10)
        assert [m.batch for m in s.metrics] == [0, 1, 2, 3]  # batch 4 was not delivered
        s.run(batches=4)
        # The sinks before the failing one saw batch 4 twice (at-least-once output) ...
        assert [m.batch for m in state.metrics] == [0, 1, 2, 3, 4, 4, 5, 6, 7]
        # ... with the same state each time: batch 4 is in the state once.
        _check_state_and_windows(state, window, s.metrics, 8)
        assert flaky.delivered == list(range(8))
        assert ctx.parallelize(range(10), 2).sum() == 45


@pytest.mark.parametrize("transport", ["inline", "local"])
@pytest.mark.parametrize("g", [1, 3])
def test_a_run_after_a_task_error_continues_with_the_batch_not_delivered(transport, g, tmp_path, no_orphans):
    with dz.Context(transport=transport, workers=2) as ctx:
        s = ctx.stream(dz.GeneratorSource(FailOnce(str(tmp_path), 5), 1), batch_interval=I, group_size=g)
        state = s.update_state_by_key(_count).collect_sink()
        window = s.window(3 * I, I).collect_sink()
        with pytest.raises(dz.TaskError, match="batch 5 is bad"):
            s.run(batches=10)
        first = len(s.metrics)
        assert first <= 5  # batch 5 and after were not delivered
        s.run(batches=10 - first)
        _check_state_and_windows(state, window, s.metrics, 10)
        assert [m.batch for m in state.metrics] == list(range(10))


# ------------------------------------------------------------ time parameters

_NOT_POSITIVE = [math.inf, -math.inf, math.nan, 0, 0.0, -0.5, True, "0.1", None]
_NOT_NON_NEGATIVE = [math.inf, math.nan, -1e-3, True, "1"]


@pytest.fixture(scope="module")
def ctx():
    with dz.Context(transport="inline", workers=1) as c:
        yield c


def _src():
    return dz.GeneratorSource(_one_key, 1)


@pytest.mark.parametrize("bad", _NOT_POSITIVE)
def test_batch_interval_must_be_finite_and_positive(ctx, bad):
    with pytest.raises(ValueError, match="batch_interval"):
        ctx.stream(_src(), batch_interval=bad)


@pytest.mark.parametrize("bad", _NOT_POSITIVE)
def test_max_group_seconds_must_be_finite_and_positive(ctx, bad):
    with pytest.raises(ValueError, match="max_group_seconds"):
        ctx.stream(_src(), batch_interval=I, max_group_seconds=bad)


def test_an_infinite_interval_is_refused_before_any_worker_is_harmed(ctx):
    with pytest.raises(ValueError, match="batch_interval"):
        ctx.stream(_src(), batch_interval=float("inf"))
    assert ctx.parallelize(range(4), 2).collect() == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_checkpoint_every_must_be_a_positive_int(ctx, bad):
    with pytest.raises(ValueError, match="checkpoint_every"):
        dz.Stream(ctx, _src(), I, checkpoint_every=bad)
    s = ctx.stream(_src(), batch_interval=I)
    with pytest.raises(ValueError, match="checkpoint_every"):
        s.checkpoint_every = bad


@pytest.mark.parametrize("bad", _NOT_NON_NEGATIVE)
def test_run_duration_must_be_finite_and_not_negative(ctx, bad):
    s = ctx.stream(_src(), batch_interval=I)
    s.collect_sink()
    with pytest.raises(ValueError, match="duration"):
        s.run(duration=bad)
    assert not s.running


@pytest.mark.parametrize("bad", _NOT_POSITIVE)
def test_window_times_must_be_finite_and_positive(ctx, bad):
    s = ctx.stream(_src(), batch_interval=I)
    with pytest.raises(ValueError, match="window length"):
        s.window(bad)
    with pytest.raises(ValueError, match="window length"):
        s.window(bad, event_time=lambda r: r[1])
    if bad is not None:  # slide=None means "tumbling"
        with pytest.raises(ValueError, match="window slide"):
            s.window(2 * I, bad)
        with pytest.raises(ValueError, match="window slide"):
            s.window(2 * I, bad, event_time=lambda r: r[1])


@pytest.mark.parametrize("bad", _NOT_NON_NEGATIVE)
def test_lateness_and_settle_must_be_finite_and_not_negative(ctx, tmp_path, bad):
    s = ctx.stream(_src(), batch_interval=I)
    with pytest.raises(ValueError, match="lateness"):
        s.window(2 * I, event_time=lambda r: r[1], lateness=bad)
    with pytest.raises(ValueError, match="settle"):
        dz.DirectorySource(tmp_path, settle=bad)


# ---------------------------------------------------- an unpicklable generator


def test_an_unpicklable_generator_is_named_with_where_it_was_defined(ctx):
    lock = threading.Lock()

    def my_generator(p, b, bt):
        with lock:
            return [b]

    where = f"{os.path.basename(__file__)}:{my_generator.__code__.co_firstlineno}"
    s = ctx.stream(dz.GeneratorSource(my_generator, 1), batch_interval=I)
    s.collect_sink()
    with pytest.raises(dz.SerializationError) as info:
        s.run(batches=1)
    message = str(info.value)
    assert "my_generator" in message and where in message
    assert "_Read" not in message
    assert ctx.parallelize(range(4), 2).sum() == 6  # the context is still usable
