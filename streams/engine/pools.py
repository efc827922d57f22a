"""Per-pool coefficients of the uniform-shock stress, in a few whole-book passes.

A margin pool ("unit") is an account's cross pool (unit = account index) or one isolated position
(units ``n_accounts + i``, isolated positions in instrument order — the numbering of
:func:`streams.engine.grid_reference.flatten`). Under a uniform shock s (every mark × (1 + s)):

* equity(s) = E0 + S·s                    S = Σ qv·mark (linear and inverse valued in USD at mark)
* cost(s)   = F·(1+s) + G·(1+s)^1.5 + H    F = Σ fee·n, G = Σ impact·n^1.5/√depth of linear
                                           positions; H = the (constant) cost of inverse ones
* MM(s)     = MM0 + M1·s on [lo, hi]       the tier-stable tangent; MM is convex in s, and exact
                                           on the unit's tier-stable range [lo, hi] (the nearest
                                           tier floor any of its positions crosses)

Everything is recomputed from the book's columns on every call (one concatenation per column, a
handful of ``bincount``s); nothing is cached between calls. Cross positions take their
tier-stable slope and tier band from the book's columns (``Block.ms``/``lo``/``hi``, maintained
exactly by every price and position path); isolated positions, whose bands the tick paths do not
maintain, get their tier afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streams.engine.book import AccountBook
from streams.engine.book_batch import TierPad, tier_pad
from streams.engine.tiers import FloatArray, IntArray

BoolArray = NDArray[np.bool_]


def _bincount(idx: IntArray, weights: FloatArray | None = None, minlength: int = 0) -> FloatArray:
    return np.asarray(np.bincount(idx, weights=weights, minlength=minlength), dtype=np.float64)


@dataclass(slots=True)
class Pools:
    """Per-position columns (cross positions first, then isolated) and per-unit coefficients."""

    n_accounts: int
    n_units: int
    n_funds: int
    pad: TierPad
    # per position
    unit: IntArray
    account: IntArray
    instrument: IntArray
    fund: IntArray
    size: FloatArray
    entry: FloatArray
    mark: FloatArray
    notional: FloatArray
    upnl: FloatArray
    linear: BoolArray
    # per unit
    e0: FloatArray
    slope: FloatArray  # S
    fee: FloatArray  # F
    impact: FloatArray  # G
    const_cost: FloatArray  # H
    mm0: FloatArray
    mm1: FloatArray  # tangent slope of MM (current tiers)
    upnl0: FloatArray
    notional0: FloatArray
    mmr_max: float
    has_position: BoolArray
    lo: FloatArray  # tangent MM exact for s in [lo, hi]
    hi: FloatArray
    band_pos: IntArray  # positions whose tier changes for some shock in the range
    weights_t: FloatArray  # (funds, units): share of current notional per fund
    qv: FloatArray | None = None  # per position: signed quantity × contract value
    base: FloatArray | None = None  # per unit: wallet (cross) or isolated margin

    @property
    def weights(self) -> FloatArray:
        """(units, funds) fund shares (a transposed view)."""
        return self.weights_t.T

    @property
    def n(self) -> int:
        return self.n_units

    def mm_exact(
        self, pos: IntArray, shock: FloatArray, right: bool
    ) -> tuple[FloatArray, FloatArray]:
        """Exact MM of positions ``pos`` at per-position shocks, and its one-sided d/ds."""
        k = self.instrument[pos]
        n0 = self.notional[pos]
        lin = self.linear[pos]
        n1 = np.where(lin, n0 * (1.0 + shock), n0)
        fl = self.pad.floors[k, : self.pad.width]
        cmp = fl <= n1[:, None] if right else fl < n1[:, None]
        t = np.maximum(cmp.sum(axis=1) - 1, 0)
        rate = self.pad.mmr[k, t]
        return n1 * rate - self.pad.amt[k, t], np.where(lin, n0 * rate, 0.0)


def build_pools(book: AccountBook, shock_min: float, shock_max: float) -> Pools:
    """Coefficients of every pool of ``book``; tier bands are resolved within [min, max]."""
    insts = book.instruments
    pad = tier_pad(book)
    n_acc = book.n_accounts
    nf = max(len(book.funds), 1)
    # cross blocks grouped by fund (contiguous ranges for the fund shares), then isolated
    # blocks in instrument order (the unit numbering of isolated positions)
    order = sorted(range(len(insts)), key=lambda k: (insts[k].fund, k))
    cross = [(k, insts[k].cross) for k in order]
    iso = [(i.index, i.iso) for i in insts]
    cb = [(k, b) for k, b in cross if b is not None and b.n]
    ib = [(k, b) for k, b in iso if b is not None and b.n]

    def cat(parts: list[np.ndarray], dtype: type = np.float64) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    blocks = cb + ib
    ks = np.array([k for k, _ in blocks], dtype=np.int64)
    lens = np.array([b.n for _, b in blocks], dtype=np.int64)
    n_cross = int(sum(b.n for _, b in cb))
    n_iso = int(sum(b.n for _, b in ib))
    nu = n_acc + n_iso
    acct = cat([b.acct[: b.n] for _, b in blocks], np.int64)
    qv = cat([b.qv[: b.n] for _, b in blocks])
    entry = cat([b.entry[: b.n] for _, b in blocks])
    size = cat([b.size[: b.n] for _, b in blocks])

    mark_k = np.array([i.mark for i in insts], dtype=np.float64)
    fee_k = np.array([i.model.liquidation_fee_ratio for i in insts], dtype=np.float64)
    imp_k = np.array(
        [i.model.impact_coef / np.sqrt(i.model.depth_usd) for i in insts], dtype=np.float64
    )
    fund_k = np.array([i.fund for i in insts], dtype=np.int64)
    inv_k = pad.inverse if insts else np.zeros(0, dtype=np.bool_)
    cs_k = pad.cs if insts else np.zeros(0)
    lin_b = ~inv_k[ks]
    linf_b = lin_b.astype(np.float64)

    instrument = np.repeat(ks, lens)
    markp = np.repeat(mark_k[ks], lens)
    linear = np.repeat(lin_b, lens)
    aq = np.abs(qv)
    # notional: |qv|·mark (linear), |size|·cs (inverse)
    notional = aq * np.repeat(mark_k[ks] * linf_b, lens)
    inv_pos = np.zeros(0, dtype=np.int64)
    if not lin_b.all():
        inv_pos = np.flatnonzero(~linear)
        notional[inv_pos] = np.abs(size[inv_pos]) * cs_k[instrument[inv_pos]]
    unit = acct.copy()
    unit[n_cross:] = n_acc + np.arange(n_iso)
    upnl = qv * (markp - entry)
    fund = np.repeat(fund_k[ks], lens)

    def s(w: FloatArray) -> FloatArray:
        return _bincount(unit, w, nu)

    root_n = np.sqrt(notional)
    fee = s(notional * np.repeat(fee_k[ks] * linf_b, lens))
    impact = s(notional * root_n * np.repeat(imp_k[ks] * linf_b, lens))
    const_cost = np.zeros(nu)
    if inv_pos.size:
        ki = instrument[inv_pos]
        ni = notional[inv_pos]
        const_cost = _bincount(unit[inv_pos], ni * (fee_k[ki] + imp_k[ki] * root_n[inv_pos]), nu)
    slope = s(qv * markp)
    upnl0 = s(upnl)
    base = np.concatenate((book.wallet[:n_acc], cat([b.iso_margin[: b.n] for _, b in ib])))
    e0 = base + upnl0

    # MM: cross from the book's columns (tier-stable slope ms per unit of mark, tier band
    # [lo, hi) in mark); isolated afresh (the tick paths do not maintain their bands)
    ms_all = np.empty(qv.size)
    lo_all = np.empty(qv.size)
    hi_all = np.empty(qv.size)
    ms_all[:n_cross] = cat([b.ms[: b.n] for _, b in cb])
    lo_all[:n_cross] = cat([b.lo[: b.n] for _, b in cb])
    hi_all[:n_cross] = cat([b.hi[: b.n] for _, b in cb])
    mm_iso = np.zeros(0)
    if n_iso:
        ki = instrument[n_cross:]
        ni = notional[n_cross:]
        t = pad.tier(ki, ni)
        rate = pad.mmr[ki, t]
        lin_i = linear[n_cross:]
        aqi = aq[n_cross:]
        ms_all[n_cross:] = np.where(lin_i, aqi * rate, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lo_all[n_cross:] = np.where(lin_i & (t > 0), pad.floors[ki, t] / aqi, -np.inf)
            hi_all[n_cross:] = np.where(lin_i, pad.floors[ki, t + 1] / aqi, np.inf)
        mm_iso = ni * rate - pad.amt[ki, t]
    mm1 = s(ms_all * markp)
    mm0 = np.concatenate((book.mm[:n_acc], mm_iso))
    # the unit's tier-stable shock range: positions whose band ends inside the grid's range
    lo = np.full(nu, -np.inf)
    hi = np.full(nu, np.inf)
    band_pos = np.flatnonzero(
        (lo_all > markp * (1.0 + shock_min)) | (hi_all < markp * (1.0 + shock_max))
    )
    ub, mb = unit[band_pos], markp[band_pos]
    np.maximum.at(lo, ub, lo_all[band_pos] / mb - 1.0)
    np.minimum.at(hi, ub, hi_all[band_pos] / mb - 1.0)

    # fund shares: current notional per (unit, fund); cross blocks are grouped by fund
    has_position = np.bincount(unit, minlength=nu) > 0
    weights_t = np.zeros((nf, nu))
    start = 0
    for f in range(nf):
        n_f = int(sum(b.n for k, b in cb if insts[k].fund == f))
        if n_f:
            r = slice(start, start + n_f)
            weights_t[f, :n_acc] = _bincount(acct[r], notional[r], n_acc)
            start += n_f
    if n_iso:
        weights_t[fund[n_cross:], n_acc + np.arange(n_iso)] = notional[n_cross:]
    total = weights_t.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_total = np.where(total > 0, 1.0 / total, 0.0)
    weights_t *= inv_total
    zero = (total <= 0) & has_position
    if zero.any():  # zero notional: the unit belongs to its first position's fund
        first = np.zeros(nu, dtype=np.int64)
        first[unit[::-1]] = fund[::-1]
        weights_t[first[zero], np.flatnonzero(zero)] = 1.0
    return Pools(
        n_accounts=n_acc,
        n_units=nu,
        n_funds=len(book.funds),
        pad=pad,
        unit=unit,
        account=acct,
        instrument=instrument,
        fund=fund,
        size=size,
        entry=entry,
        mark=markp,
        notional=notional,
        upnl=upnl,
        linear=linear,
        e0=e0,
        slope=slope,
        fee=fee,
        impact=impact,
        const_cost=const_cost,
        mm0=mm0,
        mm1=mm1,
        upnl0=upnl0,
        notional0=total,
        mmr_max=float(pad.mmr.max(initial=0.0)),
        has_position=has_position,
        lo=lo,
        hi=hi,
        band_pos=band_pos,
        weights_t=weights_t,
        qv=qv,
        base=base,
    )
