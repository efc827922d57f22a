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
per-position columns (``flat_from_pools``). The flat-book evaluation of the grid described
above (``flatten``, ``unit_coefficients``, ``evaluate_grid``) lives in
:mod:`streams.engine.grid_reference`, the tests' reference for the closed forms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from streams.engine.book import AccountBook
from streams.engine.book_columns import InstrumentState
from streams.engine.config import EngineConfig
from streams.engine.grid import evaluate
from streams.engine.kernels import adl_top, position_tiers, state_counts, tier_hinges
from streams.engine.pools import Pools, Workspace, borrow_workspace, build_pools
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


def flat_from_pools(
    book: AccountBook, pools: Pools, shock_min: float = -0.5, shock_max: float = 0.5
) -> FlatBook:
    """The flat book of ``book`` from the per-position columns ``build_pools`` already gathered
    (no second pass over the book's blocks): same positions and unit numbering as
    :func:`streams.engine.grid_reference.flatten`, in the pools' order (cross by fund, then
    isolated) — so ``slices`` is empty and :func:`mm_at_shock` groups by instrument itself outside
    the hinge range."""
    insts = book.instruments
    pad = pools.pad
    k = pools.instrument
    n = pools.notional
    qv = pools.qv if pools.qv is not None else np.zeros(n.size)
    inverse = ~pools.linear
    n_acc = pools.n_accounts
    n_cross = int(pools.unit.size - (pools.n_units - n_acc))
    t, mm, mslope = position_tiers(k, n, pools.linear, pad.floors, pad.mmr, pad.amt, pad.width)
    h_pos, h_break, h_coef, h_dir = tier_hinges(
        k, t, n, pools.linear, pad.floors, pad.mmr, pad.width, shock_min, shock_max
    )
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
    # (in place: one 8 MB temporary at a time on a 1M-position book)
    bound = fb.qv * fb.mark
    np.abs(bound, out=bound)
    bound *= x
    bound += f0[fb.unit]
    bound += cost_now * ((1.0 + x) ** 1.5 - 1.0)
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


# -- PARTIALS --------------------------------------------------------------------------------------


# workspace buffers the scenarios do not read (pool pass inputs and scratch, the band CSR)
_DEAD_AFTER_GRID = (
    "ms",
    "lo",
    "hi",
    "first_fund",
    "b_unit",
    "b_k",
    "b_n",
    "b_lin",
    "band_ptr",
    "band_k",
    "band_n0",
    "band_lin",
    "band_mm0",
    "band_sl0",
)


def compute_partials(
    book: AccountBook, config: EngineConfig, scenarios: bool = True
) -> dict[str, FundPartial]:
    """Per-fund additive aggregates of ``book`` (see :mod:`streams.engine.venue`).

    The uniform grid comes from the per-pool closed forms (:mod:`streams.engine.pools`,
    :mod:`streams.engine.grid`); ``scenarios=False`` skips the named and idiosyncratic
    scenarios, which use a flat book built from the pools' per-position columns
    (:func:`flat_from_pools`: tiers, MM and hinges only — no second pass over the blocks).
    """
    with borrow_workspace(book) as ws:
        return _compute_partials(book, config, scenarios, ws)


def _compute_partials(
    book: AccountBook, config: EngineConfig, scenarios: bool, ws: Workspace
) -> dict[str, FundPartial]:
    grid = config.fine_grid()
    # the derived per-position columns are needed by the scenarios only
    pools = build_pools(book, float(grid[0]), float(grid[-1]), positions=scenarios, workspace=ws)
    sums = evaluate(pools, grid, ws)
    if scenarios:  # the band and scratch buffers are dead: their memory serves the scenarios
        pools.band_ptr = pools.band_k = np.zeros(0, dtype=np.int64)
        pools.band_n0 = np.zeros(0)
        pools.band_lin = np.zeros(0, dtype=np.bool_)
        ws.release(*_DEAD_AFTER_GRID)
    bad_now = sums.bad_now
    nf = len(book.funds)
    n_inst = len(book.instruments)
    names = [i.name for i in book.instruments]
    bad_long = sums.bad_long.tolist()
    bad_short = sums.bad_short.tolist()
    liq_notional = sums.liq_notional.tolist()

    # state counts: accounts exposed to each fund (any position, cross or isolated)
    n_acc = book.n_accounts
    counts = state_counts(
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

    adl = _adl_candidates(book, pools, sums.liq_now, config.adl_top_k, names, ws)
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
    """The scenarios' per-unit view of ``pools`` (same unit numbering as
    :func:`streams.engine.grid_reference.flatten`)."""
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
        weights=pools.weights,
        account=np.concatenate(
            (np.arange(pools.n_accounts), pools.account[pools.unit >= pools.n_accounts])
        ),
    )


def _adl_candidates(
    book: AccountBook,
    pools: Pools,
    liq_now: BoolArray,
    k: int,
    names: list[str],
    ws: Workspace | None = None,
) -> dict[tuple[int, bool], tuple[AdlCandidate, ...]]:
    """Top-K profitable positions of non-liquidatable pools per (fund, side), by score
    (partial selection in :func:`streams.engine.kernels.adl_top`)."""
    nf = len(book.funds)
    pad = pools.pad
    ws = ws if ws is not None else Workspace()
    best_pos, best_score, cnt = adl_top(
        pools.block_k,
        pools.block_len,
        pools.n_cross_blocks,
        pools.n_accounts,
        pools.n_cross,
        pools.qv if pools.qv is not None else np.zeros(0),
        pools.entry,
        pools.size,
        pools.account,
        pools.mark_k,
        pools.fund_k,
        pad.inverse,
        pad.cs,
        pools.e0,
        liq_now,
        nf,
        k,
        ws.array("adl_eq", (pools.n_units,)),
        ws.array("adl_sel", (pools.size.shape[0],), np.int32),
    )
    # block (hence instrument) of every kept position, in one search
    starts = np.cumsum(pools.block_len) - pools.block_len
    kept = best_pos[best_pos >= 0]
    kept_k = pools.block_k[np.searchsorted(starts, kept, side="right") - 1]
    inst_of = dict(zip(kept.tolist(), kept_k.tolist(), strict=True))
    qv_all = pools.qv if pools.qv is not None else np.zeros(pools.size.shape[0])
    adl: dict[tuple[int, bool], tuple[AdlCandidate, ...]] = {}
    for f in range(nf):
        for is_long in (True, False):
            g = f * 2 + int(is_long)
            cands = []
            for slot in range(int(cnt[g])):
                p = int(best_pos[g, slot])
                kk = inst_of[p]
                mark = float(pools.mark_k[kk])
                qv = float(qv_all[p])
                size = float(pools.size[p])
                notional = abs(size) * float(pad.cs[kk]) if pad.inverse[kk] else abs(qv) * mark
                cands.append(
                    AdlCandidate(
                        book.account_names[int(pools.account[p])],
                        names[kk],
                        size,
                        notional,
                        qv * (mark - float(pools.entry[p])),
                        float(best_score[g, slot]),
                    )
                )
            adl[(f, is_long)] = merge_top(cands, k)
    return adl
