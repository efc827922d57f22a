"""The worker's faust consumer fetches with a short broker wait (see streams.app)."""

from __future__ import annotations

from typing import Any

from streams.app import FAUST_FETCH_MAX_WAIT_MS, _Consumer, _ConsumerThread


async def test_the_worker_consumer_waits_at_most_100_ms_per_fetch(app: Any) -> None:
    async def nothing(*args: Any) -> None:
        pass

    consumer = app.transport.create_consumer(
        callback=nothing, on_partitions_revoked=nothing, on_partitions_assigned=nothing
    )
    assert isinstance(consumer, _Consumer)
    thread = consumer._thread
    assert isinstance(thread, _ConsumerThread)
    kafka = thread._create_worker_consumer(app.transport)
    try:
        # faust passes 1500; the fetcher reads this attribute when the consumer starts
        assert kafka._fetch_max_wait_ms == FAUST_FETCH_MAX_WAIT_MS == 100
    finally:
        await kafka.stop()  # never started: just closes its client
