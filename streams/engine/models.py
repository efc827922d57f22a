"""Domain models: what the venue tells riskmon, validated once at the boundary.

Every model is frozen and forbids unknown fields. Numbers are float64 (a risk monitor, not a
ledger); NaN and infinities are rejected here so the vectorized engine never sees them.
Times are ``ts_event``: Unix seconds (float, UTC) at which the venue produced the event.
"""

from __future__ import annotations

import math
from enum import IntEnum, StrEnum
from itertools import pairwise
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(_finite)]
PositiveFinite = Annotated[float, Field(gt=0), AfterValidator(_finite)]
NonNegativeFinite = Annotated[float, Field(ge=0), AfterValidator(_finite)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
MIN_FEE_RATIO = 1e-9  # smallest non-zero liquidation fee ratio an instrument may have


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContractType(StrEnum):
    LINEAR = "linear"  # PnL = size × contract_size × (mark − entry), in USD
    INVERSE = "inverse"  # PnL = contracts × contract_size × (1/entry − 1/mark), in coin


class MarginMode(StrEnum):
    CROSS = "cross"
    ISOLATED = "isolated"


class RiskState(IntEnum):
    """Account risk states, ordered from safest to worst (so states compare with < and >)."""

    HEALTHY = 0
    WATCH = 1
    AT_RISK = 2
    LIQUIDATABLE = 3  # margin utilization (MM / equity) ≥ 1
    UNDERWATER = 4  # equity < 0: bankrupt

    @property
    def label(self) -> str:
        return self.name.lower()


class MarginTier(Frozen):
    """One bracket of a tiered margin table; the bracket applies from ``floor_notional_usd`` up."""

    floor_notional_usd: NonNegativeFinite
    mmr: Annotated[float, Field(gt=0, lt=1)]  # maintenance margin rate
    max_leverage: Annotated[float, Field(ge=1, le=1000)]  # initial margin rate = 1 / max_leverage


class Instrument(Frozen):
    """A perpetual/future contract and the parameters riskmon needs to value and liquidate it."""

    instrument: Name
    contract_type: ContractType = ContractType.LINEAR
    # Linear: base-currency units per contract. Inverse: USD face value per contract.
    contract_size: PositiveFinite = 1.0
    tiers: tuple[MarginTier, ...] = Field(min_length=1)
    # 0 or ≥ MIN_FEE_RATIO: a fee below a billionth is a unit error, and its products with
    # small notionals fall into denormals (cost per dollar no longer representable)
    liquidation_fee_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.005
    # Square-root impact of a forced close:
    # slippage_ratio = impact_coef × sqrt(notional / depth_usd).
    depth_usd: PositiveFinite = 10_000_000.0
    impact_coef: NonNegativeFinite = 0.5
    fund: Name = "main"

    @field_validator("liquidation_fee_ratio")
    @classmethod
    def _fee_zero_or_meaningful(cls, fee: float) -> float:
        if 0 < fee < MIN_FEE_RATIO:
            raise ValueError(f"liquidation_fee_ratio must be 0 or ≥ {MIN_FEE_RATIO:g}")
        return fee

    @model_validator(mode="after")
    def _tiers_ordered(self) -> Instrument:
        floors = [t.floor_notional_usd for t in self.tiers]
        if floors[0] != 0:
            raise ValueError("the first margin tier must start at notional 0")
        if any(b <= a for a, b in pairwise(floors)):
            raise ValueError("margin tier floors must be strictly increasing")
        if any(b.mmr < a.mmr for a, b in pairwise(self.tiers)):
            raise ValueError("maintenance margin rates must not decrease with notional")
        if any(1 / t.max_leverage < t.mmr for t in self.tiers):
            raise ValueError("initial margin rate (1/max_leverage) must be ≥ the maintenance rate")
        return self


class PriceTick(Frozen):
    instrument: Name
    mark_price: PositiveFinite
    index_price: PositiveFinite | None = None
    ts_event: NonNegativeFinite


class PositionUpdate(Frozen):
    """Absolute state of one (account, instrument) position; ``size == 0`` closes it."""

    account: Name
    instrument: Name
    size: Finite  # signed contracts: > 0 long, < 0 short
    entry_price: PositiveFinite
    margin_mode: MarginMode = MarginMode.CROSS
    isolated_margin: NonNegativeFinite = 0.0  # USD, isolated mode only (> 0 when open)
    seq: Annotated[int, Field(ge=0)]
    ts_event: NonNegativeFinite

    @model_validator(mode="after")
    def _isolated_margin_only_when_isolated(self) -> PositionUpdate:
        if self.margin_mode is MarginMode.CROSS and self.isolated_margin != 0:
            raise ValueError("isolated_margin is only valid with margin_mode='isolated'")
        # an open isolated pool without margin would be liquidatable on arrival (and page)
        if self.margin_mode is MarginMode.ISOLATED and self.size != 0 and self.isolated_margin <= 0:
            raise ValueError("isolated_margin must be > 0 for an open isolated position")
        return self


class BalanceUpdate(Frozen):
    """Absolute cross wallet balance of an account (deposits + realized PnL), USD."""

    account: Name
    wallet_balance: Finite
    seq: Annotated[int, Field(ge=0)]
    ts_event: NonNegativeFinite


class FundUpdate(Frozen):
    fund: Name
    balance: Finite  # USD; may be negative after a crash
    ts_event: NonNegativeFinite
