"""In-process driver: feeds a RiskEngine from an in-memory source, like the Faust workers minus
Kafka and Redis.

Same events (validated models), same cadences (a venue report every ``report_every_s`` seconds
of EVENT time), same sinks (Prometheus metrics through :class:`RiskMetrics`, risk-state
transition events to a callback). Deterministic for a given source: nothing here reads the wall
clock except the optional ``lag`` function used for the lag histogram.

Optionally a :class:`~streams.sim.liquidator.VenueLiquidator` plays the venue: after each price it
fills the orders waiting for that price, its position/balance/fund events are fed back into the
engine (the venue's own streams), and the accounts the engine reports liquidatable are handed to
it for the next price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from streams.adapters.metrics import (
    MetricsSnapshot,
    RiskMetrics,
    snapshot_from_engine,
    state_counts_open,
)
from streams.engine.engine import Applied, FundPartial, FundReport, RiskEngine
from streams.engine.models import (
    BalanceUpdate,
    FundUpdate,
    Instrument,
    PositionUpdate,
    PriceTick,
    RiskState,
)
from streams.engine.rejections import Rejection
from streams.engine.states import StateTransition
from streams.engine.wire import EventKind
from streams.sim.liquidator import VenueLiquidator

Event = PriceTick | PositionUpdate | BalanceUpdate | FundUpdate | Instrument

#: Topic label of each event type (the Faust worker's input topics, ``wire.TOPIC_LABELS``).
TOPIC_OF: dict[type, str] = {kind.model: kind.topic_label for kind in EventKind}


@dataclass(frozen=True, slots=True)
class VenueReportPoint:
    """What the driver saw at one report cadence (event time)."""

    ts_event: float
    reports: Mapping[str, FundReport]
    state_counts: Mapping[str, int]
    snapshot: MetricsSnapshot | None  # built only when metrics are exported
    partials: Mapping[str, FundPartial] | None = None  # the engine's per-fund partials


@dataclass
class DriverStats:
    events: int = 0
    rejected: int = 0
    transitions: int = 0
    reports: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class InProcessDriver:
    """Feeds ``engine`` event by event; see the module docstring."""

    def __init__(
        self,
        engine: RiskEngine,
        *,
        metrics: RiskMetrics | None = None,
        report_every_s: float = 1.0,
        liquidator: VenueLiquidator | None = None,
        on_transition: Callable[[StateTransition], None] | None = None,
        on_report: Callable[[VenueReportPoint], None] | None = None,
        lag: Callable[[float], float | None] | None = None,
    ) -> None:
        if report_every_s <= 0:
            raise ValueError("report_every_s must be > 0")
        self.engine = engine
        self.metrics = metrics
        self.report_every_s = report_every_s
        self.liquidator = liquidator
        self.on_transition = on_transition
        self.on_report = on_report
        self.lag = lag
        self.stats = DriverStats()
        self.last_report: VenueReportPoint | None = None
        self.ts_event: float | None = None
        self._next_report: float | None = None
        self._to_check: set[str] = set()  # accounts the engine reported liquidatable

    # -- ingress ---------------------------------------------------------------------------------
    def feed(self, event: Event) -> Applied | Rejection:
        """Apply one event (plus, for a price with a liquidator, the venue's reaction to it);
        emit a venue report when the event time crosses the next cadence boundary."""
        result = self._apply(event)
        if isinstance(event, PriceTick) and self.liquidator is not None:
            for reaction in self.liquidator.on_price(event):
                if isinstance(reaction, BalanceUpdate):
                    # Engine gap (workaround): closing an account's last position leaves
                    # ~1e-13 residues in its delta-maintained sums, enough to keep a flat
                    # account "underwater"; resync() zeroes them and the balance update that
                    # follows restates the account.
                    self.engine.resync()
                self._apply(reaction)
            accounts = sorted(self._to_check)
            self._to_check.clear()
            self.liquidator.trigger(event, accounts)
        self._tick_clock(event)
        return result

    def run(self, source: Iterable[Event], *, stop: Callable[[], bool] | None = None) -> int:
        """Feed every event of ``source`` (until ``stop()`` is true); returns events fed."""
        n = 0
        for event in source:
            self.feed(event)
            n += 1
            if stop is not None and stop():
                break
        return n

    def load(self, events: Iterable[Event]) -> None:
        """Feed a venue's initial state (instruments, funds, marks, balances, positions)."""
        for event in events:
            self.feed(event)

    # -- internals -------------------------------------------------------------------------------
    def _apply(self, event: Event) -> Applied | Rejection:
        topic = TOPIC_OF.get(type(event), "unknown")
        result = self.engine.apply(event)
        self.stats.events += 1
        if self.metrics is not None and self.lag is not None:
            # Instruments carry no event time: no lag to observe (not a lag of "now - 0").
            ts = getattr(event, "ts_event", None)
            lag = self.lag(float(ts)) if ts is not None else None
            if lag is not None:
                self.metrics.observe_lag(lag)
        if isinstance(result, Rejection):
            reason = str(getattr(result.reason, "value", result.reason))
            self.stats.rejected += 1
            self.stats.rejected_by_reason[reason] = self.stats.rejected_by_reason.get(reason, 0) + 1
            if self.metrics is not None:
                self.metrics.rejected(topic, reason)
            return result
        if self.metrics is not None:
            self.metrics.event(topic)  # riskmon_events_total counts accepted events (as the worker)
        for t in result.transitions:
            self.stats.transitions += 1
            if t.current >= RiskState.LIQUIDATABLE:
                self._to_check.add(t.account)
            if self.on_transition is not None:
                self.on_transition(t)
        return result

    def _tick_clock(self, event: Event) -> None:
        ts = getattr(event, "ts_event", None)
        if ts is None:
            return
        ts = float(ts)
        self.ts_event = ts if self.ts_event is None else max(self.ts_event, ts)
        if self._next_report is None:
            self._next_report = self._boundary_after(ts)
            return
        if ts >= self._next_report:
            self.report(ts)
            self._next_report = self._boundary_after(ts)

    def _boundary_after(self, ts: float) -> float:
        step = self.report_every_s
        return (math.floor(ts / step) + 1) * step

    # -- egress ----------------------------------------------------------------------------------
    def report(self, ts_event: float | None = None) -> VenueReportPoint:
        """Compute the venue figures now, publish the metrics snapshot, call ``on_report``."""
        ts = self.ts_event if ts_event is None else ts_event
        partials = self.engine.partials()
        reports = self.engine.venue(partials)
        for fund, balance in self.engine.fund_balances.items():
            reports.setdefault(fund, _empty_report(self.engine, fund, balance))
        snapshot = None
        if self.metrics is not None:
            snapshot = snapshot_from_engine(self.engine, reports, ts_event=ts)
        counts = state_counts_open(self.engine)
        point = VenueReportPoint(float(ts or 0.0), reports, counts, snapshot, partials)
        self.last_report = point
        self.stats.reports += 1
        if self.metrics is not None and snapshot is not None:
            self.metrics.publish(snapshot)
        if self.on_report is not None:
            self.on_report(point)
        return point


def _empty_report(engine: RiskEngine, fund: str, balance: float) -> FundReport:
    """A fund with no open positions still reports its balance (engine.venue() omits it)."""
    from streams.engine.venue import fund_report

    return fund_report(FundPartial.empty(fund, engine.config), balance, engine.config)
