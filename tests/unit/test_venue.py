"""Venue-level figures: engine vs naive recompute, invariants, and split + combine == whole."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.engine.models import BalanceUpdate, FundUpdate, Instrument, PositionUpdate, PriceTick
from streams.engine.naive import NaiveBook
from streams.engine.venue import FundPartial, FundReport, combine, fund_report
from tests.builders import Event, random_venue

CONFIG = EngineConfig()


def load(
    events: list[Event], keep: Callable[[str], bool] | None = None
) -> tuple[RiskEngine, NaiveBook]:
    """Feed events to an engine and the naive book; ``keep(account)`` filters accounts."""
    engine = RiskEngine(CONFIG)
    naive = NaiveBook(CONFIG)
    for ev in events:
        if isinstance(ev, PositionUpdate | BalanceUpdate) and keep and not keep(ev.account):
            continue
        engine.apply(ev)
        if isinstance(ev, Instrument):
            naive.upsert_instrument(ev)
        elif isinstance(ev, PriceTick):
            naive.apply_price(ev.instrument, ev.mark_price)
        elif isinstance(ev, PositionUpdate):
            naive.apply_position(
                ev.account,
                ev.instrument,
                ev.size,
                ev.entry_price,
                ev.margin_mode.value == "isolated",
                ev.isolated_margin,
                ev.seq,
            )
        elif isinstance(ev, BalanceUpdate):
            naive.apply_balance(ev.account, ev.wallet_balance, ev.seq)
        elif isinstance(ev, FundUpdate):
            naive.apply_fund(ev.fund, ev.balance)
    return engine, naive


def gross(naive: NaiveBook) -> float:
    total = 1.0 + sum(abs(w) for w in naive.wallets.values())
    for (_a, name), pos in naive.positions.items():
        total += naive.position_figures(name, pos)[1] * 2 + pos.isolated_margin
    return total


def within(value: float, lo: float, hi: float, tol: float) -> bool:
    return lo - tol <= value <= hi + tol


venues = st.builds(
    random_venue,
    seed=st.integers(0, 10_000),
    accounts=st.integers(1, 30),
    instruments=st.integers(1, 5),
    positions_per_account=st.integers(1, 3),
    isolated_share=st.sampled_from([0.0, 0.2, 0.5]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(venues)
def test_grid_matches_naive_recompute(events: list[Event]) -> None:
    engine, naive = load(events)
    tol = 1e-9 * gross(naive)
    partials = engine.partials()
    for s in CONFIG.shock_grid()[::5]:
        want = naive.uniform(float(s), slack=tol)
        for fund, p in partials.items():
            j = int(np.argmin(np.abs(p.shocks - s)))
            w = want.get(fund, dict.fromkeys(("bad_lo", "bad_hi", "profit_lo", "profit_hi"), 0.0))
            assert within(float(p.bad_debt_usd[j]), w["bad_lo"], w["bad_hi"], tol), (fund, s)
            assert within(float(p.profitable_upnl_usd[j]), w["profit_lo"], w["profit_hi"], tol)
    now = naive.uniform(0.0)
    assert set(now) <= set(partials), "a fund with positions is missing from the engine"
    for fund, p in partials.items():
        w = now.get(fund, {})
        assert math.isclose(p.liquidatable_notional_usd, w.get("liq_notional", 0.0), abs_tol=tol)
        assert math.isclose(p.bad_debt_long_usd, w.get("bad_long", 0.0), abs_tol=tol)
        assert math.isclose(p.bad_debt_short_usd, w.get("bad_short", 0.0), abs_tol=tol)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(venues)
def test_named_and_idiosyncratic_scenarios_match_naive(events: list[Event]) -> None:
    engine, naive = load(events)
    tol = 1e-9 * gross(naive)
    partials = engine.partials()
    for name, sc in CONFIG.scenarios.items():
        want = naive.scenario(sc.shocks, sc.default_shock, slack=tol)
        for fund, p in partials.items():
            w = want.get(fund, {"bad_lo": 0.0, "bad_hi": 0.0})
            assert within(p.scenario_bad_debt_usd[name], w["bad_lo"], w["bad_hi"], tol)
    x = CONFIG.idiosyncratic_shock
    for fund, p in partials.items():
        for inst, got in p.idiosyncratic_down_usd.items():
            w = naive.scenario({inst: -x}, 0.0, slack=tol).get(fund, {"bad_lo": 0, "bad_hi": 0})
            assert within(got, w["bad_lo"], w["bad_hi"], tol), (fund, inst)
        for inst, got in p.idiosyncratic_up_usd.items():
            w = naive.scenario({inst: x}, 0.0, slack=tol).get(fund, {"bad_lo": 0, "bad_hi": 0})
            assert within(got, w["bad_lo"], w["bad_hi"], tol), (fund, inst)


def check_report_invariants(r: FundReport) -> None:
    assert r.bad_debt_usd >= 0
    figures = [*r.grid, *r.scenarios.values()]
    for f in figures:
        assert f.bad_debt_usd >= 0 and f.socialized_loss_usd >= 0
        payout = min(f.bad_debt_usd, max(r.balance_usd, 0.0))
        assert math.isclose(
            payout + f.socialized_loss_usd, f.bad_debt_usd, rel_tol=1e-12, abs_tol=1e-9
        )
        assert 0.0 <= f.haircut_ratio <= 1.0
        if 0 < f.haircut_ratio < 1:  # pro-rata haircut covers exactly the loss
            assert math.isclose(
                f.haircut_ratio * f.profitable_upnl_usd, f.socialized_loss_usd, rel_tol=1e-9
            )
    adl = r.adl
    assert math.isclose(adl.loss_usd, r.socialized_loss_usd, rel_tol=1e-12, abs_tol=1e-9)
    assert adl.taken_usd + adl.uncovered_usd >= adl.loss_usd - 1e-6
    assert adl.overshoot_usd >= 0
    if adl.loss_usd == 0:
        assert adl.fills == ()
    if r.exhaustion_shock_down == 0 or r.exhaustion_shock_up == 0:
        assert r.bad_debt_usd > r.balance_usd


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(venues, st.floats(-50_000.0, 200_000.0))
def test_report_invariants_and_exhaustion_shock(events: list[Event], fund_balance: float) -> None:
    engine, naive = load(events)
    tol = 1e-9 * gross(naive)
    res = CONFIG.exhaustion_resolution
    for fund, p in engine.partials().items():
        r = fund_report(p, fund_balance, CONFIG)
        check_report_invariants(r)
        for sign, shock in ((-1, r.exhaustion_shock_down), (1, r.exhaustion_shock_up)):
            if math.isinf(shock) or shock == 0:
                continue
            # beyond the exhaustion shock (next fine point) bad debt exceeds the fund ...
            beyond = min(math.ceil(shock / res - 1e-9) * res, 0.5)
            w = naive.uniform(sign * beyond, slack=tol).get(fund, {"bad_hi": 0.0})
            assert w["bad_hi"] > fund_balance - tol
            # ... and the fine grid point before it did not
            before = max(math.floor(shock / res + 1e-9) * res - res * (shock % res < 1e-12), 0)
            w = naive.uniform(sign * before, slack=tol).get(fund, {"bad_lo": 0.0})
            assert w["bad_lo"] <= fund_balance + tol


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(2, 25), st.sampled_from([1.0, -1.0]))
def test_bad_debt_is_monotone_in_the_adverse_direction_for_a_one_sided_book(
    seed: int, accounts: int, side: float
) -> None:
    # one-sided book with sensible depth: forced-close costs grow slower than the book loses
    # (d cost / d s = notional × (fee + 1.5 k √(notional / depth)) < the exposure)
    events = [
        ev.model_copy(update={"size": side * abs(ev.size)})
        if isinstance(ev, PositionUpdate)
        else ev.model_copy(update={"impact_coef": 0.2, "depth_usd": 1e9})
        if isinstance(ev, Instrument)
        else ev
        for ev in random_venue(seed, accounts, instruments=3)
    ]
    engine, naive = load(events)
    tol = 1e-9 * gross(naive)
    for p in engine.partials().values():
        bad = p.bad_debt_usd
        # longs lose when prices fall: bad debt non-increasing in s (shorts: non-decreasing)
        steps = np.diff(bad) * side
        assert np.all(steps <= tol), steps.max()


def split_and_combine(events: list[Event], balance: float) -> None:
    whole, _ = load(events)
    parts = [
        load(events, keep=lambda a, r=r: hash(a) % 2 == r)[0]  # type: ignore[misc]
        for r in (0, 1)
    ]
    want = {f: fund_report(p, balance, CONFIG) for f, p in whole.partials().items()}
    published: dict[str, list[FundPartial]] = {}
    for engine in parts:
        for fund, p in engine.partials().items():
            # through JSON, as the Faust workers publish them
            wire = json.loads(json.dumps(p.to_dict()))
            published.setdefault(fund, []).append(FundPartial.from_dict(wire))
    assert set(published) == set(want)
    for fund, ps in published.items():
        got = fund_report(combine(ps), balance, CONFIG)
        assert_reports_equal(got, want[fund])


def assert_reports_equal(a: FundReport, b: FundReport) -> None:
    scale = 1.0 + max(abs(x.bad_debt_usd) + x.profitable_upnl_usd for x in b.grid)

    def close(x: float, y: float) -> bool:
        if math.isinf(x) or math.isinf(y):
            return x == y
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9 * scale)

    for name in (
        "bad_debt_usd",
        "socialized_loss_usd",
        "haircut_ratio",
        "profitable_upnl_usd",
        "liquidatable_notional_usd",
        "exhaustion_shock_down",
        "exhaustion_shock_up",
    ):
        assert close(getattr(a, name), getattr(b, name)), name
    for x, y in zip(a.grid, b.grid, strict=True):
        assert close(x.bad_debt_usd, y.bad_debt_usd) and close(x.haircut_ratio, y.haircut_ratio)
    for k in b.scenarios:
        assert close(a.scenarios[k].bad_debt_usd, b.scenarios[k].bad_debt_usd)
    for k in b.idiosyncratic_down_usd:
        assert close(a.idiosyncratic_down_usd[k], b.idiosyncratic_down_usd[k])
        assert close(a.idiosyncratic_up_usd[k], b.idiosyncratic_up_usd[k])
    assert a.state_counts == b.state_counts
    assert [(f.account, f.instrument) for f in a.adl.fills] == [
        (f.account, f.instrument) for f in b.adl.fills
    ]
    assert close(a.adl.taken_usd, b.adl.taken_usd)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(venues, st.sampled_from([0.0, 1_000.0, 50_000.0]))
def test_two_workers_combined_equal_one_engine(events: list[Event], balance: float) -> None:
    split_and_combine(events, balance)


def test_combine_rejects_mixed_funds() -> None:
    engine, _ = load(random_venue(1, 10, 4))
    ps = list(engine.partials().values())
    with pytest.raises(ValueError, match="cannot combine"):
        combine(ps)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(venues)
def test_closed_form_grid_matches_flat_book_grid_at_every_fine_point(events: list[Event]) -> None:
    # the per-pool closed forms (pools.py / grid.py) against the flat-book binary searches
    # (grid_reference.evaluate_grid) on the whole fine grid, not just the sampled naive points
    from streams.engine.grid_reference import evaluate_grid, flatten, unit_coefficients

    engine, naive = load(events)
    tol = 1e-9 * gross(naive)
    grid = CONFIG.fine_grid()
    fb = flatten(engine.book, float(grid[0]), float(grid[-1]))
    old, _cand, _bad_now, _liq_now = evaluate_grid(fb, unit_coefficients(fb), grid)
    for f, (fund, p) in enumerate(engine.partials(scenarios=False).items()):
        assert engine.book.funds[f] == fund
        np.testing.assert_allclose(p.bad_debt_usd, old.bad_debt[f], rtol=0, atol=tol)
        np.testing.assert_allclose(p.profitable_upnl_usd, old.profitable_upnl[f], rtol=0, atol=tol)
