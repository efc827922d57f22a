"""Partials: per-partition engines publish, one combiner sums them = one engine over the book."""

from __future__ import annotations

import json

import pytest

from streams.agents import aggregate
from streams.agents.aggregate import combine_partials, partial_messages, refresh_venue
from streams.agents.balances import balances_agent
from streams.agents.positions import positions_agent
from streams.agents.runtime import runtime
from streams.engine.engine import RiskEngine
from streams.engine.models import BalanceUpdate, FundUpdate, PositionUpdate, PriceTick
from streams.engine.venue import FundPartial
from streams.engine.wire import Event
from tests.agents.conftest import Outbox, instrument

ACCOUNTS = 12


def _pos(i: int) -> PositionUpdate:
    return PositionUpdate(
        account=f"a{i}",
        instrument="BTCUSDT" if i % 3 else "ETHUSDT",
        size=(1.0 + i) * (1 if i % 2 else -1),
        entry_price=60_000.0 if i % 3 else 3_000.0,
        seq=1,
        ts_event=1.0,
    )


def _bal(i: int) -> BalanceUpdate:
    return BalanceUpdate(account=f"a{i}", wallet_balance=2_000.0 + 500.0 * i, seq=1, ts_event=1.0)


REFERENCE: list[Event] = [
    instrument("BTCUSDT"),
    instrument("ETHUSDT", fund="alt"),
    FundUpdate(fund="main", balance=5_000.0, ts_event=1.0),
    FundUpdate(fund="alt", balance=1_000.0, ts_event=1.0),
    PriceTick(instrument="BTCUSDT", mark_price=60_000.0, ts_event=1.0),
    PriceTick(instrument="ETHUSDT", mark_price=3_000.0, ts_event=1.0),
]
CRASH: list[Event] = [
    PriceTick(instrument="BTCUSDT", mark_price=52_000.0, ts_event=2.0),
    PriceTick(instrument="ETHUSDT", mark_price=1_500.0, ts_event=2.0),
]


def single_engine() -> RiskEngine:
    engine = RiskEngine(runtime.settings.engine)
    for ev in REFERENCE:
        engine.apply(ev)
    for i in range(ACCOUNTS):
        engine.apply(_bal(i))
        engine.apply(_pos(i))
    for ev in CRASH:
        engine.apply(ev)
    return engine


@pytest.fixture
async def loaded(outbox: Outbox) -> Outbox:
    for ev in REFERENCE:
        runtime.apply_reference(ev)
    async with balances_agent.test_context() as agent:
        for i in range(ACCOUNTS):
            b = _bal(i)
            await agent.put(
                value=b.model_dump_json().encode(), key=b.account.encode(), partition=i % 4
            )
    async with positions_agent.test_context() as agent:
        for i in range(ACCOUNTS):
            p = _pos(i)
            await agent.put(
                value=p.model_dump_json().encode(), key=p.account.encode(), partition=i % 4
            )
    for ev in CRASH:
        runtime.apply_reference(ev)
    return outbox


async def _combine(messages: list[tuple[str, dict]]) -> None:
    async with combine_partials.test_context() as agent:
        for fund, body in messages:
            await agent.put(value=json.dumps(body).encode(), key=fund.encode())


async def test_partials_combine_to_single_engine_figures(loaded: Outbox) -> None:
    assert set(runtime.engines) == {0, 1, 2, 3}
    messages = partial_messages(now=100.0)
    # 4 partitions x 2 funds, empty partials included
    assert sorted((f, b["partition"]) for f, b in messages) == sorted(
        (f, p) for f in ("alt", "main") for p in range(4)
    )
    await _combine(messages)
    runtime.owns_partials = True
    reports = aggregate.venue_reports()
    expected = single_engine().venue()
    assert set(reports) == set(expected) == {"main", "alt"}
    for fund, exp in expected.items():
        got = reports[fund]
        assert got.bad_debt_usd == pytest.approx(exp.bad_debt_usd)
        assert got.bad_debt_usd > 0  # the crash leaves bad debt: a meaningful comparison
        assert got.socialized_loss_usd == pytest.approx(exp.socialized_loss_usd)
        assert got.liquidatable_notional_usd == pytest.approx(exp.liquidatable_notional_usd)
        assert got.exhaustion_shock_down == pytest.approx(exp.exhaustion_shock_down)
        assert got.exhaustion_shock_up == pytest.approx(exp.exhaustion_shock_up)
        assert got.state_counts == exp.state_counts
    refresh_venue()
    m = runtime.metrics
    bad = m.sample("riskmon_projected_bad_debt_usd", {"fund": "main", "scenario": "current"})
    assert bad == pytest.approx(expected["main"].bad_debt_usd)
    assert m.sample("riskmon_insurance_fund_balance_usd", {"fund": "alt"}) == 1_000.0
    assert m.sample("riskmon_venue_source_partitions", {"fund": "main"}) == 4
    # accounts by state is per worker (sum over its engines) = the single engine here
    single = single_engine().state_counts()
    for state, n in single.items():
        assert m.sample("riskmon_accounts", {"state": state.label}) == n


async def test_duplicates_and_stale_generations_are_harmless(loaded: Outbox) -> None:
    runtime.generation = 5
    fresh = partial_messages(now=100.0)
    await _combine(fresh)
    await _combine(fresh)  # at-least-once redelivery
    # a late message from a worker that lost the partition (older generation, newer ts)
    stale = []
    for fund, body in fresh:
        old = dict(body, generation=4, ts=200.0, worker="old-owner")
        old["partial"] = FundPartial.empty(fund, runtime.settings.engine).to_dict()
        stale.append((fund, old))
    await _combine(stale)
    await _combine([("main", {"garbage": True})])  # malformed partials are ignored
    runtime.owns_partials = True
    reports = aggregate.venue_reports()
    expected = single_engine().venue()
    assert reports["main"].bad_debt_usd == pytest.approx(expected["main"].bad_debt_usd)


async def test_non_combiner_exports_no_venue_gauges(loaded: Outbox) -> None:
    runtime.owns_partials = False
    refresh_venue()
    assert runtime.venue is None
    m = runtime.metrics
    assert m.sample("riskmon_insurance_fund_balance_usd", {"fund": "main"}) is None
    assert m.sample("riskmon_venue_source_partitions", {"fund": "main"}) is None
    assert m.sample("riskmon_accounts", {"state": "healthy"}) is not None


async def test_only_changed_partials_are_republished(loaded: Outbox) -> None:
    aggregate._published.clear()
    keepalive = runtime.settings.worker.partial_keepalive_s
    first = aggregate.changed_partials(partial_messages(), now=0.0)
    assert len(first) == 8  # 4 partitions x 2 funds
    assert aggregate.changed_partials(partial_messages(), now=1.0) == []  # nothing moved
    runtime.apply_reference(PriceTick(instrument="BTCUSDT", mark_price=40_000.0, ts_event=3.0))
    moved = aggregate.changed_partials(partial_messages(), now=2.0)
    assert {f for f, _ in moved} == {"main"}  # only the BTC fund's partials changed
    runtime.generation += 1  # a rebalance: everything is republished under the new generation
    assert len(aggregate.changed_partials(partial_messages(), now=3.0)) == 8
    assert len(aggregate.changed_partials(partial_messages(), now=3.0 + keepalive)) == 8


async def test_partials_are_computed_in_round_robin_slices(
    loaded: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    aggregate._published.clear()
    aggregate._computed.clear()
    monkeypatch.setattr(aggregate, "PARTIALS_SLICE_S", 0.0)  # one engine per timer run
    parts = sorted(runtime.engines)
    assert len(parts) > 1
    seen = []
    for _ in parts:
        messages = await aggregate.partials_slice(now=100.0)
        seen.append({int(body["partition"]) for _f, body in messages})
    assert all(len(s) == 1 for s in seen)
    assert sorted(p for s in seen for p in s) == parts  # every engine exactly once per round
    # nothing changed since: the next round computes nothing
    assert [await aggregate.partials_slice(now=101.0) for _ in parts] == [[] for _ in parts]
    runtime.changes += 1  # an input moved: due again
    assert await aggregate.partials_slice(now=102.0) != []


async def test_venue_timestamp_ignores_ticks_of_unknown_instruments(loaded: Outbox) -> None:
    known_ts = max(t.ts_event for t in runtime.ref.marks.values())
    runtime.apply_reference(PriceTick(instrument="NOPE", mark_price=1.0, ts_event=4e9))
    assert aggregate.venue_snapshot().ts_event == known_ts


async def test_a_bad_stored_partial_is_skipped_and_counted(loaded: Outbox) -> None:
    await _combine(partial_messages(now=100.0))
    await _combine([("main", {"garbage": True})])  # malformed message: counted, ignored
    rejected = "riskmon_partials_rejected_total"
    assert runtime.metrics.sample(rejected, {"stage": "message"}) == 1
    good = aggregate.venue_reports()
    # one stored partial that no longer parses (e.g. written by another version)
    from streams.app import partials_table

    key = next(k for k, v in partials_table.data.items() if v["fund"] == "main")
    bad = dict(partials_table.data[key])
    bad["raw"] = json.dumps({"partial": {"fund": "main", "bogus": 1}})
    bad["ts"] = 101.0
    partials_table.data[key] = bad
    runtime.owns_partials = True
    reports = aggregate.venue_reports()  # no exception: the other keys still combine
    assert reports["alt"].bad_debt_usd == good["alt"].bad_debt_usd
    assert reports["alt"].state_counts == good["alt"].state_counts
    assert aggregate.latest_partials().keys() == {"main", "alt"}
    assert len(aggregate.latest_partials()["main"]) == 3
    assert runtime.metrics.sample(rejected, {"stage": "table"}) == 1  # counted once
    refresh_venue()
    assert runtime.metrics.sample("riskmon_venue_source_partitions", {"fund": "main"}) == 3
    assert runtime.metrics.sample("riskmon_venue_source_partitions", {"fund": "alt"}) == 4


async def test_venue_gauges_come_from_the_adapter_never_nan_nor_a_false_adl(
    loaded: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import math

    from prometheus_client import generate_latest

    from streams.adapters.metrics import fund_figures_from_report

    await _combine(partial_messages(now=100.0))
    runtime.owns_partials = True
    reports = aggregate.venue_reports()
    snap = aggregate.venue_snapshot()
    assert snap.funds == tuple(fund_figures_from_report(r) for r in reports.values())
    refresh_venue()
    m = runtime.metrics
    adl = "riskmon_adl_queue_notional_usd"
    assert m.sample(adl, {"fund": "main", "scenario": "current"}) is not None
    # the ADL queue is only known at current marks: no (false 0) sample for a stress scenario
    assert m.sample(adl, {"fund": "main", "scenario": "crash_30"}) is None
    # a non-finite figure is left out, never exported as NaN
    broken = dict(reports, main=dataclasses.replace(reports["main"], bad_debt_usd=math.nan))
    monkeypatch.setattr(aggregate, "venue_reports", lambda: broken)
    refresh_venue()
    bad = "riskmon_projected_bad_debt_usd"
    assert m.sample(bad, {"fund": "main", "scenario": "current"}) is None
    assert m.sample(bad, {"fund": "alt", "scenario": "current"}) is not None
    assert b"NaN" not in generate_latest(m.registry)
