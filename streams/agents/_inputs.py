"""Shared body of the input agents: parse raw bytes, dead-letter what is invalid, count."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from faust.streams import _current_event
from faust.types import TP
from mode.utils.futures import maybe_async

from streams.agents.runtime import parse, runtime
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason
from streams.engine.wire import Event, EventKind

T = TypeVar("T")
log = logging.getLogger(__name__)


async def validate(kind: EventKind, event: Any) -> Event | None:
    """``parse_event`` on a faust event; a rejection is dead-lettered and ``None`` returned."""
    parsed = parse(kind, event.value, event.key)
    if isinstance(parsed, Rejection):
        await reject(kind, event, parsed)
        return None
    return parsed


async def reject(kind: EventKind, event: Any, rejection: Rejection) -> None:
    msg = event.message
    raw = event.value if isinstance(event.value, bytes) else rejection.raw
    key = (
        event.key if isinstance(event.key, bytes) or event.key is None else str(event.key).encode()
    )
    await runtime.dead_letter(
        kind,
        rejection,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key,
        raw=raw,
    )


async def apply_with_sync(apply: Callable[[], T]) -> T:
    """Run an engine update; on ``unknown_instrument`` let the reader catch up and retry once.

    Raises :class:`RejectedEvent` for a rejected update. Any OTHER exception (a bug) is logged
    and turned into :class:`InternalError` so the caller dead-letters the event (reason
    ``internal_error``) instead of crashing the agent (a crashed agent would re-read the same
    event forever).
    """
    try:
        try:
            return apply()
        except RejectedEvent as exc:
            if exc.reason is not RejectReason.UNKNOWN_INSTRUMENT:
                raise
            if not await runtime.ref.sync_instruments():
                raise
        return apply()
    except RejectedEvent:
        raise
    except Exception as exc:
        log.exception("engine failed on an update; event skipped")
        raise InternalError(str(exc)) from exc


async def engine_for(partition: int) -> Any:
    """``runtime.engine_for`` for an agent: a failure to build the engine (a bug) is logged and
    turned into :class:`InternalError` (the event is skipped, the agent keeps running; the
    next event of the partition tries the build again)."""
    try:
        return await runtime.engine_for(partition)
    except Exception as exc:
        log.exception("engine of partition %s could not be built; event skipped", partition)
        raise InternalError(str(exc)) from exc


class InternalError(Exception):
    """An engine bug on one event (logged); the event is dead-lettered, the stream goes on."""

    @property
    def rejection(self) -> Rejection:
        return Rejection(RejectReason.INTERNAL_ERROR, f"engine error: {self}"[:500])


async def reference_input(kind: EventKind, event: Any) -> None:
    """Group-side handling of a reference topic (prices, instruments, insurance fund).

    Each message is seen here by exactly one worker (the owner of its partition): it is
    validated, dead-lettered or counted once. The STATE update is not done here but by every
    worker's own group-less reader (:mod:`streams.agents.reference`), which applies the same
    valid events to all of that worker's engines.
    """
    await runtime.ref.ready.wait()  # unknown_instrument needs the instruments loaded
    parsed = await validate(kind, event)
    if parsed is None:
        return
    rejection = runtime.reference_rejection(kind, parsed)
    if rejection is not None and await runtime.ref.sync_instruments():
        rejection = runtime.reference_rejection(kind, parsed)
    if rejection is not None:
        raw = event.value if isinstance(event.value, bytes) else b""
        await reject(kind, event, Rejection(rejection.reason, rejection.detail, raw))
        return
    runtime.accepted(kind, getattr(parsed, "ts_event", None))


# Account topics (positions, balances) are consumed in batches (:func:`consume_batches`): a
# batch is acked only after the agent body handled all of it (at-least-once, like per-event
# iteration).
BATCH_MAX = 5000
# After the first event of a batch, wait this long for more: faust's consumer hands messages
# to the channel queue one per event-loop round trip, so without the wait a busy worker would
# handle batches of one or two events.
BATCH_WAIT_S = 0.02


async def consume_batches(
    stream: Any,
    handle: Callable[[list[Any]], Awaitable[None]],
    max_events: int = BATCH_MAX,
    batch_wait_s: float = BATCH_WAIT_S,
) -> None:
    """Feed an agent's stream to ``handle`` in batches of whatever its channel queue holds
    (up to ``max_events``), acking each batch after ``handle`` returned.

    This is the per-event part of faust's ``Stream.__aiter__`` that matters for correctness —
    skip (and ack) events of an older consumer generation or delivered while flow control is
    suspended (a rebalance), track each message as unacked so a rebalance waits for it
    (``Consumer.wait_empty``), run the stream's processors, ack after processing — done once per
    BATCH instead of once per event: faust's iterator yields to the event loop for every event
    and calls four sensors, ``take_events`` adds a timer task per batch. A batch is what the
    conductor queued up to :data:`BATCH_WAIT_S` after its first event. The stream's processors
    (faust's test wrapper records processed values through one) run after the batch was
    handled and acked.

    A batch that raises is logged and retried once after 1 s (the engines reject what they
    already applied as duplicates), then acked and skipped, so one bad batch cannot stop the
    partition forever (the per-event failures are dead-lettered by ``handle`` itself).
    """
    await stream.maybe_start()
    app = stream.app
    queue = stream.channel.queue
    processors = stream._processors  # the test wrapper records values through one
    unacked = app.consumer.unacked
    acking_topics = app.topics.acking_topics
    flow_control = app.flow_control
    while not stream.should_stop:
        try:
            batch = [await queue.get()]
            if batch_wait_s > 0:
                await asyncio.sleep(batch_wait_s)
            while len(batch) < max_events and not queue.empty():
                batch.append(queue.get_nowait())
        except StopAsyncIteration:  # how faust stops a stream: thrown into its channel queue
            return
        events: list[Any] = []
        active = flow_control.is_active()
        generation = app.consumer_generation_id
        for event in batch:
            message = event.message
            if not active or message.generation_id != generation:
                event.ack()  # what faust's stream does with them: their partitions moved
                continue
            if not message.tracked and message.topic in acking_topics:
                message.tracked = True
                unacked.add(message)
            events.append(event)
        if not events:
            continue
        try:
            try:
                await handle(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("account batch failed; retrying it once in 1 s")
                await asyncio.sleep(1.0)
                await handle(events)
        except asyncio.CancelledError:
            raise  # not acked: redelivered to whoever owns the partition next
        except Exception:
            log.exception("account batch failed twice; skipped (%d events)", len(events))
        for event in events:
            event.ack()
        for event in events:
            for processor in processors:
                await maybe_async(processor(event.value))


async def handle_account_batch(
    kind: EventKind,
    events: Sequence[Any],
    table: Any,
    apply: Callable[[Any, Any], list[Any]],
    value: Callable[[Callable[[], Any], Any, int], Any],
) -> None:
    """One batch of an account topic (positions, balances), event by event in
    offset order.

    Each event is validated (rejections dead-lettered), then ``apply(engine, update)`` runs on the
    engine of the message's partition (a rejection or an engine bug is dead-lettered, counted as
    ``internal_error`` for the latter, and touches nothing). The new table value of an accepted
    update is ``value(old, update, partition)``, ``old()`` giving the account's current value
    (the batch's pending one, else the table's). The table is written once per account with the
    batch's last value (last write wins), transitions are emitted at the end.
    """
    pending: dict[str, tuple[Any, Any]] = {}
    transitions: dict[int, list[Any]] = {}
    accepted = 0
    lags: list[float] = []
    try:
        for event in events:
            update = await validate(kind, event)
            if update is None:
                continue
            assert isinstance(update, kind.model)
            partition = event.message.partition
            try:
                engine = await engine_for(partition)
                out = await apply_with_sync(lambda: apply(engine, update))  # noqa: B023
            except (RejectedEvent, InternalError) as exc:
                await reject(kind, event, exc.rejection)
                continue
            account = update.account  # type: ignore[union-attr]

            def old(account: str = account) -> Any:
                prev = pending.get(account)
                return prev[1] if prev is not None else table.get(account)

            pending[account] = (event, value(old, update, partition))
            accepted += 1
            lags.append(update.ts_event)  # type: ignore[union-attr]
            if out:
                transitions.setdefault(partition, []).extend(out)
    finally:
        # what the engines already applied reaches the table even if the batch fails midway
        # (a redelivered batch is rejected as duplicate by the engine: it would never be
        # written otherwise)
        await write_table(table, pending)
    runtime.accepted_batch(kind, accepted, lags)
    for partition, items in transitions.items():
        await runtime.emit(items, partition)


def set_current_event(event: Any) -> None:
    """Make ``event`` faust's current event, so a table write goes to ITS partition.

    ``Table.__setitem__`` (changelog partition) and the RocksDB store (which DB) read the
    partition of ``faust.streams.current_event()``; in a batch that is not the
    event a given key came from, so the batch handlers set it before each write.
    """
    _current_event.set(weakref.ref(event))


async def write_table(table: Any, pending: dict[str, tuple[Any, Any]]) -> None:
    """Per key the LAST value of the batch (last write wins), in the partition of its event.

    What ``table[key] = value`` does — store the value, send the changelog record to the
    event's partition, record the persisted offset when it is acknowledged — but the record
    goes straight to faust's producer instead of through faust's synchronous ``send_soon``
    buffer (drained one message per loop iteration while the conductor pauses every stream:
    "producer buffer full") and the Topic/Channel layers. At-least-once is unchanged: the source
    offsets are committed only after the batch was handled (:func:`consume_batches` acks then), and
    faust flushes the producer before it commits.
    """
    if not pending:
        return
    app = table.app
    changelog = table.changelog_topic
    name = changelog.get_topic_name()
    dumps_key = app.serializers.dumps_key
    dumps_value = app.serializers.dumps_value
    key_type, value_type = changelog.key_type, changelog.value_type
    producer = app.producer
    store = table.data
    current: int | None = None
    for key, (event, value) in pending.items():
        partition = event.message.partition
        if partition != current:  # only its partition matters: set it when that changes
            set_current_event(event)  # the RocksDB store picks its partition DB from it
            current = partition
        store[key] = value
        fut = await producer.send(
            name,
            dumps_key(key_type, key, serializer=table.key_serializer),
            dumps_value(value_type, value, serializer=table.value_serializer),
            partition,
            None,
            None,
        )
        fut.add_done_callback(functools.partial(_persisted, store, TP(name, partition)))


def _persisted(store: Any, tp: TP, fut: Any) -> None:
    """``Collection._on_changelog_sent`` (at-least-once): the store's persisted offset."""
    if fut.cancelled() or fut.exception() is not None:
        return
    store.set_persisted_offset(tp, fut.result().offset)


class RestartingLoop:
    """A worker's background loop: ``run()`` in a task, restarted 1 s after any failure (logged
    as ``"<what> failed; restarting in 1 s"`` by the subclass's module logger) until ``stop()``.
    Subclasses set ``what`` and ``_task = None`` and may override :meth:`_cancel`."""

    what = "loop"
    _task: asyncio.Task[None] | None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run_forever())

    async def _cancel(self, task: asyncio.Task[None]) -> None:
        task.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            await self._cancel(self._task)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run_forever(self) -> None:
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                logging.getLogger(type(self).__module__).exception(
                    "%s failed; restarting in 1 s", self.what
                )
                await asyncio.sleep(1.0)
