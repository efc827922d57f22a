"""Smoke tests: the run's Kafka broker is real and behaves like Kafka for aiokafka.

Produce/consume across partitions, a compacted topic (checked through DescribeConfigs), and a
consumer group whose committed offsets survive the consumer.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.servers import TopicFactory, read_topic, topic_config, unique_name


async def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value=v, key=k) for k, v in items])
    finally:
        await producer.stop()


async def test_broker_metadata_is_a_real_kafka(kafka_bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        # our consumer groups need the coordinator; make test's readiness probe created it
        coordinator = await admin.find_coordinator(unique_name("probe"))
    finally:
        await admin.close()
    host, _, port = kafka_bootstrap.rpartition(":")
    assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [(host, int(port))]
    assert coordinator == cluster["brokers"][0]["node_id"]


async def test_produce_and_consume_across_partitions(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("smoke-roundtrip", partitions=3)
    items = [(f"acct-{i % 7}".encode(), f"v{i}".encode()) for i in range(60)]
    await _produce(kafka_bootstrap, topic, items)

    records = await read_topic(kafka_bootstrap, topic, min_records=len(items), timeout=60)

    assert sorted(r.value for r in records) == sorted(v for _, v in items)
    assert {r.partition for r in records} == {0, 1, 2}
    partition_of_key: dict[bytes, set[int]] = {}
    for r in records:
        partition_of_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values())  # keyed partitioning
    for key in partition_of_key:  # order per key is preserved
        values = [r.value for r in records if r.key == key]
        assert values == [v for k, v in items if k == key]


async def test_compacted_topic(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    topic = await kafka_topic("smoke-compacted", partitions=1, config={"cleanup.policy": "compact"})

    config = await topic_config(kafka_bootstrap, topic)
    assert config["cleanup.policy"] == "compact"

    await _produce(kafka_bootstrap, topic, [(b"BTC-PERP", b"v1"), (b"BTC-PERP", b"v2")])
    records = await read_topic(kafka_bootstrap, topic, min_records=2)
    assert [r.value for r in records if r.key == b"BTC-PERP"][-1] == b"v2"


async def test_consumer_group_commits_offsets(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("smoke-group", partitions=2)
    group = unique_name("smoke-group")
    first = [(b"k%d" % i, b"first-%d" % i) for i in range(10)]
    await _produce(kafka_bootstrap, topic, first)

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    async def consume(c: AIOKafkaConsumer, n: int) -> list[bytes]:
        got: list[bytes] = []
        async with asyncio.timeout(60):
            while len(got) < n:
                batch = await c.getmany(timeout_ms=500)
                got.extend(r.value for recs in batch.values() for r in recs)
        return got

    c1 = consumer()
    await c1.start()
    try:
        assert sorted(await consume(c1, len(first))) == sorted(v for _, v in first)
        await c1.commit()
        committed = {tp.partition: await c1.committed(tp) for tp in c1.assignment()}
    finally:
        await c1.stop()
    assert sum(v or 0 for v in committed.values()) == len(first)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert {tp: om.offset for tp, om in offsets.items()} == {
        TopicPartition(topic, p): off for p, off in committed.items()
    }

    # a new member of the same group resumes after the committed offsets
    second = [(b"k%d" % i, b"second-%d" % i) for i in range(5)]
    await _produce(kafka_bootstrap, topic, second)
    c2 = consumer()
    await c2.start()
    try:
        got = await consume(c2, len(second))
        await asyncio.sleep(1.0)  # nothing older may trickle in
        batch = await c2.getmany(timeout_ms=500)
        got.extend(r.value for recs in batch.values() for r in recs)
    finally:
        await c2.stop()
    assert sorted(got) == sorted(v for _, v in second)
