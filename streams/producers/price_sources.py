"""Mark prices of the live phase: a GBM path with jumps and a crash, or historical bars."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.sim.venue import Venue


def gbm_prices(
    venue: Venue,
    *,
    seed: int,
    dt_s: float,
    crash_at_s: float | None,
    crash_pct: float,
    crash_duration_s: float,
    vol: float = 0.6,
) -> Iterator[tuple[str, float]]:
    """(instrument, mark) forever: correlated GBM, jumps and a crash (``streams.sim.prices``)."""
    from streams.sim.prices import CrashSpec, PricePathConfig, price_path

    crash = None
    if crash_at_s is not None and crash_pct > 0:
        crash = CrashSpec(start_s=crash_at_s, duration_s=crash_duration_s, depth=crash_pct)
    cfg = PricePathConfig(dt_s=dt_s, vol=vol, crash=crash)
    for tick in price_path(venue.marks, cfg, seed=seed, betas=venue.betas):
        yield tick.instrument, tick.mark_price


@dataclass
class CsvPrices:
    """Historical bars bound to the venue's instruments (``streams.sim.bars``)."""

    venue: Venue  # rescaled to the file's first prices
    ticks: list[tuple[float, str, float]]  # (historical ts, instrument, mark)
    bindings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, venue: Venue, *, seed: int = 0) -> CsvPrices:
        from streams.sim.bars import bound_path, read_bars

        bound = bound_path(read_bars(path), venue.marks, seed=seed)
        rescaled = venue.rescaled(bound.first_prices)
        ticks = [(t.ts_event, t.instrument, t.mark_price) for t in bound.ticks]
        return cls(rescaled, ticks, dict(bound.bindings))
