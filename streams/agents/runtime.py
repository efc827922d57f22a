"""Per-worker state shared by the agents: reference data, one engine per account partition.

* :class:`Reference` — every instrument, the latest mark per instrument and the latest balance per
  insurance fund. Fed by the group-less reader (:mod:`streams.agents.reference`): every worker
  holds all of it.
* ``engines`` — one :class:`~streams.engine.engine.RiskEngine` per ASSIGNED partition of the
  account topics (positions, balances). A price tick fans out to all of them (an engine revalues
  only the holders of that instrument, so an engine without holders costs a dict lookup). When
  partitions move in a rebalance, the engines of partitions this worker lost are dropped and the
  engines of partitions it gained are rebuilt from the recovered tables — so each partition's
  figures live in exactly one worker and the per-partition partials add up to the whole book.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, is_dataclass
from enum import Enum
from typing import Any

from prometheus_client import Counter

from streams.adapters.metrics import MetricsSnapshot, RiskMetrics, VenueSnapshot
from streams.agents import deadletters
from streams.agents.gcpolicy import gc_policy
from streams.app import (
    app,
    balances_table,
    dead_letters_topic,
    positions_table,
    risk_events_topic,
    settings,
)
from streams.engine.engine import RiskEngine
from streams.engine.models import (
    BalanceUpdate,
    FundUpdate,
    Instrument,
    PositionUpdate,
    PriceTick,
    RiskState,
)
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason
from streams.engine.wire import TOPIC_LABELS, Event, EventKind, parse_event

log = logging.getLogger(__name__)


# Ticks of unknown instruments kept for a later upsert of the instrument (see Reference).
MAX_PENDING_MARKS = 10_000


class Reference:
    """What every worker needs in full: instruments, latest marks, latest fund balances."""

    def __init__(self) -> None:
        self.instruments: dict[str, Instrument] = {}
        self.marks: dict[str, PriceTick] = {}  # latest valid tick per KNOWN instrument
        # Latest valid tick of instruments not known (yet), only for a later upsert of that
        # instrument; bounded (oldest update evicted first): arbitrary instrument names must not
        # grow the worker's memory without limit.
        self.pending_marks: dict[str, PriceTick] = {}
        self.max_pending_marks = MAX_PENDING_MARKS
        self._fund_names: set[str] | None = None
        self.funds: dict[str, FundUpdate] = {}  # latest balance per fund a known instrument uses
        # Latest update of funds no known instrument uses (yet): the instruments topic may be read
        # after the fund topic. Bounded like pending_marks; promoted by an instrument upsert.
        self.pending_funds: dict[str, FundUpdate] = {}
        self.ready = asyncio.Event()  # set once the reader caught up with the topics' ends
        # Set by the reader: wait until it has applied every instrument published so far.
        self.sync_hook: Callable[[], Awaitable[bool]] | None = None

    async def sync_instruments(self) -> bool:
        """Before rejecting ``unknown_instrument``: let the reader catch up with the instruments
        topic (the group agents and the reader consume independently). True if it did."""
        if self.sync_hook is None:
            return False
        return await self.sync_hook()

    def cache_mark(self, tick: PriceTick) -> None:
        """Keep ``tick`` as its instrument's latest mark (bounded if the instrument is unknown)."""
        name = tick.instrument
        if name in self.instruments:
            self.marks[name] = tick
            return
        pending = self.pending_marks
        pending.pop(name, None)  # re-inserted last: evicted after every less recent update
        pending[name] = tick
        while len(pending) > self.max_pending_marks:
            del pending[next(iter(pending))]

    def known_instrument(self, inst: Instrument) -> PriceTick | None:
        """Record an instrument upsert; its mark (a tick cached before it was known), if any."""
        self.instruments[inst.instrument] = inst
        self._fund_names = None
        pending = self.pending_marks.pop(inst.instrument, None)
        if pending is not None:
            self.marks[inst.instrument] = pending
        return self.marks.get(inst.instrument)

    def instrument_funds(self) -> set[str]:
        """Funds some known instrument uses (cached until the next instrument upsert)."""
        if self._fund_names is None:
            self._fund_names = {inst.fund for inst in self.instruments.values()}
        return self._fund_names

    def cache_fund(self, update: FundUpdate) -> bool:
        """Keep ``update`` as its fund's latest balance; True if the fund is in use (the engines
        take it), False if it was only kept (bounded) for a later instrument using it."""
        if update.fund in self.instrument_funds():
            self.funds[update.fund] = update
            return True
        pending = self.pending_funds
        pending.pop(update.fund, None)
        pending[update.fund] = update
        while len(pending) > self.max_pending_marks:
            del pending[next(iter(pending))]
        return False

    def promote_fund(self, fund: str) -> FundUpdate | None:
        """A fund an instrument now uses: its balance cached while it was unknown, if any."""
        update = self.pending_funds.pop(fund, None)
        if update is not None:
            self.funds[fund] = update
        return update

    def fund_names(self) -> set[str]:
        return set(self.funds) | {inst.fund for inst in self.instruments.values()}


def jsonable(obj: Any) -> Any:
    """JSON-able form of an engine output (dataclass / pydantic model / enum / numpy scalar)."""
    if isinstance(obj, RiskState):
        return obj.label
    if isinstance(obj, Enum):
        return obj.value
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump())
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON: e.g. utilization of an account with equity <= 0
    return obj


class Runtime:
    """The worker's mutable state; one instance per process (``runtime`` below)."""

    def __init__(self) -> None:
        self.settings = settings
        self.collectors: list[Any] = []  # extra scrape-time collectors (see add_collector)
        self.price_counter: Any = None  # streams.agents.prices.PriceCounter (worker sidecar)
        self.reset()
        self.add_collector(ConsumerLagCollector(self))

    def reset(self) -> None:
        """Fresh state and a fresh metrics registry (start-up; agent tests)."""
        self.metrics = RiskMetrics(snapshot=self.snapshot)
        # table rows an engine rebuild could not apply (malformed row or engine bug), per table
        self.rebuild_rows_skipped = Counter(
            "riskmon_rebuild_rows_skipped",
            "Table rows skipped while rebuilding a partition's engine, per table.",
            ["table"],
            registry=self.metrics.registry,
        )
        for table in ("positions", "balances"):
            self.rebuild_rows_skipped.labels(table=table)
        # partials the combiner ignores: a malformed message, or a stored one it cannot read
        self.partials_rejected = Counter(
            "riskmon_partials_rejected",
            "Partials ignored by the combining worker, per stage (message, table).",
            ["stage"],
            registry=self.metrics.registry,
        )
        for stage in ("message", "table"):
            self.partials_rejected.labels(stage=stage)
        for collector in self.collectors:
            self.metrics.registry.register(collector)
        self._accepted: dict[EventKind, Any] = {}
        self.ref = Reference()
        self.engines: dict[int, RiskEngine] = {}
        self.assigned: set[int] | None = None  # account partitions; None = not known yet
        self.generation = 0  # consumer-group generation the current assignment belongs to
        self.rebalancing = False
        self._was_ready = False  # readiness at the last update_ready (freeze on False -> True)
        self.rebalance_started = 0.0  # monotonic time of the revocation that started it
        self.recovered = False  # tables recovered at least once since start
        self.owns_partials = False  # this worker owns the partials partition (the combiner)
        self.venue: VenueSnapshot | None = None  # only the combining worker sets it
        self.sink: Any = None  # streams.sinks.RedisSink, set by the worker command
        self._rebuild_task: asyncio.Future[None] | None = None
        # Bumped on every change of any engine's inputs: the partials timer skips recomputing
        # when it has not moved.
        self.changes = 0

    def add_collector(self, collector: Any) -> None:
        """Register an extra collector on the worker's registry (kept across :meth:`reset`)."""
        self.collectors.append(collector)
        self.metrics.registry.register(collector)

    # -- readiness -------------------------------------------------------------------------------
    def update_ready(self) -> None:
        ready = (
            self.recovered
            and not self.rebalancing
            and self.ref.ready.is_set()
            and self.assigned is not None
            and all(p in self.engines for p in self.assigned)
        )
        if ready and not self._was_ready:
            # tables recovered, engines built: take the long-lived heap out of the cyclic GC
            gc_policy.on_ready()
        self._was_ready = ready
        self.metrics.set_ready(ready)

    # -- reference data (fan-out to every engine of this worker) -----------------------------
    def apply_reference(self, event: Event) -> list[Any]:
        """Apply a VALID instrument / price / fund event to the cache and every engine."""
        self.changes += 1
        transitions: list[Any] = []
        if isinstance(event, PriceTick):
            self.ref.cache_mark(event)
            if event.instrument in self.ref.instruments:
                for engine in self.engines.values():
                    transitions.extend(engine.apply_price(event) or ())
        elif isinstance(event, Instrument):
            mark = self.ref.known_instrument(event)
            fund = self.ref.promote_fund(event.fund)
            for engine in self.engines.values():
                transitions.extend(engine.upsert_instrument(event) or ())
                if mark is not None:
                    transitions.extend(engine.apply_price(mark) or ())
                if fund is not None:
                    engine.apply_fund(fund)
        elif isinstance(event, FundUpdate) and self.ref.cache_fund(event):
            # (a fund no known instrument uses is only cached, bounded: see Reference)
            for engine in self.engines.values():
                engine.apply_fund(event)
        return transitions

    def apply_ticks(self, ticks: list[PriceTick]) -> list[Any]:
        """Apply the LAST tick of each of several instruments (a conflated batch) to every engine.

        One vectorized revaluation per engine; transitions are evaluated at the batch's end
        (intermediate states of a burst are not reported). Ticks of instruments not known yet
        are only cached (an instrument fetched later uses them).
        """
        self.changes += 1
        for tick in ticks:
            self.ref.cache_mark(tick)
        known = [t for t in ticks if t.instrument in self.ref.instruments]
        transitions: list[Any] = []
        if len(known) == 1:
            for engine in self.engines.values():
                transitions.extend(engine.apply_price(known[0]) or ())
        elif known:
            ts = max(t.ts_event for t in known)
            marks = [t.mark_price for t in known]
            for engine in self.engines.values():
                ids = [engine.instrument_id(t.instrument) for t in known]
                transitions.extend(engine.apply_prices_fast(ids, marks, ts) or ())
        return transitions

    def reference_rejection(self, kind: EventKind, event: Event) -> Rejection | None:
        """State-dependent validation of a reference event (after ``parse_event`` accepted it)."""
        if isinstance(event, PriceTick) and event.instrument not in self.ref.instruments:
            return Rejection(
                RejectReason.UNKNOWN_INSTRUMENT,
                f"price for unknown instrument {event.instrument!r}",
            )
        if isinstance(event, FundUpdate) and event.fund not in self.ref.instrument_funds():
            return Rejection(
                RejectReason.UNKNOWN_FUND,
                f"balance of fund {event.fund!r}, which no known instrument uses",
            )
        return None

    # -- engines -----------------------------------------------------------------------------------
    def new_engine(self) -> RiskEngine:
        """An engine seeded with the reference data (instruments, marks, funds)."""
        engine = RiskEngine(self.settings.engine)
        for inst in self.ref.instruments.values():
            engine.upsert_instrument(inst)
        for name, tick in self.ref.marks.items():
            if name in self.ref.instruments:
                engine.apply_price(tick)
        for fund in self.ref.funds.values():
            engine.apply_fund(fund)
        return engine

    def build_engine(self, partition: int) -> RiskEngine:
        """Rebuild partition ``partition``'s engine from the (recovered) tables."""
        self.changes += 1
        engine = self.new_engine()
        n_bal = n_pos = 0
        for _account, value in _table_items(balances_table):
            if not value or value.get("partition") != partition:
                continue
            try:
                engine.apply_balance(BalanceUpdate.model_validate(value["balance"]))
                n_bal += 1
            except Exception as exc:  # a malformed row or an engine bug: skip the row, not all
                self._rebuild_skipped("balances", _account, exc)
        for _account, value in _table_items(positions_table):
            if not value or value.get("partition") != partition:
                continue
            try:
                rows = sorted(value["positions"].values(), key=lambda r: int(r["seq"]))
            except Exception as exc:
                self._rebuild_skipped("positions", _account, exc)
                continue
            for row in rows:
                try:
                    engine.apply_position(PositionUpdate.model_validate(row))
                    n_pos += 1
                except Exception as exc:
                    self._rebuild_skipped("positions", _account, exc)
        log.info(
            "engine rebuilt",
            extra={"partition": partition, "balances": n_bal, "positions": n_pos},
        )
        return engine

    def _rebuild_skipped(self, table: str, account: Any, exc: Exception) -> None:
        self.rebuild_rows_skipped.labels(table=table).inc()
        level = logging.WARNING if isinstance(exc, RejectedEvent | ValueError) else logging.ERROR
        log.log(level, "rebuild: %s row of %r skipped: %r", table, account, exc)

    async def engine_for(self, partition: int) -> RiskEngine:
        """The engine of an assigned partition (built on first use if the rebuild has not run)."""
        engine = self.engines.get(partition)
        if engine is None:
            await self.ref.ready.wait()
            engine = self.engines.get(partition)  # another coroutine may have built it
            if engine is None:
                engine = self.engines[partition] = self.build_engine(partition)
                self.update_ready()
        return engine

    async def rebuild_assigned(self) -> None:
        """Build every assigned partition's engine (after recovery; waits for reference data)."""
        await self.ref.ready.wait()
        for p in sorted(self.assigned or ()):
            if p not in self.engines:
                self.engines[p] = self.build_engine(p)
        self.update_ready()

    def on_assignment(self, partitions: Iterable[int], generation: int) -> None:
        """Tables are recovered for ``partitions``: drop lost engines, rebuild gained ones."""
        assigned = set(partitions)
        self.changes += 1
        for p in list(self.engines):
            if p not in assigned:
                del self.engines[p]
        self.assigned = assigned
        self.generation = generation
        self.rebalancing = False
        self.recovered = True
        self.update_ready()
        self._rebuild_task = asyncio.ensure_future(self.rebuild_assigned())

    def on_revoked(self) -> None:
        """A rebalance started: stop publishing partials until the new assignment is recovered."""
        if not self.rebalancing:
            self.rebalance_started = time.monotonic()
        self.rebalancing = True
        self.update_ready()

    # -- outputs -----------------------------------------------------------------------------------
    async def dead_letter(
        self,
        kind: EventKind,
        rejection: Rejection,
        *,
        topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        raw: bytes,
    ) -> None:
        env = deadletters.envelope(
            rejection,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            raw=raw,
            worker=self.settings.worker.id,
        )
        self.metrics.rejected(TOPIC_LABELS[kind], rejection.reason.value)
        await dead_letters_topic.send(
            key=deadletters.message_key(key), value=deadletters.encode(env)
        )
        log.info(
            "dead letter",
            extra={"topic": topic, "reason": rejection.reason.value, "detail": rejection.detail},
        )

    def _child(self, kind: EventKind) -> Any:
        child = self._accepted.get(kind)
        if child is None:  # cache the labelled child: .labels() takes a lock per call
            child = self._accepted[kind] = self.metrics.events_total.labels(
                topic=TOPIC_LABELS[kind]
            )
        return child

    def accepted(self, kind: EventKind, ts_event: float | None) -> None:
        self._child(kind).inc()
        if ts_event is not None:
            self.metrics.event_lag_seconds.observe(max(0.0, time.time() - ts_event))

    def accepted_batch(self, kind: EventKind, n: int, ts_events: list[float]) -> None:
        """Count ``n`` accepted events and observe the lag of each (one clock read)."""
        if n:
            self.changes += 1
            self._child(kind).inc(n)
        now = time.time()
        observe_many(self.metrics.event_lag_seconds, [now - ts for ts in ts_events])

    def accepted_many(self, kind: EventKind, n: int) -> None:
        """Count ``n`` accepted events (the caller observes their lag)."""
        self._child(kind).inc(n)

    async def emit(self, transitions: list[Any], partition: int | None = None) -> None:
        """Publish risk-state transitions (Kafka ``risk-events``, key account; Redis stream)."""
        if not transitions:
            return
        if self.sink is not None:
            self.sink.add_transitions(transitions)
        for t in transitions:
            body = jsonable(t)
            if isinstance(body, dict):
                body.setdefault("worker", self.settings.worker.id)
                if partition is not None:
                    body.setdefault("partition", partition)
            account = str(getattr(t, "account", "") or (body or {}).get("account", ""))
            await risk_events_topic.send(
                key=account.encode(), value=json.dumps(body, default=str).encode()
            )

    # -- metrics -----------------------------------------------------------------------------------
    def snapshot(self) -> MetricsSnapshot:
        """Scrape-time figures (called from the event loop: /metrics is served on it)."""
        counts: dict[str, int] = {state.label: 0 for state in RiskState}
        for engine in list(self.engines.values()):
            for state, n in engine.state_counts().items():
                label = state.label if isinstance(state, RiskState) else str(state)
                counts[label] = counts.get(label, 0) + int(n)
        marks = {
            name: tick.ts_event
            for name, tick in self.ref.marks.items()
            if name in self.ref.instruments
        }
        return MetricsSnapshot(accounts_by_state=counts, mark_timestamps=marks, venue=self.venue)

    def iter_engines(self) -> Iterator[RiskEngine]:
        return iter(list(self.engines.values()))


class ConsumerLagCollector:
    """``riskmon_consumer_lag_messages{topic}``: Σ end offset − position over THIS worker's
    assigned partitions of each input topic it consumes in a group (positions and balances via
    Faust, prices via the price counter). Computed at scrape time from the consumers' cached
    high watermarks (no broker round trip)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        lags: dict[str, float] = {}
        try:
            lags.update(self.faust_lags())
        except Exception:  # consumer not started / being rebuilt: no sample this scrape
            log.debug("faust consumer lag unavailable", exc_info=True)
        counter = self.rt.price_counter
        if counter is not None and counter.consumer is not None:
            try:
                lags["prices"] = float(counter.lag())
            except Exception:
                log.debug("price consumer lag unavailable", exc_info=True)
        family = GaugeMetricFamily(
            "riskmon_consumer_lag_messages",
            "Messages not yet consumed on this worker's assigned partitions (end offset − "
            "position), per input topic.",
            labels=["topic"],
        )
        for topic, lag in sorted(lags.items()):
            family.add_metric([topic], lag)
        yield family

    def faust_lags(self) -> dict[str, float]:
        consumer = getattr(app, "_consumer", None)
        if consumer is None or getattr(consumer, "_thread", None) is None:
            return {}
        labels = {
            self.rt.settings.topics.positions: "positions",
            self.rt.settings.topics.balances: "balances",
        }
        out: dict[str, float] = {}
        read = consumer._read_offset
        committed = consumer._committed_offset
        for tp in list(consumer.assignment()):
            label = labels.get(tp.topic)
            if label is None:
                continue
            end = consumer.highwater(tp)
            if end is None:
                continue
            last = read.get(tp)
            position = last + 1 if last is not None else committed.get(tp)
            if position is None:
                continue
            out[label] = out.get(label, 0.0) + max(0, int(end) - int(position))
        return out


def observe_many(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(max(0, v))`` for every value, with ONE increment per bucket and one
    of the sum: prometheus_client's ``observe`` takes two locks and scans the bounds per value,
    which is per-event work on the hot paths (every tick is observed). Falls back to ``observe``
    if the histogram does not have prometheus_client's internals."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            histogram.observe(v if v > 0 else 0.0)
        return
    counts = [0] * len(bounds)
    s = 0.0
    for v in values:
        if not v > 0:
            v = 0.0
        s += v
        counts[bisect_left(bounds, v)] += 1  # the first bound >= v (the last one is +Inf)
    if values:
        total.inc(s)
    for i, c in enumerate(counts):
        if c:
            buckets[i].inc(c)


def _table_items(table: Any) -> list[tuple[Any, Any]]:
    # Iterate the store directly: a snapshot list, no per-key "get" sensors.
    return list(table.data.items())


def parse(kind: EventKind, raw: Any, key: Any) -> Event | Rejection:
    return parse_event(kind, _as_bytes(raw), None if key is None else _as_bytes(key))


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")


runtime = Runtime()

__all__ = ["Reference", "Runtime", "app", "parse", "runtime"]
