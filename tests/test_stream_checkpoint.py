"""Stream checkpoints (issue 9): the state's lineage is cut every ``checkpoint_every`` batches.

A checkpoint must change no value: the same stream gives the same outputs
with a checkpoint every batch and with none. And a worker lost in the middle
of a stateful stream is recovered from the last checkpoint, with exact
results, without replaying the stream from its first batch.
"""

from __future__ import annotations

import operator
import os
import random

import pytest
from support import kill_self_once, recovered

import drizzle_core as dz

pytestmark = pytest.mark.timeout(120)

I = 0.01  # noqa: E741  (batch interval, seconds)
BATCHES = 20


def _sum(values, old):
    return (old or 0) + sum(values)


class RandomEvents:
    """Seeded events ``(key, value)`` with event times in (or up to 1.5 batches before) the batch."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, p, b, bt):
        rng = random.Random(self.seed * 1000 + b * 10 + p)
        span = bt.end - bt.start
        return [(rng.choice("abcde"), rng.randint(-3, 5), bt.start + rng.uniform(-1.5, 1.0) * span)
                for _ in range(rng.randint(0, 6))]


def _outputs(ctx, every, g, seed):
    s = ctx.stream(dz.GeneratorSource(RandomEvents(seed), 3), batch_interval=I, group_size=g)
    s.checkpoint_every = every
    raw = s.collect_sink()
    pairs = s.map(lambda e: (e[0], e[1]))
    state = pairs.update_state_by_key(_sum, 2).collect_sink()
    timed = s.map(lambda e: (e[0], e[2]))
    counts = timed.window(3 * I, I, event_time=lambda r: r[1], lateness=1.5 * I).count_by_key(2).collect_sink()
    sums = (s.map(lambda e: (e[0], e[1], e[2])).window(2 * I, I, event_time=lambda r: r[2], lateness=1.5 * I)
            .reduce_by_key(operator.add, 2).collect_sink())
    s.run(batches=BATCHES)
    t0 = s.metrics[0].start

    def windows(sink):  # window bounds in intervals from the first batch: comparable across runs
        return [sorted(((round((w0 - t0) / I), round((w1 - t0) / I)), k, v) for ((w0, w1), k), v in b)
                for b in sink.batches]

    return raw, [sorted(b) for b in state.batches], windows(counts), windows(sums)


@pytest.mark.parametrize("transport", ["inline", "local"])
@pytest.mark.parametrize("g", [1, 3, "auto"])
def test_checkpoints_change_no_value(transport, g, no_orphans):
    with dz.Context(transport=transport, workers=2) as ctx:
        raw, *every_batch = _outputs(ctx, 1, g, seed=7)
        _raw, *never = _outputs(ctx, 10**6, g, seed=7)
    assert every_batch == never
    state = every_batch[0]
    expected: dict = {}
    for b, records in enumerate(raw.batches):
        for k, v, _t in records:
            expected[k] = expected.get(k, 0) + v
        assert state[b] == sorted(expected.items()), f"batch {b}"
    assert sum(len(b) for b in every_batch[1]) > 0  # windows did close and emit


class KillOnce:
    """Four keys, one event per key per batch; SIGKILLs its worker in batch ``kill_at``, once.

    Every call is logged (``b`` per line), and the kill is marked, so the test
    can tell which batches were read again after the kill.
    """

    def __init__(self, directory: str, kill_at: int) -> None:
        self.directory = directory
        self.kill_at = kill_at

    def __call__(self, p, b, bt):
        killed = os.path.join(self.directory, "killed")
        fd = os.open(os.path.join(self.directory, "calls"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{b} {int(os.path.exists(killed))}\n".encode())
        os.close(fd)
        if b == self.kill_at and p == 0:
            kill_self_once(self.directory)
        return [(k, b) for k in range(4) if k % 2 == p]


@pytest.mark.parametrize("g", [3, "auto"])
def test_a_lost_worker_is_recovered_from_the_last_checkpoint(tmp_path, g, no_orphans):
    kill_at, every = 14, 4
    with dz.Context(transport="local", workers=2) as ctx:
        s = ctx.stream(dz.GeneratorSource(KillOnce(str(tmp_path), kill_at), 2), batch_interval=I, group_size=g)
        s.checkpoint_every = every
        state = s.update_state_by_key(_sum, 2).collect_sink()  # a state partition on each worker
        n0 = len(ctx.metrics)
        s.run(batches=BATCHES)
        assert (tmp_path / "killed").exists()
        assert recovered(ctx.metrics[n0:]) == 1
        assert ctx.parallelize(range(10), 2).sum() == 45
    assert [m.batch for m in s.metrics] == list(range(BATCHES))
    for b, records in enumerate(state.batches):
        assert dict(records) == {k: b * (b + 1) // 2 for k in range(4)}, f"batch {b}"
    calls = [tuple(map(int, line.split())) for line in (tmp_path / "calls").read_text().splitlines()]
    again = [b for b, after_kill in calls if after_kill]
    # Read again after the kill: the batches since the last checkpoint, not the stream from batch 0.
    assert again and min(again) >= kill_at - 2 * every
