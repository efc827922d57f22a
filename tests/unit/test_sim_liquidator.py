"""The venue's liquidation engine on hand-checked books: next-price fills with √-impact, the
fund pays bad debt, ADL socializes the rest, and the engine sees it all as venue events."""

from __future__ import annotations

import math

import pytest

from streams.driver.inprocess import InProcessDriver
from streams.engine.engine import AccountRisk, RiskEngine
from streams.engine.models import Instrument, MarginMode, MarginTier, PriceTick, RiskState
from streams.sim.liquidator import VenueLiquidator
from streams.sim.venue import SimAccount, SimPosition, Venue

BTC = Instrument(
    instrument="BTCUSDT",
    tiers=(MarginTier(floor_notional_usd=0, mmr=0.01, max_leverage=50),),
    liquidation_fee_ratio=0.005,
    depth_usd=1_000_000,
    impact_coef=0.1,
    fund="main",
)


def _account(engine: RiskEngine, name: str) -> AccountRisk:
    risk = engine.account(name)
    assert risk is not None
    return risk


def _run(venue: Venue, marks: list[float]) -> tuple[RiskEngine, VenueLiquidator]:
    engine = RiskEngine()
    liq = VenueLiquidator(venue)
    driver = InProcessDriver(engine, report_every_s=1e9, liquidator=liq)
    driver.load(venue.events(0.0))
    for i, mark in enumerate(marks, start=1):
        driver.feed(PriceTick(instrument="BTCUSDT", mark_price=mark, ts_event=float(i)))
    return engine, liq


def test_bankrupt_long_fund_then_adl() -> None:
    # Arrange: a 20x long (1 BTC @ 10,000 on $500) and two profitable-after-the-drop shorts;
    # the fund holds $100.
    venue = Venue(
        instruments=(BTC,),
        marks={"BTCUSDT": 10_000.0},
        funds={"main": 100.0},
        accounts=(
            SimAccount("long", 500.0, (SimPosition("BTCUSDT", 1.0, 10_000.0),)),
            SimAccount("short", 5_000.0, (SimPosition("BTCUSDT", -2.0, 10_000.0),)),
            SimAccount("short2", 5_000.0, (SimPosition("BTCUSDT", -1.0, 11_000.0),)),
        ),
    )
    # Act: 9,500 makes the long liquidatable (equity 0 ≤ MM 95); it fills at the NEXT mark 9,000
    engine, liq = _run(venue, [10_000.0, 9_500.0, 9_000.0])
    # Assert: fill = 9,000 × (1 − 0.1 × √(9,000 / 1,000,000)) = 8,914.62
    (fill,) = liq.fills
    impact = 0.1 * math.sqrt(9_000 / 1_000_000)
    assert fill.trigger_mark == 9_500 and fill.mark == 9_000
    assert fill.fill_price == pytest.approx(9_000 * (1 - impact))
    pnl = fill.fill_price - 10_000  # −1,085.38
    (s,) = liq.settlements
    assert s.bad_debt_usd == pytest.approx(-(500 + pnl))  # 585.38
    assert s.fund_paid_usd == pytest.approx(100.0) and s.fee_paid_usd == 0
    assert s.socialized_usd == pytest.approx(s.bad_debt_usd - 100.0)
    assert liq.funds["main"] == pytest.approx(0.0)
    assert liq.stats.first_exhausted_ts["main"] == 3.0
    # ADL: "short" ranks first ((10,000 / 9,000) × 18,000 / 7,000 vs 1.22 × 9,000 / 7,000) and
    # gives up exactly the socialized loss out of its $2,000 profit
    (r,) = liq.adl
    assert r.account == "short" and r.loss_usd == pytest.approx(s.socialized_usd)
    remaining = -2.0 * (1 - s.socialized_usd / 2_000.0)
    assert liq.positions["short"]["BTCUSDT"].size == pytest.approx(remaining)
    # the engine saw the venue's events
    long = _account(engine, "long")
    assert long.positions == 0
    assert long.state is RiskState.HEALTHY
    assert engine.fund_balances["main"] == pytest.approx(0.0)
    short = _account(engine, "short")
    assert short.notional_usd == pytest.approx(abs(remaining) * 9_000)


def test_isolated_position_loses_only_its_margin() -> None:
    # 1 BTC @ 10,000 isolated on $500; LP: 500 + (P − 10,000) = 0.01 P  →  P = 9,595.96
    venue = Venue(
        instruments=(BTC,),
        marks={"BTCUSDT": 10_000.0},
        funds={"main": 1_000.0},
        accounts=(
            SimAccount(
                "iso", 1_000.0, (SimPosition("BTCUSDT", 1.0, 10_000.0, MarginMode.ISOLATED, 500.0),)
            ),
            SimAccount("short", 5_000.0, (SimPosition("BTCUSDT", -1.0, 10_000.0),)),
        ),
    )
    engine, liq = _run(venue, [10_000.0, 9_700.0, 9_500.0, 9_550.0])
    (fill,) = liq.fills
    assert (fill.trigger_mark, fill.mark, fill.margin_mode) == (9_500.0, 9_550.0, "isolated")
    (s,) = liq.settlements
    expected = -(500 + fill.fill_price - 10_000)
    assert s.pool == "BTCUSDT" and s.bad_debt_usd == pytest.approx(expected)
    assert liq.funds["main"] == pytest.approx(1_000.0 - expected)
    assert liq.wallet["iso"] == 1_000.0  # the cross wallet is untouched
    assert not liq.adl and _account(engine, "iso").positions == 0


def test_solvent_liquidation_pays_the_fee_to_the_fund() -> None:
    # 10x long: liquidated around MM, fills one tick later with equity left for the 0.5 % fee
    venue = Venue(
        instruments=(BTC,),
        marks={"BTCUSDT": 10_000.0},
        funds={"main": 0.0},
        accounts=(SimAccount("long", 1_000.0, (SimPosition("BTCUSDT", 1.0, 10_000.0),)),),
    )
    _, liq = _run(venue, [10_000.0, 9_090.0, 9_100.0])
    (s,) = liq.settlements
    (fill,) = liq.fills
    equity = 1_000.0 + fill.pnl_usd
    assert s.bad_debt_usd == 0 and s.fee_paid_usd == pytest.approx(min(fill.fee_due_usd, equity))
    assert liq.funds["main"] == pytest.approx(s.fee_paid_usd)
    assert liq.wallet["long"] == pytest.approx(equity - s.fee_paid_usd)
