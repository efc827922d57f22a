"""Margin math: PnL, notional, liquidation and bankruptcy prices, liquidation cost, shock distance.

A library usable on its own (pure NumPy, float64, no I/O). Conventions (see docs/margin-math.md):

* ``size`` is the signed number of contracts (> 0 long, < 0 short); ``contract_size`` is base units
  per contract for linear contracts and the USD face value per contract for inverse ones.
* riskmon settles in USD. Linear PnL is ``q × (mark − entry)`` with ``q = size × contract_size``.
  Inverse PnL is ``q × (1/entry − 1/mark)`` coin, valued in USD **at mark**:
  ``q × (mark/entry − 1)``; an inverse position's USD notional is ``|q|`` (its face value).
* Maintenance / initial margin come from :class:`~streams.engine.tiers.TierTable` on USD notional.
* Functions named after a venue reproduce that venue's published form (risk-formulas.md).

Vectorized functions broadcast over NumPy arrays and return float64 arrays (a NumPy scalar for
scalar inputs); price functions return ``None`` for "no such price" (the venues' "--").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streams.engine.models import ContractType
from streams.engine.tiers import FloatArray, TierTable

BoolArray = NDArray[np.bool_]
# One contract type, or one per element (strings, or booleans meaning "inverse").
ContractTypes = ContractType | str | ArrayLike


def _f64(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def is_inverse(contract_type: ContractTypes) -> BoolArray:
    """Boolean mask: ``True`` where the contract is inverse.

    Accepts a :class:`ContractType` (or its string value), an array of them, or a boolean array
    that already is the mask.
    """
    arr = np.asarray(contract_type)
    if arr.dtype == np.bool_:
        return arr
    return np.asarray(arr == ContractType.INVERSE.value, dtype=np.bool_)


# -- PnL and notional ------------------------------------------------------------------------------


def unrealized_pnl_linear(
    size: ArrayLike, contract_size: ArrayLike, entry: ArrayLike, mark: ArrayLike
) -> FloatArray:
    """Linear contract PnL in quote currency (USD): ``size × contract_size × (mark − entry)``."""
    return _f64(size) * _f64(contract_size) * (_f64(mark) - _f64(entry))


def unrealized_pnl_inverse_coin(
    size: ArrayLike, contract_size: ArrayLike, entry: ArrayLike, mark: ArrayLike
) -> FloatArray:
    """Inverse contract PnL in the base coin: ``size × contract_size × (1/entry − 1/mark)``."""
    return _f64(size) * _f64(contract_size) * (1.0 / _f64(entry) - 1.0 / _f64(mark))


def unrealized_pnl_inverse_usd(
    size: ArrayLike, contract_size: ArrayLike, entry: ArrayLike, mark: ArrayLike
) -> FloatArray:
    """Inverse contract PnL in USD at mark: coin PnL × mark = ``q × (mark/entry − 1)``."""
    return _f64(size) * _f64(contract_size) * (_f64(mark) / _f64(entry) - 1.0)


def unrealized_pnl_usd(
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    entry: ArrayLike,
    mark: ArrayLike,
) -> FloatArray:
    """Unrealized PnL in USD of linear or inverse positions (vectorized, broadcasting)."""
    inverse = is_inverse(contract_type)
    q = _f64(size) * _f64(contract_size)
    e, m = _f64(entry), _f64(mark)
    if not inverse.any():
        return q * (m - e)
    if inverse.all():
        return q * (m / e - 1.0)
    return np.where(inverse, q * (m / e - 1.0), q * (m - e))


def notional_usd(
    contract_type: ContractTypes, size: ArrayLike, contract_size: ArrayLike, mark: ArrayLike
) -> FloatArray:
    """Absolute notional in USD: ``|q| × mark`` (linear) or ``|q|`` (inverse, USD face value)."""
    inverse = is_inverse(contract_type)
    q = np.abs(_f64(size) * _f64(contract_size))
    m = _f64(mark)
    if not inverse.any():
        return q * m
    return np.where(inverse, q * np.ones_like(m), q * m)


def maintenance_margin_usd(
    table: TierTable,
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    mark: ArrayLike,
) -> FloatArray:
    """Tiered maintenance margin of positions in one instrument (vectorized over positions)."""
    return table.maintenance_margin(notional_usd(contract_type, size, contract_size, mark))


def initial_margin_usd(
    table: TierTable,
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    mark: ArrayLike,
) -> FloatArray:
    """Tiered initial margin (IMR = 1 / max leverage of the tier), vectorized over positions."""
    return table.initial_margin(notional_usd(contract_type, size, contract_size, mark))


def margin_utilization(mm_usd: ArrayLike, equity_usd: ArrayLike) -> FloatArray:
    """MM / equity; ``inf`` when equity ≤ 0 and MM > 0, 0 when MM is 0 (≥ 1 is liquidatable)."""
    mm, eq = _f64(mm_usd), _f64(equity_usd)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mm / eq
    return np.where(mm <= 0, 0.0, np.where(eq <= 0, np.inf, ratio))


# -- Liquidation cost ------------------------------------------------------------------------------


def liquidation_cost_usd(
    notional_usd: ArrayLike, fee_ratio: ArrayLike, impact_coef: ArrayLike, depth_usd: ArrayLike
) -> FloatArray:
    """Cost of a forced close: fee plus square-root impact (vectorized).

    ``cost = n × (fee_ratio + impact_coef × sqrt(n / depth_usd))`` with ``n = |notional_usd|``.
    """
    n = np.abs(_f64(notional_usd))
    return n * (_f64(fee_ratio) + _f64(impact_coef) * np.sqrt(n / _f64(depth_usd)))


# -- Liquidation and bankruptcy prices -------------------------------------------------------------


def binance_liquidation_price_in_tier(
    size: float,
    entry: float,
    wallet_usd: float,
    mmr: float,
    maintenance_amount_usd: float,
    other_mm_usd: float = 0.0,
    other_upnl_usd: float = 0.0,
) -> float:
    """Binance one-way LP for one given tier (may be ≤ 0; see :func:`liquidation_price`).

    ``LP = (WB − TMM1 + UPNL1 + cum − side × |q| × entry) / (|q| × MMR − side × |q|)``
    where ``size`` is the signed quantity in base units (linear).
    """
    side = float(np.sign(size))
    qty = abs(size)
    numerator = wallet_usd - other_mm_usd + other_upnl_usd + maintenance_amount_usd
    return (numerator - side * qty * entry) / (qty * mmr - side * qty)


def liquidation_price(
    contract_type: ContractType | str,
    size: float,
    contract_size: float,
    entry: float,
    table: TierTable,
    wallet_usd: float,
    other_mm_usd: float = 0.0,
    other_upnl_usd: float = 0.0,
) -> float | None:
    """Mark at which the position makes its (sub-)account liquidatable (MM = equity).

    Isolated: ``wallet_usd`` is the position's isolated margin and the ``other_*`` terms are 0.
    Cross: ``wallet_usd`` is the cross wallet and ``other_mm_usd`` / ``other_upnl_usd`` the MM and
    unrealized PnL of the account's other cross positions at their current mark (Binance one-way).

    Linear: the Binance formula, with the tier re-selected at the liquidation price: solve in one
    tier, look up the tier at that LP, re-solve until the tier at LP is the tier used. MM is convex
    in notional (each tier's line lies below it), so the iterates move monotonically toward the
    answer (up for a long, down for a short) and stop within ``len(tiers)`` steps.
    Inverse (USD at mark): the USD notional does not move with price, so MM is a constant and
    the equation is linear.
    Returns ``None`` when there is no positive liquidation price or the position is flat.
    """
    if size == 0:
        return None
    q = size * contract_size
    if bool(is_inverse(contract_type)):
        mm = float(table.maintenance_margin(abs(q))) + other_mm_usd
        price = entry * (1.0 + (mm - wallet_usd - other_upnl_usd) / q)
        return price if price > 0 else None
    return _linear_liquidation_price(q, entry, table, wallet_usd, other_mm_usd, other_upnl_usd)


def _linear_liquidation_price(
    q: float,
    entry: float,
    table: TierTable,
    wallet_usd: float,
    other_mm_usd: float,
    other_upnl_usd: float,
) -> float | None:
    def in_tier(k: int) -> float:
        return binance_liquidation_price_in_tier(
            q,
            entry,
            wallet_usd,
            float(table.mmr[k]),
            float(table.mm_amount_usd[k]),
            other_mm_usd,
            other_upnl_usd,
        )

    def tier_at(price: float) -> int:
        return int(table.tier_index(max(price, 0.0) * abs(q)))

    # Start from tier 0 (any start converges: each tier's LP bounds the true LP from the safe
    # side), then re-select the tier at LP until it is consistent.
    k = 0
    price = in_tier(k)
    for _ in range(len(table.mmr)):
        k_at = tier_at(price)
        if k_at == k:
            break
        k = k_at
        price = in_tier(k)
    else:  # pragma: no cover - the iteration is monotone; this is the closed form of its limit
        candidates = [in_tier(j) for j in range(len(table.mmr))]
        price = max(candidates) if q > 0 else min(candidates)
    return price if price > 0 else None


def bankruptcy_price(
    contract_type: ContractType | str,
    size: float,
    contract_size: float,
    entry: float,
    wallet_usd: float,
    other_upnl_usd: float = 0.0,
) -> float | None:
    """Mark at which the (sub-)account's equity reaches zero; ``None`` if none is positive.

    Isolated: ``wallet_usd`` is the isolated margin. Cross: the cross wallet, with the other cross
    positions' PnL held at their current mark in ``other_upnl_usd``.
    """
    if size == 0:
        return None
    q = size * contract_size
    cushion = wallet_usd + other_upnl_usd
    inverse = bool(is_inverse(contract_type))
    price = entry * (1.0 - cushion / q) if inverse else entry - cushion / q
    return price if price > 0 else None


def liquidation_prices(
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    entry: ArrayLike,
    table: TierTable,
    wallet_usd: ArrayLike,
    other_mm_usd: ArrayLike = 0.0,
    other_upnl_usd: ArrayLike = 0.0,
) -> FloatArray:
    """Vectorized :func:`liquidation_price` for positions of one instrument; NaN = no price.

    Uses the closed form of the tier iteration: MM is the maximum of its tiers' lines, so the
    liquidation price is the largest per-tier Binance LP for a long and the smallest for a short.
    """
    q = np.atleast_1d(_f64(size) * _f64(contract_size))
    n = q.shape[0]
    e = np.broadcast_to(_f64(entry), (n,))
    cushion = np.broadcast_to(_f64(wallet_usd) - _f64(other_mm_usd) + _f64(other_upnl_usd), (n,))
    inverse = np.broadcast_to(is_inverse(contract_type), (n,))
    qty = np.abs(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        # linear: one column per tier, then max (long) / min (short)
        per_tier = (cushion[:, None] + table.mm_amount_usd[None, :] - (q * e)[:, None]) / (
            qty[:, None] * table.mmr[None, :] - q[:, None]
        )
        linear = np.where(q > 0, per_tier.max(axis=1), per_tier.min(axis=1))
        # inverse (USD at mark): MM is constant in price
        mm = table.maintenance_margin(qty)
        inverse_lp = e * (1.0 + (mm - cushion) / q)
    price = np.where(inverse, inverse_lp, linear)
    return np.where((q != 0) & (price > 0), price, np.nan)


def bankruptcy_prices(
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    entry: ArrayLike,
    wallet_usd: ArrayLike,
    other_upnl_usd: ArrayLike = 0.0,
) -> FloatArray:
    """Vectorized :func:`bankruptcy_price`; NaN where there is none."""
    q = _f64(size) * _f64(contract_size)
    e = _f64(entry)
    cushion = _f64(wallet_usd) + _f64(other_upnl_usd)
    with np.errstate(divide="ignore", invalid="ignore"):
        price = np.where(is_inverse(contract_type), e * (1.0 - cushion / q), e - cushion / q)
    return np.where((q != 0) & (price > 0), price, np.nan)


def cross_liquidation_prices(
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    entry: ArrayLike,
    mark: ArrayLike,
    tables: Sequence[TierTable],
    wallet_usd: float,
) -> list[float | None]:
    """Liquidation price of each cross position of one account, the others held at their mark."""
    sizes = np.atleast_1d(_f64(size))
    n = sizes.shape[0]
    cs, e, m = (np.broadcast_to(_f64(x), (n,)) for x in (contract_size, entry, mark))
    inverse = np.broadcast_to(is_inverse(contract_type), (n,))
    types = [ContractType.INVERSE if inv else ContractType.LINEAR for inv in inverse]
    pnl = unrealized_pnl_usd(inverse, sizes, cs, e, m)
    notional = notional_usd(inverse, sizes, cs, m)
    mm = np.array([float(tables[i].maintenance_margin(notional[i])) for i in range(n)])
    out: list[float | None] = []
    for i in range(n):
        out.append(
            liquidation_price(
                types[i],
                float(sizes[i]),
                float(cs[i]),
                float(e[i]),
                tables[i],
                wallet_usd,
                float(mm.sum() - mm[i]),
                float(pnl.sum() - pnl[i]),
            )
        )
    return out


# -- Venue-specific forms --------------------------------------------------------------------------


def bybit_isolated_liquidation_price(
    size: float,
    entry: float,
    initial_margin_usd: float,
    maintenance_margin_usd: float,
    extra_margin_usd: float = 0.0,
) -> float:
    """Bybit USDT isolated: ``LP = entry ∓ (IM + extra − MM) / |size|`` (MM fixed at entry)."""
    side = float(np.sign(size))
    cushion = initial_margin_usd + extra_margin_usd - maintenance_margin_usd
    return entry - side * cushion / abs(size)


def bybit_isolated_bankruptcy_price(size: float, entry: float, leverage: float) -> float:
    """Linear isolated bankruptcy price, no extra margin: ``entry × (1 ∓ 1/leverage)``."""
    return entry * (1.0 - float(np.sign(size)) / leverage)


def inverse_bankruptcy_price(size: float, entry: float, leverage: float) -> float | None:
    """Coin-margined inverse bankruptcy price: long ``entry × L/(L+1)``, short ``entry × L/(L−1)``.

    ``None`` for a flat position and for a 1x (or lower) short, which never goes bankrupt.
    """
    if size == 0:
        return None
    if size > 0:
        return entry * leverage / (leverage + 1.0)
    if leverage <= 1.0:
        return None
    return entry * leverage / (leverage - 1.0)


def hyperliquid_maintenance_rate(max_leverage: ArrayLike) -> FloatArray:
    """Hyperliquid maintenance margin rate: ``1 / (2 × max leverage)``."""
    return 1.0 / (2.0 * _f64(max_leverage))


def hyperliquid_liquidation_price(
    size: float, mark: float, margin_available_usd: float, max_leverage: float
) -> float | None:
    """Hyperliquid: ``liq = mark − side × margin_available / |size| / (1 − l × side)``.

    ``l = 1 / (2 × max leverage)``; ``margin_available`` = account value − MM (cross) or
    isolated margin − MM (isolated), both at ``mark``. ``size`` in base units.
    """
    if size == 0:
        return None
    side = float(np.sign(size))
    rate = 1.0 / (2.0 * max_leverage)
    price = mark - side * margin_available_usd / abs(size) / (1.0 - rate * side)
    return price if price > 0 else None


def dydx_bankruptcy_quote(
    delta_net_notional_usd: float, delta_mmr_usd: float, tnc_usd: float, tmmr_usd: float
) -> float:
    """dYdX v4: quote the account must receive so closing δ leaves it at exactly zero.

    ``bankruptcy_quote = −ΔNNV − TNC × |ΔMMR| / TMMR`` (positive: the account receives USDC).
    """
    return -delta_net_notional_usd - tnc_usd * abs(delta_mmr_usd) / tmmr_usd


def dydx_close_bankruptcy_quote(
    size: float, delta: float, usdc: float, oracle_price: float, maintenance_fraction: float
) -> float:
    """:func:`dydx_bankruptcy_quote` for an account holding one position of ``size`` (base units).

    ``delta`` is the signed change of the position (−size for a full close).
    """
    tnc = usdc + size * oracle_price
    tmmr = abs(size) * oracle_price * maintenance_fraction
    delta_mmr = (abs(size + delta) - abs(size)) * oracle_price * maintenance_fraction
    return dydx_bankruptcy_quote(delta * oracle_price, delta_mmr, tnc, tmmr)


def dydx_insurance_fund_delta(
    quote_received: ArrayLike, bankruptcy_quote: ArrayLike, max_liquidation_fee: ArrayLike
) -> FloatArray:
    """Change of the insurance fund for a liquidation fill (> 0: the fund receives).

    ``d = quote_received − bankruptcy_quote``; if ``d ≤ 0`` the fund pays ``−d``, else the account
    pays the fund ``min(|quote_received| × max_liquidation_fee, d)``.
    """
    quote = _f64(quote_received)
    d = quote - _f64(bankruptcy_quote)
    fee = np.abs(quote) * _f64(max_liquidation_fee)
    return np.where(d <= 0, d, np.minimum(fee, d))


def bitmex_insurance_fund_delta(
    size: ArrayLike, fill_price: ArrayLike, bankruptcy_price: ArrayLike
) -> FloatArray:
    """BitMEX: the fund keeps the whole difference between the fill and the bankruptcy price.

    ``size × (fill − bankruptcy)`` for a linear position (size signed): > 0 adds to the fund.
    """
    return _f64(size) * (_f64(fill_price) - _f64(bankruptcy_price))


# -- Uniform-shock distance ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShockDistance:
    """Smallest uniform relative move (all marks × (1 + s)) reaching a state, as a magnitude.

    ``0.18`` means an 18 % move; ``0.0`` means already there; ``inf`` means never (down moves are
    bounded by 1.0 = every price at zero).
    """

    liquidation_down: float
    liquidation_up: float
    bankruptcy_down: float
    bankruptcy_up: float


@dataclass(frozen=True, slots=True)
class _Pool:
    """Positions of one margin pool, linear in the shock s: pnl = a + b s, notional = c + d s.

    Tier tables are stacked per position, padded with ``+inf`` floors to a common tier count, so
    MM is evaluated for every position and every shock in one vectorized step.
    """

    a: FloatArray
    b: FloatArray
    c: FloatArray
    d: FloatArray
    floors: FloatArray  # (positions, tiers)
    mmr: FloatArray
    cum: FloatArray

    def take(self, idx: NDArray[np.intp]) -> _Pool:
        return _Pool(
            self.a[idx],
            self.b[idx],
            self.c[idx],
            self.d[idx],
            self.floors[idx],
            self.mmr[idx],
            self.cum[idx],
        )

    def equity_and_mm(self, shocks: FloatArray, wallet_usd: float) -> tuple[FloatArray, FloatArray]:
        s = np.atleast_1d(shocks)
        equity = wallet_usd + float(self.a.sum()) + float(self.b.sum()) * s
        notional = np.maximum(self.c[:, None] + self.d[:, None] * s[None, :], 0.0)  # (P, S)
        tier = (self.floors[:, None, :] <= notional[:, :, None]).sum(axis=2) - 1
        tier = np.maximum(tier, 0)
        mmr = np.take_along_axis(self.mmr, tier, axis=1)
        cum = np.take_along_axis(self.cum, tier, axis=1)
        mm = (notional * mmr - cum).sum(axis=0)
        return equity, mm


def _pool_of(
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    entry: ArrayLike,
    mark: ArrayLike,
    tables: Sequence[TierTable],
) -> _Pool:
    q = np.atleast_1d(_f64(size) * _f64(contract_size))
    n = q.shape[0]
    e, m = (np.broadcast_to(_f64(x), (n,)) for x in (entry, mark))
    inverse = np.broadcast_to(is_inverse(contract_type), (n,))
    b = np.where(inverse, q * m / e, q * m)  # d pnl / d s
    a = np.where(inverse, q * (m / e - 1.0), q * (m - e))
    c = np.where(inverse, np.abs(q), np.abs(q) * m)
    d = np.where(inverse, 0.0, np.abs(q) * m)
    width = max((len(t.floors_usd) for t in tables), default=1)
    floors = np.full((n, width), np.inf)
    mmr = np.zeros((n, width))
    cum = np.zeros((n, width))
    for i, table in enumerate(tables):
        k = len(table.floors_usd)
        floors[i, :k], mmr[i, :k], cum[i, :k] = table.floors_usd, table.mmr, table.mm_amount_usd
    return _Pool(a, b, c, d, floors, mmr, cum)


def equity_and_mm_at_shock(
    shock: ArrayLike,
    wallet_usd: float,
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    entry: ArrayLike,
    mark: ArrayLike,
    tables: Sequence[TierTable],
) -> tuple[FloatArray, FloatArray]:
    """Equity and MM (USD) of one margin pool when every mark is multiplied by ``1 + shock``.

    Vectorized over ``shock`` (returns arrays of its shape, at least 1-d). For an isolated
    position pass its isolated margin as the wallet.
    """
    pool = _pool_of(contract_type, size, contract_size, entry, mark, tables)
    return pool.equity_and_mm(_f64(shock), wallet_usd)


def _first_crossing(points: FloatArray, values: FloatArray, unbounded: bool) -> float:
    """First t ≥ points[0] where the piecewise-linear function through (points, values) is ≤ 0."""
    below = np.flatnonzero(values <= 0)
    if below.size:
        j = int(below[0])
        if j == 0:
            return float(points[0])
        t0, t1, v0, v1 = points[j - 1], points[j], values[j - 1], values[j]
        return float(t0 + v0 * (t1 - t0) / (v0 - v1))
    if unbounded and points.size >= 2:
        t0, t1, v0, v1 = points[-2], points[-1], values[-2], values[-1]
        if v1 < v0:
            return float(t1 + v1 * (t1 - t0) / (v0 - v1))
    return math.inf


def _pool_distances(wallet_usd: float, pool: _Pool) -> tuple[float, float, float, float]:
    """(liq_down, liq_up, bankrupt_down, bankrupt_up) for one margin pool, exact per segment."""
    # Tier breakpoints: notional c + d s crosses a floor f  ⇔  s = (f − c) / d  (d > 0 only).
    moving = pool.d > 0
    cuts = (pool.floors[moving, 1:] - pool.c[moving, None]) / pool.d[moving, None]
    cuts = cuts[np.isfinite(cuts)]
    t_down = np.unique(-cuts[(cuts < 0) & (cuts > -1.0)])
    t_up = np.unique(cuts[cuts > 0])
    t_down = np.concatenate(([0.0], t_down, [1.0]))
    t_up = np.concatenate(([0.0], t_up, [(t_up[-1] if t_up.size else 0.0) + 1.0]))
    # One evaluation at every breakpoint of both directions; f = equity − MM is linear between.
    equity, mm = pool.equity_and_mm(np.concatenate((-t_down, t_up)), wallet_usd)
    surplus = equity - mm
    split = t_down.size
    liq_down = _first_crossing(t_down, surplus[:split], unbounded=False)
    liq_up = _first_crossing(t_up, surplus[split:], unbounded=True)
    # Bankruptcy: equity0 + slope × s = 0.
    equity0, slope = wallet_usd + float(pool.a.sum()), float(pool.b.sum())
    if equity0 <= 0:
        return liq_down, liq_up, 0.0, 0.0
    bk_down = equity0 / slope if slope > 0 else math.inf
    bk_up = equity0 / -slope if slope < 0 else math.inf
    return liq_down, liq_up, (bk_down if bk_down <= 1.0 else math.inf), bk_up


def shock_distance(
    wallet_usd: float,
    contract_type: ContractTypes,
    size: ArrayLike,
    contract_size: ArrayLike,
    entry: ArrayLike,
    mark: ArrayLike,
    tables: Sequence[TierTable],
    isolated: ArrayLike | None = None,
    isolated_margin_usd: ArrayLike | None = None,
) -> ShockDistance:
    """Exact smallest uniform move making one account liquidatable / bankrupt, down and up.

    Arrays are per position (``tables[i]`` is position i's instrument). Cross positions share
    ``wallet_usd`` (the cross wallet); each position flagged ``isolated`` is its own pool backed
    by ``isolated_margin_usd[i]`` and can lose only that. The account is liquidatable (bankrupt)
    as soon as any of its pools is: MM(s) ≥ equity(s) (equity(s) ≤ 0). Flat positions and empty
    isolated pools are ignored. The cross pool exists with or without cross positions (as in the
    state machine): without any, its equity is the wallet at every move and its MM 0, so it is
    liquidatable and bankrupt at every move (distances 0) when the wallet is < 0, else never.

    Equity is linear in s (inverse PnL in USD at mark is too); MM is piecewise linear with
    breakpoints where a linear position's notional crosses a tier floor, so the crossing is
    solved exactly on the segment where it happens (no bisection).
    """
    sizes = np.atleast_1d(_f64(size))
    n = sizes.shape[0]
    iso = (
        np.zeros(n, dtype=np.bool_)
        if isolated is None
        else np.broadcast_to(np.asarray(isolated, dtype=np.bool_), (n,))
    )
    iso_margin = (
        np.zeros(n)
        if isolated_margin_usd is None
        else np.broadcast_to(_f64(isolated_margin_usd), (n,))
    )
    account = _pool_of(contract_type, sizes, contract_size, entry, mark, tables)
    open_ = sizes != 0
    pools: list[tuple[float, NDArray[np.intp]]] = []
    cross = np.flatnonzero(open_ & ~iso)
    if cross.size:
        pools.append((wallet_usd, cross))
    elif wallet_usd < 0:  # an empty cross pool in debt (utilization inf: underwater already)
        return ShockDistance(0.0, 0.0, 0.0, 0.0)
    pools.extend((float(iso_margin[i]), np.array([i])) for i in np.flatnonzero(open_ & iso))
    best = [math.inf] * 4
    for pool_wallet, idx in pools:
        found = _pool_distances(pool_wallet, account.take(idx))
        best = [min(x, y) for x, y in zip(best, found, strict=True)]
    return ShockDistance(*best)
