"""`riskmon bench engine` at a tiny size: the JSON has its keys and the engine agrees with naive.

Timing is not checked (the machine may be shared); see BENCHMARKS.md for figures.
"""

from __future__ import annotations

import json

import pytest

from streams.cli import main

KEYS = {
    "ticks_per_s",
    "ticks_per_s_unconflated",
    "ticks_per_s_conflated",
    "conflation_window",
    "position_updates_per_s",
    "position_updates_per_s_single",
    "idiosyncratic_s",
    "stress_grid_s",
    "rss_bytes",
    "speedup_vs_naive",
    "agrees",
    "max_rel_diff",
}


@pytest.mark.slow
def test_bench_engine_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "engine",
            "--json",
            "--accounts",
            "300",
            "--positions",
            "1500",
            "--instruments",
            "20",
            "--ticks",
            "300",
            "--conflated-ticks",
            "3000",
            "--batch",
            "500",
            "--window",
            "50",
            "--updates",
            "1000",
            "--update-batch",
            "100",
            "--time-budget",
            "2",
        ]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert set(out) >= KEYS
    assert out["agrees"] is True
    assert out["max_rel_diff"] < 1e-9
    assert out["positions"] == 1500
