"""OHLC bars -> intra-bar paths: every bar's open/high/low/close hit exactly, in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.sim.bars import (
    Bar,
    bar_duration,
    bind_instruments,
    bound_path,
    by_symbol,
    expand_bar,
    expand_series,
    read_bars,
    strip_venue,
)
from tests.helpers import require_path

REPO = Path(__file__).resolve().parents[2]
CRASHES = Path(os.environ.get("RISKMON_SHARED_DIR", REPO.parent / "shared")) / "data" / "crashes"

CSV = """ts,symbol,open,high,low,close,volume
2020-03-12T10:00:00Z,BINANCE-UM:BTCUSDT,100,110,95,105,1
2020-03-12T10:01:00Z,BINANCE-UM:BTCUSDT,105,106,80,82,2
2020-03-12T10:00:00Z,BINANCE-UM:ETHUSDT,10,10,9,9.5,1
2020-03-12T10:01:00Z,BINANCE-UM:ETHUSDT,9.5,9.9,9.5,9.9,1
"""


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text(CSV)
    return path


def test_read_and_strip(csv_file: Path) -> None:
    bars = read_bars(csv_file)
    assert strip_venue("BINANCE-UM:BTCUSDT") == "BTCUSDT"
    assert [b.symbol for b in bars] == ["BTCUSDT", "BTCUSDT", "ETHUSDT", "ETHUSDT"]
    assert bars[0].ts == 1584007200.0 and bar_duration(by_symbol(bars)["BTCUSDT"]) == 60


def test_inconsistent_bar_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,symbol,open,high,low,close,volume\n2020-01-01T00:00:00Z,X:Y,10,9,8,9,1\n")
    with pytest.raises(ValueError, match="inconsistent OHLC"):
        read_bars(bad)


def _check_bar(bar: Bar, path: list[tuple[float, float]], duration: float) -> None:
    prices = [p for _, p in path]
    times = [t for t, _ in path]
    assert prices[0] == bar.open and prices[-1] == bar.close
    assert times == sorted(times) and bar.ts <= times[0] and times[-1] < bar.ts + duration
    assert all(bar.low <= p <= bar.high for p in prices)
    i_high, i_low = prices.index(bar.high), prices.index(bar.low)
    if bar.close >= bar.open:  # up bar: the low comes first
        assert i_low <= i_high
    else:
        assert i_high <= i_low


@pytest.mark.parametrize("substeps", [0, 1, 3])
def test_expand_bar_hits_ohlc_exactly_in_direction_order(csv_file: Path, substeps: int) -> None:
    for bar in read_bars(csv_file):
        path = expand_bar(bar, 60.0, seed=4, substeps=substeps)
        assert len(path) == 4 + 3 * substeps
        _check_bar(bar, path, 60.0)
        assert path == expand_bar(bar, 60.0, seed=4, substeps=substeps)  # deterministic


def test_real_file_every_bar_hit_exactly() -> None:
    path = require_path(CRASHES / "crash_2025-10-10_5m.csv", "crash data")
    series = by_symbol(read_bars(path))
    assert set(series) == {"BTCUSDT", "ETHUSDT"}
    for bars in series.values():
        full = expand_series(bars, seed=7, substeps=2)
        per_bar = 4 + 3 * 2
        assert len(full) == per_bar * len(bars)
        for k, bar in enumerate(bars):
            _check_bar(bar, full[k * per_bar : (k + 1) * per_bar], 300.0)


def test_binding_rules() -> None:
    b = bind_instruments(["BTCUSDT", "BTCUSD_PERP", "ETHUSDT", "SOLUSDT"], ["ETHUSDT", "BTCUSDT"])
    assert (b["BTCUSDT"].symbol, b["BTCUSDT"].mode) == ("BTCUSDT", "exact")
    assert (b["BTCUSD_PERP"].symbol, b["BTCUSD_PERP"].mode) == ("BTCUSDT", "base")
    assert (b["SOLUSDT"].symbol, b["SOLUSDT"].mode) == ("BTCUSDT", "proxy")  # BTC = the market


def test_bound_path_scales_proxies_and_orders_ticks(csv_file: Path) -> None:
    marks = {"BTCUSDT": 60_000.0, "SOLUSDT": 150.0}
    bp = bound_path(read_bars(csv_file), marks, seed=1, substeps=1)
    assert bp.first_prices == {"BTCUSDT": 100.0, "SOLUSDT": 150.0}
    sol = [t.mark_price for t in bp.ticks if t.instrument == "SOLUSDT"]
    btc = [t.mark_price for t in bp.ticks if t.instrument == "BTCUSDT"]
    assert sol == pytest.approx([1.5 * p for p in btc])  # follows BTC's relative move
    keys = [(t.ts_event, t.instrument) for t in bp.ticks]
    assert keys == sorted(keys)
    assert bp == bound_path(read_bars(csv_file), marks, seed=1, substeps=1)
