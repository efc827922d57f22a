"""`riskmon demo` headless: bounded run, /metrics scraped over HTTP, the contract is consistent."""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.adapters.metrics import STATES
from streams.cli import main as cli_main
from streams.driver import demo

CONTRACT = (
    "riskmon_insurance_fund_balance_usd",
    "riskmon_projected_bad_debt_usd",
    "riskmon_socialized_loss_usd",
    "riskmon_socialized_loss_haircut_ratio",
    "riskmon_fund_exhaustion_shock_ratio",
    "riskmon_accounts",
    "riskmon_liquidatable_notional_usd",
    "riskmon_mark_price_timestamp_seconds",
    "riskmon_events_total",
    "riskmon_events_rejected_total",
    "riskmon_event_lag_seconds_bucket",
    "riskmon_worker_ready",
    "riskmon_profitable_upnl_usd",
    "riskmon_adl_queue_notional_usd",
)


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(
        [
            "--headless",
            "--metrics-port",
            "0",
            "--accounts",
            "400",
            "--speed",
            "120",
            "--crash-at",
            "120",
            "--crash-minutes",
            "3",
            *extra,
        ]
    )


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name].append((dict(s.labels), float(s.value)))
    return samples


def _check_contract(samples: dict[str, list[tuple[dict[str, str], float]]]) -> None:
    for name in CONTRACT:
        assert samples.get(name), f"missing {name}"
    assert {lab["state"] for lab, _ in samples["riskmon_accounts"]} == set(STATES)
    funds = {lab["fund"]: v for lab, v in samples["riskmon_insurance_fund_balance_usd"]}
    assert set(funds) == {"usdm", "coinm"}
    bad = {
        (lab["fund"], lab["scenario"]): v for lab, v in samples["riskmon_projected_bad_debt_usd"]
    }
    social = {
        (lab["fund"], lab["scenario"]): v for lab, v in samples["riskmon_socialized_loss_usd"]
    }
    haircut = {
        (lab["fund"], lab["scenario"]): v
        for lab, v in samples["riskmon_socialized_loss_haircut_ratio"]
    }
    scenarios = {s for _, s in bad}
    assert {
        "current",
        "uniform_down_10",
        "uniform_down_20",
        "uniform_down_30",
        "uniform_up_10",
    } <= scenarios
    assert len(scenarios) <= 12  # bounded, never the 101-point grid
    for key, b in bad.items():
        assert b >= 0
        assert social[key] == pytest.approx(max(0.0, b - funds[key[0]]), abs=1e-6)
        assert 0.0 <= haircut[key] <= 1.0
    shocks = {
        (lab["fund"], lab["direction"]): v
        for lab, v in samples["riskmon_fund_exhaustion_shock_ratio"]
    }
    assert set(shocks) == {(f, d) for f in funds for d in ("down", "up")}
    assert all(v >= 0 or math.isinf(v) for v in shocks.values())
    instruments = {lab["instrument"] for lab, _ in samples["riskmon_mark_price_timestamp_seconds"]}
    assert instruments == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSD_PERP"}


@pytest.mark.slow
def test_demo_serves_the_metrics_contract() -> None:
    d = demo.Demo(_args("--duration", "5"))
    done = threading.Event()
    result: list[int] = []

    def target() -> None:
        result.append(d.run())
        done.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not d.view.metrics_url and time.time() < deadline:
        time.sleep(0.05)
    # wait for a few venue reports (after the load), then scrape over HTTP
    while d.driver.stats.reports < 3 and time.time() < deadline:
        time.sleep(0.05)
    samples = _scrape(d.view.metrics_url)
    _check_contract(samples)
    assert samples["riskmon_worker_ready"][0][1] == 1.0
    events = {lab["topic"]: v for lab, v in samples["riskmon_events_total"]}
    assert events["prices"] > 0 and events["positions"] >= d.venue.position_count()
    assert done.wait(30), "demo did not stop after --duration"
    thread.join(5)
    assert result == [0]
    # after the run, the last published snapshot describes the final book exactly
    snap = d.metrics.latest()
    assert snap is not None and snap.venue is not None
    with_positions = sum(1 for book in d.liquidator.positions.values() if book)
    assert sum(snap.accounts_by_state.values()) == with_positions
    for fund in snap.venue.funds:
        assert fund.balance_usd == pytest.approx(d.liquidator.funds[fund.fund])


@pytest.mark.slow
def test_demo_cli_headless(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        [
            "demo",
            "--headless",
            "--duration",
            "2",
            "--metrics-port",
            "0",
            "--accounts",
            "200",
            "--speed",
            "60",
        ]
    )
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert lines[0]["event"] == "demo_start"
    assert lines[-1]["event"] == "demo_end"
    progress = [x for x in lines if x["event"] == "demo_progress"]
    assert progress, "no progress lines"
    assert set(progress[-1]["accounts"]) == set(STATES)


def test_driver_counts_accepted_events_only_and_no_lag_without_event_time() -> None:
    from streams.adapters.metrics import RiskMetrics
    from streams.driver.inprocess import InProcessDriver
    from streams.engine.engine import RiskEngine
    from streams.engine.models import (
        BalanceUpdate,
        FundUpdate,
        Instrument,
        MarginTier,
        PriceTick,
    )
    from streams.engine.rejections import Rejection

    metrics = RiskMetrics()
    lags: list[float] = []

    def lag(ts: float) -> float:
        lags.append(ts)
        return 0.5

    driver = InProcessDriver(RiskEngine(), metrics=metrics, report_every_s=1e9, lag=lag)
    tiers = (MarginTier(floor_notional_usd=0, mmr=0.01, max_leverage=50),)
    driver.feed(Instrument(instrument="BTCUSDT", tiers=tiers, fund="main"))
    driver.feed(FundUpdate(fund="main", balance=100.0, ts_event=1.0))
    driver.feed(PriceTick(instrument="BTCUSDT", mark_price=100.0, ts_event=2.0))
    driver.feed(BalanceUpdate(account="a", wallet_balance=50.0, seq=2, ts_event=2.0))
    stale = driver.feed(BalanceUpdate(account="a", wallet_balance=60.0, seq=1, ts_event=3.0))
    assert driver.stats.rejected == 1, stale

    def events(topic: str) -> float | None:
        return metrics.sample("riskmon_events_total", {"topic": topic})

    # the rejected balance is in the rejected counter only (as the worker counts)
    assert events("balances") == 1
    assert isinstance(stale, Rejection)
    reason = str(stale.reason.value)
    assert (
        metrics.sample("riskmon_events_rejected_total", {"topic": "balances", "reason": reason})
        == 1
    )
    assert events("instruments") == 1 and events("prices") == 1
    # the Instrument (no ts_event) has no lag: 4 observations, none at event time 0
    assert lags == [1.0, 2.0, 2.0, 3.0]
    assert metrics.sample("riskmon_event_lag_seconds_count") == 4
