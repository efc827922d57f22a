"""Simulated mark prices: correlated GBM with jumps, then a configurable crash.

One market factor drives every instrument (``beta`` per instrument, plus idiosyncratic noise),
so instruments move together the way crypto markets do in a crash. The path has three phases:

1. **drift** — GBM at ``vol`` (annualized) with Poisson jumps, for ``crash.start_s`` seconds;
2. **crash** — the factor falls by ``crash.depth`` (0.25 = −25 %) over ``crash.duration_s``,
   with ``crash.vol_multiplier`` × volatility (log-linear trend + noise, so the crash is choppy);
3. **aftermath** — GBM again at elevated volatility that decays back to normal.

Deterministic by seed. PURE module (no I/O frameworks).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from streams.engine.models import PriceTick

SECONDS_PER_YEAR = 365.0 * 24 * 3600


@dataclass(frozen=True, slots=True)
class CrashSpec:
    start_s: float = 1800.0  # seconds after the start of the path
    duration_s: float = 900.0
    depth: float = 0.25  # fall of the market factor (fraction)
    vol_multiplier: float = 3.0


@dataclass(frozen=True, slots=True)
class PricePathConfig:
    dt_s: float = 1.0  # tick interval per instrument (event time)
    vol: float = 0.6  # annualized volatility of the market factor
    idio_vol: float = 0.15  # annualized idiosyncratic volatility per instrument
    drift: float = 0.0  # annualized drift
    jump_rate_per_day: float = 4.0
    jump_sigma: float = 0.004  # log-size of a jump
    crash: CrashSpec | None = field(default_factory=CrashSpec)
    aftermath_decay_s: float = 1800.0  # elevated volatility decays with this time constant


def _phase(t: float, crash: CrashSpec | None) -> tuple[float, float]:
    """(trend per second in log price, volatility multiplier) at offset ``t``."""
    if crash is None or t < crash.start_s:
        return 0.0, 1.0
    end = crash.start_s + crash.duration_s
    if t < end:
        return math.log(1.0 - crash.depth) / crash.duration_s, crash.vol_multiplier
    return 0.0, 1.0


def price_path(
    initial: Mapping[str, float],
    config: PricePathConfig | None = None,
    *,
    seed: int = 0,
    t0: float = 0.0,
    betas: Mapping[str, float] | None = None,
    duration_s: float | None = None,
) -> Iterator[PriceTick]:
    """Yield ``PriceTick``s for every instrument every ``dt_s`` seconds, ordered by (ts, name).

    Infinite unless ``duration_s`` is given. The first tick of each instrument (at ``t0``) is its
    initial price.
    """
    cfg = config or PricePathConfig()
    rng = np.random.default_rng(seed)
    names = sorted(initial)
    beta = np.array([(betas or {}).get(n, 1.0) for n in names], dtype=np.float64)
    log_p = np.log(np.array([initial[n] for n in names], dtype=np.float64))
    dt = cfg.dt_s
    sq = math.sqrt(dt / SECONDS_PER_YEAR)
    jump_p = cfg.jump_rate_per_day * dt / 86_400.0
    step = 0
    after_mult = 1.0
    while True:
        t = step * dt
        if duration_s is not None and t > duration_s:
            return
        ts = t0 + t
        for i, name in enumerate(names):
            yield PriceTick(
                instrument=name, mark_price=float(f"{math.exp(log_p[i]):.10g}"), ts_event=ts
            )
        trend, mult = _phase(t, cfg.crash)
        crash = cfg.crash
        if crash is not None and t >= crash.start_s + crash.duration_s:
            since = t - (crash.start_s + crash.duration_s)
            after_mult = 1.0 + (crash.vol_multiplier - 1.0) * math.exp(
                -since / cfg.aftermath_decay_s
            )
            mult = after_mult
        factor = cfg.drift * dt / SECONDS_PER_YEAR + trend * dt + cfg.vol * mult * sq * rng.normal()
        if rng.random() < jump_p * mult:
            factor += rng.normal(0.0, cfg.jump_sigma) * (2.0 if trend < 0 else 1.0)
        idio = cfg.idio_vol * mult * sq * rng.normal(size=len(names))
        log_p = log_p + beta * factor + idio
        step += 1
