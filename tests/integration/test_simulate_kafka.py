"""``riskmon simulate`` against the real Kafka broker of ``make test``: what is sent arrives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pytest
from aiokafka import AIOKafkaConsumer

from streams.engine.rejections import Rejection
from streams.engine.wire import EventKind, parse_event
from streams.producers.simulate import DEFAULT_TOPICS, KIND_TOPIC, SimulateOptions, simulate
from tests.integration.servers import REPO_ROOT, unique_name

pytestmark = pytest.mark.integration

KIND_OF = {logical: kind for kind, logical in KIND_TOPIC.items()}


def unique_topics() -> dict[str, str]:
    run = unique_name("sim")
    return {
        logical: f"{run}.{name.removeprefix('riskmon.')}"
        for logical, name in DEFAULT_TOPICS.items()
    }


async def read_all(
    bootstrap: str, topics: list[str], expected: int, timeout_s: float = 60.0
) -> list:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list = []
    try:
        import time

        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                records.extend(recs)
        # anything beyond what was sent would be a bug too: drain briefly
        batch = await consumer.getmany(timeout_ms=500)
        for recs in batch.values():
            records.extend(recs)
    finally:
        await consumer.stop()
    return records


async def cleanup_policy(bootstrap: str, topic: str) -> str:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (resp,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})]
        )
        ((_code, _msg, _type, _name, entries),) = resp.resources
        return str(next(e[1] for e in entries if e[0] == "cleanup.policy"))
    finally:
        await admin.close()


async def test_simulate_counts_per_topic_match(kafka_bootstrap: str) -> None:
    topics = unique_topics()
    opts = SimulateOptions(
        bootstrap=kafka_bootstrap,
        topics=topics,
        accounts=150,
        seed=5,
        duration_s=2.0,
        rate=400.0,
        crash_at_s=0.5,
        crash_pct=0.2,
        crash_duration_s=1.0,
        update_share=0.25,
        invalid_ratio=0.05,
        partitions=3,
    )
    stats = await simulate(opts)
    assert stats.total > 150 * 2  # bootstrap (balances + positions) plus a live phase
    assert stats.invalid > 0
    records = await read_all(kafka_bootstrap, list(topics.values()), stats.total)
    by_topic = Counter(r.topic for r in records)
    assert dict(by_topic) == stats.sent

    logical = {name: lg for lg, name in topics.items()}
    partition_of_key: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    invalid = 0
    for r in records:
        kind = KIND_OF[logical[r.topic]]
        partition_of_key[(r.topic, r.key)].add(r.partition)
        if isinstance(parse_event(kind, r.value, r.key), Rejection):
            invalid += 1
    assert invalid == stats.invalid
    # keyed per the wire contract: one key, one partition (so per-key order holds)
    assert all(len(parts) == 1 for parts in partition_of_key.values())
    # accounts are spread over the partitions of the account-keyed topics
    assert (
        len({p for (t, _), ps in partition_of_key.items() if t == topics["positions"] for p in ps})
        == 3
    )

    assert (await cleanup_policy(kafka_bootstrap, topics["instruments"])) == "compact"


@pytest.mark.slow
async def test_riskmon_simulate_command(kafka_bootstrap: str) -> None:
    topics = unique_topics()
    env = {
        **os.environ,
        "RISKMON_TOPICS__PRICES": topics["prices"],
        "RISKMON_TOPICS__POSITIONS": topics["positions"],
        "RISKMON_TOPICS__BALANCES": topics["balances"],
        "RISKMON_TOPICS__INSURANCE_FUND": topics["insurance_fund"],
        "RISKMON_TOPICS__INSTRUMENTS": topics["instruments"],
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "simulate",
            "--bootstrap",
            kafka_bootstrap,
            "--accounts",
            "50",
            "--duration",
            "1",
            "--rate",
            "200",
            "--partitions",
            "2",
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary["per_topic"]) == set(topics.values())
    records = await read_all(kafka_bootstrap, list(topics.values()), summary["messages"])
    assert len(records) == summary["messages"]
    positions = [r for r in records if r.topic == topics["positions"]]
    assert all(
        not isinstance(parse_event(EventKind.POSITION, r.value, r.key), Rejection)
        for r in positions
    )
