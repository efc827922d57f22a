"""``positions`` (key account): absolute, seq-stamped position snapshots -> table + engine.

Per event: ``parse_event`` (malformed / schema / non-finite / bounds / key mismatch), then the
engine of the message's partition (``unknown_instrument``, ``stale_sequence``, ``duplicate``).
Anything rejected is dead-lettered and touches nothing. An accepted update is written to the
``positions`` table (changelog-backed, keyed by account, sharded like this topic) so the
partition's engine can be rebuilt exactly after a restart or a rebalance.
"""

from __future__ import annotations

import faust

from streams.agents._inputs import InternalError, apply_with_sync, reject, validate
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


async def handle(event: faust.EventT) -> None:
    update = await validate(EventKind.POSITION, event)
    if update is None:
        return
    assert isinstance(update, PositionUpdate)
    partition = event.message.partition
    engine = await runtime.engine_for(partition)
    try:
        transitions = await apply_with_sync(lambda: engine.apply_position(update))
    except InternalError:
        return
    except RejectedEvent as exc:
        await reject(EventKind.POSITION, event, exc.rejection)
        return
    positions_table[update.account] = table_value(
        positions_table.get(update.account), update, partition
    )
    runtime.accepted(EventKind.POSITION, update.ts_event)
    await runtime.emit(list(transitions or ()), partition)


@app.agent(positions_topic, name="riskmon-positions")
async def positions_agent(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await handle(event)
