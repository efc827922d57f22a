"""RiskEngine facade: hand-computed examples (numbers in the comments), rejections, dispatch."""

from __future__ import annotations

import math

import pytest

from streams.engine.config import EngineConfig, Scenario
from streams.engine.engine import AccountRisk, Applied, RiskEngine
from streams.engine.models import RiskState
from streams.engine.naive import NaiveBook
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason
from tests.builders import (
    Event,
    balance,
    fund_update,
    instrument,
    inverse_instrument,
    position,
    tick,
    tiers,
)

# One flat tier, 0.5 % MMR, 100x: MM = 0.5 % of notional, IM = 1 %.
FLAT = tiers((0, 0.005, 100))


def engine_with(*events: object, config: EngineConfig | None = None) -> RiskEngine:
    engine = RiskEngine(config)
    for ev in events:
        result = engine.apply(ev)  # type: ignore[arg-type]
        assert isinstance(result, Applied), result
    return engine


def acct(engine: RiskEngine, name: str = "alice") -> AccountRisk:
    risk = engine.account(name)
    assert risk is not None
    return risk


def test_one_long_walks_through_every_state() -> None:
    # Arrange: wallet 1,000; long 1 BTC @ 20,000; no fee/impact needed here
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
    )
    # equity 1,000, MM 100 → utilization 0.1 → healthy; IM 200 → available 800
    a = acct(engine)
    assert (a.equity_usd, a.maintenance_margin_usd, a.initial_margin_usd) == (1_000, 100, 200)
    assert a.utilization == pytest.approx(0.1) and a.available_margin_usd == 800
    assert a.state is RiskState.HEALTHY

    def move(mark: float) -> list[tuple[RiskState, RiskState]]:
        return [(t.previous, t.current) for t in engine.apply_price(tick("BTC", mark, ts=2.0))]

    # 19,100: equity 100, MM 95.5 → 0.955 → at_risk (skips watch in one tick)
    assert move(19_100.0) == [(RiskState.HEALTHY, RiskState.AT_RISK)]
    # 19,050: equity 50, MM 95.25 → 1.905 → liquidatable
    assert move(19_050.0) == [(RiskState.AT_RISK, RiskState.LIQUIDATABLE)]
    # 18,900: equity −100 → underwater
    assert move(18_900.0) == [(RiskState.LIQUIDATABLE, RiskState.UNDERWATER)]
    assert acct(engine).utilization == math.inf
    # 19,800: equity 800, MM 99 → 0.12375 → healthy (below every threshold − hysteresis)
    assert move(19_800.0) == [(RiskState.UNDERWATER, RiskState.HEALTHY)]
    assert engine.state_counts()[RiskState.HEALTHY] == 1


def test_hysteresis_keeps_a_state_until_utilization_falls_below_threshold_minus_margin() -> None:
    # wallet 1,000, 1 BTC long @ 20,000 (MM = 0.5 % of notional). utilization u at mark m:
    # u = 0.005 m / (1,000 + m − 20,000)
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
    )
    engine.apply_price(tick("BTC", 19_115.0))  # u = 95.575 / 115 = 0.831 → at_risk
    assert acct(engine).state is RiskState.AT_RISK
    engine.apply_price(tick("BTC", 19_125.0))  # u = 95.625 / 125 = 0.765 (< 0.8, ≥ 0.75) → stays
    assert acct(engine).state is RiskState.AT_RISK
    engine.apply_price(tick("BTC", 19_135.0))  # u = 95.675 / 135 = 0.709 (< 0.75) → watch
    assert acct(engine).state is RiskState.WATCH


def test_bad_debt_fund_and_socialized_loss_by_hand() -> None:
    # alice: wallet 1,000, long 1 @ 20,000. bob: wallet 10,000, short 1 @ 20,000.
    # fee 0.5 %, no impact. Mark 18,900:
    #   alice equity = 1,000 − 1,100 = −100 (underwater); cost = 0.5 % × 18,900 = 94.5
    #   bad debt = cost − equity = 94.5 + 100 = 194.5
    #   fund 100 → socialized loss 94.5; bob's uPnL = +1,100 → minimal haircut 94.5 / 1,100
    #   ADL queue: bob's short closed in full, surrendering 1,100 → overshoot 1,005.5
    engine = engine_with(
        instrument("BTC", tiers=FLAT, impact_coef=0.0, liquidation_fee_ratio=0.005),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
        balance("bob", 10_000.0),
        position("bob", "BTC", -1.0, 20_000.0),
        fund_update("main", 100.0),
        tick("BTC", 18_900.0, ts=2.0),
    )
    r = engine.venue()["main"]
    assert r.bad_debt_usd == pytest.approx(194.5)
    assert r.coverage_ratio == pytest.approx(100 / 194.5)
    assert r.socialized_loss_usd == pytest.approx(94.5)
    assert r.profitable_upnl_usd == pytest.approx(1_100.0)
    assert r.haircut_ratio == pytest.approx(94.5 / 1_100)
    assert r.liquidatable_notional_usd == pytest.approx(18_900.0)
    assert [(f.account, f.size_closed) for f in r.adl.fills] == [("bob", -1.0)]
    assert r.adl.taken_usd == pytest.approx(1_100.0)
    assert r.adl.overshoot_usd == pytest.approx(1_005.5)
    assert r.exhaustion_shock_down == 0.0  # exhausted now
    assert engine.liquidatable_notional() == {"main": pytest.approx(18_900.0)}


def test_exhaustion_shock_is_interpolated_not_quantized() -> None:
    # wallet 1,000, long 1 @ 20,000, mark 20,000, fee 1 %, no impact, fund 0.
    # Liquidatable when MM ≥ equity: 0.005·20,000(1+s) ≥ 1,000 + 20,000 s → s ≤ −900/19,900
    # (−4.523 %); bad debt there = cost − equity = 0.01·20,000(1+s) − 1,000 − 20,000 s > 0 →
    # s < −800/19,800 (−4.04 %): so bad debt jumps from 0 to > 0 at −4.523 %.
    engine = engine_with(
        instrument("BTC", tiers=FLAT, impact_coef=0.0, liquidation_fee_ratio=0.01),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
        fund_update("main", 0.0),
    )
    r = engine.venue()["main"]
    assert r.exhaustion_shock_down == pytest.approx(900 / 19_900, abs=1e-3)
    assert r.exhaustion_shock_down != pytest.approx(0.05, abs=1e-3)  # not the 1 % grid point
    assert r.exhaustion_shock_up == math.inf
    # the reported 1 % grid: bad debt 0 at −4 %, positive at −5 %
    grid = dict(zip(r.grid_shocks, r.grid, strict=True))
    assert grid[-0.04].bad_debt_usd == 0.0
    # at −5 %: equity = 1,000 − 1,000 = 0, cost = 190 → bad debt 190
    assert grid[-0.05].bad_debt_usd == pytest.approx(190.0)


def test_inverse_pnl_in_usd_at_mark() -> None:
    # 100 contracts × $100 face (notional $10,000), entry 1,000 → mark 1,250:
    # coin PnL = 10,000 × (1/1,000 − 1/1,250) = 2 coin = $2,500 at mark (= 10,000 × (1.25 − 1))
    engine = engine_with(
        inverse_instrument("INV", contract_size=100.0, tiers=FLAT),
        tick("INV", 1_000.0),
        balance("alice", 500.0),
        position("alice", "INV", 100.0, 1_000.0),
        tick("INV", 1_250.0, ts=2.0),
    )
    a = acct(engine)
    assert a.upnl_usd == pytest.approx(2_500.0)
    assert a.notional_usd == pytest.approx(10_000.0)  # USD face value does not move
    assert a.maintenance_margin_usd == pytest.approx(50.0)


def test_isolated_position_is_its_own_pool() -> None:
    # alice: wallet 5,000 (cross, no cross position) + isolated long 1 @ 20,000 with 100 margin.
    # Mark 19,000: the isolated pool has equity 100 − 1,000 = −900 → bad debt = cost + 900;
    # the cross account itself is untouched (healthy, equity 5,000).
    engine = engine_with(
        instrument("BTC", tiers=FLAT, impact_coef=0.0, liquidation_fee_ratio=0.0),
        tick("BTC", 20_000.0),
        balance("alice", 5_000.0),
        position("alice", "BTC", 1.0, 20_000.0, isolated_margin=100.0),
        tick("BTC", 19_000.0, ts=2.0),
    )
    a = acct(engine)
    # the cross figures are untouched (equity 5,000, no cross MM) ...
    assert a.equity_usd == 5_000.0 and a.cross_utilization_ratio == 0.0
    assert a.isolated_positions == 1
    # ... but the account's state is its worst pool's: the isolated pool is underwater
    assert a.state is RiskState.UNDERWATER and a.worst_pool == "BTC"
    assert a.utilization == math.inf
    assert a.liquidation_distance_down == 0.0  # the isolated pool is already liquidatable
    assert engine.venue()["main"].bad_debt_usd == pytest.approx(900.0)


@pytest.mark.parametrize("with_isolated", [True, False])
def test_underwater_cross_pool_is_at_distance_zero(with_isolated: bool) -> None:
    # dave: cross wallet −500 (no cross position: the cross pool is underwater) and maybe a
    # healthy isolated long 1 BTC @ 20,000 with 2,000 margin (MM 100 → 0.05)
    events: list[object] = [
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("dave", -500.0),
    ]
    if with_isolated:
        events.append(position("dave", "BTC", 1.0, 20_000.0, isolated_margin=2_000.0))
    engine = engine_with(*events)
    d = acct(engine, "dave")
    assert d.state is RiskState.UNDERWATER and d.worst_pool == "cross"
    assert d.deficit_usd == 500.0
    distances = (
        d.liquidation_distance_down,
        d.liquidation_distance_up,
        d.bankruptcy_distance_down,
        d.bankruptcy_distance_up,
    )
    assert distances == (0.0, 0.0, 0.0, 0.0)
    assert d.distance_sigmas == 0.0 and d.liquidation_probability == 1.0
    # the naive oracle (bisection over every pool, the cross pool included) agrees
    naive = NaiveBook()
    naive.upsert_instrument(instrument("BTC", tiers=FLAT))
    naive.apply_price("BTC", 20_000.0)
    naive.apply_balance("dave", -500.0, 1)
    if with_isolated:
        naive.apply_position("dave", "BTC", 1.0, 20_000.0, True, 2_000.0, 1)
    assert naive.shock_distances("dave") == distances
    # a wallet of exactly 0 is not in debt: only the isolated pool can get liquidated
    naive.apply_balance("dave", 0.0, 2)
    engine.apply_balance(balance("dave", 0.0, seq=2))
    d = acct(engine, "dave")
    assert d.state is RiskState.HEALTHY and d.liquidation_distance_up == math.inf
    # isolated pool at mark 20,000 (1 − s): equity 2,000 − 20,000 s = MM 100 (1 − s)
    want_down = 1_900.0 / 19_900.0 if with_isolated else math.inf
    assert d.liquidation_distance_down == pytest.approx(want_down)
    assert naive.shock_distances("dave")[0] == pytest.approx(d.liquidation_distance_down)


def test_isolated_only_liquidatable_account_is_liquidatable() -> None:
    # bob: wallet 10,000 (cross, nothing in it), isolated long 1 BTC @ 20,000 with 1,000 margin;
    # MM = 0.5 % of notional. Isolated pool at mark m: equity 1,000 + m − 20,000, MM 0.005 m.
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("bob", 10_000.0),
        position("bob", "BTC", 1.0, 20_000.0, isolated_margin=1_000.0),
    )
    b = acct(engine, "bob")
    # equity 1,000, MM 100 → 0.1 → healthy
    assert b.state is RiskState.HEALTHY and b.utilization == pytest.approx(0.1)

    def move(mark: float, ts: float) -> list[tuple[RiskState, RiskState, float]]:
        return [
            (t.previous, t.current, t.utilization)
            for t in engine.apply_price(tick("BTC", mark, ts=ts))
        ]

    # 19,050: equity 50, MM 95.25 → 1.905 → liquidatable (transition emitted by the tick)
    [(prev, cur, util)] = move(19_050.0, 2.0)
    assert (prev, cur) == (RiskState.HEALTHY, RiskState.LIQUIDATABLE)
    assert util == pytest.approx(95.25 / 50)
    b = acct(engine, "bob")
    assert b.state is RiskState.LIQUIDATABLE and b.worst_pool == "BTC"
    assert b.utilization == pytest.approx(1.905) and b.cross_utilization_ratio == 0.0
    assert b.equity_usd == 10_000.0  # cross figures unchanged
    assert engine.state_counts()[RiskState.LIQUIDATABLE] == 1
    assert [r.account for r in engine.top_at_risk(1)] == ["bob"]
    # 19,115: equity 115, MM 95.575 → 0.831 → at_risk (hysteresis of the pool: 0.831 ≥ 0.95)
    assert [(p, c) for p, c, _u in move(19_115.0, 3.0)] == [
        (RiskState.LIQUIDATABLE, RiskState.AT_RISK)
    ]
    # 19,125: 0.765 (< 0.8, ≥ 0.75) → stays at_risk; 19,135: 0.709 → watch
    assert move(19_125.0, 4.0) == []
    assert [(p, c) for p, c, _u in move(19_135.0, 5.0)] == [(RiskState.AT_RISK, RiskState.WATCH)]
    # closing the isolated position leaves the (healthy) cross pool only
    closed = engine.apply_position(position("bob", "BTC", 0.0, 20_000.0, seq=2))
    assert [(t.previous, t.current) for t in closed] == [(RiskState.WATCH, RiskState.HEALTHY)]
    assert acct(engine, "bob").worst_pool == "cross"


def test_account_state_is_the_worst_of_its_pools() -> None:
    # carol: wallet 1,000, cross long 1 BTC @ 20,000 (MM 100 → 0.1, healthy) and an isolated
    # short 10 ETH @ 1,000 with 100 margin (MM 0.5 % × 10,000 = 50 → 0.5, watch).
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        instrument("ETH", tiers=FLAT),
        tick("BTC", 20_000.0),
        tick("ETH", 1_000.0),
        balance("carol", 1_000.0),
        position("carol", "BTC", 1.0, 20_000.0),
        position("carol", "ETH", -10.0, 1_000.0, isolated_margin=100.0),
    )
    c = acct(engine, "carol")
    assert c.state is RiskState.WATCH and c.worst_pool == "ETH"
    assert c.utilization == pytest.approx(0.5) and c.cross_utilization_ratio == pytest.approx(0.1)
    # BTC 19,100: cross equity 100, MM 95.5 → 0.955 → at_risk: the cross pool is now the worst
    [t] = engine.apply_price(tick("BTC", 19_100.0, ts=2.0))
    assert (t.previous, t.current) == (RiskState.WATCH, RiskState.AT_RISK)
    assert t.utilization == pytest.approx(0.955)
    assert acct(engine, "carol").worst_pool == "cross"
    # ETH 1,008: isolated equity 20, MM 50.4 → 2.52 → liquidatable: the isolated pool again
    [t] = engine.apply_price(tick("ETH", 1_008.0, ts=3.0))
    assert (t.previous, t.current) == (RiskState.AT_RISK, RiskState.LIQUIDATABLE)
    assert acct(engine, "carol").worst_pool == "ETH"
    # the isolated position gets more margin (in place: same pool): 1,000 → 1,020 equity → 0.049
    engine.apply_position(position("carol", "ETH", -10.0, 1_000.0, seq=2, isolated_margin=1_000.0))
    c = acct(engine, "carol")
    assert c.state is RiskState.AT_RISK and c.worst_pool == "cross"
    # the batch path: margin back to 100 (equity 20 at 1,008) → liquidatable, one transition
    tr, rej = engine.apply_positions_fast(
        ["carol"], ["ETH"], [-10.0], [1_000.0], [True], [100.0], [3], 4.0
    )
    assert rej == [] and [(x.previous, x.current) for x in tr] == [
        (RiskState.AT_RISK, RiskState.LIQUIDATABLE)
    ]


def test_rejections_leave_state_untouched() -> None:
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0, seq=5),
        position("alice", "BTC", 1.0, 20_000.0, seq=5),
    )
    before = acct(engine)
    cases: list[tuple[Event, RejectReason]] = [
        (position("alice", "BTC", 3.0, 20_000.0, seq=5), RejectReason.DUPLICATE),
        (position("alice", "BTC", 3.0, 20_000.0, seq=4), RejectReason.STALE_SEQUENCE),
        (balance("alice", 9.0, seq=5), RejectReason.DUPLICATE),
        (balance("alice", 9.0, seq=1), RejectReason.STALE_SEQUENCE),
        (position("alice", "NOPE", 1.0, 1.0), RejectReason.UNKNOWN_INSTRUMENT),
        (tick("NOPE", 1.0), RejectReason.UNKNOWN_INSTRUMENT),
    ]
    for event, reason in cases:
        result = engine.apply(event)
        assert isinstance(result, Rejection) and result.reason is reason
    assert acct(engine) == before
    with pytest.raises(RejectedEvent) as exc:
        engine.apply_position(position("alice", "BTC", 3.0, 20_000.0, seq=5))
    assert exc.value.reason is RejectReason.DUPLICATE
    # a stale update after a close is still rejected (the seq outlives the slot)
    engine.apply_position(position("alice", "BTC", 0.0, 20_000.0, seq=6))
    result = engine.apply(position("alice", "BTC", 1.0, 20_000.0, seq=6))
    assert isinstance(result, Rejection) and result.reason is RejectReason.DUPLICATE


def test_instrument_update_rederives_tiers_and_revalues_holders() -> None:
    # long 1 @ 20,000 with wallet 1,000: MM 100 at 0.5 %; at 4 % MMR MM = 800 → util 0.8 → at_risk
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
    )
    result = engine.apply(instrument("BTC", tiers=tiers((0, 0.04, 20))))
    assert isinstance(result, Applied)
    assert [(t.previous, t.current) for t in result.transitions] == [
        (RiskState.HEALTHY, RiskState.AT_RISK)
    ]
    assert acct(engine).maintenance_margin_usd == pytest.approx(800.0)


def test_tiers_are_reselected_when_the_mark_crosses_a_floor() -> None:
    # 10 BTC: 200,000 at 20,000 (tier 0.5 %/1 % at 50k: cum = 50,000 × 0.005 = 250)
    # MM = 200,000 × 1 % − 250 = 1,750; at 2,000 (notional 20,000, tier 1): MM = 100
    engine = engine_with(
        instrument("BTC", tiers=tiers((0, 0.005, 100), (50_000, 0.01, 50))),
        tick("BTC", 20_000.0),
        balance("alice", 100_000.0),
        position("alice", "BTC", 10.0, 20_000.0),
    )
    assert acct(engine).maintenance_margin_usd == pytest.approx(1_750.0)
    engine.apply_price(tick("BTC", 2_000.0, ts=2.0))
    assert acct(engine).maintenance_margin_usd == pytest.approx(100.0)


def test_named_scenarios_and_idiosyncratic_shocks() -> None:
    config = EngineConfig(
        scenarios={"btc_crash": Scenario(shocks={"BTC": -0.1})}, idiosyncratic_shock=0.1
    )
    # long 1 @ 20,000, wallet 1,000, fee 1 %: at −10 % equity −1,000, cost 180 → bad debt 1,180
    engine = engine_with(
        instrument("BTC", tiers=FLAT, impact_coef=0.0, liquidation_fee_ratio=0.01),
        instrument("ETH", tiers=FLAT),
        tick("BTC", 20_000.0),
        tick("ETH", 1_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
        config=config,
    )
    r = engine.venue()["main"]
    assert r.scenarios["btc_crash"].bad_debt_usd == pytest.approx(1_180.0)
    assert r.idiosyncratic_down_usd["BTC"] == pytest.approx(1_180.0)
    assert r.idiosyncratic_down_usd["ETH"] == 0.0
    assert r.idiosyncratic_up_usd["BTC"] == 0.0


def test_account_risk_distances_and_first_passage() -> None:
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
    )
    a = acct(engine)
    # liquidatable when 0.005·20,000(1+s) = 1,000 + 20,000 s → s = −900/19,900
    assert a.liquidation_distance_down == pytest.approx(900 / 19_900)
    assert a.bankruptcy_distance_down == pytest.approx(0.05)
    assert a.liquidation_distance_up == math.inf
    assert 0.0 < a.liquidation_probability < 1.0
    top = engine.top_at_risk(1)
    assert [t.account for t in top] == ["alice"]


def test_fast_paths_match_the_validated_paths() -> None:
    slow = engine_with(instrument("BTC", tiers=FLAT), tick("BTC", 20_000.0))
    fast = engine_with(instrument("BTC", tiers=FLAT), tick("BTC", 20_000.0))
    slow.apply(balance("alice", 1_000.0))
    slow.apply(position("alice", "BTC", 1.0, 20_000.0))
    slow.apply(tick("BTC", 19_500.0, ts=2.0))
    fast.apply_balance_fast("alice", 1_000.0, 1, 1.0)
    fast.apply_position_fast("alice", fast.instrument_id("BTC"), 1.0, 20_000.0, False, 0.0, 1, 1.0)
    fast.apply_prices_fast([fast.instrument_id("BTC")] * 2, [19_000.0, 19_500.0], 2.0)
    assert acct(slow) == acct(fast)
    assert fast.mark_ts("BTC") == 2.0 and fast.mark("BTC") == 19_500.0
    assert fast.mark_ts("NOPE") is None


def test_partials_round_trip_through_json() -> None:
    import json

    from streams.engine.venue import FundPartial

    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
        balance("bob", 1_000.0),
        position("bob", "BTC", -1.0, 20_500.0),
    )
    p = engine.partials()["main"]
    back = FundPartial.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back.to_dict() == p.to_dict()


def test_position_batch_rejections_last_write_and_one_state_evaluation() -> None:
    engine = engine_with(instrument("BTC", tiers=FLAT), tick("BTC", 20_000.0))
    engine.apply_balance_fast("alice", 1_000.0, 1, 1.0)
    transitions, rejected = engine.apply_positions_fast(
        ["alice", "alice", "bob", "alice", "alice"],
        ["BTC", "NOPE", "BTC", "BTC", "BTC"],
        [1.0, 1.0, 2.0, 0.5, 9.0],
        [20_000.0] * 5,
        [False] * 5,
        [0.0] * 5,
        [1, 1, 1, 2, 2],  # the last row repeats seq 2: a duplicate
        2.0,
    )
    assert [(i, r.reason) for i, r in rejected] == [
        (1, RejectReason.UNKNOWN_INSTRUMENT),
        (4, RejectReason.DUPLICATE),
    ]
    # alice: the last accepted row (0.5 BTC) wins — MM 0.5 % × 10,000 = 50 on equity 1,000
    a = acct(engine)
    assert (a.equity_usd, a.maintenance_margin_usd, a.positions) == (1_000, 50, 1)
    # bob has no wallet: equity 0 with margin to keep → utilization inf → liquidatable (not < 0)
    assert acct(engine, "bob").state is RiskState.LIQUIDATABLE
    assert [(t.account, t.current) for t in transitions] == [("bob", RiskState.LIQUIDATABLE)]


def test_state_counts_open_only_leaves_out_flat_accounts() -> None:
    # alice holds a position; bob opened and closed his, so he is flat (but known to the engine)
    engine = engine_with(
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("alice", 1_000.0),
        balance("bob", 1_000.0),
        position("alice", "BTC", 1.0, 20_000.0),
        position("bob", "BTC", 1.0, 20_000.0, seq=1),
        position("bob", "BTC", 0.0, 20_000.0, seq=2),
    )
    assert sum(engine.state_counts().values()) == 2
    assert engine.state_counts(open_only=True) == {
        s: (1 if s is RiskState.HEALTHY else 0) for s in RiskState
    }


def test_transition_utilization_is_the_worst_pools_for_many_accounts() -> None:
    # 30 accounts (more than the per-account loop handles): a cross long (healthy) and an
    # isolated long with margins 1,000 + i; BTC 20,000 → 19,050 makes every isolated pool
    # liquidatable in one conflated batch; each transition carries that pool's utilization.
    events: list[object] = [instrument("BTC", tiers=FLAT), instrument("ETH", tiers=FLAT)]
    events += [tick("BTC", 20_000.0), tick("ETH", 1_000.0)]
    for i in range(30):
        events += [
            balance(f"u{i}", 100_000.0),
            position(f"u{i}", "ETH", 1.0, 1_000.0),
            position(f"u{i}", "BTC", 1.0, 20_000.0, isolated_margin=1_000.0 + i),
        ]
    engine = engine_with(*events)
    btc = engine.instrument_id("BTC")
    transitions = engine.apply_prices_fast([btc], [19_050.0], 2.0)
    assert len(transitions) == 30
    for t in transitions:
        risk = acct(engine, t.account)
        assert t.current is RiskState.LIQUIDATABLE and risk.worst_pool == "BTC"
        i = int(t.account[1:])
        assert t.utilization == risk.utilization == pytest.approx(95.25 / (50.0 + i))


def test_balance_rejections_are_the_same_one_at_a_time_and_in_a_batch() -> None:
    one = engine_with(balance("alice", 1_000.0, seq=5))
    batch = engine_with(balance("alice", 1_000.0, seq=5))
    want = []
    for seq in (5, 4):
        with pytest.raises(RejectedEvent) as exc:
            one.apply_balance_fast("alice", 2_000.0, seq, 2.0)
        want.append(exc.value.rejection)
    _tr, got = batch.apply_balances_fast(["alice", "alice"], [2_000.0, 2_000.0], [5, 4], 2.0)
    assert [r for _i, r in got] == want
    assert [r.reason for r in want] == [RejectReason.DUPLICATE, RejectReason.STALE_SEQUENCE]
    assert want[1].detail == "balance alice: seq 4 vs stored 5"
