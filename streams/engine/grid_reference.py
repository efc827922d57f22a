"""The straightforward flat-book evaluation of the stress grid, kept as the reference the
closed-form grid (:mod:`streams.engine.pools`, :mod:`streams.engine.grid`) is tested against.

Production code does not use this module: :func:`streams.engine.stress.compute_partials` takes
the uniform grid from the per-pool closed forms. Here the book is flattened to one row per
position (:func:`flatten`), summed into per-unit coefficients (:func:`unit_coefficients`), and the
grid is evaluated by vectorized binary search over grid indices plus difference-array accumulation
(:func:`evaluate_grid`); see the docstring of :mod:`streams.engine.stress` for the method.

It also keeps the vectorized NumPy form of the per-pool closed forms (:func:`build_pools_numpy`,
:func:`evaluate_numpy`): the oracle the compiled kernels (:mod:`streams.engine.kernels`) are
tested against, to ~1e-12 relative (tests/unit/test_stress_kernels.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.engine.book import AccountBook
from streams.engine.book_batch import tier_pad
from streams.engine.grid import GridSums
from streams.engine.pools import Pools
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


# -- NUMPY ORACLE OF THE COMPILED POOL KERNELS ----------------------------------------------------
# The vectorized per-pool coefficients and closed-form grid that production used before the
# compiled kernels (:mod:`streams.engine.kernels`); same numbering, same math, summed in NumPy.


def _bincount_f(idx: IntArray, weights: FloatArray | None = None, minlength: int = 0) -> FloatArray:
    return np.asarray(np.bincount(idx, weights=weights, minlength=minlength), dtype=np.float64)


def _mm_exact(
    self: Pools, pos: IntArray, shock: FloatArray, right: bool
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


def build_pools_numpy(book: AccountBook, shock_min: float, shock_max: float) -> Pools:
    """The NumPy form of :func:`streams.engine.pools.build_pools` (whole-book concatenations and
    ``bincount``s): the oracle the compiled pool pass is tested against."""
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
        return _bincount_f(unit, w, nu)

    root_n = np.sqrt(notional)
    fee = s(notional * np.repeat(fee_k[ks] * linf_b, lens))
    impact = s(notional * root_n * np.repeat(imp_k[ks] * linf_b, lens))
    const_cost = np.zeros(nu)
    if inv_pos.size:
        ki = instrument[inv_pos]
        ni = notional[inv_pos]
        const_cost = _bincount_f(unit[inv_pos], ni * (fee_k[ki] + imp_k[ki] * root_n[inv_pos]), nu)
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
            weights_t[f, :n_acc] = _bincount_f(acct[r], notional[r], n_acc)
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


_NEWTON_STEPS = 40  # cap; convex Newton from outside converges in a few steps


class _Index:
    """First grid index with grid > x ('right') or grid ≥ x ('left'), vectorized without a
    per-element binary search (the grid is close to uniform: arithmetic guess + fix-up)."""

    def __init__(self, grid: FloatArray) -> None:
        self.grid = grid
        self.count = grid.shape[0]
        self.g0 = float(grid[0])
        self.step = (float(grid[-1]) - self.g0) / max(self.count - 1, 1) or 1.0
        self.ext = np.concatenate(([-np.inf], grid, [np.inf]))  # ext[j + 1] = grid[j]

    def __call__(self, x: FloatArray, right: bool) -> IntArray:
        count = self.count
        xc = np.clip(x, self.g0 - 2 * self.step, float(self.grid[-1]) + 2 * self.step)
        with np.errstate(invalid="ignore"):  # NaN (unused entries): any index
            j = np.clip(np.ceil((xc - self.g0) / self.step).astype(np.int64), 0, count)
        ext = self.ext
        top = count
        for _ in range(4):
            # want: ext[j] (grid[j-1]) before x and ext[j+1] (grid[j]) after x
            if right:
                back = (ext[j] > x) & (j > 0)
                fwd = (ext[j + 1] <= x) & (j < top)
            else:
                back = (ext[j] >= x) & (j > 0)
                fwd = (ext[j + 1] < x) & (j < top)
            if not (back.any() or fwd.any()):
                return j
            j = j - back + fwd
        if right:
            wrong = ((ext[j] > x) & (j > 0)) | ((ext[j + 1] <= x) & (j < top))
        else:
            wrong = ((ext[j] >= x) & (j > 0)) | ((ext[j + 1] < x) & (j < top))
        bad = np.flatnonzero(wrong)
        if bad.size:
            j[bad] = np.searchsorted(self.grid, x[bad], side="right" if right else "left")
        return j


def _f(a: FloatArray, b: FloatArray, c: FloatArray, s: FloatArray) -> FloatArray:
    g = 1.0 + s
    return a + b * s + c * (g * np.sqrt(g))


def _f_roots(
    a: FloatArray, b: FloatArray, c: FloatArray, smin: float, smax: float
) -> tuple[FloatArray, FloatArray]:
    """[r1, r2] = {f ≤ 0} ∩ [smin, smax] for convex f = a + b·s + c·(1+s)^1.5 (c ≥ 0).

    ±inf where the set extends beyond the range; (inf, −inf) when empty.
    """
    n = a.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        star = np.where((c > 0) & (b < 0), (b / (1.5 * np.where(c > 0, c, 1.0))) ** 2 - 1.0, 0.0)
    star = np.where(b >= 0, smin, np.where(c > 0, star, smax))
    star = np.clip(star, smin, smax)
    fmin = _f(a, b, c, star)
    f_lo = _f(a, b, c, np.full(n, smin))
    f_hi = _f(a, b, c, np.full(n, smax))
    r1 = np.full(n, np.inf)
    r2 = np.full(n, -np.inf)
    zero = fmin <= 0
    r1[zero & (f_lo <= 0)] = -np.inf
    r2[zero & (f_hi <= 0)] = np.inf
    for end, side, fe in ((smin, r1, f_lo), (smax, r2, f_hi)):
        sel = np.flatnonzero(zero & (fe > 0))
        if sel.size == 0:
            continue
        aa, bb, cc = a[sel], b[sel], c[sel]
        # start: one Newton step from the chord's root (inside: the chord lies above f) lands
        # outside (the tangent lies below f), next to the root; Newton from outside is monotone
        fs, fm, st = fe[sel], fmin[sel], star[sel]
        with np.errstate(divide="ignore", invalid="ignore"):
            chord = end + (st - end) * (fs / (fs - fm))
            chord = np.where(np.isfinite(chord), chord, st)
            fc = _f(aa, bb, cc, chord)
            dc = bb + 1.5 * cc * np.sqrt(1.0 + chord)
            t0 = chord - fc / dc
        t0 = np.where(np.isfinite(t0), t0, end)
        t = np.maximum(t0, end) if end == smin else np.minimum(t0, end)
        t = np.where(fc <= 0, t, end)  # (rounding) a chord root outside: start at the end
        ft = _f(aa, bb, cc, t)
        act = np.arange(sel.size)
        for _ in range(_NEWTON_STEPS):
            ta = t[act]
            d = bb[act] + 1.5 * cc[act] * np.sqrt(1.0 + ta)
            with np.errstate(divide="ignore", invalid="ignore"):
                t_new = ta - ft / d
            t_new = np.where(np.isfinite(t_new), t_new, ta)
            t[act] = t_new
            more = np.abs(t_new - ta) > 1e-14 * (1.0 + np.abs(ta))
            act = act[more]
            if act.size == 0:
                break
            ft = _f(aa[act], bb[act], cc[act], t[act])
        side[sel] = np.clip(t, smin, smax)
    return r1, r2


def _g_exact(
    pools: Pools,
    units: IntArray,
    ql: FloatArray,
    qh: FloatArray,
    solve_l: BoolArray,
    solve_r: BoolArray,
    smin: float,
    smax: float,
) -> tuple[FloatArray, FloatArray]:
    """Exact {g < 0} = (q1, q2) ∩ [smin, smax] of ``units`` (±inf beyond the range).

    g = Σ MM(s) − E0 − S·s is convex piecewise linear; (ql, qh) is the tangent's interval, a
    superset. Newton from outside each end (one-sided slopes) lands on the root in at most as
    many steps as there are tier floors between the start and the root.
    """
    nc = units.size
    marked = np.full(pools.n_units, -1, dtype=np.int64)
    marked[units] = np.arange(nc)
    # only positions whose tier changes inside the range deviate from the tangent:
    # g(s) = g0 + g1·s + Σ [MM_p(s) − MM_p(0) − slope_p·s] over those
    row_all = marked[pools.unit[pools.band_pos]]
    keep0 = row_all >= 0
    pos = pools.band_pos[keep0]
    row = row_all[keep0]
    mm_p0, sl_p0 = _mm_exact(pools, pos, np.zeros(pos.size), True)
    e0 = pools.e0[units]
    sl = pools.slope[units]
    g0u = pools.mm0[units] - e0
    g1u = pools.mm1[units] - sl

    def g_at(t: FloatArray, right: bool, which: IntArray) -> tuple[FloatArray, FloatArray]:
        """g and its one-sided slope at t (per unit of ``which`` — rows into ``units``)."""
        sel = np.zeros(nc, dtype=np.bool_)
        sel[which] = True
        keep = np.flatnonzero(sel[row])
        p, r = pos[keep], row[keep]
        rank = np.zeros(nc, dtype=np.int64)
        rank[which] = np.arange(which.size)
        tt = t[r]
        mm, dmm = _mm_exact(pools, p, tt, right)
        rr = rank[r]
        corr = _bincount_f(rr, mm - mm_p0[keep] - sl_p0[keep] * tt, which.size)
        dcorr = _bincount_f(rr, dmm - sl_p0[keep], which.size)
        tw = t[which]
        return g0u[which] + g1u[which] * tw + corr, g1u[which] + dcorr

    q1 = ql.copy()
    q2 = qh.copy()
    empty = np.zeros(nc, dtype=np.bool_)
    for left in (True, False):
        rows = np.flatnonzero(solve_l if left else solve_r)
        if rows.size == 0:
            continue
        start = np.maximum(ql, smin) if left else np.minimum(qh, smax)
        t = start.copy()
        g = np.zeros(nc)
        d = np.zeros(nc)
        g[rows], d[rows] = g_at(t, left, rows)
        # start inside {g < 0} only at a grid end (a tangent root has g ≥ 0)
        inside = g < 0
        out = q1 if left else q2
        active = rows[~inside[rows]]
        for _ in range(_NEWTON_STEPS):
            if active.size == 0:
                break
            ga, da = g[active], d[active]
            hit = ga <= 0
            nope = (da >= 0) if left else (da <= 0)
            nope &= ~hit
            empty[active[nope]] = True
            go = ~hit & ~nope
            ta = t[active]
            with np.errstate(divide="ignore", invalid="ignore"):
                t_new = np.where(go, ta - ga / np.where(da != 0, da, 1.0), ta)
            beyond = (t_new > smax) if left else (t_new < smin)
            empty[active[go & beyond]] = True
            stuck = go & (np.abs(t_new - ta) <= 1e-15 * (1.0 + np.abs(ta)))
            t[active] = t_new
            nxt = active[go & ~beyond & ~stuck]
            if nxt.size == 0:
                break
            gn, dn = g_at(t, left, nxt)
            g[nxt] = gn
            d[nxt] = dn
            active = nxt
        out[rows] = t[rows]
        # inside at the start: at a grid end the set extends beyond it; at a tangent root
        # (g ≥ 0 there in exact arithmetic) a rounding residue — the root is the start
        at_end = inside & ((start <= smin) if left else (start >= smax))
        out[at_end] = -np.inf if left else np.inf
    q1[empty] = np.inf
    q2[empty] = -np.inf
    return q1, q2


def evaluate_numpy(pools: Pools, grid: FloatArray) -> GridSums:
    """The NumPy form of :func:`streams.engine.grid.evaluate` (vectorized roots and difference
    arrays): the oracle the compiled per-pool kernel is tested against."""
    count = grid.shape[0]
    smin, smax = float(grid[0]), float(grid[-1])
    nu = pools.n_units
    index = _Index(grid)
    # every unit (a unit without positions has zero fund shares: it adds nothing)
    e0 = pools.e0
    S = pools.slope
    alpha = pools.fee + pools.const_cost - e0
    beta = pools.fee - S
    gamma = pools.impact

    # -- g = MM − equity < 0: not liquidatable --
    g0 = pools.mm0 - e0
    g1 = pools.mm1 - S
    with np.errstate(divide="ignore", invalid="ignore"):
        root = -g0 / g1
    ql = np.where(g1 > 0, -np.inf, np.where(g1 < 0, root, np.where(g0 < 0, -np.inf, np.inf)))
    qh = np.where(g1 > 0, root, np.where(g1 < 0, np.inf, np.where(g0 < 0, np.inf, -np.inf)))
    cl = np.maximum(ql, smin)
    ch = np.minimum(qh, smax)
    nonempty = cl < ch
    lo_u, hi_u = pools.lo, pools.hi
    # the tangent's roots are exact where they fall inside the tier-stable range; else the
    # slope bounds may still certify an infinite end: MM's slope is ≥ 0 (so g' ≥ −S) and
    # ≤ max MMR × notional (so g' ≤ that − S), whatever tiers are crossed
    healthy0 = g0 < 0
    left_cert = healthy0 & (S <= 0)
    right_cert = healthy0 & (pools.mmr_max * pools.notional0 - S <= 0)
    solve_l = nonempty & ~((lo_u <= cl) & (cl <= hi_u)) & ~left_cert
    solve_r = nonempty & ~((lo_u <= ch) & (ch <= hi_u)) & ~right_cert
    ql = np.where(nonempty & left_cert & ~((lo_u <= cl) & (cl <= hi_u)), -np.inf, ql)
    qh = np.where(nonempty & right_cert & ~((lo_u <= ch) & (ch <= hi_u)), np.inf, qh)
    crossing = np.flatnonzero(solve_l | solve_r)
    if crossing.size:
        q1, q2 = _g_exact(
            pools,
            crossing,
            ql[crossing],
            qh[crossing],
            solve_l[crossing],
            solve_r[crossing],
            smin,
            smax,
        )
        ql[crossing] = q1
        qh[crossing] = q2
    ga = index(ql, right=True)  # first grid point > q1
    gb = index(qh, right=False) - 1  # last grid point < q2

    # -- f = cost − equity ≤ 0: no bad debt --
    r1, r2 = _f_roots(alpha, beta, gamma, smin, smax)
    fa = index(r1, right=False)  # first grid point ≥ r1
    fb = index(r2, right=True) - 1  # last grid point ≤ r2

    # -- bad debt: grid − ([fa, fb] ∪ [ga, gb]) --
    e1 = fa <= fb
    e2 = ga <= gb
    overlap = e1 & e2 & (np.maximum(fa, ga) <= np.minimum(fb, gb) + 1)
    ma = np.where(overlap, np.minimum(fa, ga), fa)
    mb = np.where(overlap, np.maximum(fb, gb), fb)
    use2 = e2 & ~overlap
    keep1 = e1 | overlap
    nc = nu
    wt = pools.weights_t
    nzt = (wt > 0).astype(np.float64)
    # active = grid − two disjoint, non-adjacent inactive ranges: up to three pieces [a, b]
    big = count + 1
    s1 = np.where(keep1, ma, big)
    t1 = np.where(keep1, mb, big)
    s2 = np.where(use2, ga, big)
    t2 = np.where(use2, gb, big)
    swap = s2 < s1
    s1, s2 = np.where(swap, s2, s1), np.where(swap, s1, s2)
    t1, t2 = np.where(swap, t2, t1), np.where(swap, t1, t2)
    pieces = (
        (np.zeros(nc, dtype=np.int64), np.minimum(s1, count) - 1),
        (t1 + 1, np.minimum(s2, count) - 1),
        (t2 + 1, np.full(nc, count - 1)),
    )
    starts, ends = [], []
    for pa_, pb_ in pieces:
        ok_ = (pa_ <= pb_) & (pa_ < count)
        starts.append(np.where(ok_, pa_, big))
        ends.append(np.where(ok_, pb_ + 1, big))
    bad = _accumulate_ranges(wt, nzt, starts, ends, (alpha, beta, gamma, ones_(nc)), count)
    pgrid = (1.0 + grid) ** 1.5
    bad_debt = np.where(bad[3] > 0.5, np.maximum(bad[0] + bad[1] * grid + bad[2] * pgrid, 0.0), 0)

    # -- profitable uPnL of non-liquidated pools: [ga, gb] ∩ {U0 + S·s > 0} --
    u0 = pools.upnl0
    with np.errstate(divide="ignore", invalid="ignore"):
        uroot = -u0 / S
    pa = np.where(S > 0, index(uroot, right=True), np.where(S < 0, 0, np.where(u0 > 0, 0, count)))
    pb = np.where(
        S < 0,
        index(uroot, right=False) - 1,
        np.where(S > 0, count - 1, np.where(u0 > 0, count - 1, -1)),
    )
    lo = np.maximum(pa, ga)
    hi = np.minimum(pb, gb)
    okp = lo <= hi
    prof = _accumulate_ranges(
        wt,
        nzt,
        [np.where(okp, lo, count + 1)],
        [np.where(okp, hi + 1, count + 1)],
        (u0, S, ones_(nc)),
        count,
    )
    profitable = np.where(prof[2] > 0.5, np.maximum(prof[0] + prof[1] * grid, 0.0), 0.0)

    # -- now (s = 0) --
    z = int(np.searchsorted(grid, 0.0))
    healthy = (ga <= z) & (z <= gb)
    liq_now = pools.has_position & ~healthy
    liq_now |= pools.e0 < 0
    active_now = ~((fa <= z) & (z <= fb)) & ~healthy
    bad_now = np.where(active_now & pools.has_position, np.maximum(alpha + gamma, 0.0), 0.0)
    return GridSums(grid, bad_debt, profitable, bad_now, liq_now)


def ones_(n: int) -> FloatArray:
    return np.ones(n)


def _accumulate_ranges(
    wt: FloatArray,
    nzt: FloatArray,
    starts: list[IntArray],
    ends: list[IntArray],
    coefs: tuple[FloatArray, ...],
    count: int,
) -> list[FloatArray]:
    """(funds × grid) sums of per-row coefficients over each row's active index ranges.

    Row r is active on [starts[i][r], ends[i][r]) for each i (start > count: no range);
    ``wt`` (funds × rows) are the rows' fund shares, ``nzt`` their indicator (> 0). Difference
    arrays: ranges from index 0 enter a dense sum, the others an event at their start; ends
    before the grid's end are events. The LAST coefficient counts active rows (weight-free,
    exact), so that sums over no active row are exactly 0.
    """
    bases, rows, poss, signs = [], [], [], []
    for st, en in zip(starts, ends, strict=True):
        bases.append(np.flatnonzero(st == 0))
        ev = np.flatnonzero((st > 0) & (st < count))
        ee = np.flatnonzero(en < count)
        rows += [ev, ee]
        poss += [st[ev], en[ee]]
        signs += [np.ones(ev.size), -np.ones(ee.size)]
    base = np.concatenate(bases)
    ev_row = np.concatenate(rows)
    ev_pos = np.concatenate(poss)
    ev_sign = np.concatenate(signs)
    nf = wt.shape[0]
    size = count + 1
    last = len(coefs) - 1
    ds = [np.zeros((nf, size)) for _ in coefs]
    cbase = [c[base] for c in coefs[:last]]
    vals = [ev_sign * c[ev_row] for c in coefs[:last]]
    for f in range(nf):
        wf = wt[f]
        wb = wf[base]
        we = wf[ev_row]
        for i in range(len(coefs)):
            d = ds[i]
            if i == last:
                nz = nzt[f]
                d[f, 0] = float(np.add.reduce(nz[base]))
                d[f] += _bincount_f(ev_pos, ev_sign * nz[ev_row], size)
            else:
                d[f, 0] = float(np.add.reduce(wb * cbase[i]))
                d[f] += _bincount_f(ev_pos, vals[i] * we, size)
    return [np.cumsum(d, axis=1)[:, :count] for d in ds]
