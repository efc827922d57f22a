"""``consume_batches``: the account agents' batch reader of a faust stream's channel queue.

A stand-in stream (the attributes ``consume_batches`` reads) over a real ``asyncio.Queue``, so
batching, acking, the generation / flow-control skip, the retry and the stop are checked without
a broker or faust's test wrapper (``test_positions.py`` drives the real agents end to end).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.agents import _inputs
from streams.agents._inputs import consume_batches


@dataclass(eq=False)
class FakeMessage:
    offset: int
    generation_id: int = 1
    topic: str = "positions"
    tracked: bool = False


@dataclass(eq=False)
class FakeEvent:
    message: FakeMessage
    value: bytes = b"{}"
    acked: int = 0

    def ack(self) -> None:
        self.acked += 1


class Flow:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class FakeStream:
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    should_stop: bool = False
    _processors: list[Any] = field(default_factory=list)
    unacked: set[Any] = field(default_factory=set)
    flow: Flow = field(default_factory=Flow)
    generation: int = 1

    async def maybe_start(self) -> None:
        pass

    @property
    def channel(self) -> Any:
        return self

    @property
    def app(self) -> Any:
        stream = self

        class App:
            consumer = type("C", (), {"unacked": stream.unacked})()
            topics = type("T", (), {"acking_topics": {"positions"}})()
            flow_control = stream.flow

            @property
            def consumer_generation_id(self) -> int:
                return stream.generation

        return App()


def events(n: int, start: int = 0, **kw: Any) -> list[FakeEvent]:
    return [FakeEvent(FakeMessage(offset=start + i, **kw)) for i in range(n)]


async def run_until(stream: FakeStream, handle: Any, done: Any, max_events: int = 5000) -> None:
    task = asyncio.ensure_future(consume_batches(stream, handle, max_events))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if done():
            break
    stream.queue.put_nowait(_Stop())  # a stop marker the queue hands out like faust's throw
    await asyncio.wait_for(task, 2.0)


class _Stop:
    """Put on the queue to end the reader: ``message`` raises like faust's thrown stop."""

    @property
    def message(self) -> Any:
        raise AssertionError("the reader must stop before reading this")


@pytest.fixture(autouse=True)
def stop_on_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``queue.get`` raise ``StopAsyncIteration`` for the marker, like faust's stream stop
    (``Stream.stop`` throws it into the channel queue)."""
    real_get = asyncio.Queue.get

    async def get(self: asyncio.Queue[Any]) -> Any:
        item = await real_get(self)
        if isinstance(item, _Stop):
            raise StopAsyncIteration
        return item

    monkeypatch.setattr(asyncio.Queue, "get", get)


async def test_queued_events_are_one_batch_acked_after_the_handler() -> None:
    stream = FakeStream()
    evs = events(5)
    for e in evs:
        stream.queue.put_nowait(e)
    seen: list[list[int]] = []

    async def handle(batch: list[FakeEvent]) -> None:
        assert all(e.acked == 0 for e in batch)  # not before the handler returned
        assert all(e.message in stream.unacked for e in batch)  # tracked for wait_empty
        seen.append([e.message.offset for e in batch])

    await run_until(stream, handle, lambda: seen)
    assert seen == [[0, 1, 2, 3, 4]]
    assert [e.acked for e in evs] == [1] * 5


async def test_batches_are_capped() -> None:
    stream = FakeStream()
    for e in events(7):
        stream.queue.put_nowait(e)
    sizes: list[int] = []

    async def handle(batch: list[FakeEvent]) -> None:
        sizes.append(len(batch))

    await run_until(stream, handle, lambda: sum(sizes) == 7, max_events=3)
    assert sizes == [3, 3, 1]


async def test_events_of_an_old_generation_or_during_a_rebalance_are_acked_not_handled() -> None:
    stream = FakeStream(generation=2)
    old, new = events(2, generation_id=1), events(2, start=2, generation_id=2)
    for e in old + new:
        stream.queue.put_nowait(e)
    seen: list[int] = []

    async def handle(batch: list[FakeEvent]) -> None:
        seen.extend(e.message.offset for e in batch)

    await run_until(stream, handle, lambda: seen)
    assert seen == [2, 3]
    assert [e.acked for e in old + new] == [1, 1, 1, 1]

    stream = FakeStream()
    stream.flow.active = False  # flow control suspended: a rebalance is under way
    paused = events(2)
    for e in paused:
        stream.queue.put_nowait(e)
    await run_until(stream, handle, lambda: all(e.acked for e in paused))
    assert seen == [2, 3] and [e.acked for e in paused] == [1, 1]


async def test_a_failing_batch_is_retried_once_then_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_sleep = asyncio.sleep
    monkeypatch.setattr(_inputs.asyncio, "sleep", lambda s: real_sleep(0))
    stream = FakeStream()
    first, second = events(1), events(1, start=1)
    calls: list[int] = []

    async def flaky(batch: list[FakeEvent]) -> None:
        calls.append(batch[0].message.offset)
        if len(calls) == 1:
            raise RuntimeError("transient")

    stream.queue.put_nowait(first[0])
    await run_until(stream, flaky, lambda: first[0].acked)
    assert calls == [0, 0] and first[0].acked == 1  # retried, then acked once

    async def broken(batch: list[FakeEvent]) -> None:
        calls.append(batch[0].message.offset)
        raise RuntimeError("bug")

    stream = FakeStream()
    stream.queue.put_nowait(second[0])
    await run_until(stream, broken, lambda: second[0].acked)
    assert calls[2:] == [1, 1] and second[0].acked == 1  # skipped: the partition goes on


async def test_a_cancelled_batch_is_not_acked() -> None:
    stream = FakeStream()
    ev = events(1)[0]
    stream.queue.put_nowait(ev)
    started = asyncio.Event()

    async def slow(batch: list[FakeEvent]) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.ensure_future(consume_batches(stream, slow))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ev.acked == 0  # redelivered to the partition's next owner


async def test_events_arriving_during_the_batch_wait_join_the_batch() -> None:
    stream = FakeStream()
    evs = events(3)
    sizes: list[int] = []

    async def handle(batch: list[FakeEvent]) -> None:
        sizes.append(len(batch))

    task = asyncio.ensure_future(consume_batches(stream, handle, batch_wait_s=0.2))
    stream.queue.put_nowait(evs[0])
    await asyncio.sleep(0.05)  # the reader took the first event and waits for more
    assert stream.queue.empty() and sizes == []
    stream.queue.put_nowait(evs[1])
    stream.queue.put_nowait(evs[2])
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sizes:
            break
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert sizes == [3] and [e.acked for e in evs] == [1, 1, 1]
