"""Kafka topics of a test: create (and wait for leaders), describe configs, read back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol


class TopicFactory(Protocol):
    """Type of the ``kafka_topic`` fixture: ``await kafka_topic(prefix, partitions, config)``."""

    def __call__(
        self,
        prefix: str = "topic",
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> Awaitable[str]: ...


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create topic ``name`` with ``partitions`` partitions (RF 1) and topic ``config``
    (e.g. ``{"cleanup.policy": "compact"}``), then wait until every partition has a leader.
    Returns ``name``. Raises if the topic already exists."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=dict(config or {}))]
        )
        for topic_error in resp.topic_errors:
            code = topic_error[1]
            if code:
                raise for_code(code)(f"create topic {name}: {topic_error}")
        deadline = time.monotonic() + timeout
        while True:
            (meta,) = await admin.describe_topics([name])
            parts = meta.get("partitions") or []
            if (
                meta.get("error_code") == 0
                and len(parts) == partitions
                and all(p.get("leader", -1) >= 0 for p in parts)
            ):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} has no leaders after {timeout:.0f}s: {meta}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def topic_config(bootstrap: str, name: str) -> dict[str, str]:
    """The effective configuration of topic ``name`` (``DescribeConfigs``) as a dict."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    out: dict[str, str] = {}
    for resp in responses:
        for resource in resp.resources:
            error_code, error_message, _rtype, rname, entries = resource[:5]
            if error_code:
                raise RuntimeError(f"describe_configs({rname}): {error_code} {error_message}")
            for entry in entries:
                out[entry[0]] = entry[1]
    return out


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    min_records: int = 1,
    timeout: float = 60.0,
    predicate: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Read ``topic`` from the beginning (no consumer group) until ``min_records`` records (that
    satisfy ``predicate``, if given) have been seen; return all records read (aiokafka
    ``ConsumerRecord``s). Raises ``TimeoutError`` with what was read so far."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
            matching = [r for r in records if predicate is None or predicate(r)]
            if len(matching) >= min_records:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read {len(records)} records from {topic} in {timeout:.0f}s, "
                    f"{len(matching)} matching; wanted {min_records}: {records[-5:]!r}"
                )
    finally:
        await consumer.stop()
