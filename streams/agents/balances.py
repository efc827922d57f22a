"""``balances`` (key account): absolute, seq-stamped wallet balances -> table + engine.

Same shape as :mod:`streams.agents.positions`: validate, apply to the partition's engine
(``stale_sequence`` / ``duplicate`` are rejected there), then write the ``balances`` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faust

from streams.agents._inputs import (
    BATCH_MAX,
    BATCH_WITHIN_S,
    InternalError,
    apply_with_sync,
    engine_for,
    reject,
    validate,
    write_table,
)
from streams.agents.runtime import runtime
from streams.app import app, balances_table, balances_topic
from streams.engine.models import BalanceUpdate
from streams.engine.rejections import RejectedEvent
from streams.engine.wire import EventKind


async def handle_batch(events: Sequence[faust.EventT]) -> None:
    """One ``take_events`` batch (see :func:`streams.agents.positions.handle_batch`)."""
    pending: dict[str, tuple[faust.EventT, dict]] = {}
    transitions: dict[int, list[Any]] = {}
    accepted = 0
    lags: list[float] = []
    try:
        for event in events:
            update = await validate(EventKind.BALANCE, event)
            if update is None:
                continue
            assert isinstance(update, BalanceUpdate)
            partition = event.message.partition
            try:
                engine = await engine_for(partition)
                out = await apply_with_sync(lambda: engine.apply_balance(update))  # noqa: B023
            except (RejectedEvent, InternalError) as exc:
                await reject(EventKind.BALANCE, event, exc.rejection)
                continue
            pending[update.account] = (
                event,
                {"partition": partition, "balance": update.model_dump(mode="json")},
            )
            accepted += 1
            lags.append(update.ts_event)
            if out:
                transitions.setdefault(partition, []).extend(out)
    finally:
        # what the engines already applied reaches the table even if the batch fails midway
        # (a redelivered batch is rejected as duplicate by the engine: it would never be
        # written otherwise)
        await write_table(balances_table, pending)
    runtime.accepted_batch(EventKind.BALANCE, accepted, lags)
    for partition, items in transitions.items():
        await runtime.emit(items, partition)


async def handle(event: faust.EventT) -> None:
    await handle_batch([event])


@app.agent(balances_topic, name="riskmon-balances")
async def balances_agent(stream: faust.StreamT[bytes]) -> None:
    # take_events is on faust.Stream, not on the StreamT protocol
    batches = stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S)  # type: ignore[attr-defined]
    async for events in batches:
        await handle_batch(events)
