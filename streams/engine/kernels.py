"""Compiled single-threaded kernels of the uniform-shock stress grid (numba, cached on disk).

Pure functions of flat arrays (no I/O, no Python objects), one loop each, so that the stress
grid needs no whole-book NumPy temporaries:

* :func:`pool_pass` — ONE pass over the book's positions (cross blocks by fund, then isolated
  blocks) that accumulates every pool's coefficients (see :mod:`streams.engine.pools`), the fund
  shares, the tier-stable shock range and the positions whose tier changes inside the grid's
  range (grouped per pool, CSR);
* :func:`grid_pass` — ONE loop over pools: exact tangent / tier-crossing roots of g = MM − equity
  and the roots of f = cost − equity, then the pool's ranges go into per-fund difference arrays
  (see :mod:`streams.engine.grid` for the math);
* :func:`adl_top` — the top-K ADL candidates per (fund, side) by partial selection;
* :func:`state_counts` — state counts of the accounts exposed to each fund.

``cache=True``: the compile cost (a few seconds) is paid once per machine, not per process.
``error_model="numpy"``: division by zero gives ±inf/NaN like NumPy (the NumPy code this
replaces relies on it). The NumPy form of the first two is kept in
:mod:`streams.engine.grid_reference` as the tests' oracle.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from streams.engine.tiers import FloatArray, IntArray

NEWTON_STEPS = 40  # cap; convex Newton from outside converges in a few steps

_jit = nb.njit(cache=True, error_model="numpy", nogil=True)


# -- POOL COEFFICIENTS ----------------------------------------------------------------------------


@_jit
def _tier(floors: FloatArray, k: int, width: int, n: float, right: bool) -> int:
    """Tier of notional ``n`` in instrument ``k``'s padded table (floor ≤ n, or < n)."""
    c = 0
    for i in range(width):
        if (floors[k, i] <= n) if right else (floors[k, i] < n):
            c += 1
    return max(c - 1, 0)


# rows of the per-unit float block ``uf`` (UF_ROWS × units) filled by :func:`pool_pass`
UF_FEE, UF_IMPACT, UF_CONST, UF_SLOPE, UF_UPNL0, UF_MM1 = 0, 1, 2, 3, 4, 5
UF_E0, UF_TOTAL, UF_LO, UF_HI, UF_BASE, UF_MM0 = 6, 7, 8, 9, 10, 11
UF_ROWS = 12


@_jit
def pool_pass(
    block_k: IntArray,
    block_len: IntArray,
    n_cross_blocks: int,
    acct: IntArray,
    qv: FloatArray,
    entry: FloatArray,
    size: FloatArray,
    ms_c: FloatArray,
    lo_c: FloatArray,
    hi_c: FloatArray,
    iso_margin: FloatArray,
    mark_k: FloatArray,
    fee_k: FloatArray,
    imp_k: FloatArray,
    fund_k: IntArray,
    inverse_k: Any,
    cs_k: FloatArray,
    floors: FloatArray,
    mmr: FloatArray,
    amt: FloatArray,
    width: int,
    wallet: FloatArray,
    mm_book: FloatArray,
    n_acc: int,
    shock_min: float,
    shock_max: float,
    with_positions: bool,
    first_fund: IntArray,
    uf: FloatArray,
    wt: FloatArray,
    has_position: Any,
    b_unit: IntArray,
    b_k: IntArray,
    b_n: FloatArray,
    b_lin: Any,
    band_ptr: IntArray,
    band_k: IntArray,
    band_n0: FloatArray,
    band_lin: Any,
) -> Any:
    """Per-pool coefficients of the book (positions: cross blocks, then isolated blocks).

    Fills (every entry overwritten; the buffers may be reused across calls): ``uf`` (UF_ROWS ×
    units: the UF_* rows), ``wt`` (funds × units: fund shares of the current notional),
    ``has_position``, and the band CSR ``band_ptr, band_k, band_n0, band_lin`` (positions whose
    tier changes inside the range: instrument, current notional, linear; per unit in position
    order). ``first_fund`` (units) and ``b_*`` (positions) are scratch. Returns the number of
    band entries and the per-position columns (empty unless ``with_positions``): ``unit,
    instrument, fund, mark, notional, upnl, linear``.

    Cross positions scatter into their account's sums in random order, so each coefficient is
    summed in its own tight pass (one 2 MB target at a time stays in cache; fusing them all
    into one loop measured 3-5x slower). Every sum runs in position order, as the oracle's.
    """
    n_pos = acct.shape[0]
    n_cross = ms_c.shape[0]
    nu = uf.shape[1]
    fee = uf[UF_FEE]
    impact = uf[UF_IMPACT]
    const_cost = uf[UF_CONST]
    slope = uf[UF_SLOPE]
    upnl0 = uf[UF_UPNL0]
    mm1 = uf[UF_MM1]
    lo = uf[UF_LO]
    hi = uf[UF_HI]
    base = uf[UF_BASE]
    mm0 = uf[UF_MM0]
    uf[:UF_E0] = 0.0
    wt[:] = 0.0
    first_fund[:] = -1
    lo[:] = -np.inf
    hi[:] = np.inf
    base[:n_acc] = wallet[:n_acc]
    mm0[:n_acc] = mm_book[:n_acc]
    nbk = block_k.shape[0]
    # -- cross positions: one pass per coefficient --
    p = 0
    for b in range(n_cross_blocks):
        mark = mark_k[block_k[b]]
        for _ in range(block_len[b]):
            slope[acct[p]] += qv[p] * mark
            p += 1
    p = 0
    for b in range(n_cross_blocks):
        mark = mark_k[block_k[b]]
        for _ in range(block_len[b]):
            upnl0[acct[p]] += qv[p] * (mark - entry[p])
            p += 1
    p = 0
    for b in range(n_cross_blocks):
        mark = mark_k[block_k[b]]
        for _ in range(block_len[b]):
            mm1[acct[p]] += ms_c[p] * mark
            p += 1
    p = 0
    for b in range(n_cross_blocks):
        k = block_k[b]
        mark = mark_k[k]
        fee_w = fee_k[k]
        imp_w = imp_k[k]
        if inverse_k[k]:  # constant cost: |size|·cs·(fee + impact·√n)
            cs = cs_k[k]
            for _ in range(block_len[b]):
                n = abs(size[p]) * cs
                const_cost[acct[p]] += n * (fee_w + imp_w * math.sqrt(n))
                p += 1
        else:
            for _ in range(block_len[b]):
                fee[acct[p]] += abs(qv[p]) * mark * fee_w
                p += 1
    p = 0
    for b in range(n_cross_blocks):
        k = block_k[b]
        if inverse_k[k]:
            p += block_len[b]
            continue
        mark = mark_k[k]
        imp_w = imp_k[k]
        for _ in range(block_len[b]):
            n = abs(qv[p]) * mark
            impact[acct[p]] += n * math.sqrt(n) * imp_w
            p += 1
    p = 0
    for b in range(n_cross_blocks):
        k = block_k[b]
        mark = mark_k[k]
        inv = inverse_k[k]
        cs = cs_k[k]
        f = fund_k[k]
        wf = wt[f]
        for _ in range(block_len[b]):
            u = acct[p]
            wf[u] += abs(size[p]) * cs if inv else abs(qv[p]) * mark
            if first_fund[u] < 0:
                first_fund[u] = f
            p += 1
    # band: positions whose tier changes inside the range (their unit's tier-stable range)
    up_min = 1.0 + shock_min
    up_max = 1.0 + shock_max
    nb_ = 0
    p = 0
    for b in range(n_cross_blocks):
        k = block_k[b]
        mark = mark_k[k]
        lin = not inverse_k[k]
        cs = cs_k[k]
        lo_m = mark * up_min
        hi_m = mark * up_max
        for _ in range(block_len[b]):
            lo_p = lo_c[p]
            hi_p = hi_c[p]
            if lo_p > lo_m or hi_p < hi_m:
                u = acct[p]
                lo[u] = max(lo[u], lo_p / mark - 1.0)
                hi[u] = min(hi[u], hi_p / mark - 1.0)
                b_unit[nb_] = u
                b_k[nb_] = k
                b_n[nb_] = abs(qv[p]) * mark if lin else abs(size[p]) * cs
                b_lin[nb_] = lin
                nb_ += 1
            p += 1
    # -- isolated positions: one unit each, in order --
    for b in range(n_cross_blocks, nbk):
        k = block_k[b]
        mark = mark_k[k]
        lin = not inverse_k[k]
        f = fund_k[k]
        for _ in range(block_len[b]):
            u = n_acc + (p - n_cross)
            q = qv[p]
            aq = abs(q)
            n = aq * mark if lin else abs(size[p]) * cs_k[k]
            root_n = math.sqrt(n)
            if lin:
                fee[u] = n * fee_k[k]
                impact[u] = n * root_n * imp_k[k]
            else:
                const_cost[u] = n * (fee_k[k] + imp_k[k] * root_n)
            slope[u] = q * mark
            upnl0[u] = q * (mark - entry[p])
            t = _tier(floors, k, width, n, True)
            rate = mmr[k, t]
            mm1[u] = (aq * rate if lin else 0.0) * mark
            lo_p = floors[k, t] / aq if lin and t > 0 else -np.inf
            hi_p = floors[k, t + 1] / aq if lin else np.inf
            mm0[u] = n * rate - amt[k, t]
            base[u] = iso_margin[p - n_cross]
            if lo_p > mark * up_min or hi_p < mark * up_max:
                lo[u] = lo_p / mark - 1.0
                hi[u] = hi_p / mark - 1.0
                b_unit[nb_] = u
                b_k[nb_] = k
                b_n[nb_] = n
                b_lin[nb_] = lin
                nb_ += 1
            wt[f, u] = n
            first_fund[u] = f
            p += 1
    # -- per-position columns (the scenarios' flat book) --
    m = n_pos if with_positions else 0
    p_unit = np.empty(m, dtype=np.int32)  # (int32: the scenarios' footprint)
    p_inst = np.empty(m, dtype=np.int32)
    p_fund = np.empty(m, dtype=np.int32)
    p_mark = np.empty(m)
    p_notional = np.empty(m)
    p_upnl = np.empty(m)
    p_linear = np.empty(m, dtype=np.bool_)
    if with_positions:
        p = 0
        for b in range(nbk):
            k = block_k[b]
            mark = mark_k[k]
            lin = not inverse_k[k]
            for _ in range(block_len[b]):
                p_unit[p] = acct[p] if b < n_cross_blocks else n_acc + (p - n_cross)
                p_inst[p] = k
                p_fund[p] = fund_k[k]
                p_mark[p] = mark
                p_notional[p] = abs(qv[p]) * mark if lin else abs(size[p]) * cs_k[k]
                p_upnl[p] = qv[p] * (mark - entry[p])
                p_linear[p] = lin
                p += 1
    # -- per unit: equity now, total notional, fund shares --
    e0 = uf[UF_E0]
    total = uf[UF_TOTAL]
    nf = wt.shape[0]
    for u in range(nu):
        e0[u] = base[u] + upnl0[u]
        s = 0.0
        for f in range(nf):
            s += wt[f, u]
        total[u] = s
        inv_s = 1.0 / s if s > 0 else 0.0
        for f in range(nf):
            wt[f, u] *= inv_s
        has_position[u] = first_fund[u] >= 0
        if s <= 0 and first_fund[u] >= 0:  # zero notional: the unit belongs to its first fund
            wt[first_fund[u], u] = 1.0
    # band entries grouped per unit (stable counting sort; band_ptr[u] is unit u's cursor
    # while placing, then shifted back to its start)
    band_ptr[:] = 0
    for j in range(nb_):
        band_ptr[b_unit[j] + 1] += 1
    for u in range(nu):
        band_ptr[u + 1] += band_ptr[u]
    for j in range(nb_):
        u = b_unit[j]
        i = band_ptr[u]
        band_ptr[u] = i + 1
        band_k[i] = b_k[j]
        band_n0[i] = b_n[j]
        band_lin[i] = b_lin[j]
    for u in range(nu, 0, -1):
        band_ptr[u] = band_ptr[u - 1]
    band_ptr[0] = 0
    return nb_, p_unit, p_inst, p_fund, p_mark, p_notional, p_upnl, p_linear


# -- GRID ------------------------------------------------------------------------------------------


@_jit
def _mm_exact(
    floors: FloatArray,
    mmr: FloatArray,
    amt: FloatArray,
    width: int,
    k: int,
    n0: float,
    lin: bool,
    shock: float,
    right: bool,
) -> tuple[float, float]:
    """Exact MM of one position at a shock, and its one-sided d/ds."""
    n1 = n0 * (1.0 + shock) if lin else n0
    t = _tier(floors, k, width, n1, right)
    rate = mmr[k, t]
    return n1 * rate - amt[k, t], (n0 * rate if lin else 0.0)


@_jit
def _index(grid: FloatArray, x: float, right: bool, step: float) -> int:
    """First grid index with grid > x (``right``) or grid ≥ x (guess from the near-uniform
    spacing, then exact fix-up)."""
    count = grid.shape[0]
    if x != x:  # NaN: unused by the callers
        return 0
    if x == -np.inf:  # (common: a range unbounded on one side)
        return 0
    if x == np.inf:
        return count
    g0 = grid[0]
    xc = min(max(x, g0 - 2 * step), grid[count - 1] + 2 * step)
    j = math.ceil((xc - g0) * (1.0 / step))
    j = min(max(j, 0), count)
    if right:
        while j > 0 and grid[j - 1] > x:
            j -= 1
        while j < count and grid[j] <= x:
            j += 1
    else:
        while j > 0 and grid[j - 1] >= x:
            j -= 1
        while j < count and grid[j] < x:
            j += 1
    return j


@_jit
def _f(a: float, b: float, c: float, s: float) -> float:
    g = 1.0 + s
    return a + b * s + c * (g * np.sqrt(g))


@_jit
def _f_side(
    a: float, b: float, c: float, end: float, fe: float, fm: float, star: float, lower: bool
) -> float:
    """Root of convex f between ``end`` (f > 0) and ``star`` (f ≤ 0): chord, then Newton from
    outside (monotone)."""
    chord = end + (star - end) * (fe / (fe - fm))
    if not math.isfinite(chord):
        chord = star
    # f and f' share √(1+t)
    gc = 1.0 + chord
    rc = np.sqrt(gc)
    fc = a + b * chord + c * (gc * rc)
    dc = b + 1.5 * c * rc
    t0 = chord - fc / dc
    if not math.isfinite(t0):
        t0 = end
    t = max(t0, end) if lower else min(t0, end)
    if not fc <= 0:  # (rounding) a chord root outside: start at the end
        t = end
    g = 1.0 + t
    r = np.sqrt(g)
    ft = a + b * t + c * (g * r)
    for _ in range(NEWTON_STEPS):
        d = b + 1.5 * c * r
        t_new = t - ft / d
        if not math.isfinite(t_new):
            t_new = t
        more = abs(t_new - t) > 1e-14 * (1.0 + abs(t))
        t = t_new
        if not more:
            break
        g = 1.0 + t
        r = np.sqrt(g)
        ft = a + b * t + c * (g * r)
    return t


@_jit
def _f_roots(a: float, b: float, c: float, smin: float, smax: float) -> tuple[float, float]:
    """[r1, r2] = {f ≤ 0} ∩ [smin, smax] for f = a + b·s + c·(1+s)^1.5 (c ≥ 0); ±inf beyond the
    range, (inf, −inf) when empty."""
    if b >= 0:
        star = smin
    elif c > 0:
        star = (b / (1.5 * c)) ** 2 - 1.0
    else:
        star = smax
    star = min(max(star, smin), smax)
    fmin = _f(a, b, c, star)
    if not fmin <= 0:
        return np.inf, -np.inf
    f_lo = _f(a, b, c, smin)
    f_hi = _f(a, b, c, smax)
    if f_lo <= 0:
        r1 = -np.inf
    else:
        r1 = min(max(_f_side(a, b, c, smin, f_lo, fmin, star, True), smin), smax)
    if f_hi <= 0:
        r2 = np.inf
    else:
        r2 = min(max(_f_side(a, b, c, smax, f_hi, fmin, star, False), smin), smax)
    return r1, r2


@_jit
def _g_at(
    t: float,
    right: bool,
    g0u: float,
    g1u: float,
    j0: int,
    j1: int,
    band_k: IntArray,
    band_n0: FloatArray,
    band_lin: Any,
    band_mm0: FloatArray,
    band_sl0: FloatArray,
    floors: FloatArray,
    mmr: FloatArray,
    amt: FloatArray,
    width: int,
) -> tuple[float, float]:
    """g = MM − equity of one unit at t and its one-sided slope: the tangent plus the exact
    deviation of its positions whose tier changes in the range."""
    corr = 0.0
    dcorr = 0.0
    for j in range(j0, j1):
        mm, dmm = _mm_exact(floors, mmr, amt, width, band_k[j], band_n0[j], band_lin[j], t, right)
        corr += mm - band_mm0[j] - band_sl0[j] * t
        dcorr += dmm - band_sl0[j]
    return g0u + g1u * t + corr, g1u + dcorr


@_jit
def _g_side(
    start: float,
    left: bool,
    smin: float,
    smax: float,
    g0u: float,
    g1u: float,
    j0: int,
    j1: int,
    band_k: IntArray,
    band_n0: FloatArray,
    band_lin: Any,
    band_mm0: FloatArray,
    band_sl0: FloatArray,
    floors: FloatArray,
    mmr: FloatArray,
    amt: FloatArray,
    width: int,
) -> tuple[float, bool]:
    """One end of {g < 0}: Newton from outside with one-sided slopes (finitely many steps on a
    convex piecewise-linear g). Returns (end, empty)."""
    t = start
    g, d = _g_at(
        t,
        left,
        g0u,
        g1u,
        j0,
        j1,
        band_k,
        band_n0,
        band_lin,
        band_mm0,
        band_sl0,
        floors,
        mmr,
        amt,
        width,
    )
    if g < 0:
        # inside at the start: at a grid end the set extends beyond it; at a tangent root (g ≥ 0
        # there in exact arithmetic) a rounding residue — the root is the start
        at_end = (start <= smin) if left else (start >= smax)
        if at_end:
            return (-np.inf if left else np.inf), False
        return t, False
    for _ in range(NEWTON_STEPS):
        if g <= 0:
            break
        if (d >= 0) if left else (d <= 0):
            return t, True
        t_new = t - g / d
        if (t_new > smax) if left else (t_new < smin):
            return t_new, True
        stuck = abs(t_new - t) <= 1e-15 * (1.0 + abs(t))
        t = t_new
        if stuck:
            break
        g, d = _g_at(
            t,
            left,
            g0u,
            g1u,
            j0,
            j1,
            band_k,
            band_n0,
            band_lin,
            band_mm0,
            band_sl0,
            floors,
            mmr,
            amt,
            width,
        )
    return t, False


@_jit
def _event(
    dd: FloatArray, f: int, j: int, c: int, v0: float, v1: float, v2: float, v3: float
) -> None:
    """Add one difference-array event at grid index j (columns c, c+1, c+2 and the count: c+3
    for bad debt, 7 for profitable uPnL)."""
    dd[f, j, c] += v0
    dd[f, j, c + 1] += v1
    if c == 0:
        dd[f, j, 2] += v2
    dd[f, j, 3 if c == 0 else 7] += v3


@_jit
def grid_pass(
    e0: FloatArray,
    slope: FloatArray,
    fee: FloatArray,
    impact: FloatArray,
    const_cost: FloatArray,
    mm0: FloatArray,
    mm1: FloatArray,
    upnl0: FloatArray,
    notional0: FloatArray,
    has_position: Any,
    lo_u: FloatArray,
    hi_u: FloatArray,
    wt: FloatArray,
    band_ptr: IntArray,
    band_k: IntArray,
    band_n0: FloatArray,
    band_lin: Any,
    floors: FloatArray,
    mmr: FloatArray,
    amt: FloatArray,
    width: int,
    mmr_max: float,
    grid: FloatArray,
    bad_now: FloatArray,
    liq_now: Any,
    band_mm0: FloatArray,
    band_sl0: FloatArray,
) -> Any:
    """Per-fund bad debt and profitable uPnL on ``grid`` (funds × grid) and per fund: bad debt
    now (s = 0) of long / short units and the notional of liquidatable units. Fills each unit's
    bad debt and liquidatable flag now (``bad_now``, ``liq_now``); ``band_*`` are scratch."""
    nu = e0.shape[0]
    nf = wt.shape[0]
    count = grid.shape[0]
    smin = grid[0]
    smax = grid[count - 1]
    step = (smax - smin) / max(count - 1, 1)
    if step == 0:
        step = 1.0
    z = int(np.searchsorted(grid, 0.0))
    dd = np.zeros((nf, count, 8))
    bad_long = np.zeros(nf)
    bad_short = np.zeros(nf)
    liq_notional = np.zeros(nf)
    big = count + 1
    for u in range(nu):
        if not has_position[u]:  # zero fund shares: adds nothing
            liq_now[u] = e0[u] < 0
            bad_now[u] = 0.0
            continue
        S = slope[u]
        alpha = fee[u] + const_cost[u] - e0[u]
        beta = fee[u] - S
        gamma = impact[u]
        # -- g = MM − equity < 0: not liquidatable --
        g0 = mm0[u] - e0[u]
        g1 = mm1[u] - S
        if g1 > 0:
            ql = -np.inf
            qh = -g0 / g1
        elif g1 < 0:
            ql = -g0 / g1
            qh = np.inf
        elif g0 < 0:
            ql = -np.inf
            qh = np.inf
        else:
            ql = np.inf
            qh = -np.inf
        cl = max(ql, smin)
        ch = min(qh, smax)
        if cl < ch:
            in_l = lo_u[u] <= cl and cl <= hi_u[u]
            in_r = lo_u[u] <= ch and ch <= hi_u[u]
            # outside the tier-stable range the slope bounds may still certify an infinite end:
            # MM's slope is ≥ 0 (g' ≥ −S) and ≤ max MMR × notional (g' ≤ that − S)
            healthy0 = g0 < 0
            left_cert = healthy0 and S <= 0
            right_cert = healthy0 and mmr_max * notional0[u] - S <= 0
            solve_l = not in_l and not left_cert
            solve_r = not in_r and not right_cert
            if left_cert and not in_l:
                ql = -np.inf
            if right_cert and not in_r:
                qh = np.inf
            if solve_l or solve_r:
                j0 = band_ptr[u]
                j1 = band_ptr[u + 1]
                for j in range(j0, j1):  # MM and its slope now, of the unit's band positions
                    band_mm0[j], band_sl0[j] = _mm_exact(
                        floors, mmr, amt, width, band_k[j], band_n0[j], band_lin[j], 0.0, True
                    )
                empty = False
                q1 = ql
                q2 = qh
                if solve_l:
                    q1, e = _g_side(
                        max(ql, smin),
                        True,
                        smin,
                        smax,
                        g0,
                        g1,
                        j0,
                        j1,
                        band_k,
                        band_n0,
                        band_lin,
                        band_mm0,
                        band_sl0,
                        floors,
                        mmr,
                        amt,
                        width,
                    )
                    empty |= e
                if solve_r:
                    q2, e = _g_side(
                        min(qh, smax),
                        False,
                        smin,
                        smax,
                        g0,
                        g1,
                        j0,
                        j1,
                        band_k,
                        band_n0,
                        band_lin,
                        band_mm0,
                        band_sl0,
                        floors,
                        mmr,
                        amt,
                        width,
                    )
                    empty |= e
                if empty:
                    q1 = np.inf
                    q2 = -np.inf
                ql = q1
                qh = q2
        ga = _index(grid, ql, True, step)  # first grid point > q1
        gb = _index(grid, qh, False, step) - 1  # last grid point < q2
        # -- f = cost − equity ≤ 0: no bad debt --
        if ga == 0 and gb == count - 1:  # never liquidatable on the grid: f is irrelevant
            r1, r2 = np.inf, -np.inf
        else:
            r1, r2 = _f_roots(alpha, beta, gamma, smin, smax)
        if r1 <= r2:
            fa = _index(grid, r1, False, step)  # first grid point ≥ r1
            fb = _index(grid, r2, True, step) - 1  # last grid point ≤ r2
        else:
            fa = count
            fb = -1
        # -- bad debt: grid − ([fa, fb] ∪ [ga, gb]), up to three pieces --
        e1 = fa <= fb
        e2 = ga <= gb
        overlap = e1 and e2 and max(fa, ga) <= min(fb, gb) + 1
        ma = min(fa, ga) if overlap else fa
        mb = max(fb, gb) if overlap else fb
        s1, t1 = (ma, mb) if (e1 or overlap) else (big, big)
        s2, t2 = (ga, gb) if (e2 and not overlap) else (big, big)
        if s2 < s1:
            s1, s2 = s2, s1
            t1, t2 = t2, t1
        # active pieces [start, end)
        pieces = ((0, min(s1, count)), (t1 + 1, min(s2, count)), (t2 + 1, count))
        # -- profitable uPnL of non-liquidated pools: [ga, gb] ∩ {U0 + S·s > 0} --
        u0 = upnl0[u]
        if S > 0:
            pa = _index(grid, -u0 / S, True, step)
            pb = count - 1
        elif S < 0:
            pa = 0
            pb = _index(grid, -u0 / S, False, step) - 1
        elif u0 > 0:
            pa = 0
            pb = count - 1
        else:
            pa = count
            pb = -1
        plo = max(pa, ga)
        phi = min(pb, gb) + 1
        has_prof = plo < phi
        # difference-array events of this unit, then once per fund it belongs to: one cache
        # line (α, β, γ, count; U0, S, count) per touched grid index
        for f in range(nf):
            w = wt[f, u]
            if w > 0:
                wa = w * alpha
                wb = w * beta
                wg = w * gamma
                for st, en in pieces:
                    if st < en and st < count:
                        _event(dd, f, st, 0, wa, wb, wg, 1.0)
                        if en < count:
                            _event(dd, f, en, 0, -wa, -wb, -wg, -1.0)
                if has_prof:
                    wu = w * u0
                    ws = w * S
                    _event(dd, f, plo, 4, wu, ws, 0.0, 1.0)
                    if phi < count:
                        _event(dd, f, phi, 4, -wu, -ws, 0.0, -1.0)
        # -- now (s = 0) --
        healthy = ga <= z and z <= gb
        liq = (not healthy) or e0[u] < 0
        liq_now[u] = liq
        active_now = not (fa <= z and z <= fb) and not healthy
        bn = max(alpha + gamma, 0.0) if active_now else 0.0
        bad_now[u] = bn
        for f in range(nf):
            w = wt[f, u]
            if S > 0:
                bad_long[f] += w * bn
            else:
                bad_short[f] += w * bn
            if liq:
                liq_notional[f] += w * notional0[u]
    bad_debt = np.zeros((nf, count))
    profitable = np.zeros((nf, count))
    for f in range(nf):
        a = 0.0
        b = 0.0
        c = 0.0
        n = 0.0
        ua = 0.0
        ub = 0.0
        un = 0.0
        for j in range(count):
            a += dd[f, j, 0]
            b += dd[f, j, 1]
            c += dd[f, j, 2]
            n += dd[f, j, 3]
            if n > 0.5:
                g = 1.0 + grid[j]
                bad_debt[f, j] = max(a + b * grid[j] + c * (g**1.5), 0.0)
            ua += dd[f, j, 4]
            ub += dd[f, j, 5]
            un += dd[f, j, 7]
            if un > 0.5:
                profitable[f, j] = max(ua + ub * grid[j], 0.0)
    return bad_debt, profitable, bad_long, bad_short, liq_notional


# -- ADL AND STATE COUNTS --------------------------------------------------------------------------


@_jit
def adl_top(
    block_k: IntArray,
    block_len: IntArray,
    n_cross_blocks: int,
    n_acc: int,
    n_cross: int,
    qv: FloatArray,
    entry: FloatArray,
    size: FloatArray,
    acct: IntArray,
    mark_k: FloatArray,
    fund_k: IntArray,
    inverse_k: Any,
    cs_k: FloatArray,
    e0: FloatArray,
    liq_now: Any,
    nf: int,
    top_k: int,
    eq_ok: FloatArray,
    sel: IntArray,
) -> tuple[IntArray, FloatArray, IntArray]:
    """Top-K positions by Hyperliquid score per group (fund × 2 + is_long) among profitable
    positions of pools with equity > 0 that are not liquidatable. Returns (positions, scores,
    counts) per group, unordered. ``eq_ok`` (units) and ``sel`` (positions) are scratch.

    The filters compact index lists without branching (about half the positions pass each,
    in no order a branch predictor could learn); only the survivors are scored.
    """
    nu = e0.shape[0]
    # the pool's equity where its positions are eligible (> 0, not liquidatable), else 0
    for u in range(nu):
        eq_ok[u] = e0[u] if e0[u] > 0 and not liq_now[u] else 0.0
    # profitable positions
    m = 0
    p = 0
    for b in range(block_k.shape[0]):
        mark = mark_k[block_k[b]]
        for _ in range(block_len[b]):
            sel[m] = p
            m += qv[p] * (mark - entry[p]) > 0
            p += 1
    # ... of eligible pools (the block of a position: walk the block starts along)
    m2 = 0
    for i in range(m):
        p = sel[i]
        u = acct[p] if p < n_cross else n_acc + (p - n_cross)
        sel[m2] = p
        m2 += eq_ok[u] > 0
    ng = 2 * max(nf, 1)
    best_pos = np.full((ng, top_k), -1, dtype=np.int64)
    best = np.full((ng, top_k), -np.inf)
    cnt = np.zeros(ng, dtype=np.int64)
    worst = np.zeros(ng, dtype=np.int64)  # slot of the lowest kept score once full
    b = 0
    end = block_len[0] if block_len.shape[0] else 0
    for i in range(m2):
        p = sel[i]
        while p >= end:
            b += 1
            end += block_len[b]
        k = block_k[b]
        mark = mark_k[k]
        u = acct[p] if p < n_cross else n_acc + (p - n_cross)
        eq = eq_ok[u]
        n = abs(qv[p]) * mark if not inverse_k[k] else abs(size[p]) * cs_k[k]
        ratio = mark / entry[p]
        if size[p] < 0:
            ratio = 1.0 / ratio
        score = ratio * abs(n) / eq
        g = fund_k[k] * 2 + (1 if size[p] > 0 else 0)
        c = cnt[g]
        if c < top_k:
            best[g, c] = score
            best_pos[g, c] = p
            cnt[g] = c + 1
            if c + 1 == top_k:
                w = 0
                for j in range(1, top_k):
                    if best[g, j] < best[g, w]:
                        w = j
                worst[g] = w
        elif score > best[g, worst[g]]:
            best[g, worst[g]] = score
            best_pos[g, worst[g]] = p
            w = 0
            for j in range(1, top_k):
                if best[g, j] < best[g, w]:
                    w = j
            worst[g] = w
    return best_pos, best, cnt


@_jit
def state_counts(
    wt: FloatArray,
    n_acc: int,
    block_k: IntArray,
    block_len: IntArray,
    n_cross_blocks: int,
    n_cross: int,
    acct: IntArray,
    fund_k: IntArray,
    state: Any,
    n_states: int,
) -> IntArray:
    """(funds × states) counts of accounts exposed to each fund: a cross share > 0 or an
    isolated position in one of its instruments."""
    nf = wt.shape[0]
    exposed = np.zeros((nf, n_acc), dtype=np.bool_)
    for f in range(nf):
        for a in range(n_acc):
            exposed[f, a] = wt[f, a] > 0
    p = n_cross
    for b in range(n_cross_blocks, block_k.shape[0]):
        f = fund_k[block_k[b]]
        for _ in range(block_len[b]):
            exposed[f, acct[p]] = True
            p += 1
    out = np.zeros((nf, n_states), dtype=np.int64)
    for f in range(nf):
        for a in range(n_acc):
            if exposed[f, a]:
                out[f, state[a]] += 1
    return out


@_jit
def position_tiers(
    instrument: IntArray,
    notional: FloatArray,
    linear: Any,
    floors: FloatArray,
    mmr: FloatArray,
    amt: FloatArray,
    width: int,
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per position: margin tier, MM and its slope d MM / d x within the tier (0 for inverse)
    at the current notional (the scenarios' flat book; one pass, no (positions × tiers)
    comparison matrix)."""
    n_pos = instrument.shape[0]
    tier = np.empty(n_pos, dtype=np.int64)
    mm = np.empty(n_pos)
    mslope = np.empty(n_pos)
    for p in range(n_pos):
        k = instrument[p]
        n = notional[p]
        t = _tier(floors, k, width, n, True)
        rate = mmr[k, t]
        tier[p] = t
        mm[p] = n * rate - amt[k, t]
        mslope[p] = n * rate if linear[p] else 0.0
    return tier, mm, mslope


@_jit
def tier_hinges(
    instrument: IntArray,
    tier: IntArray,
    notional: FloatArray,
    linear: Any,
    floors: FloatArray,
    mmr: FloatArray,
    width: int,
    shock_min: float,
    shock_max: float,
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Tier-floor hinges of linear positions whose notional crosses a floor within the shock
    range: (position, breakpoint, coefficient, direction), in the order of
    :func:`streams.engine.stress._hinges` (floor index, then up before down, then position)."""
    up_max = 1.0 + shock_max
    up_min = 1.0 + shock_min
    n_pos = instrument.shape[0]
    sub = np.empty(n_pos, dtype=np.int64)
    m = 0
    for p in range(n_pos):
        k = instrument[p]
        t = tier[p]
        n = notional[p]
        sub[m] = p
        m += linear[p] and (floors[k, t + 1] < n * up_max or (t > 0 and floors[k, t] > n * up_min))
    total = 0
    for j in range(1, width):
        for i in range(m):
            p = sub[i]
            fj = floors[instrument[p], j]
            ns = notional[p]
            total += tier[p] < j and fj < ns * up_max
            total += tier[p] >= j and fj > ns * up_min
    pos = np.empty(total, dtype=np.int64)
    brk = np.empty(total)
    coef = np.empty(total)
    direction = np.empty(total)
    h = 0
    for j in range(1, width):
        for d in (1.0, -1.0):
            for i in range(m):
                p = sub[i]
                k = instrument[p]
                fj = floors[k, j]
                ns = notional[p]
                hit = (
                    (tier[p] < j and fj < ns * up_max)
                    if d > 0
                    else (tier[p] >= j and fj > ns * up_min)
                )
                if hit:
                    pos[h] = p
                    brk[h] = fj / ns - 1.0
                    coef[h] = ns * (mmr[k, j] - mmr[k, j - 1])
                    direction[h] = d
                    h += 1
    return pos, brk, coef, direction
