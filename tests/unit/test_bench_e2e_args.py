"""``riskmon bench e2e``'s pure helpers: metrics parsing, histogram quantiles (no servers; the
smoke run against a real broker is tests/integration/test_bench_e2e.py)."""

from __future__ import annotations

import math

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
