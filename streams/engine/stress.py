"""Stress scenarios over the whole book, exploiting the structure of a uniform shock.

Margin pools ("units"): every account's cross pool (unit = account index) and every isolated
position (its own pool). Under a uniform shock s (all marks × (1 + s)), for one unit:

* equity(s) = E0 + S·s                         (S = Σ d uPnL / d s, linear and inverse alike)
* cost(s)   = F·(1+s) + G·(1+s)^1.5 + H         (fee and √-impact of linear positions scale with
                                                 notional; inverse USD notional does not move)
* MM(s)     = M0 + M1·s (+ a piecewise-linear correction for positions whose notional crosses a
              tier floor inside the grid's range; MM is convex in notional)

A unit has bad debt at s when it is liquidatable, MM(s) ≥ equity(s), and its liquidation cost
exceeds its equity: ``bad(s) = max(0, cost(s) − equity(s))``. Both f = cost − equity and
g = MM − equity are convex in s, so on the grid each of {f ≤ 0} and {g < 0} is ONE contiguous index
range; a unit's bad debt is ``f`` on the grid minus those two ranges and 0 elsewhere. Units with
f ≤ 0 at both ends of the grid can never have bad debt (pruned). For the rest, the ranges are found
by vectorized binary search over grid indices and the per-fund sum over units is accumulated with
difference arrays on the coefficients (α, β, γ) of f = α + β·s + γ·(1+s)^1.5, so the cost is
O(units · log(grid) + grid), never units × grid. Profitable uPnL of non-liquidated units
(the haircut base) is piecewise linear and accumulated the same way.

A unit's figures are attributed to funds pro rata to its current notional in each fund's
instruments (an isolated pool belongs to its instrument's fund).

``compute_partials`` takes the uniform grid from the per-pool closed forms of
:mod:`streams.engine.pools` and :mod:`streams.engine.grid` (roots instead of binary searches, no
flat book). The named and idiosyncratic scenarios use a flat book built from the pools' own
per-position columns (``flat_from_pools``); ``flatten``, ``unit_coefficients`` and
``evaluate_grid`` are the tests' reference for the closed forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streams.engine.adl import hyperliquid_score
from streams.engine.book import AccountBook, InstrumentState
from streams.engine.config import EngineConfig
from streams.engine.grid import evaluate
from streams.engine.pools import Pools, build_pools
from streams.engine.tiers import FloatArray, IntArray, TierTable
from streams.engine.venue import STATE_LABELS, AdlCandidate, FundPartial, merge_top

BoolArray = NDArray[np.bool_]


def _bincount(idx: np.ndarray, weights: FloatArray | None = None, minlength: int = 0) -> FloatArray:
    return np.asarray(np.bincount(idx, weights=weights, minlength=minlength), dtype=np.float64)


# -- THE BOOK AS FLAT COLUMNS ----------------------------------------------------------------------


@dataclass(slots=True)
class FlatBook:
    """All open positions of a book as flat arrays (cross and isolated), plus instrument data.

    Positions are grouped by instrument (``slices[k]`` = (start, end)). MM under a relative shock
    x of a linear position's mark is ``mm + mslope·x + Σ hinges`` exactly for x in
    ``[hinge_min, hinge_max]``: MM is convex piecewise linear in notional, so each tier floor the
    notional crosses adds a hinge ``coef · max(0, dir · (x − breakpoint))``.
    """

    n_accounts: int
    n_units: int
    unit: IntArray  # margin pool of each position
    account: IntArray
    instrument: IntArray
    isolated: BoolArray
    size: FloatArray
    entry: FloatArray
    qv: FloatArray
    mark: FloatArray
    iso_margin: FloatArray
    inverse: BoolArray
    notional: FloatArray
    upnl: FloatArray
    mm: FloatArray
    mslope: FloatArray  # d MM / d x within the current tier (0 for inverse)
    hinge_pos: IntArray
    hinge_break: FloatArray
    hinge_coef: FloatArray
    hinge_dir: FloatArray  # +1: active above the breakpoint, −1: below
    hinge_min: float
    hinge_max: float
    slices: list[tuple[int, int]]
    tables: list[TierTable]
    # per instrument
    fee: FloatArray
    impact: FloatArray
    depth: FloatArray
    fund_of_instrument: IntArray
    # per unit
    unit_base: FloatArray  # wallet (cross) or isolated margin
    unit_account: IntArray
    n_funds: int

    fund: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cost_fee: FloatArray = field(default_factory=lambda: np.zeros(0))  # now, per position
    cost_impact: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def cost(self) -> FloatArray:
        return self.cost_fee + self.cost_impact

    def cost_at(self, x: FloatArray | float) -> FloatArray:
        """Liquidation cost when each mark moves by ``x`` (inverse USD notional does not move).

        ``x`` must already be 0 for inverse positions (see ``linear_only``).
        """
        g = 1.0 + x
        return self.cost_fee * g + self.cost_impact * (g * np.sqrt(g))

    def linear_only(self, x: FloatArray) -> FloatArray:
        return np.where(self.inverse, 0.0, x)


def flatten(book: AccountBook, shock_min: float = -0.5, shock_max: float = 0.5) -> FlatBook:
    """Flatten ``book``; hinges cover uniform relative shocks in [shock_min, shock_max]."""
    insts = book.instruments
    names = ("account", "size", "entry", "qv", "iso_margin")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    slices: list[tuple[int, int]] = []
    block_inst: list[int] = []
    block_iso: list[bool] = []
    block_len: list[int] = []
    offset = 0
    for inst in insts:
        start = offset
        for block, is_iso in ((inst.cross, False), (inst.iso, True)):
            assert block is not None
            n = block.n
            if n == 0:
                continue
            parts["account"].append(block.acct[:n])
            parts["size"].append(block.size[:n])
            parts["entry"].append(block.entry[:n])
            parts["qv"].append(block.qv[:n])
            parts["iso_margin"].append(block.iso_margin[:n])
            block_inst.append(inst.index)
            block_iso.append(is_iso)
            block_len.append(n)
            offset += n
        slices.append((start, offset))
    dtypes = {"account": np.int64}
    cols: dict[str, Any] = {
        k: np.concatenate(v) if v else np.zeros(0, dtype=dtypes.get(k, np.float64))
        for k, v in parts.items()
    }
    lengths = np.array(block_len, dtype=np.int64)
    k_all = np.repeat(np.array(block_inst, dtype=np.int64), lengths)
    cols["instrument"] = k_all
    cols["isolated"] = np.repeat(np.array(block_iso, dtype=np.bool_), lengths)
    # notional and tier of every position in a few whole-book passes (tiers: padded floors)
    inv_k = np.array([i.inverse for i in insts], dtype=np.bool_)
    cs_k = np.array([i.contract_size for i in insts], dtype=np.float64)
    mark_k = np.array([i.mark for i in insts], dtype=np.float64)
    bi = np.array(block_inst, dtype=np.int64)
    lin_n = np.abs(cols["qv"]) * np.repeat(mark_k[bi], lengths)
    inv_n = np.abs(cols["size"]) * np.repeat(cs_k[bi], lengths)
    notional = np.where(np.repeat(inv_k[bi], lengths), inv_n, lin_n)
    cols["notional"] = notional
    width = max((len(i.floors) for i in insts), default=1)
    tier = np.zeros(notional.size, dtype=np.int64)
    if width > 1:
        floors_pad = np.full((max(len(insts), 1), width), np.inf)
        for i in insts:
            floors_pad[i.index, : len(i.floors)] = i.floors
        for j in range(1, width):
            tier += notional >= np.repeat(floors_pad[bi, j], lengths)
    cols["tier"] = tier
    marks = np.array([i.mark for i in insts], dtype=np.float64)
    inv = np.array([i.inverse for i in insts], dtype=np.bool_)
    cols["mark"] = marks[k_all] if insts else np.zeros(0)
    cols["inverse"] = inv[k_all] if insts else np.zeros(0, dtype=np.bool_)
    n_t = max((len(i.floors) for i in insts), default=1)
    mmr_pad = np.zeros((max(len(insts), 1), n_t))
    amt_pad = np.zeros((max(len(insts), 1), n_t))
    for i in insts:
        mmr_pad[i.index, : len(i.mmr)] = i.mmr
        amt_pad[i.index, : len(i.mm_amount)] = i.mm_amount
    t_all = np.maximum(cols["tier"], 0)
    rate = mmr_pad[k_all, t_all]
    cols["mm"] = cols["notional"] * rate - amt_pad[k_all, t_all]
    cols["mslope"] = np.where(cols["inverse"], 0.0, cols["notional"] * rate)
    n_acc = book.n_accounts
    iso = cols["isolated"]
    unit = cols["account"].copy()
    iso_idx = np.flatnonzero(iso)
    unit[iso_idx] = n_acc + np.arange(iso_idx.size)
    h_pos, h_break, h_coef, h_dir = _hinges(insts, cols, shock_min, shock_max)
    fb = FlatBook(
        n_accounts=n_acc,
        n_units=n_acc + iso_idx.size,
        unit=unit,
        account=cols["account"],
        instrument=cols["instrument"],
        isolated=iso,
        size=cols["size"],
        entry=cols["entry"],
        qv=cols["qv"],
        mark=cols["mark"],
        iso_margin=cols["iso_margin"],
        inverse=cols["inverse"],
        notional=cols["notional"],
        upnl=cols["qv"] * (cols["mark"] - cols["entry"]),
        mm=cols["mm"],
        mslope=cols["mslope"],
        hinge_pos=h_pos,
        hinge_break=h_break,
        hinge_coef=h_coef,
        hinge_dir=h_dir,
        hinge_min=shock_min,
        hinge_max=shock_max,
        slices=slices,
        tables=[i.table for i in insts],
        fee=np.array([i.model.liquidation_fee_ratio for i in insts], dtype=np.float64),
        impact=np.array([i.model.impact_coef for i in insts], dtype=np.float64),
        depth=np.array([i.model.depth_usd for i in insts], dtype=np.float64),
        fund_of_instrument=np.array([i.fund for i in insts], dtype=np.int64),
        unit_base=np.concatenate((book.wallet[:n_acc], cols["iso_margin"][iso_idx])),
        unit_account=np.concatenate((np.arange(n_acc), cols["account"][iso_idx])),
        n_funds=len(book.funds),
    )
    fb.fund = fb.fund_of_instrument[fb.instrument]
    fb.cost_fee = fb.notional * fb.fee[fb.instrument]
    fb.cost_impact = (
        fb.notional * fb.impact[fb.instrument] * np.sqrt(fb.notional / fb.depth[fb.instrument])
    )
    return fb


def flat_from_pools(
    book: AccountBook, pools: Pools, shock_min: float = -0.5, shock_max: float = 0.5
) -> FlatBook:
    """The flat book of ``book`` from the per-position columns ``build_pools`` already gathered
    (no second pass over the book's blocks): same positions and unit numbering as
    :func:`flatten`, in the pools' order (cross by fund, then isolated) — so ``slices`` is
    empty and :func:`mm_at_shock` groups by instrument itself outside the hinge range."""
    insts = book.instruments
    pad = pools.pad
    k = pools.instrument
    n = pools.notional
    qv = pools.qv if pools.qv is not None else np.zeros(n.size)
    inverse = ~pools.linear
    n_acc = pools.n_accounts
    n_cross = int(pools.unit.size - (pools.n_units - n_acc))
    if n.size:
        t = pad.tier(k, n)
        rate = pad.mmr[k, t]
        mm = n * rate - pad.amt[k, t]
    else:
        t = np.zeros(0, dtype=np.int64)
        rate = mm = np.zeros(0)
    mslope = np.where(inverse, 0.0, n * rate)
    cols = {"instrument": k, "tier": t, "notional": n, "inverse": inverse}
    h_pos, h_break, h_coef, h_dir = _hinges(insts, cols, shock_min, shock_max)
    isolated = np.zeros(n.size, dtype=np.bool_)
    isolated[n_cross:] = True
    base = pools.base if pools.base is not None else pools.e0 - pools.upnl0
    iso_margin = np.zeros(n.size)
    iso_margin[n_cross:] = base[n_acc:]
    fee = np.array([i.model.liquidation_fee_ratio for i in insts], dtype=np.float64)
    impact = np.array([i.model.impact_coef for i in insts], dtype=np.float64)
    depth = np.array([i.model.depth_usd for i in insts], dtype=np.float64)
    fb = FlatBook(
        n_accounts=n_acc,
        n_units=pools.n_units,
        unit=pools.unit,
        account=pools.account,
        instrument=k,
        isolated=isolated,
        size=pools.size,
        entry=pools.entry,
        qv=qv,
        mark=pools.mark,
        iso_margin=iso_margin,
        inverse=inverse,
        notional=n,
        upnl=pools.upnl,
        mm=mm,
        mslope=mslope,
        hinge_pos=h_pos,
        hinge_break=h_break,
        hinge_coef=h_coef,
        hinge_dir=h_dir,
        hinge_min=shock_min,
        hinge_max=shock_max,
        slices=[],
        tables=[i.table for i in insts],
        fee=fee,
        impact=impact,
        depth=depth,
        fund_of_instrument=np.array([i.fund for i in insts], dtype=np.int64),
        unit_base=base,
        unit_account=np.concatenate((np.arange(n_acc), pools.account[n_cross:])),
        n_funds=len(book.funds),
    )
    fb.fund = pools.fund
    fb.cost_fee = n * fee[k]
    fb.cost_impact = n * impact[k] * np.sqrt(n / depth[k])
    return fb


def _hinges(
    insts: list[InstrumentState],
    cols: dict[str, np.ndarray],
    shock_min: float,
    shock_max: float,
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Tier-floor hinges of linear positions whose notional crosses a floor within the range."""
    n_t = max((len(i.floors) for i in insts), default=1)
    floors = np.full((len(insts), n_t + 1), np.inf)
    mmr = np.zeros((len(insts), n_t + 1))
    for i in insts:
        floors[i.index, : len(i.floors)] = i.floors
        mmr[i.index, : len(i.mmr)] = i.mmr
        mmr[i.index, len(i.mmr) :] = i.mmr[-1]
    k, t, n = cols["instrument"], cols["tier"], cols["notional"]
    lin = ~cols["inverse"]
    cross = lin & (
        (floors[k, t + 1] < n * (1.0 + shock_max))
        | ((t > 0) & (floors[k, t] > n * (1.0 + shock_min)))
    )
    sub = np.flatnonzero(cross)
    pos, brk, coef, direction = [], [], [], []
    ks, ts, ns = k[sub], t[sub], n[sub]
    for j in range(1, n_t):
        fj = floors[ks, j]
        dmmr = mmr[ks, j] - mmr[ks, j - 1]
        up = (ts < j) & (fj < ns * (1.0 + shock_max))
        down = (ts >= j) & (fj > ns * (1.0 + shock_min))
        for mask, d in ((up, 1.0), (down, -1.0)):
            idx = np.flatnonzero(mask)
            if idx.size:
                pos.append(sub[idx])
                brk.append(fj[idx] / ns[idx] - 1.0)
                coef.append(ns[idx] * dmmr[idx])
                direction.append(np.full(idx.size, d))
    if not pos:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), np.zeros(0)
    return (
        np.concatenate(pos),
        np.concatenate(brk),
        np.concatenate(coef),
        np.concatenate(direction),
    )


def mm_at_shock(fb: FlatBook, x: FloatArray) -> FloatArray:
    """Exact MM of every position when its mark moves by the relative shock ``x`` (per position)."""
    if x.size and (x.min() >= fb.hinge_min - 1e-12 and x.max() <= fb.hinge_max + 1e-12):
        mm = fb.mm + fb.mslope * x
        if fb.hinge_pos.size:
            hx = x[fb.hinge_pos]
            mm += _bincount(
                fb.hinge_pos,
                weights=fb.hinge_coef * np.maximum(0.0, fb.hinge_dir * (hx - fb.hinge_break)),
                minlength=x.size,
            )
        return mm
    out = np.empty_like(x)
    if fb.slices:
        for k, (start, end) in enumerate(fb.slices):
            if end > start:
                n1 = np.where(
                    fb.inverse[start:end],
                    fb.notional[start:end],
                    fb.notional[start:end] * (1.0 + x[start:end]),
                )
                out[start:end] = fb.tables[k].maintenance_margin(n1)
        return out
    # positions not grouped by instrument (``flat_from_pools``): group them here
    order = np.argsort(fb.instrument, kind="stable")
    bounds = np.searchsorted(fb.instrument[order], np.arange(len(fb.tables) + 1))
    for k in range(len(fb.tables)):
        sel = order[bounds[k] : bounds[k + 1]]
        if sel.size:
            n1 = np.where(fb.inverse[sel], fb.notional[sel], fb.notional[sel] * (1.0 + x[sel]))
            out[sel] = fb.tables[k].maintenance_margin(n1)
    return out


def liquidation_cost(fb: FlatBook, notional: FloatArray, instrument: IntArray) -> FloatArray:
    return notional * (
        fb.fee[instrument] + fb.impact[instrument] * np.sqrt(notional / fb.depth[instrument])
    )


# -- PER-UNIT COEFFICIENTS -------------------------------------------------------------------------


@dataclass(slots=True)
class Units:
    """Per-unit coefficients of equity, cost and MM as functions of the uniform shock s."""

    e0: FloatArray
    slope: FloatArray  # S
    fee: FloatArray  # F
    impact: FloatArray  # G
    const_cost: FloatArray  # H
    mm0: FloatArray
    mm1: FloatArray  # tier-stable linear part
    upnl0: FloatArray
    notional0: FloatArray
    has_position: BoolArray
    crossing_pos: IntArray  # positions whose tier changes inside the hinge range
    weights: FloatArray  # (units, funds): share of each fund, rows sum to 1 (0 if no position)
    account: IntArray
    row_ptr: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # CSR of weights
    row_fund: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    row_weight: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def n(self) -> int:
        return int(self.e0.shape[0])


def unit_coefficients(fb: FlatBook) -> Units:
    u, nu = fb.unit, fb.n_units
    lin = ~fb.inverse
    n = fb.notional
    slope_p = fb.qv * fb.mark
    cost_fee = fb.cost_fee
    cost_imp = fb.cost_impact

    def s(w: FloatArray) -> FloatArray:
        return _bincount(u, weights=w, minlength=nu)

    upnl = s(fb.upnl)
    notional = s(n)
    weights = np.zeros((nu, max(fb.n_funds, 1)))
    if fb.n_funds:
        flat = _bincount(u * fb.n_funds + fb.fund, weights=n, minlength=nu * fb.n_funds).reshape(
            nu, fb.n_funds
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = np.where(notional[:, None] > 0, flat / notional[:, None], 0.0)
        # a unit whose positions all have zero notional still belongs to its first fund
        zero = (notional <= 0) & (_bincount(u, minlength=nu) > 0)
        if zero.any():
            first = np.zeros(nu, dtype=np.int64)
            first[u[::-1]] = fb.fund[::-1]
            weights[np.flatnonzero(zero), first[zero]] = 1.0
    units = Units(
        e0=fb.unit_base + upnl,
        slope=s(slope_p),
        fee=s(np.where(lin, cost_fee, 0.0)),
        impact=s(np.where(lin, cost_imp, 0.0)),
        const_cost=s(np.where(lin, 0.0, cost_fee + cost_imp)),
        mm0=s(fb.mm),
        mm1=s(fb.mslope),
        upnl0=upnl,
        notional0=notional,
        has_position=_bincount(u, minlength=nu) > 0,
        crossing_pos=fb.hinge_pos,
        weights=weights,
        account=fb.unit_account,
    )
    ru, rf = np.nonzero(weights)
    units.row_ptr = np.concatenate(([0], np.cumsum(np.bincount(ru, minlength=nu)))).astype(np.int64)
    units.row_fund = rf.astype(np.int64)
    units.row_weight = weights[ru, rf]
    return units


# -- GRID EVALUATION -------------------------------------------------------------------------------


@dataclass(slots=True)
class GridResult:
    """Per-fund sums on a uniform-shock grid (arrays: funds × grid points)."""

    shocks: FloatArray
    bad_debt: FloatArray
    profitable_upnl: FloatArray


def _first_true(
    pred: Callable[[IntArray], BoolArray], lo: IntArray, hi: IntArray, iters: int
) -> IntArray:
    """Smallest j in [lo, hi] with pred(j) (monotone false→true), hi if none below (vectorized)."""
    lo = lo.copy()
    hi = hi.copy()
    for _ in range(iters):
        if not (lo < hi).any():
            break
        mid = (lo + hi) // 2
        ok = pred(mid)
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid + 1)
    return hi


def _convex_nonpos_range(
    values: Callable[[IntArray, IntArray], FloatArray], minimizer: IntArray, count: int, iters: int
) -> tuple[IntArray, IntArray]:
    """[a, b] = {j : v(j) ≤ 0} for convex v on grid indices, given its discrete minimizer.

    ``values(idx, sel)`` evaluates v for the selected units at per-unit grid indices.
    """
    n = minimizer.shape[0]
    every = np.arange(n)
    vmin = values(minimizer, every)
    has = vmin <= 0
    a = np.full(n, count, dtype=np.int64)
    b = np.full(n, -1, dtype=np.int64)
    sel = np.flatnonzero(has)
    if sel.size:
        m = minimizer[sel]
        a[sel] = _first_true(
            lambda j: values(j, sel) <= 0,
            np.zeros(sel.size, dtype=np.int64),
            m,
            iters,
        )
        # last j ≥ m with v ≤ 0  == (first j ≥ m with v > 0) − 1
        first_pos = _first_true(
            lambda j: values(np.minimum(j, count - 1), sel) > 0,
            m,
            np.full(sel.size, count, dtype=np.int64),
            iters,
        )
        b[sel] = first_pos - 1
    return a, b


def evaluate_grid(
    fb: FlatBook, units: Units, grid: FloatArray
) -> tuple[GridResult, IntArray, FloatArray, BoolArray]:
    """Bad debt and profitable uPnL per fund on ``grid`` (sorted, contains 0).

    Also returns, for the current marks (s = 0), each unit's bad debt and liquidatable flag (used
    for the ADL side split and the liquidatable notional), and the candidate units.
    """
    count = grid.shape[0]
    iters = math.ceil(math.log2(count + 1)) + 1
    pgrid = (1.0 + grid) ** 1.5
    nf = max(fb.n_funds, 1)
    alpha = units.fee + units.const_cost - units.e0
    beta = units.fee - units.slope
    gamma = units.impact
    g0 = units.mm0 - units.e0
    g1 = units.mm1 - units.slope

    # -- g = MM − equity: the range where the unit is NOT liquidatable --
    nu = units.n
    # linear units: g_j = g0 + g1·s_j; {g < 0} is a prefix (g1 > 0), a suffix (g1 < 0) or all/none
    ag = np.full(nu, count, dtype=np.int64)
    bg = np.full(nu, -1, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(g1 != 0, -g0 / np.where(g1 != 0, g1, 1.0), 0.0)
    inc = g1 > 0
    dec = g1 < 0
    flat = g1 == 0
    # increasing: g < 0 for s < root → indices [0, searchsorted(root, left) − 1], then fix-up
    j = np.searchsorted(grid, root, side="left")
    j = _fix_first(lambda jj: g0 + g1 * grid[np.minimum(jj, count - 1)] >= 0, j, count)
    ag = np.where(inc, 0, ag)
    bg = np.where(inc, j - 1, bg)
    jd = np.searchsorted(grid, root, side="left")
    jd = _fix_first(lambda jj: g0 + g1 * grid[np.minimum(jj, count - 1)] < 0, jd, count)
    ag = np.where(dec, jd, ag)
    bg = np.where(dec, count - 1, bg)
    neg_flat = flat & (g0 < 0)
    ag = np.where(neg_flat, 0, ag)
    bg = np.where(neg_flat, count - 1, bg)
    if fb.hinge_pos.size:
        _crossing_ranges(fb, g0, g1, grid, iters, ag, bg)

    # -- f = cost − equity: candidates have f > 0 at an end of the grid --
    f_lo = alpha + beta * grid[0] + gamma * pgrid[0]
    f_hi = alpha + beta * grid[-1] + gamma * pgrid[-1]
    cand = np.flatnonzero(((f_lo > 0) | (f_hi > 0)) & ((ag > 0) | (bg < count - 1)))
    ca, cb, cc = alpha[cand], beta[cand], gamma[cand]
    with np.errstate(divide="ignore", invalid="ignore"):
        xstar = np.where(
            (cc > 0) & (cb < 0),
            (cb / (1.5 * np.where(cc > 0, cc, 1.0))) ** 2 - 1.0,
            np.where(cb >= 0, grid[0] - 1.0, grid[-1] + 1.0),
        )
    i1 = np.clip(np.searchsorted(grid, xstar), 0, count - 1)
    i0 = np.clip(i1 - 1, 0, count - 1)

    def fval(idx: IntArray, sel: IntArray) -> FloatArray:
        return ca[sel] + cb[sel] * grid[idx] + cc[sel] * pgrid[idx]

    every = np.arange(cand.size)
    jm = np.where(fval(i0, every) <= fval(i1, every), i0, i1)
    af, bf = _convex_nonpos_range(fval, jm, count, iters)

    # active = grid − ([af, bf] ∪ [ag, bg])
    a1, b1 = af, bf
    a2, b2 = ag[cand], bg[cand]
    e1 = a1 <= b1
    e2 = a2 <= b2
    overlap = e1 & e2 & (np.maximum(a1, a2) <= np.minimum(b1, b2) + 1)
    ma = np.where(overlap, np.minimum(a1, a2), a1)
    mb = np.where(overlap, np.maximum(b1, b2), b1)
    use2 = e2 & ~overlap
    # events: +1 at 0; −1 at start, +1 at end+1 of each inactive range
    pos = [np.zeros(cand.size, dtype=np.int64)]
    sign = [np.ones(cand.size)]
    keep1 = e1 | overlap
    pos += [np.where(keep1, ma, count), np.where(keep1, mb + 1, count)]
    sign += [np.where(keep1, -1.0, 0.0), np.where(keep1, 1.0, 0.0)]
    pos += [np.where(use2, a2, count), np.where(use2, b2 + 1, count)]
    sign += [np.where(use2, -1.0, 0.0), np.where(use2, 1.0, 0.0)]
    ev_pos = np.concatenate(pos)
    ev_sign = np.concatenate(sign)
    ev_unit = np.tile(cand, 5)
    ones = np.ones(nu)
    bad = _accumulate(units, ev_unit, ev_pos, ev_sign, (alpha, beta, gamma, ones), count, nf)
    # where no unit is active the sums are exactly 0 (not a cancellation residue)
    bad_debt = np.where(bad[3] > 0.5, np.maximum(bad[0] + bad[1] * grid + bad[2] * pgrid, 0.0), 0)

    # -- profitable uPnL of non-liquidated units: {g < 0} ∩ {uPnL(s) > 0} --
    u0, us = units.upnl0, units.slope
    with np.errstate(divide="ignore", invalid="ignore"):
        uroot = np.where(us != 0, -u0 / np.where(us != 0, us, 1.0), 0.0)
    ju = np.searchsorted(grid, uroot, side="left")
    up_first = _fix_first(lambda jj: u0 + us * grid[np.minimum(jj, count - 1)] > 0, ju, count)
    dn_first = _fix_first(lambda jj: u0 + us * grid[np.minimum(jj, count - 1)] <= 0, ju, count)
    pa = np.where(us > 0, up_first, np.where(us < 0, 0, np.where(u0 > 0, 0, count)))
    pb = np.where(
        us > 0, count - 1, np.where(us < 0, dn_first - 1, np.where(u0 > 0, count - 1, -1))
    )
    lo = np.maximum(pa, ag)
    hi = np.minimum(pb, bg)
    ok = np.flatnonzero(units.has_position & (lo <= hi))
    prof = _accumulate(
        units,
        np.tile(ok, 2),
        np.concatenate((lo[ok], hi[ok] + 1)),
        np.concatenate((np.ones(ok.size), -np.ones(ok.size))),
        (u0, us, np.ones(nu)),
        count,
        nf,
    )
    profitable = np.where(prof[2] > 0.5, np.maximum(prof[0] + prof[1] * grid, 0.0), 0.0)

    # -- now (s = 0) --
    z = int(np.searchsorted(grid, 0.0))
    liq_now = units.has_position & ~((ag <= z) & (z <= bg))
    liq_now |= units.e0 < 0
    bad_now = np.zeros(nu)
    bad_now_c = np.maximum(alpha[cand] + gamma[cand], 0.0)
    active_now = ~((af <= z) & (z <= bf)) & ~((ag[cand] <= z) & (z <= bg[cand]))
    bad_now[cand] = np.where(active_now, bad_now_c, 0.0)
    return GridResult(grid, bad_debt, profitable), cand, bad_now, liq_now


def _crossing_ranges(
    fb: FlatBook,
    g0: FloatArray,
    g1: FloatArray,
    grid: FloatArray,
    iters: int,
    ag: IntArray,
    bg: IntArray,
) -> None:
    """{g < 0} index range of units holding positions that cross tiers (g convex, with hinges)."""
    count = grid.shape[0]
    h_unit = fb.unit[fb.hinge_pos]
    marked = np.zeros(g0.size, dtype=np.bool_)
    marked[h_unit] = True
    cu = np.flatnonzero(marked)
    row = (np.cumsum(marked) - 1)[h_unit]
    base0, base1 = g0[cu], g1[cu]
    coef, direction, brk = fb.hinge_coef, fb.hinge_dir, fb.hinge_break

    def g(idx: IntArray) -> FloatArray:
        s = grid[np.clip(idx, 0, count - 1)]
        hv = coef * np.maximum(0.0, direction * (s[row] - brk))
        return base0 + base1 * s + _bincount(row, weights=hv, minlength=cu.size)

    zeros = np.zeros(cu.size, dtype=np.int64)
    last = np.full(cu.size, count - 1, dtype=np.int64)
    # discrete minimizer: first j with g(j+1) − g(j) ≥ 0 (differences are non-decreasing)
    jm = _first_true(lambda j: g(j + 1) - g(j) >= 0, zeros, last, iters)
    neg = g(jm) < 0
    left = _first_true(lambda j: g(j) < 0, zeros, jm, iters)
    right = _first_true(lambda j: (j >= count) | (g(j) >= 0), jm, np.full(cu.size, count), iters)
    ag[cu] = np.where(neg, left, count)
    bg[cu] = np.where(neg, right - 1, -1)


def _fix_first(pred: Callable[[IntArray], BoolArray], j: IntArray, count: int) -> IntArray:
    """Adjust a searchsorted guess to the exact first index where the monotone ``pred`` holds."""
    for _ in range(2):
        back = (j > 0) & pred(j - 1)
        j = np.where(back, j - 1, j)
    for _ in range(2):
        fwd = (j < count) & ~pred(j)
        j = np.where(fwd, j + 1, j)
    return j


def _accumulate(
    units: Units,
    ev_unit: IntArray,
    ev_pos: IntArray,
    ev_sign: FloatArray,
    coefs: tuple[FloatArray, ...],
    count: int,
    n_funds: int,
) -> list[FloatArray]:
    """Difference-array accumulation of unit coefficients into (funds × grid) cumulative sums.

    The LAST entry of ``coefs`` is taken as the active-unit count (its values are ignored).
    Each event of a unit is expanded to the unit's (fund, weight) rows.
    """
    live = (ev_sign != 0) & (ev_pos < count)  # events at the end never reach the grid
    ev_unit, ev_pos, ev_sign = ev_unit[live], ev_pos[live], ev_sign[live]
    first = units.row_ptr[ev_unit]
    cnt = units.row_ptr[ev_unit + 1] - first
    single = cnt == 1
    if single.all():
        rows, ev = first, None
    else:  # expand events of multi-fund units to one event per (fund, weight) row
        multi = np.flatnonzero(~single)
        rep = np.repeat(multi, cnt[multi])
        starts = np.cumsum(cnt[multi]) - cnt[multi]
        offs = np.arange(rep.size) - np.repeat(starts, cnt[multi])
        one = np.flatnonzero(single)
        ev = np.concatenate((one, rep))
        rows = np.concatenate((first[one], first[rep] + offs))
    if ev is not None:
        ev_unit, ev_pos, ev_sign = ev_unit[ev], ev_pos[ev], ev_sign[ev]
    w = units.row_weight[rows]
    idx = units.row_fund[rows] * (count + 1) + ev_pos
    sign = ev_sign
    unit = ev_unit
    out = []
    for c in coefs:
        # the last is the count of active units: weight-free, exact in floating point
        vals = sign if c is coefs[-1] else sign * c[unit] * w
        d = _bincount(idx, weights=vals, minlength=n_funds * (count + 1))
        out.append(np.cumsum(d.reshape(n_funds, count + 1), axis=1)[:, :count])
    return out


# -- NON-UNIFORM SCENARIOS -------------------------------------------------------------------------


def unit_bad_debt(
    fb: FlatBook, units: Units, instrument_shock: FloatArray
) -> tuple[FloatArray, BoolArray]:
    """Bad debt of each unit and its liquidatable flag under per-instrument relative shocks."""
    x = instrument_shock[fb.instrument]
    eq = units.e0 + _bincount(fb.unit, weights=fb.qv * fb.mark * x, minlength=units.n)
    mm = _bincount(fb.unit, weights=mm_at_shock(fb, x), minlength=units.n)
    cost = _bincount(fb.unit, weights=fb.cost_at(fb.linear_only(x)), minlength=units.n)
    liq = units.has_position & (mm >= eq) | (eq < 0)
    return np.where(liq, np.maximum(cost - eq, 0.0), 0.0), liq


def idiosyncratic_bad_debt(
    fb: FlatBook, units: Units, bad_now: FloatArray, shock: float, n_instruments: int
) -> FloatArray:
    """(instruments × funds) bad debt when ONE instrument moves by ``shock`` (others unchanged)."""
    nf = max(fb.n_funds, 1)
    out = np.zeros((n_instruments, nf))
    if fb.unit.size == 0:
        return out
    cost_now = fb.cost  # a property: computed once here
    base_eq, base_mm = units.e0, units.mm0
    base_cost = _bincount(fb.unit, weights=cost_now, minlength=units.n)
    # prune: a position whose pool has no bad debt now and cannot get any from this move alone
    # (f = cost − equity grows at most by |Δequity| + the cost increase) contributes nothing
    f0 = base_cost - base_eq
    x = abs(shock)
    bound = f0[fb.unit] + np.abs(fb.qv * fb.mark) * x + cost_now * ((1.0 + x) ** 1.5 - 1.0)
    sel = np.flatnonzero((bound > 0) | (bad_now[fb.unit] > 0))
    u = fb.unit[sel]
    eq = base_eq[u] + fb.qv[sel] * fb.mark[sel] * shock
    mm_new = _mm_at_uniform_shock(fb, sel, shock)
    mm = base_mm[u] - fb.mm[sel] + mm_new
    shock_lin = np.where(fb.inverse[sel], 0.0, shock)
    g = 1.0 + shock_lin
    cost_new = fb.cost_fee[sel] * g + fb.cost_impact[sel] * (g * np.sqrt(g))
    cost = base_cost[u] - cost_now[sel] + cost_new
    liq = (mm >= eq) | (eq < 0)
    bad = np.where(liq, np.maximum(cost - eq, 0.0), 0.0)
    delta = bad - bad_now[u]
    keep = np.flatnonzero(delta != 0)
    nz = sel[keep]
    delta = delta[keep]
    base_f = units.weights.T @ bad_now  # (funds,)
    out[:] = base_f[None, :]
    if nz.size:
        w = units.weights[fb.unit[nz]]  # (nz, funds)
        np.add.at(out, fb.instrument[nz], w * delta[:, None])
    return np.maximum(out, 0.0)


def _mm_at_uniform_shock(fb: FlatBook, sel: IntArray, shock: float) -> FloatArray:
    """``mm_at_shock(fb, full(shock))[sel]``, evaluated for the positions ``sel`` only (the same
    arithmetic per position: tangent, then the hinges of those positions)."""
    if not (fb.hinge_min - 1e-12 <= shock <= fb.hinge_max + 1e-12):
        return mm_at_shock(fb, np.full(fb.unit.size, shock))[sel]
    mm = fb.mm[sel] + fb.mslope[sel] * shock
    if fb.hinge_pos.size:
        hinge = fb.hinge_coef * np.maximum(0.0, fb.hinge_dir * (shock - fb.hinge_break))
        mm += _bincount(fb.hinge_pos, weights=hinge, minlength=fb.unit.size)[sel]
    return mm


def _unit_now(
    fb: FlatBook, units: Units, zero: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    cost = _bincount(fb.unit, weights=fb.cost, minlength=units.n)
    return units.e0, units.mm0, cost


# -- PARTIALS --------------------------------------------------------------------------------------


def compute_partials(
    book: AccountBook, config: EngineConfig, scenarios: bool = True
) -> dict[str, FundPartial]:
    """Per-fund additive aggregates of ``book`` (see :mod:`streams.engine.venue`).

    The uniform grid comes from the per-pool closed forms (:mod:`streams.engine.pools`,
    :mod:`streams.engine.grid`); ``scenarios=False`` skips the named and idiosyncratic
    scenarios, which use a flat book built from the pools' per-position columns
    (:func:`flat_from_pools`: tiers, MM and hinges only — no second pass over the blocks).
    """
    grid = config.fine_grid()
    pools = build_pools(book, float(grid[0]), float(grid[-1]))
    sums = evaluate(pools, grid)
    bad_now, liq_now = sums.bad_now, sums.liq_now
    nf = len(book.funds)
    n_inst = len(book.instruments)
    names = [i.name for i in book.instruments]

    long_unit = pools.slope > 0
    bl = np.where(long_unit, bad_now, 0.0)
    bs = bad_now - bl
    bad_long = [float(np.add.reduce(pools.weights_t[f] * bl)) for f in range(nf)]
    bad_short = [float(np.add.reduce(pools.weights_t[f] * bs)) for f in range(nf)]
    # notional of liquidatable pools per fund = Σ pools' current notional in the fund
    liq_w = np.where(liq_now, pools.notional0, 0.0)
    liq_notional = [float(np.add.reduce(pools.weights_t[f] * liq_w)) for f in range(nf)]

    # state counts: accounts exposed to each fund (any position, cross or isolated)
    n_acc = book.n_accounts
    exposed = np.zeros((max(nf, 1), n_acc), dtype=np.bool_)
    exposed[:nf] = pools.weights_t[:nf, :n_acc] > 0
    iso = slice(int(pools.unit.size - (pools.n_units - n_acc)), pools.unit.size)
    exposed[pools.fund[iso], pools.account[iso]] = True
    states = book.state[:n_acc]
    counts = [_bincount(states[exposed[f]], minlength=len(STATE_LABELS)) for f in range(nf)]

    scen_bad: list[dict[str, float]] = [{} for _ in range(nf)]
    scen_prof: list[dict[str, float]] = [{} for _ in range(nf)]
    x_id = config.idiosyncratic_shock
    idio_down = idio_up = np.zeros((n_inst, max(nf, 1)))
    if scenarios:
        lo = min(
            [float(grid[0]), -x_id]
            + [min([sc.default_shock, *sc.shocks.values()]) for sc in config.scenarios.values()]
        )
        hi = max(
            [float(grid[-1]), x_id]
            + [max([sc.default_shock, *sc.shocks.values()]) for sc in config.scenarios.values()]
        )
        fb = flat_from_pools(book, pools, lo, hi)
        units = _units_of(pools, fb)
        for name, scenario in config.scenarios.items():
            x = np.array([scenario.shock_of(n) for n in names], dtype=np.float64)
            bad_s, liq_s = unit_bad_debt(fb, units, x)
            upnl_s = units.upnl0 + _bincount(
                fb.unit, weights=fb.qv * fb.mark * x[fb.instrument], minlength=units.n
            )
            prof_s = np.where(~liq_s & units.has_position, np.maximum(upnl_s, 0.0), 0.0)
            bf, pf = units.weights.T @ bad_s, units.weights.T @ prof_s
            for f in range(nf):
                scen_bad[f][name] = float(bf[f])
                scen_prof[f][name] = float(pf[f])
        idio_down = idiosyncratic_bad_debt(fb, units, bad_now, -x_id, n_inst)
        idio_up = idiosyncratic_bad_debt(fb, units, bad_now, x_id, n_inst)

    adl = _adl_candidates(book, pools, liq_now, config.adl_top_k, names)
    k = config.adl_top_k
    inst_of_fund = [[i.name for i in book.instruments if i.fund == f] for f in range(nf)]
    out: dict[str, FundPartial] = {}
    for f, fund in enumerate(book.funds):
        kf = [book.instrument_index[n] for n in inst_of_fund[f]]
        out[fund] = FundPartial(
            fund=fund,
            shocks=grid,
            bad_debt_usd=sums.bad_debt[f],
            profitable_upnl_usd=sums.profitable_upnl[f],
            bad_debt_long_usd=float(bad_long[f]),
            bad_debt_short_usd=float(bad_short[f]),
            liquidatable_notional_usd=liq_notional[f],
            state_counts={s: int(c) for s, c in zip(STATE_LABELS, counts[f], strict=True)},
            scenario_bad_debt_usd=scen_bad[f],
            scenario_profitable_upnl_usd=scen_prof[f],
            idiosyncratic_shock=x_id,
            idiosyncratic_down_usd={names[i]: float(idio_down[i, f]) for i in kf},
            idiosyncratic_up_usd={names[i]: float(idio_up[i, f]) for i in kf},
            adl_long=adl[(f, True)],
            adl_short=adl[(f, False)],
            adl_top_k=k,
        )
    return out


def _units_of(pools: Pools, fb: FlatBook) -> Units:
    """The scenarios' per-unit view of ``pools`` (same unit numbering as ``flatten``)."""
    return Units(
        e0=pools.e0,
        slope=pools.slope,
        fee=pools.fee,
        impact=pools.impact,
        const_cost=pools.const_cost,
        mm0=pools.mm0,
        mm1=pools.mm1,
        upnl0=pools.upnl0,
        notional0=pools.notional0,
        has_position=pools.has_position,
        crossing_pos=fb.hinge_pos,
        weights=np.ascontiguousarray(pools.weights),
        account=np.concatenate(
            (np.arange(pools.n_accounts), pools.account[pools.unit >= pools.n_accounts])
        ),
    )


def _adl_candidates(
    book: AccountBook, pools: Pools, liq_now: BoolArray, k: int, names: list[str]
) -> dict[tuple[int, bool], tuple[AdlCandidate, ...]]:
    """Top-K profitable positions of non-liquidatable pools per (fund, side), by score."""
    nf = len(book.funds)
    ok_idx = np.flatnonzero(pools.upnl > 0)
    u = pools.unit[ok_idx]
    eq = pools.e0[u]
    keep = (eq > 0) & ~liq_now[u]
    ok_idx, eq = ok_idx[keep], eq[keep]
    score = hyperliquid_score(
        pools.mark[ok_idx],
        pools.entry[ok_idx],
        pools.notional[ok_idx],
        eq,
        pools.size[ok_idx],
    )
    group = pools.fund[ok_idx] * 2 + (pools.size[ok_idx] > 0)
    # the top K of each group are among the global top M whenever the group has ≥ K there
    m = min(score.size, 8 * k * max(nf, 1))
    top = np.argpartition(-score, m - 1)[:m] if 0 < m < score.size else np.arange(score.size)
    in_top = np.bincount(group[top], minlength=2 * max(nf, 1))
    adl: dict[tuple[int, bool], tuple[AdlCandidate, ...]] = {}
    for f in range(nf):
        for is_long in (True, False):
            g = f * 2 + int(is_long)
            if in_top[g] >= k or top.size == score.size:
                sel = top[group[top] == g]
            else:
                sel = np.flatnonzero(group == g)
            if sel.size > k:
                sel = sel[np.argpartition(-score[sel], k - 1)[:k]]
            adl[(f, is_long)] = merge_top(
                (
                    AdlCandidate(
                        book.account_names[int(pools.account[ok_idx[i]])],
                        names[int(pools.instrument[ok_idx[i]])],
                        float(pools.size[ok_idx[i]]),
                        float(pools.notional[ok_idx[i]]),
                        float(pools.upnl[ok_idx[i]]),
                        float(score[i]),
                    )
                    for i in sel.tolist()
                ),
                k,
            )
    return adl
