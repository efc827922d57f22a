"""The price counter's consumer group on a real broker: a second member joining mid-stream (a
rebalance) neither loses nor double-counts a tick; each partition is counted by one member."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiokafka import AIOKafkaProducer

from streams.agents.prices import PriceCounter
from streams.agents.runtime import Runtime
from streams.app import settings as app_settings
from streams.engine.models import Instrument, MarginTier
from tests.integration.conftest import TopicFactory

NAMES = [f"INST{i}USDT" for i in range(12)]
TIERS = (MarginTier(floor_notional_usd=0.0, mmr=0.01, max_leverage=50.0),)


def member(bootstrap: str, topic: str, app_id: str, worker: str) -> tuple[PriceCounter, Runtime]:
    s = app_settings.model_copy(
        update={
            "kafka": app_settings.kafka.model_copy(update={"brokers": bootstrap, "app_id": app_id}),
            "topics": app_settings.topics.model_copy(update={"prices": topic}),
            "worker": app_settings.worker.model_copy(
                update={"id": worker, "broker_session_timeout_s": 10.0}
            ),
        }
    )
    rt = Runtime()
    for name in NAMES:
        rt.apply_reference(Instrument(instrument=name, tiers=TIERS))
    rt.ref.ready.set()
    return PriceCounter(s, rt), rt


def counted(rt: Runtime) -> float:
    return rt.metrics.sample("riskmon_events_total", {"topic": "prices"}) or 0.0


async def test_rebalance_mid_stream_counts_each_tick_once(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic(prefix="prices", partitions=6)
    app_id = f"test-{uuid.uuid4().hex[:8]}"
    total = 6_000
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    c1, rt1 = member(kafka_bootstrap, topic, app_id, "p1")
    c2, rt2 = member(kafka_bootstrap, topic, app_id, "p2")
    try:

        async def send(start: int, stop: int, pause: float = 0.0) -> None:
            for i in range(start, stop):
                name = NAMES[i % len(NAMES)]
                body = {"instrument": name, "mark_price": 100.0 + i, "ts_event": time.time()}
                await producer.send(topic, json.dumps(body).encode(), key=name.encode())
                if pause and i % 50 == 0:
                    await producer.flush()
                    await asyncio.sleep(pause)
            await producer.flush()

        await send(0, total // 3)
        c1.start()
        await asyncio.sleep(1.0)
        # ticks keep flowing (~4 s) while the second member joins and the group rebalances
        producing = asyncio.ensure_future(send(total // 3, 2 * total // 3, pause=0.05))
        await asyncio.sleep(0.3)
        c2.start()
        await producing
        deadline = time.monotonic() + 30
        while not (c2.consumer and c2.consumer.assignment()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await send(2 * total // 3, total)
        deadline = time.monotonic() + 60
        while counted(rt1) + counted(rt2) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # anything counted twice would show up now
        assert counted(rt1) + counted(rt2) == total
        assert counted(rt2) > 0, "the second member took no partitions"
        a1 = {tp.partition for tp in c1.consumer.assignment()} if c1.consumer else set()
        a2 = {tp.partition for tp in c2.consumer.assignment()} if c2.consumer else set()
        assert not a1 & a2 and a1 | a2 == set(range(6))
    finally:
        await c2.stop()
        await c1.stop()
        await producer.stop()
