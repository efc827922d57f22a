"""Risk-state classification with hysteresis (a pure state machine, vectorized and scalar).

The *raw* level of an account is where its margin utilization (MM / equity) falls among the
thresholds (healthy < watch < at_risk < liquidatable), or UNDERWATER when equity < 0. States
escalate immediately; they de-escalate only once utilization is below ``threshold − hysteresis``
(so an account oscillating around 0.8 does not flap between WATCH and AT_RISK). UNDERWATER is left
as soon as equity is back at or above zero (the utilization rules then apply).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streams.engine.config import EngineConfig
from streams.engine.models import RiskState
from streams.engine.tiers import FloatArray

StateArray = NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class StateTransition:
    account: str
    previous: RiskState
    current: RiskState
    ts_event: float
    utilization: float


def utilization(mm_usd: FloatArray, equity_usd: FloatArray) -> FloatArray:
    """MM / equity; +inf when equity ≤ 0 and there is margin to keep (or equity < 0); 0 if flat."""
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(equity_usd > 0, mm_usd / np.where(equity_usd > 0, equity_usd, 1.0), 0.0)
    return np.where((equity_usd < 0) | ((equity_usd <= 0) & (mm_usd > 0)), np.inf, util)


def utilization_scalar(mm_usd: float, equity_usd: float) -> float:
    if equity_usd > 0:
        return mm_usd / equity_usd
    if equity_usd < 0 or mm_usd > 0:
        return math.inf
    return 0.0


class StateMachine:
    """Thresholds of one :class:`EngineConfig`, applied to arrays or scalars."""

    __slots__ = ("_down", "_down_list", "_up", "_up_list")

    def __init__(self, config: EngineConfig) -> None:
        self._up = config.utilization_thresholds()
        self._down = self._up - config.hysteresis
        self._up_list = [float(x) for x in self._up]
        self._down_list = [float(x) for x in self._down]

    def next_states(
        self, util: FloatArray, equity_usd: FloatArray, previous: StateArray
    ) -> StateArray:
        if np.isnan(util).any() or np.isnan(equity_usd).any():
            raise ValueError("risk state of a NaN utilization / equity")
        raw = np.searchsorted(self._up, util, side="right")
        raw = np.where(equity_usd < 0, int(RiskState.UNDERWATER), raw)
        sticky = np.minimum(previous, np.searchsorted(self._down, util, side="right"))
        return np.maximum(raw, sticky).astype(np.int8)

    def next_state(self, util: float, equity_usd: float, previous: int) -> int:
        # NaN is a bug upstream (inputs are finite): bisect would call it liquidatable
        if util != util or equity_usd != equity_usd:
            raise ValueError("risk state of a NaN utilization / equity")
        if equity_usd < 0:
            return int(RiskState.UNDERWATER)
        raw = bisect_right(self._up_list, util)
        if raw >= previous:
            return raw
        return max(raw, min(previous, bisect_right(self._down_list, util)))
