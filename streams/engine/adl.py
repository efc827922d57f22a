"""Auto-deleveraging (ADL) ranking scores, quantile lights, and pro-rata loss socialization.

All functions are vectorized over candidate positions (NumPy float64 arrays, broadcasting) and
return a score per position: the **higher** the score, the earlier the position is deleveraged.
Longs and shorts are ranked separately (pass ``sides`` to :func:`adl_lights`).

* BitMEX: ``PnL% × effective leverage`` if PnL% > 0 else ``PnL% / effective leverage``.
* Binance: ``LeveragePnL = PnlPercent × MarginRatio``.
* Hyperliquid: ``(mark / entry) × (notional / account value)``.
* Drift-style socialization: a loss shared pro rata to weights (e.g. open base of all holders).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streams.engine.tiers import FloatArray

IntArray = NDArray[np.int64]
LIGHTS = 5  # 20 % quantiles


def _f64(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def bitmex_score_from_values(
    mark_value: ArrayLike, entry_value: ArrayLike, bankrupt_value: ArrayLike
) -> FloatArray:
    """BitMEX ranking from signed position values (size × price; negative for shorts).

    ``PnL% = (mark value − entry value) / |entry value|``;
    ``effective leverage = |mark value| / (mark value − bankrupt value)``;
    ``rank = PnL% × leverage`` if PnL% > 0 else ``PnL% / leverage``.
    A position at its bankruptcy value has infinite leverage (loss → score 0, profit → +inf).
    """
    mark_v, entry_v, bankrupt_v = _f64(mark_value), _f64(entry_value), _f64(bankrupt_value)
    pnl_pct = (mark_v - entry_v) / np.abs(entry_v)
    with np.errstate(divide="ignore", invalid="ignore"):
        leverage = np.abs(mark_v) / (mark_v - bankrupt_v)
        score = np.where(pnl_pct > 0, pnl_pct * leverage, pnl_pct / leverage)
    return np.where(np.isnan(score), 0.0, score)


def bitmex_score(
    size: ArrayLike, entry: ArrayLike, mark: ArrayLike, bankruptcy_price: ArrayLike
) -> FloatArray:
    """:func:`bitmex_score_from_values` for linear positions: value = signed size × price."""
    q = _f64(size)
    return bitmex_score_from_values(q * _f64(mark), q * _f64(entry), q * _f64(bankruptcy_price))


def binance_leverage_pnl(
    unrealized_pnl_usd: ArrayLike, wallet_balance_usd: ArrayLike, maintenance_margin_usd: ArrayLike
) -> FloatArray:
    """Binance ``LeveragePnL = PnlPercent × MarginRatio``.

    ``PnlPercent = max(0, uPnL) / max(1, WB)``;
    ``MarginRatio = MM / (WB + uPnL)`` if ``WB + uPnL > 0`` else 0.
    """
    upnl, wallet = _f64(unrealized_pnl_usd), _f64(wallet_balance_usd)
    mm = _f64(maintenance_margin_usd)
    pnl_percent = np.maximum(0.0, upnl) / np.maximum(1.0, wallet)
    equity = wallet + upnl
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_ratio = np.where(equity > 0, mm / equity, 0.0)
    return pnl_percent * margin_ratio


def hyperliquid_score(
    mark: ArrayLike,
    entry: ArrayLike,
    notional_usd: ArrayLike,
    account_value_usd: ArrayLike,
    size: ArrayLike | None = None,
) -> FloatArray:
    """Hyperliquid ``(mark / entry) × (notional / account value)``.

    The published key is written for a long. With ``size`` given, shorts use ``entry / mark``
    so that a profitable short also ranks higher (riskmon's convention; see docs/margin-math.md).
    Accounts with account value ≤ 0 (bankrupt themselves) get ``-inf``: never ADL counterparties.
    """
    ratio = _f64(mark) / _f64(entry)
    if size is not None:
        ratio = np.where(_f64(size) < 0, 1.0 / ratio, ratio)
    value = _f64(account_value_usd)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = ratio * np.abs(_f64(notional_usd)) / value
    return np.where(value > 0, score, -np.inf)


def adl_quantiles(scores: ArrayLike) -> FloatArray:
    """Binance-style quantile ``rank / count`` in (0, 1]; ties share the highest rank."""
    s = _f64(scores)
    if s.size == 0:
        return s.copy()
    ordered = np.sort(s, axis=None)
    return np.searchsorted(ordered, s, side="right") / float(s.size)


def adl_lights(scores: ArrayLike, sides: ArrayLike | None = None) -> IntArray:
    """ADL indicator 1..5 (20 % quantiles; 5 = first in the queue), per side if ``sides`` given.

    ``sides`` is any signed array (e.g. position sizes): longs and shorts are ranked separately.
    """
    s = _f64(scores)
    lights = np.zeros(s.shape, dtype=np.int64)
    groups = (
        [np.ones(s.shape, dtype=np.bool_)] if sides is None else [_f64(sides) > 0, _f64(sides) < 0]
    )
    for mask in groups:
        if mask.any():
            quantile = adl_quantiles(s[mask])
            lights[mask] = np.clip(np.ceil(quantile * LIGHTS - 1e-9), 1, LIGHTS)
    return lights


def adl_order(scores: ArrayLike) -> IntArray:
    """Indices of candidates in deleveraging order (highest score first, stable)."""
    return np.argsort(-_f64(scores), kind="stable").astype(np.int64)


# -- Socialization ---------------------------------------------------------------------------------


def socialize_pro_rata(loss: float, weights: ArrayLike) -> FloatArray:
    """Share ``loss`` in proportion to ``|weights|`` (Drift: open base of longs and shorts).

    Returns each holder's loss (sums to ``loss``); zeros when there is no loss or no weight.
    """
    w = np.abs(_f64(weights))
    total = float(w.sum())
    if loss <= 0 or total <= 0:
        return np.zeros_like(w)
    return (w / total) * loss


def cover_from_pools(loss: float, *pools: float) -> tuple[list[float], float]:
    """Waterfall: take ``loss`` from each pool in turn (fund, then fee pool, ...).

    Returns ``(taken from each pool, remainder to socialize)``. Negative pools give nothing.
    """
    taken: list[float] = []
    remaining = max(loss, 0.0)
    for pool in pools:
        part = min(remaining, max(pool, 0.0))
        taken.append(part)
        remaining -= part
    return taken, remaining
