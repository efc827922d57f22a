"""The worker's faust consumer fetches with a short broker wait (see streams.app)."""

from __future__ import annotations

import asyncio
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


def make_consumer(app: Any) -> Any:
    async def nothing(*args: Any) -> None:
        pass

    # (not app.transport.create_consumer: the cached transport keeps an earlier test's loop)
    return _Consumer(
        app.transport,
        callback=nothing,
        on_partitions_revoked=nothing,
        on_partitions_assigned=nothing,
        loop=asyncio.get_running_loop(),
    )


async def test_drain_callbacks_run_inline_while_the_flow_runs(app: Any) -> None:
    consumer = make_consumer(app)
    ran: list[str] = []
    tasks_before = len(asyncio.all_tasks())

    async def callback() -> str:
        ran.append("cb")
        # no task of its own: faust's wait_first would run it in one (plus three others)
        assert len(asyncio.all_tasks()) == tasks_before
        return "done"

    assert await consumer.wait_first(callback(), consumer.suspend_flow.wait()) is None
    assert ran == ["cb"]


async def test_a_suspended_flow_abandons_a_blocked_callback_like_faust(app: Any) -> None:
    consumer = make_consumer(app)
    blocked = asyncio.Event()

    async def callback() -> None:
        await blocked.wait()  # e.g. a full channel queue

    consumer.suspend_flow.set()  # a rebalance started: faust's own wait_first
    try:
        result = await asyncio.wait_for(
            consumer.wait_first(callback(), consumer.suspend_flow.wait()), 2.0
        )
    finally:
        consumer.suspend_flow.clear()
    assert result.done  # the suspend_flow wait won; the callback was given up


async def test_other_wait_first_calls_are_faust_s(app: Any) -> None:
    consumer = make_consumer(app)
    other = asyncio.Event()
    other.set()

    async def quick() -> int:
        return 1

    result = await consumer.wait_first(quick(), other.wait())
    assert result.done  # faust's WaitResults, not the inline path's None
