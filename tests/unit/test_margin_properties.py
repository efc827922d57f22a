"""Properties of the margin math (hypothesis): symmetry, monotonicity, consistency, exactness."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from streams.engine import adl, margin
from streams.engine.models import MIN_FEE_RATIO, ContractType, MarginTier
from streams.engine.tiers import TierTable

LINEAR, INVERSE = ContractType.LINEAR, ContractType.INVERSE


def finite(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def tier_tables(draw: st.DrawFn, max_tiers: int = 5, scale: float | None = None) -> TierTable:
    """Random valid tables; with ``scale`` (a notional) the floors straddle that notional."""
    n = draw(st.integers(1, max_tiers))
    bounds = (1e3, 2e6) if scale is None else (0.02 * scale, 0.4 * scale)
    steps = draw(st.lists(finite(*bounds), min_size=n - 1, max_size=n - 1))
    floors = np.concatenate(([0.0], np.cumsum(steps)))
    mmr_steps = draw(st.lists(finite(0.0, 0.05), min_size=n - 1, max_size=n - 1))
    mmr = draw(finite(0.001, 0.05)) + np.concatenate(([0.0], np.cumsum(mmr_steps)))
    rows = tuple(
        MarginTier(floor_notional_usd=float(f), mmr=float(r), max_leverage=max(1.0, 0.5 / r))
        for f, r in zip(floors, mmr, strict=True)
    )
    return TierTable.from_tiers(rows)


sides = st.sampled_from([1.0, -1.0])
contract_types = st.sampled_from([LINEAR, INVERSE])
prices = finite(1.0, 1e5)
quantities = finite(1e-3, 1e3)


# -- PnL and notional ------------------------------------------------------------------------------


@given(contract_types, quantities, finite(0.01, 100.0), prices, prices)
def test_pnl_is_antisymmetric_in_side(
    kind: ContractType, qty: float, contract_size: float, entry: float, mark: float
) -> None:
    long = margin.unrealized_pnl_usd(kind, qty, contract_size, entry, mark)
    short = margin.unrealized_pnl_usd(kind, -qty, contract_size, entry, mark)
    assert long == -short
    assert margin.notional_usd(kind, qty, contract_size, mark) == margin.notional_usd(
        kind, -qty, contract_size, mark
    )


@given(quantities, prices, prices)
def test_inverse_usd_pnl_is_coin_pnl_at_mark(qty: float, entry: float, mark: float) -> None:
    coin = margin.unrealized_pnl_inverse_coin(qty, 10.0, entry, mark)
    usd = margin.unrealized_pnl_usd(INVERSE, qty, 10.0, entry, mark)
    assert usd == pytest.approx(coin * mark, rel=1e-9, abs=1e-9)


@given(st.lists(st.tuples(contract_types, finite(-1e3, 1e3), prices, prices), min_size=1))
def test_vectorized_pnl_matches_scalar(
    rows: list[tuple[ContractType, float, float, float]],
) -> None:
    kinds = np.array([r[0].value for r in rows])
    size, entry, mark = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    vector = margin.unrealized_pnl_usd(kinds, size, 2.0, entry, mark)
    scalar = [float(margin.unrealized_pnl_usd(r[0], r[1], 2.0, r[2], r[3])) for r in rows]
    np.testing.assert_allclose(vector, scalar, rtol=1e-12, atol=1e-9)


@given(sides, quantities, prices, prices, prices)
def test_equity_is_monotone_in_price(
    side: float, qty: float, entry: float, p1: float, p2: float
) -> None:
    low, high = min(p1, p2), max(p1, p2)
    for kind in (LINEAR, INVERSE):
        at_low = margin.unrealized_pnl_usd(kind, side * qty, 1.0, entry, low)
        at_high = margin.unrealized_pnl_usd(kind, side * qty, 1.0, entry, high)
        assert (at_high - at_low) * side >= 0


@given(tier_tables(), sides, quantities, prices, prices, prices, finite(0.0, 1.0))
def test_margin_surplus_is_monotone_in_price(
    table: TierTable, side: float, qty: float, entry: float, p1: float, p2: float, cushion: float
) -> None:
    # equity − MM has slope q × (1 − MMR) > 0 for a long (< 0 for a short) on every tier segment
    wallet = cushion * qty * entry
    low, high = min(p1, p2), max(p1, p2)

    def surplus(p: float) -> float:
        equity = wallet + margin.unrealized_pnl_usd(LINEAR, side * qty, 1.0, entry, p)
        return float(equity - margin.maintenance_margin_usd(table, LINEAR, side * qty, 1.0, p))

    assert (surplus(high) - surplus(low)) * side >= -1e-9 * qty * high


@given(tier_tables(), quantities, prices, finite(0.05, 1.0), finite(0.5, 1.5), finite(0.5, 1.5))
def test_utilization_rises_as_a_short_loses(
    table: TierTable, qty: float, entry: float, cushion: float, f1: float, f2: float
) -> None:
    # short: MM grows and equity shrinks with price, so MM / equity is increasing
    wallet = cushion * qty * entry
    low, high = entry * min(f1, f2), entry * max(f1, f2)

    def utilization(p: float) -> float:
        equity = wallet + margin.unrealized_pnl_usd(LINEAR, -qty, 1.0, entry, p)
        mm = margin.maintenance_margin_usd(table, LINEAR, -qty, 1.0, p)
        return float(margin.margin_utilization(mm, equity))

    assert utilization(high) >= utilization(low) * (1 - 1e-12)


@given(finite(0.001, 0.2), quantities, prices, finite(0.0, 1.0), finite(0.5, 1.5), finite(0.5, 1.5))
def test_utilization_falls_as_a_leveraged_long_gains(
    mmr: float, qty: float, entry: float, cushion: float, f1: float, f2: float
) -> None:
    # long: d(MM/E)/dp ∝ cum − MMR × (q·entry − wallet); with one tier (cum 0) and wallet ≤
    # q·entry this is ≤ 0. (With tiers a ~1x long can see utilization *rise* with price.)
    table = TierTable.from_tiers((MarginTier(floor_notional_usd=0, mmr=mmr, max_leverage=1),))
    wallet = cushion * qty * entry
    low, high = entry * min(f1, f2), entry * max(f1, f2)

    def utilization(p: float) -> float:
        equity = wallet + margin.unrealized_pnl_usd(LINEAR, qty, 1.0, entry, p)
        mm = margin.maintenance_margin_usd(table, LINEAR, qty, 1.0, p)
        return float(margin.margin_utilization(mm, equity))

    assert utilization(high) <= utilization(low) * (1 + 1e-12)


# -- Tiered MM -------------------------------------------------------------------------------------


def bracket_sum(table: TierTable, notional: float) -> float:
    upper = np.append(table.floors_usd[1:], np.inf)
    in_bracket = np.clip(notional - table.floors_usd, 0.0, upper - table.floors_usd)
    return float((in_bracket * table.mmr).sum())


@given(tier_tables(), finite(0.0, 2e7))
def test_mm_equals_bracket_by_bracket_sum(table: TierTable, notional: float) -> None:
    assert float(table.maintenance_margin(notional)) == pytest.approx(
        bracket_sum(table, notional), rel=1e-9, abs=1e-6
    )


@given(tier_tables())
def test_mm_is_continuous_at_every_floor(table: TierTable) -> None:
    for floor in table.floors_usd[1:]:
        below = float(table.maintenance_margin(np.nextafter(floor, 0.0)))
        at = float(table.maintenance_margin(floor))
        assert at == pytest.approx(below, rel=1e-9, abs=1e-6)


# -- Liquidation and bankruptcy prices -------------------------------------------------------------


Position = tuple[TierTable, float, float, float, float]


@st.composite
def positions(draw: st.DrawFn) -> Position:
    """(table, signed qty, entry, mark, wallet) with a wallet between 0 and 1.2× the notional."""
    table = draw(tier_tables())
    qty = draw(sides) * draw(quantities)
    entry = draw(prices)
    mark = entry * draw(finite(0.7, 1.3))
    wallet = abs(qty) * entry * draw(finite(0.0, 1.2))
    return table, qty, entry, mark, wallet


def surplus_at(
    table: TierTable,
    kind: ContractType,
    qty: float,
    entry: float,
    wallet: float,
    price: float,
    other_mm: float = 0.0,
    other_upnl: float = 0.0,
) -> float:
    equity = wallet + other_upnl + float(margin.unrealized_pnl_usd(kind, qty, 1.0, entry, price))
    mm = float(margin.maintenance_margin_usd(table, kind, qty, 1.0, price)) + other_mm
    return equity - mm


@given(positions(), contract_types, finite(0.0, 1e5), finite(-1e5, 1e5))
def test_liquidation_price_is_consistent(
    pos: Position,
    kind: ContractType,
    other_mm: float,
    other_upnl: float,
) -> None:
    table, qty, entry, _, wallet = pos
    lp = margin.liquidation_price(kind, qty, 1.0, entry, table, wallet, other_mm, other_upnl)
    assume(lp is not None)
    assert lp is not None
    scale = abs(qty) * max(entry, lp) + wallet + other_mm + abs(other_upnl)
    # at LP, MM == equity
    assert surplus_at(table, kind, qty, entry, wallet, lp, other_mm, other_upnl) == pytest.approx(
        0.0, abs=1e-9 * scale
    )
    if kind is LINEAR:
        # the tier in force at LP is the one the formula used
        k = int(table.tier_index(abs(qty) * lp))
        again = margin.binance_liquidation_price_in_tier(
            qty,
            entry,
            wallet,
            float(table.mmr[k]),
            float(table.mm_amount_usd[k]),
            other_mm,
            other_upnl,
        )
        assert again == pytest.approx(lp, rel=1e-9)
    # just beyond LP (adverse side) the account is liquidatable; just inside it is not
    side = math.copysign(1.0, qty)
    assert (
        surplus_at(table, kind, qty, entry, wallet, lp * (1 - side * 1e-6), other_mm, other_upnl)
        < 0
    )
    inside = lp * (1 + side * 1e-6)
    assert surplus_at(table, kind, qty, entry, wallet, inside, other_mm, other_upnl) > 0


@given(positions(), contract_types, finite(-1e5, 1e5))
def test_bankruptcy_price_zeroes_equity(
    pos: Position, kind: ContractType, other_upnl: float
) -> None:
    _, qty, entry, _, wallet = pos
    bp = margin.bankruptcy_price(kind, qty, 1.0, entry, wallet, other_upnl)
    assume(bp is not None)
    assert bp is not None
    equity = wallet + other_upnl + float(margin.unrealized_pnl_usd(kind, qty, 1.0, entry, bp))
    assert equity == pytest.approx(0.0, abs=1e-9 * (abs(qty) * max(entry, bp) + abs(other_upnl)))


@given(quantities, prices, finite(0.0, 1.0), contract_types)
def test_bankruptcy_prices_mirror_around_entry(
    qty: float, entry: float, cushion: float, kind: ContractType
) -> None:
    wallet = cushion * qty * entry if kind is LINEAR else cushion * qty
    long = margin.bankruptcy_price(kind, qty, 1.0, entry, wallet)
    short = margin.bankruptcy_price(kind, -qty, 1.0, entry, wallet)
    assume(long is not None and short is not None)
    assert long is not None and short is not None
    assert entry - long == pytest.approx(short - entry, rel=1e-9, abs=1e-9 * entry)


@given(tier_tables(), quantities, prices, finite(0.0, 1.0))
def test_inverse_liquidation_prices_mirror_around_entry(
    table: TierTable, qty: float, entry: float, cushion: float
) -> None:
    # USD notional of an inverse position is its face value: MM does not move with price, so the
    # long and short liquidation prices are mirror images around entry.
    wallet = cushion * qty
    long = margin.liquidation_price(INVERSE, qty, 1.0, entry, table, wallet)
    short = margin.liquidation_price(INVERSE, -qty, 1.0, entry, table, wallet)
    assume(long is not None and short is not None)
    assert long is not None and short is not None
    assert entry - long == pytest.approx(short - entry, rel=1e-9, abs=1e-9 * entry)


@given(positions())
def test_liquidation_comes_before_bankruptcy(pos: Position) -> None:
    table, qty, entry, _, wallet = pos
    lp = margin.liquidation_price(LINEAR, qty, 1.0, entry, table, wallet)
    bp = margin.bankruptcy_price(LINEAR, qty, 1.0, entry, wallet)
    assume(lp is not None and bp is not None)
    assert lp is not None and bp is not None
    if qty > 0:
        assert bp < lp
    else:
        assert lp < bp


@given(sides, quantities, prices, finite(0.01, 0.5), finite(1.0, 100.0))
def test_hyperliquid_liquidation_price_is_consistent(
    side: float, qty: float, mark: float, cushion: float, max_lev: float
) -> None:
    rate = float(margin.hyperliquid_maintenance_rate(max_lev))
    value = cushion * qty * mark
    liq = margin.hyperliquid_liquidation_price(side * qty, mark, value - qty * mark * rate, max_lev)
    assume(liq is not None)
    assert liq is not None
    equity = value + side * qty * (liq - mark)
    assert equity == pytest.approx(qty * liq * rate, rel=1e-9, abs=1e-9 * qty * mark)


# -- Uniform-shock distance ------------------------------------------------------------------------


@dataclass
class Account:
    wallet: float
    kinds: np.ndarray
    size: np.ndarray
    entry: np.ndarray
    mark: np.ndarray
    tables: list[TierTable]
    isolated: np.ndarray
    isolated_margin: np.ndarray

    def pools(self) -> list[tuple[float, np.ndarray]]:
        open_ = self.size != 0
        out = []
        cross = np.flatnonzero(open_ & ~self.isolated)
        if cross.size:
            out.append((self.wallet, cross))
        out.extend(
            (float(self.isolated_margin[i]), np.array([i]))
            for i in np.flatnonzero(open_ & self.isolated)
        )
        return out

    def surplus_and_equity(self, shocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pool (rows) and shock (columns): equity − MM, and equity."""
        surplus, equity = [], []
        for wallet, idx in self.pools():
            eq, mm = margin.equity_and_mm_at_shock(
                shocks,
                wallet,
                self.kinds[idx],
                self.size[idx],
                1.0,
                self.entry[idx],
                self.mark[idx],
                [self.tables[i] for i in idx],
            )
            surplus.append(eq - mm)
            equity.append(eq)
        if not (self.size[~self.isolated] != 0).any():
            # the cross pool without positions: equity = wallet and MM = 0 at every move;
            # liquidatable / bankrupt iff in debt (utilization 0 when flat, inf when < 0)
            flag = np.full(shocks.shape, self.wallet if self.wallet < 0 else 1.0)
            surplus.append(flag)
            equity.append(flag)
        return np.array(surplus), np.array(equity)


@st.composite
def accounts(draw: st.DrawFn) -> Account:
    n = draw(st.integers(1, 4))
    kinds = np.array([draw(contract_types).value for _ in range(n)])
    size = np.array([draw(sides) * draw(quantities) for _ in range(n)])
    entry = np.array([draw(prices) for _ in range(n)])
    mark = entry * np.array([draw(finite(0.9, 1.1)) for _ in range(n)])
    notional = margin.notional_usd(kinds, size, 1.0, mark)
    tables = [draw(tier_tables(scale=float(x))) for x in notional]
    isolated = np.array([draw(st.booleans()) for _ in range(n)])
    margin_ratio = np.array([draw(finite(0.02, 0.5)) for _ in range(n)])
    isolated_margin = np.where(isolated, notional * margin_ratio, 0.0)
    wallet = float(notional.sum()) * draw(finite(-0.02, 0.6))
    return Account(wallet, kinds, size, entry, mark, tables, isolated, isolated_margin)


def brute_first(shocks: np.ndarray, hit: np.ndarray) -> int | None:
    idx = np.flatnonzero(hit)
    return int(idx[0]) if idx.size else None


def check_against_scan(exact: float, grid: np.ndarray, hit: np.ndarray) -> None:
    first = brute_first(grid, hit)
    if first is None:
        assert exact > grid[-1] - 1e-9
    elif first == 0:
        assert exact == pytest.approx(0.0, abs=1e-9)
    else:
        assert grid[first - 1] - 1e-9 <= exact <= grid[first] + 1e-9


@given(accounts())
def test_shock_distance_matches_a_dense_scan(acct: Account) -> None:
    distance = margin.shock_distance(
        acct.wallet,
        acct.kinds,
        acct.size,
        1.0,
        acct.entry,
        acct.mark,
        acct.tables,
        acct.isolated,
        acct.isolated_margin,
    )
    for direction, liq, bankrupt, top in (
        (-1.0, distance.liquidation_down, distance.bankruptcy_down, 1.0),
        (1.0, distance.liquidation_up, distance.bankruptcy_up, 5.0),
    ):
        grid = np.linspace(0.0, top, 5001)
        surplus, equity = acct.surplus_and_equity(direction * grid)
        check_against_scan(liq, grid, np.asarray((surplus <= 0).any(axis=0)))
        check_against_scan(bankrupt, grid, np.asarray((equity <= 0).any(axis=0)))
        # exact: at s*, some pool has MM == equity (resp. equity == 0)
        scale = float(margin.notional_usd(acct.kinds, acct.size, 1.0, acct.mark).sum()) * (1 + top)
        for exact, which in ((liq, 0), (bankrupt, 1)):
            if 0 < exact < math.inf:
                at = acct.surplus_and_equity(np.array([direction * exact]))[which][:, 0]
                assert np.min(np.abs(at)) == pytest.approx(0.0, abs=1e-9 * scale)
        assert liq <= bankrupt + 1e-12  # MM ≥ 0: liquidatable no later than bankrupt


@given(quantities, prices, finite(0.01, 1.0))
def test_bankruptcy_shock_is_symmetric_in_side(qty: float, mark: float, cushion: float) -> None:
    table = TierTable.from_tiers((MarginTier(floor_notional_usd=0, mmr=0.01, max_leverage=50),))
    wallet = cushion * qty * mark
    long = margin.shock_distance(wallet, LINEAR, qty, 1.0, mark, mark, [table])
    short = margin.shock_distance(wallet, LINEAR, -qty, 1.0, mark, mark, [table])
    assert long.bankruptcy_down == pytest.approx(short.bankruptcy_up)
    # linear: equity = wallet + q·mark·s → zero at s = −cushion (long) / +cushion (short)
    assert long.bankruptcy_down == pytest.approx(cushion)


# -- Insurance fund and socialization --------------------------------------------------------------


@given(sides, finite(0.01, 10.0), prices, finite(-0.2, 0.2), finite(0.9, 1.1), finite(0.0, 0.05))
def test_dydx_fund_delta_conserves_value(
    side: float, qty: float, oracle: float, tnc_ratio: float, fill_ratio: float, fee: float
) -> None:
    # an account under water or near it; full close at some fill price
    size = side * qty
    mmf = 0.05
    usdc = -size * oracle + tnc_ratio * qty * oracle
    bankruptcy = margin.dydx_close_bankruptcy_quote(size, -size, usdc, oracle, mmf)
    quote = size * oracle * fill_ratio  # > 0 when selling a long, < 0 when buying back a short
    fund = float(margin.dydx_insurance_fund_delta(quote, bankruptcy, fee))
    account_after = usdc + quote - fund
    # conservation: what the account and the fund end with is what the fill produced
    assert account_after + fund == pytest.approx(usdc + quote)
    tol = 1e-9 * qty * oracle
    if quote - bankruptcy <= 0:
        assert account_after == pytest.approx(0.0, abs=tol)  # the fund tops the account up to 0
    else:
        assert account_after >= -tol  # the account keeps the rest ...
        assert 0 <= fund <= abs(quote) * fee + tol  # ... and pays at most the max fee


@given(sides, quantities, prices, finite(0.0, 0.5), finite(0.8, 1.2))
def test_bitmex_fund_delta_leaves_the_account_at_zero(
    side: float, qty: float, entry: float, cushion: float, fill_ratio: float
) -> None:
    size, wallet = side * qty, cushion * qty * entry
    bp = margin.bankruptcy_price(LINEAR, size, 1.0, entry, wallet)
    assume(bp is not None)
    assert bp is not None
    fill = bp * fill_ratio
    fund = float(margin.bitmex_insurance_fund_delta(size, fill, bp))
    account = wallet + float(margin.unrealized_pnl_linear(size, 1.0, entry, fill)) - fund
    assert account == pytest.approx(0.0, abs=1e-9 * qty * entry)


@given(finite(0.0, 1e9), st.lists(finite(-1e6, 1e6), min_size=1, max_size=50))
def test_pro_rata_shares_sum_to_the_loss(loss: float, weights: list[float]) -> None:
    shares = adl.socialize_pro_rata(loss, weights)
    assert (shares >= 0).all()
    if sum(abs(w) for w in weights) > 0:
        assert shares.sum() == pytest.approx(loss, rel=1e-9)


@given(finite(0.0, 1e6), st.lists(finite(-1e6, 1e6), max_size=4))
def test_waterfall_never_takes_more_than_the_loss(loss: float, pools: list[float]) -> None:
    taken, remaining = adl.cover_from_pools(loss, *pools)
    assert remaining >= 0
    assert sum(taken) + remaining == pytest.approx(loss)
    assert all(0 <= t <= max(p, 0) for t, p in zip(taken, pools, strict=True))


@given(st.lists(finite(-1e3, 1e3), min_size=1, max_size=60))
def test_lights_are_in_range_and_monotone_in_score(scores: list[float]) -> None:
    s = np.array(scores)
    lights = adl.adl_lights(s)
    assert ((lights >= 1) & (lights <= 5)).all()
    order = np.argsort(s, kind="stable")
    assert (np.diff(lights[order]) >= 0).all()


# -- Vectorized price variants ---------------------------------------------------------------------


@given(
    tier_tables(),
    st.lists(
        st.tuples(contract_types, sides, quantities, prices, finite(0.0, 1.2), finite(0.0, 1e4)),
        min_size=1,
        max_size=20,
    ),
)
def test_vectorized_prices_match_scalar(
    table: TierTable, rows: list[tuple[ContractType, float, float, float, float, float]]
) -> None:
    kinds = [r[0].value for r in rows]
    size = np.array([r[1] * r[2] for r in rows])
    entry = np.array([r[3] for r in rows])
    wallet = np.abs(size) * entry * np.array([r[4] for r in rows])
    other_mm = np.array([r[5] for r in rows])
    lps = margin.liquidation_prices(kinds, size, 1.0, entry, table, wallet, other_mm)
    bps = margin.bankruptcy_prices(kinds, size, 1.0, entry, wallet)
    for i, kind in enumerate(kinds):
        lp = margin.liquidation_price(kind, size[i], 1.0, entry[i], table, wallet[i], other_mm[i])
        bp = margin.bankruptcy_price(kind, size[i], 1.0, entry[i], wallet[i])
        for vector, scalar in ((lps[i], lp), (bps[i], bp)):
            if scalar is None:
                assert np.isnan(vector)
            else:
                assert vector == pytest.approx(scalar, rel=1e-9)


# Costs that fall into denormals (< 2.2e-308 USD) have no relative precision: a 2e-161 fee on a
# 2e-161 notional costs 4.3e-322, 0.4 % more per dollar than the fee. So the fee ratio comes
# from the domain an Instrument accepts (0 or ≥ MIN_FEE_RATIO) and the notional is 0 or at
# least 1e-250 USD (no position is smaller; fee × notional then stays a normal float).
fee_ratios = st.just(0.0) | finite(MIN_FEE_RATIO, 0.05)
small_notionals = st.just(0.0) | finite(1e-250, 1e9)


@given(small_notionals, finite(1e-3, 1e9), fee_ratios, finite(0.0, 2.0), finite(1e3, 1e9))
@example(2.0694380251275557e-161, 1.0, 1e-9, 0.0, 1e3)  # the denormal case, at a valid fee
def test_liquidation_cost_is_fee_plus_increasing_impact(
    n1: float, n2: float, fee: float, impact: float, depth: float
) -> None:
    small, large = min(n1, n2), max(n1, n2)
    cost = margin.liquidation_cost_usd(np.array([small, large, -large]), fee, impact, depth)
    assert cost[0] >= fee * small
    assert cost[1] >= cost[0]
    assert cost[2] == cost[1]  # sign of the notional does not matter
    # cost ratio (per dollar closed) grows with size: square-root impact
    if small > 0:
        assert cost[1] / large >= cost[0] / small * (1 - 1e-12)
