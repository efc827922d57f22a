"""One watched account: :class:`WatchRow`, its Redis hash fields and its sort scores.

Built from the engine's ``AccountRisk`` or from any object / mapping with those figures, so
drivers and tests need not share a type.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.engine.models import RiskState

HASH_FIELDS = (
    "equity_usd",
    "mm_usd",
    "utilization_ratio",
    "state",
    "distance_to_liquidation_ratio",
    "distance_to_bankruptcy_ratio",
    "liquidation_probability",
    "ts_event",
    "worst_pool_equity_usd",
    "worst_pool_mm_usd",
    "deficit_usd",
    "worker",
)
FLOAT_FIELDS = frozenset(HASH_FIELDS) - {"state", "worker"}
UNDERWATER_SCORE = 1e12  # utilization-set score floor of accounts with a pool at equity ≤ 0


def parse_state(value: Any) -> RiskState:
    if isinstance(value, RiskState):
        return value
    if isinstance(value, str):
        try:
            return RiskState[value.upper()]
        except KeyError:
            return RiskState(int(value))
    return RiskState(int(value))


def first_field(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return default


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _distance(risk: Any, what: str) -> float:
    """Smallest uniform move (fraction) to liquidation / bankruptcy, down or up."""
    direct = first_field(risk, f"distance_to_{what}_ratio", f"distance_to_{what}")
    if direct is not None:
        return float(direct)
    down = first_field(risk, f"{what}_distance_down")
    up = first_field(risk, f"{what}_distance_up")
    moves = [float(v) for v in (down, up) if v is not None]
    return min(moves) if moves else float("nan")


@dataclass(frozen=True, slots=True)
class WatchRow:
    """One account as the watch list shows it (USD, ratios as fractions, Unix seconds).

    ``equity_usd`` / ``mm_usd`` are the cross pool's; ``utilization_ratio`` is the worst pool's
    = ``worst_pool_mm_usd / worst_pool_equity_usd``; ``deficit_usd`` is the account's bad debt
    (Σ max(0, −equity) over its cross pool and each isolated pool).
    """

    account: str
    equity_usd: float
    mm_usd: float
    utilization_ratio: float
    state: RiskState
    distance_to_liquidation_ratio: float
    distance_to_bankruptcy_ratio: float
    liquidation_probability: float = float("nan")
    ts_event: float = 0.0
    worst_pool_equity_usd: float = float("nan")
    worst_pool_mm_usd: float = float("nan")
    deficit_usd: float = 0.0

    @classmethod
    def from_risk(cls, risk: Any, ts_event: float | None = None) -> WatchRow:
        """Build from the engine's ``AccountRisk`` (or any object / mapping with those figures).

        The distances are the smaller of the down and up moves (``liquidation_distance_down`` /
        ``_up``); ``ts_event`` defaults to the figures' own timestamp, else the current time.
        """
        return cls(
            account=str(first_field(risk, "account", "account_id")),
            equity_usd=_num(first_field(risk, "equity_usd", "equity")),
            mm_usd=_num(first_field(risk, "maintenance_margin_usd", "mm_usd", "mm")),
            utilization_ratio=_num(first_field(risk, "utilization", "utilization_ratio")),
            state=parse_state(first_field(risk, "state")),
            distance_to_liquidation_ratio=_distance(risk, "liquidation"),
            distance_to_bankruptcy_ratio=_distance(risk, "bankruptcy"),
            liquidation_probability=_num(first_field(risk, "liquidation_probability")),
            ts_event=_num(
                first_field(risk, "ts_event", default=time.time() if ts_event is None else ts_event)
            ),
            worst_pool_equity_usd=_num(first_field(risk, "worst_pool_equity_usd")),
            worst_pool_mm_usd=_num(first_field(risk, "worst_pool_mm_usd")),
            deficit_usd=_num(first_field(risk, "deficit_usd", default=0.0)),
        )

    @property
    def watched(self) -> bool:
        return self.state >= RiskState.WATCH

    @property
    def underwater(self) -> bool:
        """A pool at equity ≤ 0 (a deficit, or the worst pool's utilization not finite ≥ 0)."""
        u = self.utilization_ratio
        return self.deficit_usd > 0 or math.isnan(u) or u < 0 or math.isinf(u)

    def utilization_score(self) -> float:
        """Sort key of the utilization set (the worst pool's utilization). An account with a
        pool at equity ≤ 0 ranks above every finite utilization, the largest deficit first:
        ``1e12 + deficit_usd`` (linear: a double keeps sub-cent steps up to ~1e12 USD)."""
        if self.underwater:
            d = self.deficit_usd
            return UNDERWATER_SCORE + (d if math.isfinite(d) and d > 0 else 0.0)
        return min(self.utilization_ratio, UNDERWATER_SCORE)

    def distance_score(self) -> float:
        """Sort key for the distance set (ascending = closest to liquidation first)."""
        d = self.distance_to_liquidation_ratio
        if math.isnan(d):
            return 0.0 if self.state >= RiskState.LIQUIDATABLE else math.inf
        return d

    def to_hash(self, worker: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            if f.name == "account":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.label if f.name == "state" else repr(float(value))
        out["worker"] = worker
        return out
