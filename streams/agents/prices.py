"""``prices`` (key instrument): validated, dead-lettered and counted ONCE across the workers.

The price STATE is not a table: every worker needs every mark, so each worker's group-less
reader (:mod:`streams.agents.reference`) fans ticks out to all its engines. This module is the
exactly-once-per-message side: validation, dead letters (including ``unknown_instrument``) and
``riskmon_events_total{topic="prices"}``.

Prices are 80 % of the input, so this side is NOT a per-event Faust agent (Faust's per-message
machinery cost more than everything else together): each worker runs one ``AIOKafkaConsumer``
in the consumer group ``<app id>-prices`` (Kafka spreads the partitions over the workers, exactly
like the Faust group did) that fetches batches, validates them with the fast path
(:mod:`streams.agents.fastwire`, identical rejections), dead-letters the invalid ones and counts
the rest with one ``inc(n)`` per batch.

At-least-once, like the Faust agents: offsets are committed manually, only for records already
handled — every ``COMMIT_INTERVAL_S``, on a partition revocation (a rebalance) and at stop. A batch
is handled under a lock the revocation callback also takes, so a rebalance never moves a partition
in the middle of a batch: the old owner commits everything it counted, the new owner starts from
there (nothing lost, nothing counted twice). Only a crash replays up to one commit interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams.agents._inputs import RestartingLoop
from streams.agents.fastwire import parse_price, tick_fields
from streams.agents.runtime import Runtime, observe_many
from streams.engine.models import PriceTick
from streams.engine.rejections import Rejection
from streams.engine.wire import EventKind
from streams.settings import Settings

log = logging.getLogger(__name__)

FETCH_MIN_BYTES = 256 * 1024
FETCH_MAX_WAIT_MS = 50

COMMIT_INTERVAL_S = 1.0


async def count_batch(runtime: Runtime, topic: str, partition: int, records: Iterable[Any]) -> int:
    """Validate, dead-letter or count a batch of price records (``.offset``/``.key``/``.value``).

    Returns how many were accepted. The same checks as every other input: ``parse_event`` (via
    the fast path), then ``unknown_instrument`` against the reference data (after letting the
    reader catch up with the instruments topic once).
    """
    await runtime.ref.ready.wait()  # unknown_instrument needs the instruments loaded
    instruments = runtime.ref.instruments
    accepted = 0
    now = time.time()
    lags: list[float] = []
    lag = lags.append
    for record in records:
        value = record.value
        raw = value if type(value) is bytes else b"" if value is None else bytes(value)
        fields = tick_fields(raw, record.key)
        if fields is not None and fields[0] in instruments:  # the common case: no model
            accepted += 1
            lag(now - fields[3])
            continue
        parsed = parse_price(raw, record.key)
        if isinstance(parsed, PriceTick) and parsed.instrument not in instruments:
            if await runtime.ref.sync_instruments() and parsed.instrument in instruments:
                pass
            else:
                rejection = runtime.reference_rejection(EventKind.PRICE, parsed)
                if rejection is not None:
                    parsed = Rejection(rejection.reason, rejection.detail, raw)
        if isinstance(parsed, Rejection):
            await runtime.dead_letter(
                EventKind.PRICE,
                parsed,
                topic=topic,
                partition=partition,
                offset=record.offset,
                key=record.key,
                raw=raw,
            )
            continue
        accepted += 1
        lag(now - parsed.ts_event)
    observe_many(runtime.metrics.event_lag_seconds, lags)
    if accepted:
        runtime.accepted_many(EventKind.PRICE, accepted)
    return accepted


class PriceCounter(RestartingLoop):
    """The worker's member of the ``<app id>-prices`` group (see the module docstring)."""

    what = "price counter"

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.topic = settings.topics.prices
        self.group_id = f"{settings.kafka.app_id}-prices"
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()
        self.done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._committed: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def _cancel(self, task: asyncio.Task[None]) -> None:
        # Cancel between batches (never in the middle of one: its offsets would not be
        # committed and a successor would count its first records again).
        locked = False
        with contextlib.suppress(asyncio.TimeoutError):
            locked = await asyncio.wait_for(self.lock.acquire(), timeout=5.0)
        task.cancel()
        if locked:
            self.lock.release()

    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        wanted = self.done if tps is None else {tp: self.done[tp] for tp in tps if tp in self.done}
        offsets = {
            tp: OffsetAndMetadata(off, "")
            for tp, off in wanted.items()
            if self._committed.get(tp) != off
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # e.g. CommitFailedError during a rebalance: replayed later
            log.warning("price offsets not committed: %s", exc)
            return
        for tp, meta in offsets.items():
            self._committed[tp] = meta.offset

    def lag(self) -> int:
        """Σ end offset − position over this worker's price partitions (scrape time)."""
        consumer = self.consumer
        if consumer is None:
            return 0
        total = 0
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            total += max(0, end - self.done.get(tp, end))
        return total

    async def run(self) -> None:
        kafka = self.settings.kafka
        counter = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with counter.lock:  # never in the middle of a batch
                    await counter.commit(revoked)
                    for tp in revoked:
                        counter.done.pop(tp, None)
                        counter._committed.pop(tp, None)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                log.info(
                    "price partitions assigned",
                    extra={"partitions": sorted(tp.partition for tp in assigned)},
                )

        consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{kafka.app_id}-{self.settings.worker.id}-prices",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # let the broker batch a steady tick stream: one fetch per ~50 ms, not per tick
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=int(self.settings.worker.broker_session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.worker.broker_heartbeat_interval_s * 1000),
            metadata_max_age_ms=30_000,
            **kafka.client_kwargs(),
        )
        await consumer.start()
        consumer.subscribe([self.topic], listener=Listener())
        self.consumer = consumer
        last_commit = time.monotonic()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
                async with self.lock:
                    assigned = consumer.assignment()
                    for tp, records in batches.items():
                        if not records or tp not in assigned:
                            continue  # revoked while fetched: the new owner reads them
                        await count_batch(self.runtime, tp.topic, tp.partition, records)
                        self.done[tp] = records[-1].offset + 1
                    if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                        await self.commit()
                        last_commit = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                async with self.lock:
                    await self.commit()
            self.consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
