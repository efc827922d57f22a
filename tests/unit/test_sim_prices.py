"""Simulated marks: deterministic, correlated, with the configured crash."""

from __future__ import annotations

import pytest

from streams.sim.prices import CrashSpec, PricePathConfig, price_path

START = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}


def _path(seed: int, cfg: PricePathConfig, duration: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in START}
    for tick in price_path(START, cfg, seed=seed, t0=100.0, duration_s=duration):
        out[tick.instrument].append(tick.mark_price)
    return out


def test_deterministic_and_ordered() -> None:
    cfg = PricePathConfig(dt_s=2.0, crash=None)
    ticks = list(price_path(START, cfg, seed=3, t0=100.0, duration_s=60))
    assert ticks == list(price_path(START, cfg, seed=3, t0=100.0, duration_s=60))
    assert {t.instrument: t.mark_price for t in ticks[:2]} == START  # starts at the given marks
    keys = [(t.ts_event, t.instrument) for t in ticks]
    assert keys == sorted(keys) and ticks[-1].ts_event == 160.0


def test_crash_depth_and_correlation() -> None:
    crash = CrashSpec(start_s=300, duration_s=600, depth=0.3, vol_multiplier=1.5)
    cfg = PricePathConfig(dt_s=5.0, vol=0.3, idio_vol=0.05, jump_rate_per_day=0.0, crash=crash)
    path = _path(1, cfg, 900)
    btc = path["BTCUSDT"]
    before, after = btc[300 // 5], btc[-1]
    assert after / before == pytest.approx(0.7, abs=0.04)
    # instruments move together
    eth = path["ETHUSDT"]
    assert eth[-1] / eth[300 // 5] < 0.8


def test_no_crash_stays_near_start() -> None:
    path = _path(5, PricePathConfig(dt_s=10.0, crash=None), 1800)
    assert 0.9 < path["BTCUSDT"][-1] / 60_000 < 1.1
