"""The compiled stress kernels (streams/engine/kernels.py) against their NumPy oracle.

``build_pools`` / ``grid.evaluate`` / the ADL and state-count kernels are compared with the
vectorized NumPy forms kept in ``grid_reference`` (``build_pools_numpy``, ``evaluate_numpy``)
and with plain NumPy recomputations, on random books: tiered linear and inverse instruments,
isolated positions, cross pools spanning several funds, accounts without positions, closes and
re-opens, ticks after the positions (bands maintained by the tick paths).
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.engine.adl import hyperliquid_score
from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.engine.grid import evaluate
from streams.engine.grid_reference import build_pools_numpy, evaluate_numpy
from streams.engine.kernels import position_tiers, state_counts, tier_hinges
from streams.engine.models import PositionUpdate
from streams.engine.pools import Pools, Workspace, build_pools
from streams.engine.stress import _adl_candidates, _hinges
from streams.engine.venue import STATE_LABELS
from tests.builders import Event, balance, position, random_venue, tick

CONFIG = EngineConfig()
GRID = CONFIG.fine_grid()
SMIN, SMAX = float(GRID[0]), float(GRID[-1])


def book_events(
    seed: int, accounts: int, instruments: int, per_account: int, iso: float, funds: int
) -> list[Event]:
    """random_venue + accounts without positions, closes / re-opens and ticks afterwards."""
    names = ("main", "alts", "third")[:funds]
    events = random_venue(seed, accounts, instruments, per_account, names, iso, 0.3)
    rng = random.Random(seed)
    positions = [e for e in events if isinstance(e, PositionUpdate)]
    for j in range(rng.randint(0, 3)):
        events.append(balance(f"empty{j}", rng.uniform(-100.0, 1_000.0), seq=1))
    for p in rng.sample(positions, min(len(positions), rng.randint(0, 4))):
        iso_margin = p.isolated_margin if p.margin_mode.value == "isolated" else None
        events.append(position(p.account, p.instrument, 0.0, p.entry_price, seq=2))
        if rng.random() < 0.5:  # re-open, other side
            events.append(
                position(
                    p.account,
                    p.instrument,
                    -p.size,
                    p.entry_price * 1.01,
                    seq=3,
                    isolated_margin=iso_margin,
                )
            )
    for k in range(instruments):
        if rng.random() < 0.7:
            events.append(tick(f"I{k}", rng.uniform(10, 50_000), ts=2.0))
    return events


books = st.builds(
    book_events,
    seed=st.integers(0, 100_000),
    accounts=st.integers(1, 25),
    instruments=st.integers(1, 5),
    per_account=st.integers(1, 3),
    iso=st.sampled_from([0.0, 0.3, 1.0]),
    funds=st.integers(1, 3),
)


def engine_of(events: list[Event]) -> RiskEngine:
    engine = RiskEngine(CONFIG)
    for ev in events:
        engine.apply(ev)
    return engine


def scale_of(p: Pools) -> float:
    """Gross size of the book (absolute tolerances are relative to it)."""
    return 1.0 + float(np.abs(p.e0).sum() + p.notional0.sum() + np.abs(p.upnl0).sum())


def assert_close(got: np.ndarray, want: np.ndarray, atol: float, what: str) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=atol, err_msg=what)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books)
def test_pool_pass_matches_numpy_oracle(events: list[Event]) -> None:
    book = engine_of(events).book
    got = build_pools(book, SMIN, SMAX)
    want = build_pools_numpy(book, SMIN, SMAX)
    atol = 1e-13 * scale_of(want)
    assert (got.n_units, got.n_accounts) == (want.n_units, want.n_accounts)
    for name in ("unit", "account", "instrument", "fund", "linear", "has_position"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for name in ("size", "entry", "mark", "notional", "upnl", "qv"):
        assert_close(getattr(got, name), getattr(want, name), atol, name)
    for name in (
        "e0",
        "slope",
        "fee",
        "impact",
        "const_cost",
        "mm0",
        "mm1",
        "upnl0",
        "notional0",
        "base",
        "lo",
        "hi",
    ):
        assert_close(getattr(got, name), getattr(want, name), atol, name)
    assert_close(got.weights_t, want.weights_t, 1e-12, "weights_t")
    assert got.mmr_max == want.mmr_max
    # the band CSR holds exactly the oracle's band positions, per unit in position order
    bp = want.band_pos
    np.testing.assert_array_equal(
        np.diff(got.band_ptr), np.bincount(want.unit[bp], minlength=want.n_units)
    )
    order = np.argsort(want.unit[bp], kind="stable")
    np.testing.assert_array_equal(got.band_k, want.instrument[bp][order])
    np.testing.assert_array_equal(got.band_lin, want.linear[bp][order])
    assert_close(got.band_n0, want.notional[bp][order], atol, "band_n0")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books)
def test_grid_pass_matches_numpy_oracle(events: list[Event]) -> None:
    book = engine_of(events).book
    want_pools = build_pools_numpy(book, SMIN, SMAX)
    got = evaluate(build_pools(book, SMIN, SMAX), GRID)
    want = evaluate_numpy(want_pools, GRID)
    atol = 1e-12 * scale_of(want_pools)
    assert_close(got.bad_debt, want.bad_debt, atol, "bad_debt")
    assert_close(got.profitable_upnl, want.profitable_upnl, atol, "profitable_upnl")
    assert_close(got.bad_now, want.bad_now, atol, "bad_now")
    np.testing.assert_array_equal(got.liq_now, want.liq_now)
    # per-fund figures at s = 0 the kernel sums on the way
    wt = want_pools.weights_t
    long_unit = want_pools.slope > 0
    assert_close(got.bad_long, wt @ np.where(long_unit, want.bad_now, 0.0), atol, "bad_long")
    assert_close(got.bad_short, wt @ np.where(long_unit, 0.0, want.bad_now), atol, "bad_short")
    liq_w = np.where(want.liq_now, want_pools.notional0, 0.0)
    assert_close(got.liq_notional, wt @ liq_w, atol, "liq_notional")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books, st.integers(1, 4))
def test_adl_top_k_and_state_counts_match_numpy(events: list[Event], k: int) -> None:
    book = engine_of(events).book
    pools = build_pools(book, SMIN, SMAX)
    liq_now = evaluate(pools, GRID).liq_now
    names = [i.name for i in book.instruments]
    got = _adl_candidates(book, pools, liq_now, k, names)
    # oracle: every eligible position scored, sorted, the first k per (fund, side)
    u = pools.unit
    eq = pools.e0[u]
    ok = (pools.upnl > 0) & (eq > 0) & ~liq_now[u]
    score = hyperliquid_score(pools.mark, pools.entry, pools.notional, eq, pools.size)
    for f in range(len(book.funds)):
        for is_long in (True, False):
            sel = np.flatnonzero(ok & (pools.fund == f) & ((pools.size > 0) == is_long))
            top = sel[np.argsort(-score[sel], kind="stable")][:k]
            want = sorted(
                (book.account_names[int(pools.account[i])], names[int(pools.instrument[i])])
                for i in top
            )
            cands = got[(f, is_long)]
            assert sorted((c.account, c.instrument) for c in cands) == want
            for c in cands:
                i = next(
                    int(j)
                    for j in top
                    if book.account_names[int(pools.account[j])] == c.account
                    and names[int(pools.instrument[j])] == c.instrument
                )
                assert c.score == score[i]
                assert c.upnl_usd == pools.upnl[i]
                assert c.notional_usd == pools.notional[i]
                assert c.size == pools.size[i]
    # state counts: accounts with a fund share > 0 or an isolated position of the fund
    nf, n_acc = len(book.funds), book.n_accounts
    exposed = pools.weights_t[:nf, :n_acc] > 0
    iso = np.flatnonzero(pools.unit >= n_acc)
    exposed[pools.fund[iso], pools.account[iso]] = True
    got_counts = state_counts(
        pools.weights_t[:nf],
        n_acc,
        pools.block_k,
        pools.block_len,
        pools.n_cross_blocks,
        pools.n_cross,
        pools.account,
        pools.fund_k,
        book.state[:n_acc],
        len(STATE_LABELS),
    )
    for f in range(nf):
        want_counts = np.bincount(book.state[:n_acc][exposed[f]], minlength=len(STATE_LABELS))
        np.testing.assert_array_equal(got_counts[f], want_counts)


def test_workspace_reuse_gives_fresh_results_and_no_stale_values() -> None:
    # a reused workspace must give what fresh buffers give, also after the book shrank
    engine = engine_of(book_events(3, 25, 4, 3, 0.3, 2))
    ws = Workspace()
    first = evaluate(build_pools(engine.book, SMIN, SMAX, workspace=ws), GRID, ws)
    big = first.bad_debt.copy()
    for ev in book_events(3, 25, 4, 3, 0.3, 2):
        if isinstance(ev, PositionUpdate) and ev.account.endswith(("1", "2", "3")):
            engine.apply(position(ev.account, ev.instrument, 0.0, ev.entry_price, seq=9))
    reused = evaluate(build_pools(engine.book, SMIN, SMAX, workspace=ws), GRID, ws)
    fresh = evaluate(build_pools(engine.book, SMIN, SMAX), GRID)
    np.testing.assert_array_equal(reused.bad_debt, fresh.bad_debt)
    np.testing.assert_array_equal(reused.profitable_upnl, fresh.profitable_upnl)
    np.testing.assert_array_equal(reused.bad_now, fresh.bad_now)
    assert not np.array_equal(big, fresh.bad_debt)  # the closes changed the book's figures


def test_partials_under_a_borrowed_workspace_match_fresh_buffers() -> None:
    engine = engine_of(book_events(11, 20, 4, 2, 0.3, 3))
    a = engine.partials()
    b = engine.partials()  # second call: the book's workspace is reused
    engine.book.derived_cache.pop("stress_workspace")
    c = engine.partials()  # fresh buffers
    for fund in a:
        for p in (b[fund], c[fund]):
            np.testing.assert_array_equal(a[fund].bad_debt_usd, p.bad_debt_usd)
            np.testing.assert_array_equal(a[fund].profitable_upnl_usd, p.profitable_upnl_usd)
            assert a[fund].state_counts == p.state_counts
            assert a[fund].adl_long == p.adl_long
            assert a[fund].adl_short == p.adl_short
            assert a[fund].idiosyncratic_down_usd == p.idiosyncratic_down_usd


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books)
def test_position_tiers_match_the_padded_table_lookup(events: list[Event]) -> None:
    book = engine_of(events).book
    p = build_pools(book, SMIN, SMAX)
    pad = p.pad
    t, mm, mslope = position_tiers(
        p.instrument, p.notional, p.linear, pad.floors, pad.mmr, pad.amt, pad.width
    )
    want_t = pad.tier(p.instrument, p.notional) if p.notional.size else np.zeros(0, np.int64)
    rate = pad.mmr[p.instrument, want_t]
    np.testing.assert_array_equal(t, want_t)
    np.testing.assert_array_equal(mm, p.notional * rate - pad.amt[p.instrument, want_t])
    np.testing.assert_array_equal(mslope, np.where(p.linear, p.notional * rate, 0.0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books, st.sampled_from([(-0.5, 0.5), (-0.9, 2.0), (-0.05, 0.05)]))
def test_tier_hinges_match_numpy(events: list[Event], bounds: tuple[float, float]) -> None:
    book = engine_of(events).book
    p = build_pools(book, SMIN, SMAX)
    pad = p.pad
    t, _mm, _slope = position_tiers(
        p.instrument, p.notional, p.linear, pad.floors, pad.mmr, pad.amt, pad.width
    )
    cols = {"instrument": p.instrument, "tier": t, "notional": p.notional, "inverse": ~p.linear}
    want = _hinges(book.instruments, cols, *bounds)
    got = tier_hinges(
        p.instrument, t, p.notional, p.linear, pad.floors, pad.mmr, pad.width, *bounds
    )
    for g, w, name in zip(got, want, ("pos", "break", "coef", "dir"), strict=True):
        np.testing.assert_array_equal(g, w, err_msg=name)
