"""Tiered margin tables as NumPy arrays, shared by the scalar formulas and the vectorized book.

Venues (Binance USDⓈ-M, Bybit, Hyperliquid) define margin by notional brackets:

    MM(notional) = notional × MMR(tier) − cum(tier)
    cum(n)       = cum(n−1) + floor(n) × (MMR(n) − MMR(n−1)),   cum(0) = 0

which makes MM continuous in notional and equal to the bracket-by-bracket sum. Initial margin has
the same shape with IMR = 1 / max_leverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streams.engine.models import Instrument, MarginTier

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def maintenance_amounts(floors: FloatArray, rates: FloatArray) -> FloatArray:
    """cum(n) = cum(n−1) + floor(n) × (rate(n) − rate(n−1)); cum(0) = 0."""
    steps = floors[1:] * np.diff(rates)
    return np.concatenate(([0.0], np.cumsum(steps)))


@dataclass(frozen=True, slots=True)
class TierTable:
    """One instrument's margin brackets, ready for ``np.searchsorted``."""

    floors_usd: FloatArray
    mmr: FloatArray
    mm_amount_usd: FloatArray  # "maintenance amount" cum(n) for MM
    imr: FloatArray
    im_amount_usd: FloatArray  # the same recursion for IM

    @classmethod
    def from_tiers(cls, tiers: tuple[MarginTier, ...]) -> TierTable:
        floors = np.array([t.floor_notional_usd for t in tiers], dtype=np.float64)
        mmr = np.array([t.mmr for t in tiers], dtype=np.float64)
        imr = 1.0 / np.array([t.max_leverage for t in tiers], dtype=np.float64)
        mm_amount = maintenance_amounts(floors, mmr)
        return cls(floors, mmr, mm_amount, imr, maintenance_amounts(floors, imr))

    @classmethod
    def of(cls, instrument: Instrument) -> TierTable:
        return cls.from_tiers(instrument.tiers)

    def tier_index(self, notional_usd: FloatArray | float) -> IntArray:
        """Index of the bracket that applies to each absolute notional."""
        idx = np.searchsorted(self.floors_usd, np.abs(notional_usd), side="right") - 1
        return np.maximum(idx, 0).astype(np.int64)

    def maintenance_margin(self, notional_usd: FloatArray | float) -> FloatArray:
        n = np.abs(np.asarray(notional_usd, dtype=np.float64))
        i = self.tier_index(n)
        return n * self.mmr[i] - self.mm_amount_usd[i]

    def initial_margin(self, notional_usd: FloatArray | float) -> FloatArray:
        n = np.abs(np.asarray(notional_usd, dtype=np.float64))
        i = self.tier_index(n)
        return n * self.imr[i] - self.im_amount_usd[i]
