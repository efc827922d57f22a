"""``positions`` (key account): absolute, seq-stamped position snapshots -> table + engine.

Per event: ``parse_event`` (malformed / schema / non-finite / bounds / key mismatch), then the
engine of the message's partition (``unknown_instrument``, ``stale_sequence``, ``duplicate``).
Anything rejected is dead-lettered and touches nothing. An accepted update is written to the
``positions`` table (changelog-backed, keyed by account, sharded like this topic) so the
partition's engine can be rebuilt exactly after a restart or a rebalance.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust

from streams.agents._inputs import consume_batches, handle_account_batch
from streams.app import app, positions_table, positions_topic
from streams.engine.models import PositionUpdate
from streams.engine.wire import EventKind


def table_value(old: dict | None, update: PositionUpdate, partition: int) -> dict:
    """New table value (a fresh dict: faust only writes the changelog on assignment)."""
    positions = dict(old["positions"]) if old else {}
    positions[update.instrument] = update.model_dump(mode="json")
    return {"partition": partition, "positions": positions}


async def handle_batch(events: Sequence[faust.EventT]) -> None:
    """One batch (:func:`streams.agents._inputs.consume_batches`), event by event in offset
    order; the table is written once per account with the batch's last value (last write wins),
    transitions are emitted at the end (:func:`streams.agents._inputs.handle_account_batch`)."""
    await handle_account_batch(
        EventKind.POSITION,
        events,
        positions_table,
        lambda engine, update: engine.apply_position(update),
        lambda old, update, partition: table_value(old(), update, partition),
    )


async def handle(event: faust.EventT) -> None:
    await handle_batch([event])


@app.agent(positions_topic, name="riskmon-positions")
async def positions_agent(stream: faust.StreamT[bytes]) -> None:
    await consume_batches(stream, handle_batch)
