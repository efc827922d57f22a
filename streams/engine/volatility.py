"""EWMA volatility per instrument and the first-passage probability of reaching liquidation.

Variance is kept per second of time: each tick contributes the squared log return divided by the
elapsed time, and the decay is time-scaled, ``λ^(Δt / interval)``, so irregular ticks weigh by the
time they cover (RiskMetrics λ = 0.94 at the configured interval).

First passage of a driftless Brownian motion: the probability that a log price with volatility
σ (per √second) moves by at least ``d`` (a log distance) in one given direction within T seconds
is ``P = 2 Φ(−d / (σ √T))`` (reflection principle).
"""

from __future__ import annotations

import math

import numpy as np

from streams.engine.tiers import FloatArray


class EwmaVolatility:
    """Per-instrument EWMA of squared log returns, per second (index = instrument index)."""

    __slots__ = ("_default_var", "_interval", "_lam_log", "last_price", "last_ts", "var")

    def __init__(self, lam: float, interval_seconds: float, default_vol: float) -> None:
        self._lam_log = math.log(lam)
        self._interval = interval_seconds
        self._default_var = default_vol * default_vol
        self.var: FloatArray = np.zeros(0)
        self.last_price: FloatArray = np.zeros(0)
        self.last_ts: FloatArray = np.zeros(0)

    def ensure(self, n: int) -> None:
        old = self.var.shape[0]
        if n <= old:
            return
        size = max(n, 2 * old, 8)
        self.var = np.concatenate((self.var, np.full(size - old, self._default_var)))
        self.last_price = np.concatenate((self.last_price, np.full(size - old, np.nan)))
        self.last_ts = np.concatenate((self.last_ts, np.full(size - old, np.nan)))

    def update(self, index: int, price: float, ts: float) -> None:
        prev_price = self.last_price[index]
        prev_ts = self.last_ts[index]
        self.last_price[index] = price
        self.last_ts[index] = ts
        if not (prev_price > 0) or not (ts > prev_ts):
            return
        dt = ts - prev_ts
        r = math.log(price / prev_price)
        w = math.exp(self._lam_log * dt / self._interval)
        self.var[index] = w * self.var[index] + (1.0 - w) * (r * r / dt)

    def update_many(self, index: np.ndarray, price: FloatArray, ts: float) -> None:
        """Vectorized update of distinct instruments at one time stamp (conflated batches)."""
        prev_price = self.last_price[index]
        prev_ts = self.last_ts[index]
        self.last_price[index] = price
        self.last_ts[index] = ts
        ok = (prev_price > 0) & (ts > prev_ts)
        if not ok.any():
            return
        idx = index[ok]
        dt = ts - prev_ts[ok]
        r = np.log(price[ok] / prev_price[ok])
        w = np.exp(self._lam_log * dt / self._interval)
        self.var[idx] = w * self.var[idx] + (1.0 - w) * (r * r / dt)

    def sigma(self, index: int) -> float:
        """Volatility of log price per √second."""
        return math.sqrt(float(self.var[index]))


def first_passage_probability(distance: float, sigma_per_sqrt_s: float, horizon_s: float) -> float:
    """P(a driftless BM with volatility σ moves ≥ ``distance`` one way within the horizon)."""
    if distance <= 0:
        return 1.0
    scale = sigma_per_sqrt_s * math.sqrt(horizon_s)
    if scale <= 0 or not math.isfinite(distance):
        return 0.0
    return math.erfc(distance / scale / math.sqrt(2.0))  # 2 Φ(−x) = erfc(x / √2)


def first_passage_probabilities(
    distance: FloatArray, sigma_per_sqrt_s: FloatArray, horizon_s: float
) -> FloatArray:
    from math import erfc

    scale = sigma_per_sqrt_s * math.sqrt(horizon_s)
    out = np.empty_like(distance)
    for i, (d, s) in enumerate(zip(distance.tolist(), scale.tolist(), strict=True)):
        if d <= 0:
            out[i] = 1.0
        else:
            out[i] = 0.0 if s <= 0 or not math.isfinite(d) else erfc(d / s / 2**0.5)
    return out
