"""Venue-level figures per insurance fund: additive partials and the report built from them.

A :class:`FundPartial` holds everything that SUMS across disjoint sets of accounts: bad debt and
profitable uPnL on the fine uniform-shock grid, bad debt of the named and idiosyncratic scenarios,
liquidatable notional, state counts, and the top-K auto-deleveraging candidates per side (merged by
score). Workers that own disjoint accounts publish partials (``to_dict`` is JSON-able);
``combine`` adds them; ``fund_report`` turns one (combined) partial and the fund balance into the
figures operators watch, identical to one engine over the whole book.

Conventions
-----------
* Exhaustion shock per direction: the smallest uniform move |s| at which projected bad debt
  exceeds the fund balance, found on the fine grid (``EngineConfig.exhaustion_resolution``) and
  linearly interpolated between its points; 0 = exhausted now; +inf = survives the whole grid.
* Socialized loss = max(0, bad debt − max(fund balance, 0)); its minimal pro-rata haircut ratio =
  loss / profitable uPnL of non-liquidated pools, capped at 1.
* ADL queue (current marks): the loss is split between the bankrupt long and short sides in
  proportion to their bad debt; each side's share is taken from the OPPOSITE side's profitable
  positions in score order (Hyperliquid's (mark/entry) × (notional/account value), the
  account value being the position's margin pool equity). A position in
  the queue is closed in full and surrenders its unrealized profit (it is closed at the bankrupt
  side's bankruptcy price, which we take to be its break-even in the worst case), so the queue
  takes at least the loss: ``overshoot = taken − loss`` (the minimal haircut takes exactly the
  loss). Only the top-K candidates per side are kept; ``uncovered_usd`` reports a shortfall.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.engine.config import EngineConfig
from streams.engine.tiers import FloatArray

STATE_LABELS: tuple[str, ...] = ("healthy", "watch", "at_risk", "liquidatable", "underwater")


@dataclass(frozen=True, slots=True)
class AdlCandidate:
    account: str
    instrument: str
    size: float  # signed contracts
    notional_usd: float
    upnl_usd: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "instrument": self.instrument,
            "size": self.size,
            "notional_usd": self.notional_usd,
            "upnl_usd": self.upnl_usd,
            "score": self.score,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdlCandidate:
        return cls(
            str(d["account"]),
            str(d["instrument"]),
            float(d["size"]),
            float(d["notional_usd"]),
            float(d["upnl_usd"]),
            float(d["score"]),
        )


def merge_top(a: Iterable[AdlCandidate], k: int) -> tuple[AdlCandidate, ...]:
    items = sorted(a, key=lambda c: (-c.score, c.account, c.instrument))
    return tuple(items[:k])


@dataclass(frozen=True, slots=True)
class FundPartial:
    """Additive per-fund aggregates of one set of accounts (see module docstring)."""

    fund: str
    shocks: FloatArray  # the fine uniform-shock grid (sorted, contains 0)
    bad_debt_usd: FloatArray  # per shock
    profitable_upnl_usd: FloatArray  # per shock, non-liquidated pools only
    bad_debt_long_usd: float  # current marks, pools with net long exposure
    bad_debt_short_usd: float
    liquidatable_notional_usd: float
    state_counts: dict[str, int]
    scenario_bad_debt_usd: dict[str, float]
    scenario_profitable_upnl_usd: dict[str, float]
    idiosyncratic_shock: float
    idiosyncratic_down_usd: dict[str, float]  # instrument -> bad debt when it alone drops
    idiosyncratic_up_usd: dict[str, float]
    adl_long: tuple[AdlCandidate, ...]  # profitable longs (absorb the short side's loss)
    adl_short: tuple[AdlCandidate, ...]
    adl_top_k: int

    @classmethod
    def empty(cls, fund: str, config: EngineConfig) -> FundPartial:
        """The partial of a set of accounts holding nothing of ``fund`` (the additive zero)."""
        shocks = config.fine_grid()
        zeros = np.zeros_like(shocks)
        return cls(
            fund=fund,
            shocks=shocks,
            bad_debt_usd=zeros,
            profitable_upnl_usd=zeros.copy(),
            bad_debt_long_usd=0.0,
            bad_debt_short_usd=0.0,
            liquidatable_notional_usd=0.0,
            state_counts={},
            scenario_bad_debt_usd={name: 0.0 for name in config.scenarios},
            scenario_profitable_upnl_usd={name: 0.0 for name in config.scenarios},
            idiosyncratic_shock=config.idiosyncratic_shock,
            idiosyncratic_down_usd={},
            idiosyncratic_up_usd={},
            adl_long=(),
            adl_short=(),
            adl_top_k=config.adl_top_k,
        )

    @property
    def bad_debt_now_usd(self) -> float:
        return float(self.bad_debt_usd[int(np.searchsorted(self.shocks, 0.0))])

    def to_dict(self) -> dict[str, Any]:
        return {
            "fund": self.fund,
            "shocks": self.shocks.tolist(),
            "bad_debt_usd": self.bad_debt_usd.tolist(),
            "profitable_upnl_usd": self.profitable_upnl_usd.tolist(),
            "bad_debt_long_usd": self.bad_debt_long_usd,
            "bad_debt_short_usd": self.bad_debt_short_usd,
            "liquidatable_notional_usd": self.liquidatable_notional_usd,
            "state_counts": dict(self.state_counts),
            "scenario_bad_debt_usd": dict(self.scenario_bad_debt_usd),
            "scenario_profitable_upnl_usd": dict(self.scenario_profitable_upnl_usd),
            "idiosyncratic_shock": self.idiosyncratic_shock,
            "idiosyncratic_down_usd": dict(self.idiosyncratic_down_usd),
            "idiosyncratic_up_usd": dict(self.idiosyncratic_up_usd),
            "adl_long": [c.to_dict() for c in self.adl_long],
            "adl_short": [c.to_dict() for c in self.adl_short],
            "adl_top_k": self.adl_top_k,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FundPartial:
        return cls(
            fund=str(d["fund"]),
            shocks=np.asarray(d["shocks"], dtype=np.float64),
            bad_debt_usd=np.asarray(d["bad_debt_usd"], dtype=np.float64),
            profitable_upnl_usd=np.asarray(d["profitable_upnl_usd"], dtype=np.float64),
            bad_debt_long_usd=float(d["bad_debt_long_usd"]),
            bad_debt_short_usd=float(d["bad_debt_short_usd"]),
            liquidatable_notional_usd=float(d["liquidatable_notional_usd"]),
            state_counts={str(k): int(v) for k, v in d["state_counts"].items()},
            scenario_bad_debt_usd={str(k): float(v) for k, v in d["scenario_bad_debt_usd"].items()},
            scenario_profitable_upnl_usd={
                str(k): float(v) for k, v in d["scenario_profitable_upnl_usd"].items()
            },
            idiosyncratic_shock=float(d["idiosyncratic_shock"]),
            idiosyncratic_down_usd={
                str(k): float(v) for k, v in d["idiosyncratic_down_usd"].items()
            },
            idiosyncratic_up_usd={str(k): float(v) for k, v in d["idiosyncratic_up_usd"].items()},
            adl_long=tuple(AdlCandidate.from_dict(c) for c in d["adl_long"]),
            adl_short=tuple(AdlCandidate.from_dict(c) for c in d["adl_short"]),
            adl_top_k=int(d["adl_top_k"]),
        )


def _add_maps(maps: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + v
    return out


def combine(partials: Iterable[FundPartial]) -> FundPartial:
    """Sum partials of ONE fund computed over disjoint sets of accounts (same stress grid)."""
    ps = list(partials)
    if not ps:
        raise ValueError("combine() needs at least one partial")
    first = ps[0]
    for p in ps[1:]:
        if p.fund != first.fund:
            raise ValueError(f"cannot combine partials of funds {first.fund!r} and {p.fund!r}")
        if p.shocks.shape != first.shocks.shape or not np.allclose(p.shocks, first.shocks):
            raise ValueError("cannot combine partials computed on different stress grids")
    k = max(p.adl_top_k for p in ps)
    counts = {s: sum(p.state_counts.get(s, 0) for p in ps) for s in STATE_LABELS}
    return FundPartial(
        fund=first.fund,
        shocks=first.shocks,
        bad_debt_usd=np.sum([p.bad_debt_usd for p in ps], axis=0),
        profitable_upnl_usd=np.sum([p.profitable_upnl_usd for p in ps], axis=0),
        bad_debt_long_usd=sum(p.bad_debt_long_usd for p in ps),
        bad_debt_short_usd=sum(p.bad_debt_short_usd for p in ps),
        liquidatable_notional_usd=sum(p.liquidatable_notional_usd for p in ps),
        state_counts=counts,
        scenario_bad_debt_usd=_add_maps(p.scenario_bad_debt_usd for p in ps),
        scenario_profitable_upnl_usd=_add_maps(p.scenario_profitable_upnl_usd for p in ps),
        idiosyncratic_shock=first.idiosyncratic_shock,
        idiosyncratic_down_usd=_add_maps(p.idiosyncratic_down_usd for p in ps),
        idiosyncratic_up_usd=_add_maps(p.idiosyncratic_up_usd for p in ps),
        adl_long=merge_top((c for p in ps for c in p.adl_long), k),
        adl_short=merge_top((c for p in ps for c in p.adl_short), k),
        adl_top_k=k,
    )


# -- THE REPORT ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioFigures:
    bad_debt_usd: float
    socialized_loss_usd: float
    haircut_ratio: float
    profitable_upnl_usd: float


@dataclass(frozen=True, slots=True)
class AdlFill:
    account: str
    instrument: str
    size_closed: float  # signed contracts closed (the whole position)
    notional_usd: float
    profit_taken_usd: float
    score: float


@dataclass(frozen=True, slots=True)
class AdlAllocation:
    loss_usd: float
    fills: tuple[AdlFill, ...]
    taken_usd: float
    overshoot_usd: float  # taken − loss: what the queue takes beyond the minimal haircut
    uncovered_usd: float  # loss the kept top-K candidates could not cover
    queue_notional_usd: float


@dataclass(frozen=True, slots=True)
class FundReport:
    fund: str
    balance_usd: float
    bad_debt_usd: float  # current marks
    coverage_ratio: float  # balance / bad debt (inf when no bad debt)
    socialized_loss_usd: float
    haircut_ratio: float
    profitable_upnl_usd: float
    liquidatable_notional_usd: float
    exhaustion_shock_down: float
    exhaustion_shock_up: float
    grid_shocks: tuple[float, ...]
    grid: tuple[ScenarioFigures, ...]
    scenarios: dict[str, ScenarioFigures]
    idiosyncratic_shock: float
    idiosyncratic_down_usd: dict[str, float]
    idiosyncratic_up_usd: dict[str, float]
    adl: AdlAllocation
    state_counts: dict[str, int] = field(default_factory=dict)


def _figures(bad: float, balance: float, profit: float) -> ScenarioFigures:
    # A negative fund (possible after a crash) pays nothing; it does not add to the loss.
    loss = max(0.0, bad - max(balance, 0.0))
    haircut = 0.0 if loss <= 0 else (1.0 if profit <= 0 else min(1.0, loss / profit))
    return ScenarioFigures(bad, loss, haircut, max(0.0, profit))


def exhaustion_shock(shocks: FloatArray, bad_debt: FloatArray, balance: float, sign: int) -> float:
    """Smallest |s| in direction ``sign`` with bad_debt(s) > balance (linear interpolation)."""
    z = int(np.searchsorted(shocks, 0.0))
    if sign < 0:
        s, b = -shocks[z::-1], bad_debt[z::-1]
    else:
        s, b = shocks[z:], bad_debt[z:]
    over = np.flatnonzero(b > balance)
    if over.size == 0:
        return math.inf
    j = int(over[0])
    if j == 0:
        return 0.0
    s0, s1, b0, b1 = float(s[j - 1]), float(s[j]), float(b[j - 1]), float(b[j])
    t = (balance - b0) / (b1 - b0) if b1 > b0 else 1.0
    return s0 + min(max(t, 0.0), 1.0) * (s1 - s0)


def adl_allocation(
    loss_long_usd: float,
    loss_short_usd: float,
    adl_long: Iterable[AdlCandidate],
    adl_short: Iterable[AdlCandidate],
) -> AdlAllocation:
    """Queue ADL: longs' loss taken from profitable shorts, shorts' loss from profitable longs."""
    fills: list[AdlFill] = []
    taken = uncovered = notional = 0.0
    for loss, queue in ((loss_long_usd, adl_short), (loss_short_usd, adl_long)):
        remaining = loss
        for c in sorted(queue, key=lambda c: (-c.score, c.account, c.instrument)):
            if remaining <= 0:
                break
            fills.append(
                AdlFill(c.account, c.instrument, c.size, c.notional_usd, c.upnl_usd, c.score)
            )
            taken += c.upnl_usd
            notional += c.notional_usd
            remaining -= c.upnl_usd
        uncovered += max(0.0, remaining)
    loss = loss_long_usd + loss_short_usd
    return AdlAllocation(
        loss, tuple(fills), taken, max(0.0, taken - (loss - uncovered)), uncovered, notional
    )


def fund_report(partial: FundPartial, fund_balance_usd: float, config: EngineConfig) -> FundReport:
    shocks = partial.shocks
    bad = partial.bad_debt_usd
    prof = partial.profitable_upnl_usd
    z = int(np.searchsorted(shocks, 0.0))
    now = _figures(float(bad[z]), fund_balance_usd, float(prof[z]))
    coarse = config.shock_grid()
    idx = np.clip(np.searchsorted(shocks, coarse - 1e-12), 0, shocks.size - 1)
    grid = tuple(_figures(float(bad[i]), fund_balance_usd, float(prof[i])) for i in idx)
    scenarios = {
        name: _figures(b, fund_balance_usd, partial.scenario_profitable_upnl_usd.get(name, 0.0))
        for name, b in partial.scenario_bad_debt_usd.items()
    }
    total_side = partial.bad_debt_long_usd + partial.bad_debt_short_usd
    loss = now.socialized_loss_usd
    long_share = partial.bad_debt_long_usd / total_side if total_side > 0 else 0.5
    adl = adl_allocation(
        loss * long_share, loss * (1 - long_share), partial.adl_long, partial.adl_short
    )
    return FundReport(
        fund=partial.fund,
        balance_usd=fund_balance_usd,
        bad_debt_usd=now.bad_debt_usd,
        coverage_ratio=math.inf if now.bad_debt_usd <= 0 else fund_balance_usd / now.bad_debt_usd,
        socialized_loss_usd=now.socialized_loss_usd,
        haircut_ratio=now.haircut_ratio,
        profitable_upnl_usd=now.profitable_upnl_usd,
        liquidatable_notional_usd=partial.liquidatable_notional_usd,
        exhaustion_shock_down=exhaustion_shock(shocks, bad, fund_balance_usd, -1),
        exhaustion_shock_up=exhaustion_shock(shocks, bad, fund_balance_usd, +1),
        grid_shocks=tuple(float(x) for x in coarse),
        grid=grid,
        scenarios=scenarios,
        idiosyncratic_shock=partial.idiosyncratic_shock,
        idiosyncratic_down_usd=dict(partial.idiosyncratic_down_usd),
        idiosyncratic_up_usd=dict(partial.idiosyncratic_up_usd),
        adl=adl,
        state_counts=dict(partial.state_counts),
    )
