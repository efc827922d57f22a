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

All of it is one compiled loop over pools (:func:`streams.engine.kernels.grid_pass`); the
vectorized NumPy form is :func:`streams.engine.grid_reference.evaluate_numpy` (the tests' oracle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streams.engine.kernels import grid_pass
from streams.engine.pools import BoolArray, Pools, Workspace
from streams.engine.tiers import FloatArray


@dataclass(slots=True)
class GridSums:
    shocks: FloatArray
    bad_debt: FloatArray  # (funds, grid)
    profitable_upnl: FloatArray
    bad_now: FloatArray  # per unit, s = 0
    liq_now: BoolArray
    # per fund, s = 0: bad debt of net-long / other pools, notional of liquidatable pools
    bad_long: FloatArray = field(default_factory=lambda: np.zeros(0))
    bad_short: FloatArray = field(default_factory=lambda: np.zeros(0))
    liq_notional: FloatArray = field(default_factory=lambda: np.zeros(0))


def evaluate(pools: Pools, grid: FloatArray, workspace: Workspace | None = None) -> GridSums:
    """Per-fund bad debt and profitable uPnL of ``pools`` on ``grid`` (sorted, contains 0).

    The per-unit arrays (``bad_now``, ``liq_now``) are views of ``workspace`` when given.
    """
    ws = workspace if workspace is not None else Workspace()
    grid = np.ascontiguousarray(grid, dtype=np.float64)
    pad = pools.pad
    nu = pools.n_units
    nb = int(pools.band_k.shape[0])
    bad_now = ws.array("bad_now", (nu,))
    liq_now = ws.array("liq_now", (nu,), np.bool_)
    bad_debt, profitable, bad_long, bad_short, liq_notional = grid_pass(
        pools.e0,
        pools.slope,
        pools.fee,
        pools.impact,
        pools.const_cost,
        pools.mm0,
        pools.mm1,
        pools.upnl0,
        pools.notional0,
        pools.has_position,
        pools.lo,
        pools.hi,
        pools.weights_t,
        pools.band_ptr,
        pools.band_k,
        pools.band_n0,
        pools.band_lin,
        pad.floors,
        pad.mmr,
        pad.amt,
        pad.width,
        pools.mmr_max,
        grid,
        bad_now,
        liq_now,
        ws.array("band_mm0", (nb,)),
        ws.array("band_sl0", (nb,)),
    )
    return GridSums(grid, bad_debt, profitable, bad_now, liq_now, bad_long, bad_short, liq_notional)
