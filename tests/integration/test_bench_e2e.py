"""``riskmon bench e2e``: a tiny-size smoke run against the real broker and a real worker (the
pure helpers are tested in tests/unit/test_bench_e2e_args.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.servers import REPO_ROOT


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_e2e_smoke(kafka_bootstrap: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.bench.e2e",
            "--json",
            "--bootstrap",
            kafka_bootstrap,
            "--accounts",
            "300",
            "--events",
            "3000",
            "--partitions",
            "2",
            "--poll-interval",
            "0.25",
            "--latency-rate",
            "300",
            "--latency-duration",
            "2",
            "--timeout",
            "300",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: one JSON object and nothing else on stdout
    result = json.loads(lines[0])
    for key in (
        "events_per_s",
        "baseline_events_per_s",
        "ratio",
        "latency_p50_s",
        "latency_p99_s",
        "bootstrap_events_per_s",
    ):
        assert isinstance(result[key], float) and result[key] > 0, (key, result)
    assert result["accounts"] == 300
    # the book and the mixed stream are measured apart: the restarted worker counted exactly
    # the mixed stream (its offsets were committed at the graceful stop: nothing replayed)
    assert result["bootstrap_events"] > 0 and result["preloaded_messages"] == 3000
    assert result["worker_events"] > 0
    assert not any("counted" in note for note in result["notes"]), result["notes"]
    assert result["latency_p50_s"] <= result["latency_p99_s"]
    assert set(result["targets"]) == {"events_per_s", "ratio", "latency_p99_s"}
