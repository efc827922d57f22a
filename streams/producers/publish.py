"""Kafka side of ``riskmon simulate``: topic names, topic creation, producer, paced and bulk send.

Messages carry a logical topic (a key of the topic map, e.g. ``"prices"``); the map names the
Kafka topic (``RISKMON_TOPICS__*``, defaults :data:`DEFAULT_TOPICS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.producers.pacing import Pacer
from streams.producers.venue_stream import Message

DEFAULT_TOPICS: dict[str, str] = {
    "prices": "riskmon.prices",
    "positions": "riskmon.positions",
    "balances": "riskmon.balances",
    "insurance_fund": "riskmon.insurance-fund",
    "instruments": "riskmon.instruments",
}


def settings_topics() -> dict[str, str]:
    """Input topic names from ``RISKMON_TOPICS__*`` (defaults when settings are unavailable)."""
    try:
        from streams.settings import get_settings

        return dict(get_settings().topics.inputs())
    except Exception:  # settings missing or invalid env: the contract's defaults
        return dict(DEFAULT_TOPICS)


def settings_bootstrap() -> str:
    try:
        from streams.settings import get_settings

        return ",".join(get_settings().kafka.bootstrap_servers())
    except Exception:
        return "127.0.0.1:9092"


def settings_partitions() -> int:
    try:
        from streams.settings import get_settings

        return int(get_settings().kafka.partitions)
    except Exception:
        return 8


@dataclass
class PublishStats:
    sent: dict[str, int] = field(default_factory=dict)  # Kafka topic -> messages
    invalid: int = 0
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, str],
    partitions: int,
    *,
    timeout_s: float = 30.0,
    **client_kwargs: Any,
) -> None:
    """Create missing input topics (instruments compacted) like the worker would declare them."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = []
        for logical, name in topics.items():
            if name in existing:
                continue
            configs = {"cleanup.policy": "compact"} if logical == "instruments" else {}
            new.append(NewTopic(name, partitions, 1, topic_configs=configs))
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        # Wait until every partition has a leader (else the first sends are retried).
        deadline = time.monotonic() + timeout_s
        names = list(topics.values())
        while True:
            metas = await admin.describe_topics(names)
            if all(
                m.get("error_code") == 0
                and m.get("partitions")
                and all(p.get("leader", -1) >= 0 for p in m["partitions"])
                for m in metas
            ):
                if new:  # leaders elected; give the broker a moment to serve them
                    await asyncio.sleep(1.0)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} have no leaders after {timeout_s:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def send_all(
    producer: Any,
    messages: Iterator[Message],
    topics: Mapping[str, str],
    stats: PublishStats,
    *,
    pacer: Pacer | None = None,
    deadline: float | None = None,
    window: int = 5_000,
) -> None:
    """Send ``messages`` (at most ``window`` unacknowledged), paced, until ``deadline``."""
    pending: list[asyncio.Future[Any]] = []
    it = iter(messages)
    while deadline is None or time.monotonic() < deadline:
        if pacer is not None:
            await pacer.wait()
        msg = next(it, None)
        if msg is None:
            break
        name = topics[msg.topic]
        pending.append(await producer.send(name, msg.value, key=msg.key))
        stats.sent[name] = stats.sent.get(name, 0) + 1
        if not msg.valid:
            stats.invalid += 1
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    if pending:
        await asyncio.gather(*pending)


async def send_batched(
    producer: Any,
    messages: Iterator[Message],
    topics: Mapping[str, str],
    stats: PublishStats,
    *,
    window: int = 64,
) -> None:
    """Unpaced bulk send: messages are appended to one batch per (topic, partition) — the
    partition chosen by the producer's own key partitioner, as ``send()`` would — and each
    batch is sent when full. About 4× faster than one ``send()`` per message."""
    partitioner = producer._partitioner  # aiokafka's DefaultPartitioner (murmur2, like Java)
    partitions: dict[str, list[int]] = {}
    batches: dict[tuple[str, int], Any] = {}
    pending: list[asyncio.Future[Any]] = []

    async def flush(name: str, partition: int) -> None:
        batch = batches.pop((name, partition))
        pending.append(await producer.send_batch(batch, name, partition=partition))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()

    for msg in messages:
        name = topics[msg.topic]
        parts = partitions.get(name)
        if parts is None:
            parts = partitions[name] = sorted(await producer.partitions_for(name))
        partition = partitioner(msg.key, parts, parts)
        batch = batches.get((name, partition))
        if batch is None:
            batch = batches[(name, partition)] = producer.create_batch()
        if batch.append(key=msg.key, value=msg.value, timestamp=None) is None:
            await flush(name, partition)
            batch = batches[(name, partition)] = producer.create_batch()
            batch.append(key=msg.key, value=msg.value, timestamp=None)
        stats.sent[name] = stats.sent.get(name, 0) + 1
        if not msg.valid:
            stats.invalid += 1
    for name, partition in list(batches):
        await flush(name, partition)
    if pending:
        await asyncio.gather(*pending)


def make_producer(bootstrap: str, **client_kwargs: Any) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks=1,
        **client_kwargs,
    )
