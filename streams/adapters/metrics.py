"""Prometheus metrics for riskmon: the metrics contract of DESIGN.md in one object.

Shared by both drivers (the Faust worker and the in-process demo/replay driver). Usage::

    metrics = RiskMetrics(snapshot=lambda: latest_snapshot)   # a callable, read at scrape time
    metrics.event("prices")                                  # riskmon_events_total{topic}
    metrics.rejected("positions", "stale_sequence")          # riskmon_events_rejected_total
    metrics.observe_lag(0.012)                               # riskmon_event_lag_seconds
    metrics.set_ready(True)                                  # riskmon_worker_ready
    serve(metrics.registry, port=9464)                       # /metrics in a daemon thread

Two kinds of series:

* **Per-worker instruments** (counters, the lag histogram, the ready gauge) are ordinary
  prometheus_client metrics updated by the driver as events flow.
* **State-derived gauges** (accounts by state, mark timestamps, and the venue-level figures per
  fund and scenario) are produced at SCRAPE TIME by a custom collector from a
  :class:`MetricsSnapshot` returned by the ``snapshot`` callable. Build the snapshot on the thread
  (or event loop) that owns the engine and publish it by swapping one reference; the collector
  then never touches the engine from the HTTP server's thread. ``MetricsSnapshot.venue`` may be
  ``None``: a worker that does not run the combining agent exports only its per-worker gauges.

Label cardinality is bounded by construction: ``fund`` (a handful), ``scenario`` ("current", the
named scenarios and a few selected grid points, see :data:`SELECTED_GRID_SHOCKS`), ``state`` (five),
``instrument`` (the venue's list), ``topic`` and ``reason`` (enums). Never per-account labels.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.engine.rejections import RejectReason

# ---------------------------------------------------------------------------------------------
# Bounded label values
# ---------------------------------------------------------------------------------------------

#: Risk states, safest first. ``riskmon_accounts{state}`` always carries all five.
STATES: tuple[str, ...] = ("healthy", "watch", "at_risk", "liquidatable", "underwater")

#: Input topics pre-initialised on ``riskmon_events_total`` (series exist before the first event).
DEFAULT_TOPICS: tuple[str, ...] = (
    "prices",
    "positions",
    "balances",
    "insurance_fund",
    "instruments",
)

#: Uniform shocks (signed fraction of price) exported as ``scenario`` labels, besides "current"
#: and the named scenarios. A grid of 101 points stays in the engine; only these reach Prometheus.
SELECTED_GRID_SHOCKS: tuple[float, ...] = (-0.30, -0.20, -0.10, 0.10, 0.20, 0.30)

#: Lag buckets in seconds: sub-millisecond in-process up to minutes behind on a lagging consumer.
LAG_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


def grid_scenario_name(shock: float) -> str:
    """Label of a uniform shock: ``-0.1`` -> ``uniform_down_10``, ``0.2`` -> ``uniform_up_20``."""
    pct = round(abs(shock) * 100)
    return f"uniform_{'down' if shock < 0 else 'up'}_{pct}"


# ---------------------------------------------------------------------------------------------
# Snapshot: what the collector exports, frozen, built by the engine's owner
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioFigures:
    """One fund under one scenario ("current" = no shock)."""

    projected_bad_debt_usd: float
    socialized_loss_usd: float  # max(0, bad debt − fund balance)
    haircut_ratio: float  # socialized loss ÷ profitable unrealized PnL (0 when nothing socialized)
    profitable_upnl_usd: float = 0.0  # unrealized profit of profitable traders (haircut base)
    # notional the ADL queue would close to absorb the loss; None = not computed (not exported)
    adl_queue_notional_usd: float | None = None


@dataclass(frozen=True, slots=True)
class FundFigures:
    """Venue-level figures of one insurance fund."""

    fund: str
    balance_usd: float
    liquidatable_notional_usd: float
    # Smallest uniform move exhausting the fund; 0 = exhausted now; +inf = survives the whole grid.
    exhaustion_shock_down: float
    exhaustion_shock_up: float
    scenarios: Mapping[str, ScenarioFigures] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VenueSnapshot:
    funds: tuple[FundFigures, ...]
    ts_event: float | None = None  # event time the venue figures were computed at


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything the scrape-time collector exports; immutable, cheap to swap atomically."""

    accounts_by_state: Mapping[str, int] = field(default_factory=dict)  # per worker
    mark_timestamps: Mapping[str, float] = field(default_factory=dict)  # instrument -> ts_event
    venue: VenueSnapshot | None = None  # None: this worker exports no venue-level gauges
    positions: int | None = None  # open positions held by this worker (optional)

    @staticmethod
    def empty() -> MetricsSnapshot:
        return MetricsSnapshot()


# ---------------------------------------------------------------------------------------------
# Building figures from an engine FundReport (duck-typed: the engine module stays optional here)
# ---------------------------------------------------------------------------------------------


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _num(value: Any, default: float = 0.0) -> float:
    """A float from a report field: ``default`` when missing or not a number; NaN when the
    value is not finite (NaN or ±inf = unknown, never 0: the collector skips such samples
    instead of exporting a reassuring figure)."""
    if value is None:
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else math.nan


def scenario_figures(
    bad_debt: float,
    fund_balance: float,
    profitable_upnl: float,
    adl_queue_notional: float | None = None,
) -> ScenarioFigures:
    """Socialized loss and haircut from bad debt, fund and profitable uPnL (contract rules,
    as the engine's ``fund_report``): loss = max(0, bad − max(fund, 0)) (a negative fund pays
    nothing but adds no loss either); haircut = loss / profit capped at 1 (1 when there is a loss
    and no profit to take it from). A NaN input makes what depends on it NaN (unknown, not
    exported) instead of 0."""
    nan = math.nan
    bad = nan if math.isnan(bad_debt) else max(0.0, bad_debt)
    profit = nan if math.isnan(profitable_upnl) else max(0.0, profitable_upnl)
    if math.isnan(bad) or math.isnan(fund_balance):
        return ScenarioFigures(bad, nan, nan, profit, adl_queue_notional)
    social = max(0.0, bad - max(fund_balance, 0.0))
    if social <= 0:
        haircut = 0.0
    elif math.isnan(profit):
        haircut = nan
    else:
        haircut = 1.0 if profit <= 0 else min(1.0, social / profit)
    return ScenarioFigures(bad, social, haircut, profit, adl_queue_notional)


def _shock_value(value: Any) -> float:
    """Exhaustion shock: ``None`` or +inf = no shock within the grid exhausts the fund (+Inf is
    exported, by contract); NaN/-inf/non-numbers = unknown (NaN, not exported)."""
    if value is None:
        return math.inf
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) or out == math.inf else math.nan


def fund_figures_from_report(
    report: Any, selected_shocks: Iterable[float] = SELECTED_GRID_SHOCKS
) -> FundFigures:
    """:class:`FundFigures` from an engine ``FundReport`` (streams/engine/venue.py).

    Scenarios exported: "current", every named scenario of the report, and the grid points in
    ``selected_shocks`` (named by :func:`grid_scenario_name`) — never the whole grid. The ADL
    queue notional is only known at current marks.
    """
    adl_report = _get(report, "adl")
    scenarios: dict[str, ScenarioFigures] = {
        "current": ScenarioFigures(
            _num(_get(report, "bad_debt_usd")),
            _num(_get(report, "socialized_loss_usd")),
            _num(_get(report, "haircut_ratio")),
            _num(_get(report, "profitable_upnl_usd")),
            _num(_get(adl_report, "queue_notional_usd")) if adl_report is not None else None,
        )
    }

    def figures(f: Any) -> ScenarioFigures:
        return ScenarioFigures(
            _num(_get(f, "bad_debt_usd")),
            _num(_get(f, "socialized_loss_usd")),
            _num(_get(f, "haircut_ratio")),
            _num(_get(f, "profitable_upnl_usd")),
        )

    for name, f in sorted((_get(report, "scenarios", default={}) or {}).items()):
        scenarios[str(name)] = figures(f)
    shocks = list(_get(report, "grid_shocks", default=()) or ())
    grid = list(_get(report, "grid", default=()) or ())
    for shock in selected_shocks:
        for i, s in enumerate(shocks):
            if abs(float(s) - shock) < 1e-9 and i < len(grid):
                scenarios[grid_scenario_name(shock)] = figures(grid[i])
                break
    return FundFigures(
        fund=str(_get(report, "fund")),
        balance_usd=_num(_get(report, "balance_usd")),
        liquidatable_notional_usd=_num(_get(report, "liquidatable_notional_usd")),
        exhaustion_shock_down=_shock_value(_get(report, "exhaustion_shock_down")),
        exhaustion_shock_up=_shock_value(_get(report, "exhaustion_shock_up")),
        scenarios=scenarios,
    )


def state_counts_open(engine: Any) -> dict[str, int]:
    """Accounts per risk state, counting only accounts that hold an open position
    (``riskmon_accounts`` counts accounts at risk of something; flat accounts are left out)."""
    counts = dict.fromkeys(STATES, 0)
    for state, n in engine.state_counts(open_only=True).items():
        counts[STATES[int(state)]] += int(n)
    return counts


def snapshot_from_engine(
    engine: Any,
    reports: Mapping[str, Any] | None = None,
    *,
    ts_event: float | None = None,
    selected_shocks: Iterable[float] = SELECTED_GRID_SHOCKS,
) -> MetricsSnapshot:
    """A :class:`MetricsSnapshot` of a ``RiskEngine`` (call it on the engine's own thread).

    ``reports`` are the venue-level ``FundReport``s (e.g. ``engine.venue()`` or the combining
    agent's); ``None`` exports no venue gauges.
    """
    counts = state_counts_open(engine)
    marks: dict[str, float] = {}
    for name in engine.instruments:
        ts = engine.mark_ts(name)
        if ts is not None:
            marks[name] = float(ts)
    venue = None
    if reports is not None:
        shocks = tuple(selected_shocks)
        venue = VenueSnapshot(
            tuple(fund_figures_from_report(reports[f], shocks) for f in sorted(reports)),
            ts_event,
        )
    return MetricsSnapshot(accounts_by_state=counts, mark_timestamps=marks, venue=venue)


# ---------------------------------------------------------------------------------------------
# The scrape-time collector
# ---------------------------------------------------------------------------------------------


class SnapshotCollector(Collector):
    """Yields the state-derived gauges from ``snapshot()`` at every scrape."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot | None]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Any]:
        return []  # dynamic collector: no registration-time collision checks, nothing computed

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot() or MetricsSnapshot.empty()

        accounts = GaugeMetricFamily(
            "riskmon_accounts", "Accounts per risk state.", labels=["state"]
        )
        for state in STATES:
            accounts.add_metric([state], float(snap.accounts_by_state.get(state, 0)))
        yield accounts

        marks = GaugeMetricFamily(
            "riskmon_mark_price_timestamp_seconds",
            "Event time (Unix seconds) of the latest mark price per instrument.",
            labels=["instrument"],
        )
        for instrument in sorted(snap.mark_timestamps):
            marks.add_metric([instrument], float(snap.mark_timestamps[instrument]))
        yield marks

        if snap.positions is not None:
            yield GaugeMetricFamily(
                "riskmon_positions",
                "Open positions held by this worker.",
                value=float(snap.positions),
            )

        if snap.venue is None:
            return
        yield from self._venue(snap.venue)

    @staticmethod
    def _venue(venue: VenueSnapshot) -> Iterator[GaugeMetricFamily]:
        def family(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        balance = family(
            "riskmon_insurance_fund_balance_usd", "Latest insurance fund balance.", ["fund"]
        )
        liq = family(
            "riskmon_liquidatable_notional_usd",
            "Notional of positions liquidatable now (utilization >= 1).",
            ["fund"],
        )
        shock = family(
            "riskmon_fund_exhaustion_shock_ratio",
            "Smallest uniform move (0.18 = 18 %) at which projected bad debt exceeds "
            "the fund; 0 = exhausted now, +Inf = survives the whole stress grid.",
            ["fund", "direction"],
        )
        bad = family(
            "riskmon_projected_bad_debt_usd",
            "Bad debt if every liquidatable/underwater account were closed now, per scenario.",
            ["fund", "scenario"],
        )
        social = family(
            "riskmon_socialized_loss_usd",
            "Projected bad debt the insurance fund cannot cover.",
            ["fund", "scenario"],
        )
        haircut = family(
            "riskmon_socialized_loss_haircut_ratio",
            "Socialized loss / unrealized profit of profitable traders.",
            ["fund", "scenario"],
        )
        profit = family(
            "riskmon_profitable_upnl_usd",
            "Unrealized profit of profitable positions (the haircut base).",
            ["fund", "scenario"],
        )
        adl = family(
            "riskmon_adl_queue_notional_usd",
            "Notional the auto-deleveraging queue would close to absorb the socialized loss.",
            ["fund", "scenario"],
        )

        # A non-finite figure is unknown: its sample is left out (an absent series, which the
        # alerts' absent()/staleness rules see) rather than exported as NaN or ±Inf. The one
        # exception is the exhaustion shock's +Inf: "no shock within the grid exhausts the fund".
        def add(fam: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
            if value is not None and math.isfinite(value):
                fam.add_metric(labels, value)

        def add_shock(labels: list[str], value: float) -> None:
            if math.isfinite(value) or value == math.inf:
                shock.add_metric(labels, value)

        for f in sorted(venue.funds, key=lambda f: f.fund):
            add(balance, [f.fund], f.balance_usd)
            add(liq, [f.fund], f.liquidatable_notional_usd)
            add_shock([f.fund, "down"], f.exhaustion_shock_down)
            add_shock([f.fund, "up"], f.exhaustion_shock_up)
            for name in sorted(f.scenarios):
                s = f.scenarios[name]
                add(bad, [f.fund, name], s.projected_bad_debt_usd)
                add(social, [f.fund, name], s.socialized_loss_usd)
                add(haircut, [f.fund, name], s.haircut_ratio)
                add(profit, [f.fund, name], s.profitable_upnl_usd)
                add(adl, [f.fund, name], s.adl_queue_notional_usd)
        yield from (balance, liq, shock, bad, social, haircut, profit, adl)
        if venue.ts_event is not None:
            yield GaugeMetricFamily(
                "riskmon_venue_report_timestamp_seconds",
                "Event time the venue-level figures were computed at.",
                value=venue.ts_event,
            )


# ---------------------------------------------------------------------------------------------
# RiskMetrics: the registry and the per-worker instruments
# ---------------------------------------------------------------------------------------------


class RiskMetrics:
    """Owns a ``CollectorRegistry`` with the whole metrics contract.

    ``snapshot`` is read at scrape time (possibly from the HTTP server's thread): make it return
    an immutable :class:`MetricsSnapshot`; :meth:`publish` + the default callable do exactly that.
    """

    def __init__(
        self,
        snapshot: Callable[[], MetricsSnapshot | None] | None = None,
        *,
        topics: Iterable[str] = DEFAULT_TOPICS,
        reasons: Iterable[str] = tuple(RejectReason),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._latest: MetricsSnapshot | None = None
        self.events_total = Counter(
            "riskmon_events",
            "Input events processed, per topic.",
            ["topic"],
            registry=self.registry,
        )
        self.events_rejected_total = Counter(
            "riskmon_events_rejected",
            "Input events rejected (dead-lettered), per topic and reason.",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.event_lag_seconds = Histogram(
            "riskmon_event_lag_seconds",
            "Processing time minus event time.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.worker_ready = Gauge(
            "riskmon_worker_ready",
            "1 once state is recovered and the worker is processing.",
            registry=self.registry,
        )
        reasons = tuple(str(getattr(r, "value", r)) for r in reasons)
        for topic in topics:
            self.events_total.labels(topic=topic)
            for reason in reasons:  # every RejectReason exists at 0 before the first rejection
                self.events_rejected_total.labels(topic=topic, reason=reason)
        self.worker_ready.set(0)
        self.registry.register(SnapshotCollector(snapshot if snapshot is not None else self.latest))

    # -- per-worker instruments ---------------------------------------------------------------
    def event(self, topic: str, n: int = 1) -> None:
        self.events_total.labels(topic=topic).inc(n)

    def rejected(self, topic: str, reason: str, n: int = 1) -> None:
        self.events_rejected_total.labels(topic=topic, reason=reason).inc(n)

    def observe_lag(self, seconds: float) -> None:
        self.event_lag_seconds.observe(max(0.0, seconds))

    def set_ready(self, ready: bool = True) -> None:
        self.worker_ready.set(1 if ready else 0)

    # -- snapshot publication (when no external callable was given) --------------------------
    def publish(self, snapshot: MetricsSnapshot) -> None:
        with self._lock:
            self._latest = snapshot

    def latest(self) -> MetricsSnapshot | None:
        with self._lock:
            return self._latest

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """Current value of one sample (tests, the live view)."""
        return self.registry.get_sample_value(name, dict(labels or {}))


def serve(registry: CollectorRegistry, port: int = 9464, addr: str = "0.0.0.0") -> tuple[Any, int]:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port. Returns ``(server, bound_port)``; ``server.shutdown()`` stops it.
    """
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server, int(server.server_address[1])
