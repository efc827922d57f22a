"""``riskmon bench e2e``'s pure helpers: metrics parsing, histogram quantiles (no servers; the
smoke run against a real broker is tests/integration/test_bench_e2e.py)."""

from __future__ import annotations

import math
import sys

import pytest

from streams.bench.e2e import bucket_delta, histogram_quantile, parse_metrics

METRICS = """\
# HELP riskmon_events_total Input events accepted.
# TYPE riskmon_events_total counter
riskmon_events_total{topic="prices"} 80.0
riskmon_events_total{topic="positions"} 15.0
# HELP riskmon_events_rejected_total Input events rejected.
# TYPE riskmon_events_rejected_total counter
riskmon_events_rejected_total{reason="malformed",topic="prices"} 5.0
# HELP riskmon_event_lag_seconds Processing time minus event time.
# TYPE riskmon_event_lag_seconds histogram
riskmon_event_lag_seconds_bucket{le="0.01"} 10.0
riskmon_event_lag_seconds_bucket{le="0.1"} 90.0
riskmon_event_lag_seconds_bucket{le="1.0"} 95.0
riskmon_event_lag_seconds_bucket{le="+Inf"} 95.0
riskmon_event_lag_seconds_count 95.0
riskmon_event_lag_seconds_sum 3.0
"""


def test_parse_metrics_sums_topics_and_reads_buckets() -> None:
    events, rejected, buckets = parse_metrics(METRICS)
    assert (events, rejected) == (95.0, 5.0)
    assert buckets == {0.01: 10.0, 0.1: 90.0, 1.0: 95.0, math.inf: 95.0}


def test_histogram_quantile_interpolates_like_promql() -> None:
    _, _, buckets = parse_metrics(METRICS)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * (47.5 - 10) / 80)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * (94.05 - 90) / 5)
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.99, {0.1: 1.0, math.inf: 100.0}) == 0.1  # beyond the last bound
    before = {0.01: 10.0, 0.1: 50.0, math.inf: 50.0}
    assert bucket_delta(buckets, before) == {0.01: 0.0, 0.1: 40.0, 1.0: 95.0, math.inf: 45.0}


class ScriptedWorker:
    """/metrics answers of a worker: ``None`` (not up yet) or events counted so far."""

    def __init__(self, counts: list[float | None]) -> None:
        self.counts = counts
        self.polls = 0

    def alive(self) -> bool:
        return True

    async def metrics(self) -> tuple[float, float, dict[float, float]] | None:
        count = self.counts[min(self.polls, len(self.counts) - 1)]
        self.polls += 1
        return None if count is None else (count, 0.0, {})


async def test_wait_consumed_window_starts_at_the_last_poll_before_any_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.bench.e2e as e2e

    clock = [100.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(e2e.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(e2e.asyncio, "sleep", sleep)
    # not up, up with nothing counted twice (0.1 s polls), then a burst, then steady progress
    worker = ScriptedWorker([None, 0.0, 0.0, 600.0, 800.0, 1000.0])
    counted, seconds, seen, rejected = await e2e.wait_consumed(
        worker,  # type: ignore[arg-type]
        expected=1000,
        timeout_s=60.0,
        say=print,
        poll_s=1.0,
    )
    # the window: from the second 0-poll (t=100.2) to the poll that saw 1000 (t=102.3); the
    # burst counted before the first progress poll is inside it
    assert counted == 1000 and seen == 1000.0 and rejected == 0.0
    assert seconds == pytest.approx(2.1)

    # a given start (the bench's resume of a paused worker): from there, no fast polls
    clock[0] = 200.0
    worker = ScriptedWorker([500.0, 700.0, 900.0])
    counted, seconds, seen, _ = await e2e.wait_consumed(
        worker,  # type: ignore[arg-type]
        expected=900,
        timeout_s=60.0,
        say=print,
        poll_s=1.0,
        start=(199.5, 400.0),
    )
    assert (counted, seen) == (500, 900.0) and seconds == pytest.approx(2.5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_cpu_seconds_reads_the_process_cpu_time() -> None:
    import subprocess

    from streams.bench.e2e import WorkerProcess

    worker = WorkerProcess.__new__(WorkerProcess)  # only .proc is used
    worker.proc = subprocess.Popen([sys.executable, "-c", "sum(range(50_000_000))"])
    try:
        first = worker.cpu_seconds()
        worker.proc.wait(timeout=60)
    finally:
        worker.proc.kill()
    assert first is not None and first >= 0
    # gone: no /proc entry, no figure (the bench then reports none)
    assert worker.cpu_seconds() is None
