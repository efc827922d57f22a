"""Per-fund bad debt and profitable uPnL on the uniform-shock grid from per-pool closed forms.

For each pool (see :mod:`streams.engine.pools`), with f = cost − equity and g = MM − equity:

* f(s) = α + β·s + γ·(1+s)^1.5 is convex: {f ≤ 0} = [r1, r2], found by Newton from the grid's
  ends (outside the root, so monotone) — the minimizer is closed form;
* g is convex piecewise linear: {g < 0} = (q1, q2). On the pool's tier-stable range g is the
  tangent g0 + g1·s, whose roots are exact when they fall inside that range; the other pools
  (a position crosses a tier floor before the root) are solved exactly by Newton on the
  piecewise-linear g (one-sided slopes; finitely many steps), evaluated per position;
* a pool has bad debt f(s) where f > 0 and it is liquidatable (g ≥ 0), i.e. on the grid minus
  two index ranges; its profitable uPnL max(0, U0 + S·s) counts where g < 0.

Per fund, the sums over pools are accumulated with difference arrays on the coefficients
(α, β, γ; U0, S), weighted by the pool's fund shares: O(pools) plus O(funds × grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.engine.pools import BoolArray, Pools, _bincount
from streams.engine.tiers import FloatArray, IntArray

NEWTON_STEPS = 40  # cap; convex Newton from outside converges in a few steps


@dataclass(slots=True)
class GridSums:
    shocks: FloatArray
    bad_debt: FloatArray  # (funds, grid)
    profitable_upnl: FloatArray
    bad_now: FloatArray  # per unit, s = 0
    liq_now: BoolArray


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
        for _ in range(NEWTON_STEPS):
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
    mm_p0, sl_p0 = pools.mm_exact(pos, np.zeros(pos.size), True)
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
        mm, dmm = pools.mm_exact(p, tt, right)
        rr = rank[r]
        corr = _bincount(rr, mm - mm_p0[keep] - sl_p0[keep] * tt, which.size)
        dcorr = _bincount(rr, dmm - sl_p0[keep], which.size)
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
        for _ in range(NEWTON_STEPS):
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


def evaluate(pools: Pools, grid: FloatArray) -> GridSums:
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
                d[f] += _bincount(ev_pos, ev_sign * nz[ev_row], size)
            else:
                d[f, 0] = float(np.add.reduce(wb * cbase[i]))
                d[f] += _bincount(ev_pos, vals[i] * we, size)
    return [np.cumsum(d, axis=1)[:, :count] for d in ds]
