"""EngineConfig: every knob of the risk engine, frozen and validated once.

Defaults follow the design notes: states on margin utilization (MM / equity) with hysteresis, a
uniform stress grid from −50 % to +50 % in 1 % steps, RiskMetrics-style EWMA (λ = 0.94 on log
returns, time-scaled), a one-hour horizon for the first-passage probability.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.engine.tiers import FloatArray

Ratio = Annotated[float, Field(gt=0)]
Shock = Annotated[float, Field(gt=-1.0, lt=10.0)]


class Scenario(BaseModel):
    """A named stress scenario: a relative shock per instrument, ``default_shock`` for the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shocks: dict[str, Shock] = Field(default_factory=dict)
    default_shock: Shock = 0.0

    def shock_of(self, instrument: str) -> float:
        return self.shocks.get(instrument, self.default_shock)


def _default_scenarios() -> dict[str, Scenario]:
    return {
        "crash_30": Scenario(default_shock=-0.30),
        "rally_30": Scenario(default_shock=0.30),
    }


class EngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- risk states (thresholds on margin utilization = MM / equity) --
    watch_utilization: Ratio = 0.5
    at_risk_utilization: Ratio = 0.8
    liquidatable_utilization: Ratio = 1.0  # the venue's own rule; keep at 1.0
    hysteresis: Annotated[float, Field(ge=0, lt=0.5)] = 0.05

    # -- stress --
    shock_min: Shock = -0.5
    shock_max: Shock = 0.5
    shock_step: Annotated[float, Field(gt=0, le=0.5)] = 0.01
    # The fund-exhaustion shock is resolved on a finer grid than the reported one and linearly
    # interpolated between its points (so it is not quantized to the reporting step).
    exhaustion_resolution: Annotated[float, Field(gt=0, le=0.05)] = 0.001
    idiosyncratic_shock: Annotated[float, Field(gt=0, lt=1)] = 0.2
    scenarios: dict[str, Scenario] = Field(default_factory=_default_scenarios)

    # -- volatility --
    ewma_lambda: Annotated[float, Field(gt=0, lt=1)] = 0.94
    ewma_interval_seconds: Ratio = 60.0  # λ applies per this much time (time-scaled decay)
    default_volatility_per_sqrt_second: Annotated[float, Field(ge=0)] = 0.8 / (365 * 86400) ** 0.5
    horizon_seconds: Ratio = 3600.0

    # -- outputs --
    top_n: Annotated[int, Field(ge=1)] = 100
    adl_top_k: Annotated[int, Field(ge=1)] = 50

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        if not (self.watch_utilization < self.at_risk_utilization < self.liquidatable_utilization):
            raise ValueError("state thresholds must increase: watch < at_risk < liquidatable")
        if self.shock_min >= 0 or self.shock_max <= 0:
            raise ValueError("the stress grid must span 0: shock_min < 0 < shock_max")
        return self

    def utilization_thresholds(self) -> FloatArray:
        return np.array(
            [self.watch_utilization, self.at_risk_utilization, self.liquidatable_utilization],
            dtype=np.float64,
        )

    def shock_grid(self) -> FloatArray:
        """The reported uniform-shock grid (always contains 0 exactly)."""
        return _grid(self.shock_min, self.shock_max, self.shock_step)

    def fine_grid(self) -> FloatArray:
        """The grid on which the exhaustion shock is resolved (⊇ ``shock_grid`` when aligned)."""
        fine = np.union1d(
            _grid(self.shock_min, self.shock_max, self.exhaustion_resolution), self.shock_grid()
        )
        return np.asarray(fine, dtype=np.float64)


def _grid(lo: float, hi: float, step: float) -> FloatArray:
    down = -np.arange(0, round(-lo / step) + 1, dtype=np.float64)[::-1] * step
    up = np.arange(1, round(hi / step) + 1, dtype=np.float64) * step
    grid = np.round(np.concatenate((down, up)), 12)
    return np.asarray(grid[(grid >= lo - 1e-12) & (grid <= hi + 1e-12)], dtype=np.float64)
