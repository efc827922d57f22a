"""The venue generator: deterministic, realistic shape, JSON round-trip, rescaling."""

from __future__ import annotations

import numpy as np
import pytest

from streams.engine.engine import RiskEngine
from streams.engine.models import ContractType, MarginMode, RiskState
from streams.engine.tiers import TierTable
from streams.sim.venue import Venue, VenueConfig, base_asset, generate_venue, position_notional


@pytest.fixture(scope="module")
def venue() -> Venue:
    return generate_venue(11, VenueConfig(n_accounts=2000))


def test_deterministic_by_seed(venue: Venue) -> None:
    assert generate_venue(11, VenueConfig(n_accounts=2000)) == venue
    assert generate_venue(12, VenueConfig(n_accounts=2000)) != venue


def test_json_round_trip(venue: Venue) -> None:
    assert Venue.from_json(venue.to_json()) == venue
    with pytest.raises(ValueError, match="unknown instrument"):
        data = venue.to_dict()
        data["accounts"][0]["positions"][0]["instrument"] = "NOPE"
        Venue.from_dict(data)


def test_realistic_book(venue: Venue) -> None:
    kinds = {i.contract_type for i in venue.instruments}
    assert kinds == {ContractType.LINEAR, ContractType.INVERSE}
    assert all(len(i.tiers) >= 5 for i in venue.instruments)  # Binance-like brackets
    assert all(b > 0 for b in venue.funds.values()) and set(venue.funds) == {"usdm", "coinm"}
    positions = [(a, p) for a in venue.accounts for p in a.positions]
    assert venue.accounts_with_positions() == 2000
    longs = sum(p.size > 0 for _, p in positions)
    assert 0.4 < longs / len(positions) < 0.7  # both sides: ADL counterparties exist
    iso = sum(p.margin_mode is MarginMode.ISOLATED for _, p in positions)
    assert 0.05 < iso / len(positions) < 0.2
    # leverage per position (notional / margin): mostly 2–20x, a tail to 50–100x
    lev = []
    for _, p in positions:
        inst = venue.instrument(p.instrument)
        n = position_notional(inst, p.size, p.entry_price)
        margin = p.isolated_margin if p.margin_mode is MarginMode.ISOLATED else None
        if margin:
            lev.append(n / margin)
    lev_a = np.array(lev)
    assert np.mean((lev_a >= 1.5) & (lev_a <= 21)) > 0.7
    assert np.any(lev_a > 40)
    # nobody exceeds the bracket's max leverage at its notional
    for _, p in positions:
        if p.margin_mode is MarginMode.ISOLATED:
            inst = venue.instrument(p.instrument)
            table = TierTable.of(inst)
            n = position_notional(inst, p.size, p.entry_price)
            assert p.isolated_margin * 1.0001 >= float(table.initial_margin(n)) / 1.05 * 0.99


def test_engine_loads_it_and_nobody_starts_liquidatable(venue: Venue) -> None:
    engine = RiskEngine()
    for event in venue.events(0.0):
        result = engine.apply(event)
        assert not hasattr(result, "reason"), result
    counts = engine.state_counts()
    assert counts[RiskState.LIQUIDATABLE] == counts[RiskState.UNDERWATER] == 0
    assert sum(counts.values()) == 2000


def test_rescaled_keeps_usd_figures(venue: Venue) -> None:
    moved = venue.rescaled({"BTCUSDT": 7_000.0, "BTCUSD_PERP": 7_000.0})
    assert moved.marks["BTCUSDT"] == 7_000.0 and moved.marks["ETHUSDT"] == venue.marks["ETHUSDT"]
    for name in venue.instrument_names:
        assert moved.notional_usd(name) == pytest.approx(venue.notional_usd(name), rel=1e-9)
    assert moved.funds == venue.funds


@pytest.mark.parametrize(
    ("name", "base"),
    [("BTCUSDT", "BTC"), ("BTCUSD_PERP", "BTC"), ("BINANCE:ETHUSDT", "ETH"), ("SOL-PERP", "SOL")],
)
def test_base_asset(name: str, base: str) -> None:
    assert base_asset(name) == base
