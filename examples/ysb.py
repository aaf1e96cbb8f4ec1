"""The Yahoo Streaming Benchmark on Drizzle micro-batches.

    python examples/ysb.py [RATE] [SECONDS] [GROUP_SIZE] [WINDOW] [--interval S]

Ad events ``(user_id, page_id, ad_id, ad_type, event_type, event_time, ip)``
are made on the workers by a generator source at RATE events per second
(default 20,000), spread over the source's partitions. The pipeline keeps
``view`` events, joins each ad to its campaign (a static table of 100
campaigns x 10 ads, broadcast to the workers), and counts views per campaign
per WINDOW-second event-time window (default 10, or a fifth of a shorter run). A window's count is emitted
once, in the batch whose end passes the window's end; its *latency* is the
time from the window's end to that count reaching the sink on the driver.

The run checks itself: every emitted count must equal the count computed
directly (on the driver, after the run) from the same generated events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import drizzle_core as dz
from drizzle_core.cli import ArgumentParser, group_size, positive_float
from drizzle_core.stream._metrics import percentile
from drizzle_core.stream._window import windows_of

CAMPAIGNS = 100
ADS_PER_CAMPAIGN = 10
AD_TYPES = ("banner", "modal", "sponsored-search", "mail", "mobile")
EVENT_TYPES = ("view", "click", "purchase")


def ad_table() -> list[tuple[str, str]]:
    """``(ad_id, campaign_id)`` for 100 campaigns x 10 ads."""
    return [(f"ad-{c:03d}-{a}", f"campaign-{c:03d}") for c in range(CAMPAIGNS) for a in range(ADS_PER_CAMPAIGN)]


class AdEvents:
    """The generator source's function: partition p's events of one batch, at ``rate`` events/s in total.

    Deterministic in ``(partition, batch, batch_time)`` (seeded from them), so
    the benchmark can regenerate the same events on the driver to check the
    counts. Event times are spread over the batch's span, in order.
    """

    def __init__(self, rate: float, partitions: int, seed: int = 0) -> None:
        self.rate = rate
        self.partitions = partitions
        self.seed = seed
        self.ads = [ad for ad, _ in ad_table()]

    def __call__(self, p: int, b: int, bt: dz.BatchTime) -> list[tuple]:
        share = self.rate / self.partitions
        n = math.floor(bt.end * share) - math.floor(bt.start * share)  # exact rate over time
        rng = np.random.default_rng([self.seed, p, b])
        users = rng.integers(0, 1 << 30, n).tolist()
        pages = rng.integers(0, 1 << 30, n).tolist()
        ads = [self.ads[i] for i in rng.integers(0, len(self.ads), n).tolist()]
        ad_types = [AD_TYPES[i] for i in rng.integers(0, len(AD_TYPES), n).tolist()]
        kinds = [EVENT_TYPES[i] for i in rng.integers(0, len(EVENT_TYPES), n).tolist()]
        times = (bt.start + np.sort(rng.random(n)) * (bt.end - bt.start)).tolist()
        ip = f"10.0.{p}.1"
        return list(zip(users, pages, ads, ad_types, kinds, times, [ip] * n))


def is_view(e: tuple) -> bool:
    return e[4] == "view"


def ad_and_time(e: tuple) -> tuple[str, float]:
    return (e[2], e[5])


def campaign_and_time(kv: tuple) -> tuple[str, float]:
    _ad, (t, campaign) = kv
    return (campaign, t)


def event_time(kv: tuple) -> float:
    return kv[1]


@dataclass
class YsbResult:
    rate: float
    group_size: Any
    interval: float
    window: float
    counts: dict = field(default_factory=dict)            # ((start, end), campaign) -> views
    window_latency: dict = field(default_factory=dict)    # (start, end) -> seconds
    latency_over_time: list = field(default_factory=list)  # (window end, latency)
    metrics: list = field(default_factory=list)           # BatchMetrics
    correct: bool | None = None

    def latencies(self, skip_s: float = 0.0) -> list[float]:
        """Window latencies, leaving out windows that ended in the first ``skip_s`` seconds."""
        if not self.metrics:
            return []
        t0 = self.metrics[0].start + skip_s
        return [lat for (_s, e), lat in sorted(self.window_latency.items()) if e > t0]

    def summary(self, skip_s: float = 0.0) -> tuple[float, float]:
        lat = self.latencies(skip_s)
        return percentile(lat, 50), percentile(lat, 99)


def run_ysb(ctx: dz.Context, rate: float = 20_000, seconds: float = 30.0, group_size: Any = "auto",
            window: float = 10.0, interval: float = 0.1, partitions: int = 4, check: bool = True,
            max_group_seconds: float = 1.0) -> YsbResult:
    """Run YSB for ``seconds`` of batches; return counts, latencies and metrics."""
    gen = AdEvents(rate, partitions)
    ads = ctx.parallelize(ad_table(), 2)
    stream = ctx.stream(dz.GeneratorSource(gen, partitions), batch_interval=interval, group_size=group_size,
                        max_group_seconds=max_group_seconds)
    counts = (stream.filter(is_view).map(ad_and_time)
              .join(ads)                                  # (ad, (time, campaign)), broadcast
              .map(campaign_and_time)
              .window(window, event_time=event_time)
              .count_by_key())
    result = YsbResult(rate=rate, group_size=group_size, interval=interval, window=window)

    def sink(records: list, m: dz.BatchMetrics) -> None:
        for (win, campaign), n in records:
            result.counts[(win, campaign)] = n
            if win not in result.window_latency:
                result.window_latency[win] = m.arrived - win[1]
                result.latency_over_time.append((win[1], m.arrived - win[1]))

    counts.foreach_batch(sink)
    result.metrics = stream.run(duration=seconds)
    if check:
        result.correct = check_counts(result, gen)
    return result


def check_counts(result: YsbResult, gen: AdEvents) -> bool:
    """Recompute every closed window's count directly from the same events (on the driver)."""
    campaign_of = dict(ad_table())
    last_watermark = result.metrics[-1].end
    expected: dict = {}
    for m in result.metrics:
        bt = dz.BatchTime(m.start, m.end)
        for p in range(gen.partitions):
            for e in gen(p, m.batch, bt):
                if e[4] != "view":
                    continue
                [start] = windows_of(e[5], result.window, result.window)  # float-exact window membership
                if start + result.window <= last_watermark:
                    key = ((start, start + result.window), campaign_of[e[2]])
                    expected[key] = expected.get(key, 0) + 1
    return expected == result.counts


def default_window(seconds: float) -> float:
    """10 s, the benchmark's window, or a fifth of a shorter run, so that a short run still closes windows.

    A window's count is emitted in the batch that passes its end, so a run shorter than one window would
    report nothing.
    """
    return min(10.0, seconds / 5)


def main(rate: float = 20_000, seconds: float = 25.0, group_size: Any = "auto", window: float | None = None,
         interval: float = 0.1) -> YsbResult:
    window = default_window(seconds) if window is None else window
    with dz.Context(workers=2) as ctx:
        result = run_ysb(ctx, rate, seconds, group_size, window, interval=interval)
    windows = len(result.window_latency)
    head = (f"ysb: {rate:,.0f} events/s for {seconds:g} s, group size {group_size}, "
            f"{windows} window{'' if windows == 1 else 's'} of {window:g} s")
    check = f"counts {'correct' if result.correct else 'WRONG'}"
    if windows:
        p50, p99 = result.summary()
        print(f"{head}: window latency p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms; {check}")
    else:
        print(f"{head}: no window closed within the run, so there is no latency to report "
              f"(give a WINDOW shorter than the run, or a longer run); {check}")
    return result


if __name__ == "__main__":
    ap = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2].strip())
    ap.add_argument("rate", nargs="?", type=positive_float, default=20_000, help="events per second (default 20000)")
    ap.add_argument("seconds", nargs="?", type=positive_float, default=25.0, help="run length in s (default 25)")
    ap.add_argument("group_size", nargs="?", type=group_size, default="auto",
                    help="batches per group, a number or auto (default auto)")
    ap.add_argument("window", nargs="?", type=positive_float, default=None,
                    help="event-time window in s (default 10, or a fifth of a shorter run)")
    ap.add_argument("--interval", type=positive_float, default=0.1, help="batch interval in s (default 0.1)")
    args = ap.parse_args()
    result = main(args.rate, args.seconds, args.group_size, args.window, args.interval)
    raise SystemExit(0 if result.correct else 1)
