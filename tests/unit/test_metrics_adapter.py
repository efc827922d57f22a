"""RiskMetrics: the metrics contract, computed at scrape time from an immutable snapshot."""

from __future__ import annotations

import math
import urllib.request

import pytest

from streams.adapters.metrics import (
    SELECTED_GRID_SHOCKS,
    STATES,
    FundFigures,
    MetricsSnapshot,
    RiskMetrics,
    ScenarioFigures,
    VenueSnapshot,
    fund_figures_from_report,
    grid_scenario_name,
    scenario_figures,
    serve,
    snapshot_from_engine,
)
from streams.engine.engine import RiskEngine
from streams.engine.models import (
    BalanceUpdate,
    FundUpdate,
    Instrument,
    MarginTier,
    PositionUpdate,
    PriceTick,
)


def _venue_snapshot() -> VenueSnapshot:
    fig = FundFigures(
        "main",
        1_000.0,
        250.0,
        0.18,
        math.inf,
        {
            "current": scenario_figures(400.0, 1_000.0, 5_000.0, 0.0),
            "uniform_down_10": scenario_figures(3_000.0, 1_000.0, 4_000.0),
        },
    )
    return VenueSnapshot((fig,), ts_event=1_700_000_000.0)


def test_per_worker_instruments_exist_before_any_event() -> None:
    m = RiskMetrics()
    assert m.sample("riskmon_worker_ready") == 0
    for topic in ("prices", "positions", "balances", "insurance_fund", "instruments"):
        assert m.sample("riskmon_events_total", {"topic": topic}) == 0
    m.event("prices", 3)
    m.rejected("positions", "stale_sequence")
    m.observe_lag(0.02)
    m.set_ready()
    assert m.sample("riskmon_events_total", {"topic": "prices"}) == 3
    assert (
        m.sample(
            "riskmon_events_rejected_total", {"topic": "positions", "reason": "stale_sequence"}
        )
        == 1
    )
    assert m.sample("riskmon_event_lag_seconds_count") == 1
    assert m.sample("riskmon_worker_ready") == 1


def test_reject_reasons_can_be_pre_initialised() -> None:
    m = RiskMetrics(topics=("prices",), reasons=("duplicate", "stale_sequence"))
    assert (
        m.sample("riskmon_events_rejected_total", {"topic": "prices", "reason": "duplicate"}) == 0
    )


def test_all_five_states_always_exported() -> None:
    m = RiskMetrics()
    for state in STATES:  # no snapshot yet: zeros
        assert m.sample("riskmon_accounts", {"state": state}) == 0
    m.publish(MetricsSnapshot({"healthy": 7, "underwater": 1}, {"BTCUSDT": 12.5}))
    assert m.sample("riskmon_accounts", {"state": "healthy"}) == 7
    assert m.sample("riskmon_accounts", {"state": "at_risk"}) == 0
    assert m.sample("riskmon_mark_price_timestamp_seconds", {"instrument": "BTCUSDT"}) == 12.5


def test_no_venue_snapshot_means_no_venue_gauges() -> None:
    m = RiskMetrics()
    m.publish(MetricsSnapshot({"healthy": 1}))
    assert m.sample("riskmon_insurance_fund_balance_usd", {"fund": "main"}) is None
    m.publish(MetricsSnapshot({"healthy": 1}, venue=_venue_snapshot()))
    assert m.sample("riskmon_insurance_fund_balance_usd", {"fund": "main"}) == 1_000
    assert (
        m.sample("riskmon_fund_exhaustion_shock_ratio", {"fund": "main", "direction": "up"})
        == math.inf
    )
    # socialized = max(0, bad debt − fund); haircut = socialized / profitable uPnL
    assert m.sample("riskmon_socialized_loss_usd", {"fund": "main", "scenario": "current"}) == 0
    assert (
        m.sample("riskmon_socialized_loss_usd", {"fund": "main", "scenario": "uniform_down_10"})
        == 2_000
    )
    assert (
        m.sample(
            "riskmon_socialized_loss_haircut_ratio", {"fund": "main", "scenario": "uniform_down_10"}
        )
        == 0.5
    )
    # the ADL queue notional is exported only where it was computed
    assert m.sample("riskmon_adl_queue_notional_usd", {"fund": "main", "scenario": "current"}) == 0
    assert (
        m.sample("riskmon_adl_queue_notional_usd", {"fund": "main", "scenario": "uniform_down_10"})
        is None
    )


def test_external_snapshot_callable_is_read_at_scrape_time() -> None:
    current = {"snap": MetricsSnapshot({"watch": 2})}
    m = RiskMetrics(lambda: current["snap"])
    assert m.sample("riskmon_accounts", {"state": "watch"}) == 2
    current["snap"] = MetricsSnapshot({"watch": 5})
    assert m.sample("riskmon_accounts", {"state": "watch"}) == 5


def test_scenario_helpers() -> None:
    assert grid_scenario_name(-0.1) == "uniform_down_10"
    assert grid_scenario_name(0.3) == "uniform_up_30"
    assert scenario_figures(100, 40, 0) == ScenarioFigures(100, 60, 1.0, 0.0, None)
    assert scenario_figures(100, 400, 50).haircut_ratio == 0.0


def _engine() -> RiskEngine:
    engine = RiskEngine()
    tiers = (MarginTier(floor_notional_usd=0, mmr=0.01, max_leverage=50),)
    engine.apply(Instrument(instrument="BTCUSDT", tiers=tiers, fund="main"))
    engine.apply(FundUpdate(fund="main", balance=100.0, ts_event=1.0))
    engine.apply(PriceTick(instrument="BTCUSDT", mark_price=100.0, ts_event=2.0))
    engine.apply(BalanceUpdate(account="a", wallet_balance=50.0, seq=1, ts_event=2.0))
    engine.apply(
        PositionUpdate(
            account="a", instrument="BTCUSDT", size=20.0, entry_price=100.0, seq=1, ts_event=2.0
        )
    )
    engine.apply(BalanceUpdate(account="b", wallet_balance=5_000.0, seq=1, ts_event=2.0))
    engine.apply(
        PositionUpdate(
            account="b", instrument="BTCUSDT", size=-20.0, entry_price=100.0, seq=1, ts_event=2.0
        )
    )
    return engine


def test_snapshot_from_a_real_engine_report() -> None:
    engine = _engine()
    reports = engine.venue()
    snap = snapshot_from_engine(engine, reports, ts_event=2.0)
    assert sum(snap.accounts_by_state.values()) == 2
    assert snap.mark_timestamps == {"BTCUSDT": 2.0}
    assert snap.venue is not None
    (fund,) = snap.venue.funds
    report = reports["main"]
    assert fund.balance_usd == report.balance_usd == 100.0
    expected = {
        "current",
        *engine.config.scenarios,
        *(grid_scenario_name(s) for s in SELECTED_GRID_SHOCKS),
    }
    assert set(fund.scenarios) == expected
    i = report.grid_shocks.index(-0.2)
    assert fund.scenarios["uniform_down_20"].projected_bad_debt_usd == report.grid[i].bad_debt_usd
    assert fund.exhaustion_shock_down == report.exhaustion_shock_down
    assert fund_figures_from_report(report).scenarios["current"].projected_bad_debt_usd == (
        report.bad_debt_usd
    )


def test_serve_over_http() -> None:
    m = RiskMetrics()
    m.publish(MetricsSnapshot({"healthy": 3}, {"BTCUSDT": 1.0}, _venue_snapshot()))
    server, port = serve(m.registry, port=0, addr="127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        server.shutdown()
    body = text.decode()
    assert 'riskmon_accounts{state="healthy"} 3.0' in body
    assert 'riskmon_projected_bad_debt_usd{fund="main",scenario="current"} 400.0' in body
    assert "riskmon_event_lag_seconds_bucket" in body


def test_socialized_loss_is_clamped_when_the_fund_is_negative() -> None:
    # a negative fund pays nothing, but socialized loss never exceeds the bad debt
    fig = scenario_figures(100.0, -50.0, 1_000.0)
    assert fig.socialized_loss_usd == 100.0
    assert fig.haircut_ratio == pytest.approx(0.1)
    assert scenario_figures(0.0, -50.0, 1_000.0).socialized_loss_usd == 0.0
    assert scenario_figures(100.0, 30.0, 1_000.0).socialized_loss_usd == 70.0


def test_nan_inputs_stay_unknown_in_scenario_figures() -> None:
    fig = scenario_figures(math.nan, 10.0, 100.0)
    assert math.isnan(fig.projected_bad_debt_usd) and math.isnan(fig.socialized_loss_usd)
    assert math.isnan(scenario_figures(100.0, math.nan, 100.0).socialized_loss_usd)
    assert math.isnan(scenario_figures(100.0, 10.0, math.nan).haircut_ratio)


class _Report:
    """Duck-typed engine FundReport with chosen (possibly non-finite) figures."""

    def __init__(self, **kw: object) -> None:
        self.fund = "main"
        self.balance_usd = 1_000.0
        self.liquidatable_notional_usd = 0.0
        self.bad_debt_usd = 0.0
        self.socialized_loss_usd = 0.0
        self.haircut_ratio = 0.0
        self.profitable_upnl_usd = 0.0
        self.exhaustion_shock_down = 0.2
        self.exhaustion_shock_up = None
        self.adl = None
        self.scenarios: dict[str, object] = {}
        self.__dict__.update(kw)


def _publish(report: _Report) -> RiskMetrics:
    m = RiskMetrics()
    fig = fund_figures_from_report(report, ())
    m.publish(MetricsSnapshot({}, venue=VenueSnapshot((fig,))))
    return m


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_usd_figures_are_skipped_not_exported(bad: float) -> None:
    m = _publish(_Report(bad_debt_usd=bad, balance_usd=bad, socialized_loss_usd=5.0))
    current = {"fund": "main", "scenario": "current"}
    # NaN used to be exported as 0 (hiding risk) and ±inf passed through: now absent
    assert m.sample("riskmon_projected_bad_debt_usd", current) is None
    assert m.sample("riskmon_insurance_fund_balance_usd", {"fund": "main"}) is None
    # the finite figures of the same fund are still exported
    assert m.sample("riskmon_socialized_loss_usd", current) == 5.0
    assert m.sample("riskmon_liquidatable_notional_usd", {"fund": "main"}) == 0.0


def test_no_nan_in_the_exposition() -> None:
    m = _publish(_Report(bad_debt_usd=math.nan, haircut_ratio=math.nan))
    m.publish(
        MetricsSnapshot(
            {},
            venue=VenueSnapshot(
                (
                    FundFigures(
                        "x",
                        math.nan,
                        1.0,
                        math.nan,
                        -math.inf,
                        {
                            "current": ScenarioFigures(
                                math.nan, math.inf, math.nan, -math.inf, math.nan
                            )
                        },
                    ),
                )
            ),
        )
    )
    from prometheus_client import generate_latest

    body = generate_latest(m.registry).decode()
    values = [line.rsplit(" ", 1)[1] for line in body.splitlines() if not line.startswith("#")]
    assert "NaN" not in values
    # -Inf shock is unknown too; this snapshot has no +Inf shock
    assert "+Inf" not in values and "-Inf" not in values
    assert 'riskmon_liquidatable_notional_usd{fund="x"} 1.0' in body


def test_only_the_exhaustion_shock_exports_plus_inf() -> None:
    m = _publish(_Report(exhaustion_shock_down=math.inf, exhaustion_shock_up=None))
    for direction in ("down", "up"):  # None = no shock within the grid exhausts the fund
        labels = {"fund": "main", "direction": direction}
        assert m.sample("riskmon_fund_exhaustion_shock_ratio", labels) == math.inf
    m = _publish(_Report(exhaustion_shock_down=math.nan, exhaustion_shock_up=-math.inf))
    for direction in ("down", "up"):
        labels = {"fund": "main", "direction": direction}
        assert m.sample("riskmon_fund_exhaustion_shock_ratio", labels) is None
    m = _publish(_Report(exhaustion_shock_down=0.0))
    labels = {"fund": "main", "direction": "down"}
    assert m.sample("riskmon_fund_exhaustion_shock_ratio", labels) == 0.0
