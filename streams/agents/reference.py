"""Every worker's own, group-less reader of the reference topics: prices, instruments, fund.

Why not a ``GlobalTable`` (the other option the faust docs offer for data every worker needs):

* The engines need a PUSH per tick — a tick must revalue that instrument's holders in every
  engine of every worker. A GlobalTable is a lookup table: on the workers that do not own the
  tick's partition, its updates arrive through the changelog/standby machinery with no agent
  callback, so nothing would revalue their accounts until their next position change.
* Its documented pitfalls with several app instances: an infinite recovery loop unless run with
  ``partitions=1, recovery_buffer_size=1`` (``faust/tables/globaltable.py``), and standby
  events not applied after "Worker ready" (faust-streaming #212). ``partitions=1`` would also
  force one partition on the hottest topic.
* It would add a changelog copy of the price stream to Kafka for no gain: the source topics
  already are the log (instruments is compacted; prices are keyed by instrument).

So each worker runs one ``AIOKafkaConsumer`` with NO group id: it is assigned every partition of
the three topics, starts at the beginning (``RISKMON_WORKER__REFERENCE_START=earliest``, exact) or
at the end (``latest``), applies every valid event to the worker's reference cache and engines,
and sets ``runtime.ref.ready`` once it has read up to the end offsets it saw at start. The account
agents wait for that before touching an engine, so a restart never rejects a position as
``unknown_instrument`` just because the instruments were not read yet. Invalid messages are
skipped here: the group-side agents (prices/instruments/fund) dead-letter and count each one
exactly once across the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.agents._inputs import RestartingLoop
from streams.agents.fastwire import TickFields, make_tick, parse_price, tick_fields
from streams.agents.runtime import Runtime, parse
from streams.engine.models import PriceTick
from streams.engine.rejections import Rejection
from streams.engine.wire import EventKind
from streams.settings import Settings

log = logging.getLogger(__name__)

FETCH_MIN_BYTES = 256 * 1024
FETCH_MAX_WAIT_MS = 50

TICK_APPLY_INTERVAL_S = 0.1


class ReferenceReader(RestartingLoop):
    """Group-less reader of prices, instruments and insurance fund into ``runtime``."""

    what = "reference reader"

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        t = settings.topics
        self.kinds: dict[str, EventKind] = {
            t.instruments: EventKind.INSTRUMENT,
            t.insurance_fund: EventKind.FUND,
            t.prices: EventKind.PRICE,
        }
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.applied = 0
        self.skipped = 0
        self.offsets: dict[TopicPartition, int] = {}  # next offset to apply, per partition
        runtime.ref.sync_hook = self.sync

    async def sync(self, timeout: float = 5.0) -> bool:
        """Wait until every instrument published so far has been applied (bounded wait)."""
        consumer = self.consumer
        if consumer is None:
            return False
        topic = self.settings.topics.instruments
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        if not tps:
            return False
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any(self.offsets.get(tp, 0) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _wait_assignment(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """All partitions of the three topics (aiokafka assigns them: no group, subscribed)."""
        deadline = time.monotonic() + 10.0
        while True:
            tps = sorted(consumer.assignment())
            missing = set(self.kinds) - {tp.topic for tp in tps}
            if not missing:
                return tps
            if time.monotonic() > deadline:
                log.info("reference reader waiting for topics", extra={"missing": sorted(missing)})
                deadline = time.monotonic() + 30.0
            await asyncio.sleep(0.1)

    async def run(self) -> None:
        kafka = self.settings.kafka
        start = self.settings.worker.reference_start
        # group_id=None + subscribe(): aiokafka assigns this consumer EVERY partition of the
        # topics (and picks up new partitions on metadata changes); nothing is committed.
        consumer = AIOKafkaConsumer(
            *self.kinds,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset=start,
            client_id=f"{kafka.app_id}-{self.settings.worker.id}-reference",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # let the broker batch a steady tick stream: one fetch per ~50 ms, not per tick
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            metadata_max_age_ms=30_000,
            **kafka.client_kwargs(),
        )
        await consumer.start()
        self.consumer = consumer
        try:
            tps = await self._wait_assignment(consumer)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            pending = {} if start == "latest" else {tp: e for tp, e in ends.items() if e > 0}
            self._maybe_ready(pending)
            kinds = list(self.kinds)
            # Ticks are CONFLATED: the last mark per instrument is applied once to each engine
            # (one vectorized step), at most every TICK_APPLY_INTERVAL_S (and before any
            # instrument / fund record, and at once while catching up to readiness), so a burst
            # of ticks costs one revaluation per engine instead of one per fetch.
            ticks: dict[str, PriceTick | TickFields] = {}
            last_apply = time.monotonic()
            while True:
                wait_ms = 200
                if ticks:
                    left = last_apply + TICK_APPLY_INTERVAL_S - time.monotonic()
                    wait_ms = max(1, int(left * 1000))
                batches = await consumer.getmany(timeout_ms=wait_ms, max_records=5000)
                # Instruments before funds before prices within one fetch: a tick for a new
                # instrument fetched together with it is then applied (the cache covers the rest).
                transitions: list[Any] = []
                for tp in sorted(batches, key=lambda tp: kinds.index(tp.topic)):
                    if self.kinds[tp.topic] is EventKind.PRICE:
                        self.conflate(batches[tp], ticks)
                        continue
                    if ticks:  # older ticks first, then the instrument / fund records
                        transitions.extend(self._apply_ticks(ticks))
                        ticks = {}
                        last_apply = time.monotonic()
                    for record in batches[tp]:
                        transitions.extend(self._apply(tp.topic, record.key, record.value))
                if ticks and (pending or time.monotonic() - last_apply >= TICK_APPLY_INTERVAL_S):
                    transitions.extend(self._apply_ticks(ticks))
                    ticks = {}
                    last_apply = time.monotonic()
                if transitions:
                    await self.runtime.emit(transitions)
                for tp in tps:
                    if tp.topic == self.settings.topics.instruments:
                        # position, not last offset + 1: compaction leaves gaps in offsets
                        self.offsets[tp] = await consumer.position(tp)
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= pending[tp]:
                            del pending[tp]
                    self._maybe_ready(pending)
        finally:
            self.consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()

    def conflate(self, records: Sequence[Any], ticks: dict[str, PriceTick | TickFields]) -> None:
        """Put the latest VALID tick per instrument of ``records`` (one partition's fetch, in
        offset order) into ``ticks`` (they supersede what it holds).

        Scanned newest first: once a key has its latest valid tick, its older records are not
        even parsed (a valid tick's key IS its instrument, so they could not win) — with a few
        hundred ticks per instrument per fetch, a handful of ``orjson`` parses instead of one
        per tick. Records without a key are all parsed. ``applied`` / ``skipped`` count the
        parsed records only."""
        latest: dict[str, PriceTick | TickFields] = {}
        resolved: set[bytes] = set()
        for record in reversed(records):
            key = record.key
            if key is not None and key in resolved:
                continue
            value = record.value
            fields = tick_fields(value, key) if value else None
            tick: PriceTick | TickFields
            if fields is not None:  # valid: the model is built when applied
                name, tick = fields[0], fields
                self.applied += 1
            else:
                parsed = self._parse_tick(key, value)
                if parsed is None:
                    continue
                name, tick = parsed.instrument, parsed
            if key is not None:
                resolved.add(key)
            if name not in latest:
                latest[name] = tick
        ticks.update(latest)

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> list[Any]:
        kind = self.kinds[topic]
        parsed = parse(kind, value or b"", key)
        if isinstance(parsed, Rejection):
            self.skipped += 1
            return []
        try:
            if self.runtime.reference_rejection(kind, parsed):
                # Ticks of unknown instruments and balances of unknown funds are still cached
                # (bounded): an instrument fetched later uses them.
                self.skipped += 1
                self.runtime.apply_reference(parsed)
                return []
            self.applied += 1
            return self.runtime.apply_reference(parsed)
        except Exception:  # an engine bug on one event must not stop the reader
            log.exception("applying a reference event failed", extra={"topic": topic})
            return []

    def _parse_tick(self, key: bytes | None, value: bytes | None) -> PriceTick | None:
        parsed = parse_price(value or b"", key)
        if not isinstance(parsed, PriceTick):
            self.skipped += 1
            return None
        self.applied += 1
        return parsed

    def _apply_ticks(self, ticks: dict[str, PriceTick | TickFields]) -> list[Any]:
        try:
            return self.runtime.apply_ticks(
                [t if isinstance(t, PriceTick) else make_tick(t) for t in ticks.values()]
            )
        except Exception:  # an engine bug must not stop the reader
            log.exception("applying price ticks failed")
            return []

    def _maybe_ready(self, pending: dict[TopicPartition, int]) -> None:
        if not pending and not self.runtime.ref.ready.is_set():
            self.runtime.ref.ready.set()
            self.runtime.update_ready()
            log.info(
                "reference data loaded",
                extra={
                    "instruments": len(self.runtime.ref.instruments),
                    "marks": len(self.runtime.ref.marks),
                    "funds": len(self.runtime.ref.funds),
                },
            )
