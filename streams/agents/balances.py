"""``balances`` (key account): absolute, seq-stamped wallet balances -> table + engine.

Same shape as :mod:`streams.agents.positions`: validate, apply to the partition's engine
(``stale_sequence`` / ``duplicate`` are rejected there), then write the ``balances`` table.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust

from streams.agents._inputs import consume_batches, handle_account_batch
from streams.app import app, balances_table, balances_topic
from streams.engine.wire import EventKind


async def handle_batch(events: Sequence[faust.EventT]) -> None:
    """One batch (see :func:`streams.agents.positions.handle_batch`)."""
    await handle_account_batch(
        EventKind.BALANCE,
        events,
        balances_table,
        lambda engine, update: engine.apply_balance(update),
        lambda _old, update, partition: {
            "partition": partition,
            "balance": update.model_dump(mode="json"),
        },
    )


async def handle(event: faust.EventT) -> None:
    await handle_batch([event])


@app.agent(balances_topic, name="riskmon-balances")
async def balances_agent(stream: faust.StreamT[bytes]) -> None:
    await consume_batches(stream, handle_batch)
