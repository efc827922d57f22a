"""Watch-list rows from the engine: worst-pool figures, deficits, ordering and the top-n cut."""

from __future__ import annotations

import math

import pytest

from streams.adapters.redis_store import WatchRow, rows_from_engine
from streams.adapters.redis_store.engine_rows import _rows_full
from streams.engine.engine import Applied, RiskEngine
from streams.engine.models import RiskState
from tests.builders import balance, instrument, position, tick, tiers

FLAT = tiers((0, 0.005, 100))  # MM = 0.5 % of notional


def venue() -> RiskEngine:
    # All at BTC 20,000 (MM of 1 BTC = 100):
    # iso_watch: cross wallet 0, isolated long 1 BTC with 141 margin → 100 / 141 = 0.709, watch
    # cross_liq: wallet 83, cross long 1 BTC → 100 / 83 = 1.2, liquidatable
    # iso_bankrupt: wallet 10, isolated long 1 BTC @ 21,000 with 100 margin → equity −900
    # cross_dollar: wallet −1, nothing else → deficit 1
    engine = RiskEngine()
    events = [
        instrument("BTC", tiers=FLAT),
        tick("BTC", 20_000.0),
        balance("iso_watch", 0.0),
        position("iso_watch", "BTC", 1.0, 20_000.0, isolated_margin=141.0),
        balance("cross_liq", 83.0),
        position("cross_liq", "BTC", 1.0, 20_000.0),
        balance("iso_bankrupt", 10.0),
        position("iso_bankrupt", "BTC", 1.0, 21_000.0, isolated_margin=100.0),
        balance("cross_dollar", -1.0),
    ]
    for ev in events:
        assert isinstance(engine.apply(ev), Applied)
    return engine


ORDER = ["iso_bankrupt", "cross_dollar", "cross_liq", "iso_watch"]


def test_account_risk_carries_worst_pool_figures_and_deficit() -> None:
    engine = venue()
    b = engine.account("iso_bankrupt")
    assert b is not None and b.state is RiskState.UNDERWATER and b.worst_pool == "BTC"
    assert (b.worst_pool_equity_usd, b.worst_pool_mm_usd) == pytest.approx((-900.0, 100.0))
    assert b.deficit_usd == pytest.approx(900.0) and b.equity_usd == 10.0
    w = engine.account("iso_watch")
    assert w is not None and w.state is RiskState.WATCH and w.deficit_usd == 0.0
    assert w.utilization == pytest.approx(w.worst_pool_mm_usd / w.worst_pool_equity_usd)
    assert (w.worst_pool_equity_usd, w.worst_pool_mm_usd) == pytest.approx((141.0, 100.0))
    d = engine.account("cross_dollar")
    assert d is not None and d.deficit_usd == 1.0 and d.worst_pool == "cross"


def test_book_pool_figures_match_the_per_account_ones() -> None:
    engine = venue()
    book = engine.book
    figures = book.pool_figures()
    for a in range(book.n_accounts):
        want = book.pool_figures_of(a)
        got = tuple(float(col[a]) for col in figures)
        assert got == pytest.approx(want), book.account_names[a]


def test_watch_rows_rank_deficits_first_then_worst_pool_utilization() -> None:
    engine = venue()
    rows = rows_from_engine(engine, 10, ts_event=5.0)
    assert [r.account for r in rows] == ORDER
    scores = [r.utilization_score() for r in rows]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    for r in rows:
        assert r.deficit_usd == pytest.approx(engine.account(r.account).deficit_usd)  # type: ignore[union-attr]
        if math.isfinite(r.utilization_ratio):
            assert r.utilization_ratio == pytest.approx(
                r.worst_pool_mm_usd / r.worst_pool_equity_usd
            )


@pytest.mark.parametrize("n", [1, 2, 3])
def test_top_n_cut_keeps_the_largest_deficits(n: int) -> None:
    assert [r.account for r in rows_from_engine(venue(), n, ts_event=5.0)] == ORDER[:n]
    assert [r.account for r in _rows_full(venue(), n, 5.0)] == ORDER[:n]


def test_score_of_a_row_without_engine_figures() -> None:
    # an isolated-only WATCH row with cross equity 0 is not underwater
    row = WatchRow("a", 0.0, 0.0, 0.71, RiskState.WATCH, 0.1, 0.2)
    assert row.utilization_score() == pytest.approx(0.71)
    bankrupt = WatchRow("b", 10.0, 0.0, math.inf, RiskState.UNDERWATER, 0.0, 0.0, deficit_usd=5.0)
    assert (
        bankrupt.utilization_score()
        > WatchRow(
            "c", -1.0, 0.0, math.inf, RiskState.UNDERWATER, 0.0, 0.0, deficit_usd=1.0
        ).utilization_score()
    )
