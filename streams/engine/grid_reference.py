"""The straightforward flat-book evaluation of the stress grid, kept as the reference the
closed-form grid (:mod:`streams.engine.pools`, :mod:`streams.engine.grid`) is tested against.

Production code does not use this module: :func:`streams.engine.stress.compute_partials` takes
the uniform grid from the per-pool closed forms. Here the book is flattened to one row per
position (:func:`flatten`), summed into per-unit coefficients (:func:`unit_coefficients`), and the
grid is evaluated by vectorized binary search over grid indices plus difference-array accumulation
(:func:`evaluate_grid`); see the docstring of :mod:`streams.engine.stress` for the method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.engine.book import AccountBook
from streams.engine.stress import BoolArray, FlatBook, Units, _bincount, _hinges
from streams.engine.tiers import FloatArray, IntArray

# -- THE BOOK AS FLAT COLUMNS ----------------------------------------------------------------------


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


# -- PER-UNIT COEFFICIENTS -------------------------------------------------------------------------


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
