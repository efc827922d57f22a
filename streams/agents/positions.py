"""``positions`` (key account): absolute, seq-stamped position snapshots -> table + engine.

Per event: ``parse_event`` (malformed / schema / non-finite / bounds / key mismatch), then the
engine of the message's partition (``unknown_instrument``, ``stale_sequence``, ``duplicate``).
Anything rejected is dead-lettered and touches nothing. An accepted update is written to the
``positions`` table (changelog-backed, keyed by account, sharded like this topic) so the
partition's engine can be rebuilt exactly after a restart or a rebalance.
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
from streams.app import app, positions_table, positions_topic
from streams.engine.models import PositionUpdate
from streams.engine.rejections import RejectedEvent
from streams.engine.wire import EventKind


def table_value(old: dict | None, update: PositionUpdate, partition: int) -> dict:
    """New table value (a fresh dict: faust only writes the changelog on assignment)."""
    positions = dict(old["positions"]) if old else {}
    positions[update.instrument] = update.model_dump(mode="json")
    return {"partition": partition, "positions": positions}


async def handle_batch(events: Sequence[faust.EventT]) -> None:
    """One ``take_events`` batch, event by event in offset order; the table is written once per
    account with the batch's last value (last write wins), transitions are emitted at the end."""
    pending: dict[str, tuple[faust.EventT, dict]] = {}
    transitions: dict[int, list[Any]] = {}
    accepted = 0
    lags: list[float] = []
    try:
        for event in events:
            update = await validate(EventKind.POSITION, event)
            if update is None:
                continue
            assert isinstance(update, PositionUpdate)
            partition = event.message.partition
            try:
                engine = await engine_for(partition)
                out = await apply_with_sync(lambda: engine.apply_position(update))  # noqa: B023
            except (RejectedEvent, InternalError) as exc:
                await reject(EventKind.POSITION, event, exc.rejection)
                continue
            prev = pending.get(update.account)
            old = prev[1] if prev is not None else positions_table.get(update.account)
            pending[update.account] = (event, table_value(old, update, partition))
            accepted += 1
            lags.append(update.ts_event)
            if out:
                transitions.setdefault(partition, []).extend(out)
    finally:
        # what the engines already applied reaches the table even if the batch fails midway
        # (a redelivered batch is rejected as duplicate by the engine: it would never be
        # written otherwise)
        await write_table(positions_table, pending)
    runtime.accepted_batch(EventKind.POSITION, accepted, lags)
    for partition, items in transitions.items():
        await runtime.emit(items, partition)


async def handle(event: faust.EventT) -> None:
    await handle_batch([event])


@app.agent(positions_topic, name="riskmon-positions")
async def positions_agent(stream: faust.StreamT[bytes]) -> None:
    # take_events is on faust.Stream, not on the StreamT protocol
    batches = stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S)  # type: ignore[attr-defined]
    async for events in batches:
        await handle_batch(events)
