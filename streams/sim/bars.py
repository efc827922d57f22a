"""Historical OHLC bars -> a realistic, deterministic intra-bar mark-price path.

CSV format (``/work/shared/data/crashes/*.csv``): ``ts,symbol,open,high,low,close,volume`` with
``ts`` the bar's open time (ISO-8601 UTC) and ``symbol`` prefixed by venue (``BINANCE-UM:BTCUSDT``);
several symbols may share a file.

Each bar becomes a path through its four prices, in the order the bar's direction implies —
``open → high → low → close`` for a down bar, ``open → low → high → close`` for an up bar — with a
few seeded Brownian-bridge sub-steps between anchors, clipped to ``[low, high]``. The anchors are
hit exactly. Randomness is derived from (seed, symbol, bar time), so a symbol's path does not
depend on which other symbols are replayed.

Instruments of a venue are **bound** to file symbols: same name after stripping the venue prefix;
else the same base asset (``BTCUSD_PERP`` follows ``BTCUSDT``); else the file's primary symbol as
a proxy (the instrument then follows its relative returns from its own price level).

PURE module (no I/O frameworks).
"""

from __future__ import annotations

import csv
import itertools
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import median

import numpy as np

from streams.engine.models import PriceTick
from streams.sim.venue import base_asset


@dataclass(frozen=True, slots=True)
class Bar:
    ts: float  # bar open time, Unix seconds UTC
    symbol: str  # venue prefix stripped
    open: float
    high: float
    low: float
    close: float
    volume: float


def strip_venue(symbol: str) -> str:
    """``BINANCE-UM:BTCUSDT`` -> ``BTCUSDT``."""
    return symbol.rsplit(":", 1)[-1].strip()


def parse_ts(text: str) -> float:
    text = text.strip()
    if text.replace(".", "", 1).isdigit():
        value = float(text)
        return value / 1000.0 if value > 1e11 else value  # milliseconds or seconds
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_bars(path: str | Path) -> list[Bar]:
    """Read and validate a bars CSV; sorted by (symbol, ts). Raises ValueError on bad rows.

    When two raw symbols strip to the same name (``BINANCE:BTCUSDT`` and ``BITFINEX:BTCUSDT``),
    the first one seen wins and the other's rows are dropped.
    """
    bars: list[Bar] = []
    owner: dict[str, str] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        required = {"ts", "symbol", "open", "high", "low", "close"}
        if reader.fieldnames is None or not required <= set(reader.fieldnames):
            raise ValueError(f"{path}: header must contain {sorted(required)}")
        for lineno, row in enumerate(reader, start=2):
            raw = row["symbol"].strip()
            sym = strip_venue(raw)
            if owner.setdefault(sym, raw) != raw:
                continue
            try:
                o, h, low, c = (float(row[k]) for k in ("open", "high", "low", "close"))
                vol = float(row.get("volume") or 0.0)
                ts = parse_ts(row["ts"])
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from exc
            if not all(math.isfinite(x) and x > 0 for x in (o, h, low, c)):
                raise ValueError(f"{path}:{lineno}: prices must be positive and finite")
            if h < max(o, c) or low > min(o, c):
                raise ValueError(f"{path}:{lineno}: inconsistent OHLC")
            bars.append(Bar(ts, sym, o, h, low, c, vol))
    bars.sort(key=lambda b: (b.symbol, b.ts))
    return bars


def by_symbol(bars: Iterable[Bar]) -> dict[str, list[Bar]]:
    """Bars grouped per symbol (symbols in order of first appearance), each sorted by time."""
    out: dict[str, list[Bar]] = {}
    for bar in bars:
        out.setdefault(bar.symbol, []).append(bar)
    for series in out.values():
        series.sort(key=lambda b: b.ts)
    return out


def bar_duration(series: Sequence[Bar]) -> float:
    """The bar length in seconds: the median spacing of consecutive bars (60 for one bar)."""
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(series) if b.ts > a.ts]
    return float(median(gaps)) if gaps else 60.0


# ---------------------------------------------------------------------------------------------
# Intra-bar path
# ---------------------------------------------------------------------------------------------


def _bar_rng(seed: int, symbol: str, ts: float) -> np.random.Generator:
    return np.random.default_rng(
        [seed & 0xFFFFFFFF, zlib.crc32(symbol.encode()), int(ts) & 0xFFFFFFFF]
    )


def expand_bar(
    bar: Bar, duration_s: float, *, seed: int = 0, substeps: int = 3
) -> list[tuple[float, float]]:
    """[(ts, price)] for one bar: open at the bar's start, the two extremes, the close near its end.

    The four OHLC prices appear exactly; ``substeps`` Brownian-bridge points between consecutive
    anchors wander inside ``[low, high]``.
    """
    rng = _bar_rng(seed, bar.symbol, bar.ts)
    up = bar.close >= bar.open
    first, second = (bar.low, bar.high) if up else (bar.high, bar.low)
    close_at = duration_s * (1.0 - 1.0 / (4.0 * (substeps + 1) + 4.0))
    a = float(rng.uniform(0.10, 0.40)) * close_at
    b = float(rng.uniform(0.55, 0.85)) * close_at
    anchors = [(0.0, bar.open), (a, first), (b, second), (close_at, bar.close)]
    rng_span = math.log(bar.high / bar.low)
    out: list[tuple[float, float]] = [(bar.ts, bar.open)]
    for (ta, pa), (tb, pb) in itertools.pairwise(anchors):
        if substeps > 0:
            la, lb = math.log(pa), math.log(pb)
            sigma = 0.25 * rng_span / math.sqrt(substeps + 1)
            walk = np.cumsum(rng.normal(0.0, sigma, size=substeps + 1))
            frac = np.arange(1, substeps + 2) / (substeps + 1)
            bridge = walk - frac * walk[-1]  # pinned to 0 at both ends
            for k in range(substeps):
                f = float(frac[k])
                price = math.exp(la + f * (lb - la) + float(bridge[k]))
                price = min(bar.high, max(bar.low, price))
                out.append((bar.ts + ta + f * (tb - ta), float(f"{price:.10g}")))
        out.append((bar.ts + tb, pb))
    return out


def expand_series(
    series: Sequence[Bar], *, seed: int = 0, substeps: int = 3
) -> list[tuple[float, float]]:
    """The whole path of one symbol (bars in time order)."""
    duration = bar_duration(series)
    path: list[tuple[float, float]] = []
    for i, bar in enumerate(series):
        # a gap in the data: keep the bar's own length rather than stretching it across the gap
        nxt = series[i + 1].ts - bar.ts if i + 1 < len(series) else duration
        path.extend(
            expand_bar(
                bar, min(duration, nxt) if nxt > 0 else duration, seed=seed, substeps=substeps
            )
        )
    return path


# ---------------------------------------------------------------------------------------------
# Binding venue instruments to file symbols
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binding:
    instrument: str
    symbol: str
    mode: str  # "exact" | "base" | "proxy"


def primary_symbol(symbols: Sequence[str]) -> str:
    """BTC if present (the market factor), else the first symbol in the file."""
    for s in symbols:
        if base_asset(s) == "BTC":
            return s
    return symbols[0]


def bind_instruments(instruments: Sequence[str], symbols: Sequence[str]) -> dict[str, Binding]:
    if not symbols:
        raise ValueError("no symbols to bind")
    out: dict[str, Binding] = {}
    for inst in instruments:
        if inst in symbols:
            out[inst] = Binding(inst, inst, "exact")
            continue
        same_base = [s for s in symbols if base_asset(s) == base_asset(inst)]
        if same_base:
            out[inst] = Binding(inst, same_base[0], "base")
        else:
            out[inst] = Binding(inst, primary_symbol(symbols), "proxy")
    return out


@dataclass(frozen=True)
class BoundPath:
    """Everything a replay needs from a bars file for a given venue."""

    bindings: Mapping[str, Binding]
    first_prices: Mapping[str, float]  # instrument -> its first mark on the replay path
    ticks: tuple[PriceTick, ...]  # ordered by (ts_event, instrument)
    bar_seconds: float
    start_ts: float
    end_ts: float


def bound_path(
    bars: Sequence[Bar], venue_marks: Mapping[str, float], *, seed: int = 0, substeps: int = 3
) -> BoundPath:
    """Bind the venue's instruments to the file and build their tick stream.

    ``exact`` and ``base`` bindings take the file's prices (the caller rescales the book to
    ``first_prices``); ``proxy`` bindings keep the instrument's own level times the symbol's
    relative move. Only bound symbols are expanded.
    """
    series = by_symbol(bars)
    symbols = list(series)
    bindings = bind_instruments(sorted(venue_marks), symbols)
    paths = {
        s: expand_series(series[s], seed=seed, substeps=substeps)
        for s in sorted({b.symbol for b in bindings.values()})
    }
    ticks: list[PriceTick] = []
    first: dict[str, float] = {}
    for inst, binding in sorted(bindings.items()):
        path = paths[binding.symbol]
        scale = venue_marks[inst] / path[0][1] if binding.mode == "proxy" else 1.0
        first[inst] = float(f"{path[0][1] * scale:.10g}")
        for ts, price in path:
            ticks.append(
                PriceTick(instrument=inst, mark_price=float(f"{price * scale:.10g}"), ts_event=ts)
            )
    ticks.sort(key=lambda t: (t.ts_event, t.instrument))
    bar_seconds = min(bar_duration(series[s]) for s in paths)
    return BoundPath(
        bindings, first, tuple(ticks), bar_seconds, ticks[0].ts_event, ticks[-1].ts_event
    )
