"""``balances`` (key account): absolute, seq-stamped wallet balances -> table + engine.

Same shape as :mod:`streams.agents.positions`: validate, apply to the partition's engine
(``stale_sequence`` / ``duplicate`` are rejected there), then write the ``balances`` table.
"""

from __future__ import annotations

import faust

from streams.agents._inputs import InternalError, apply_with_sync, reject, validate
from streams.agents.runtime import runtime
from streams.app import app, balances_table, balances_topic
from streams.engine.models import BalanceUpdate
from streams.engine.rejections import RejectedEvent
from streams.engine.wire import EventKind


async def handle(event: faust.EventT) -> None:
    update = await validate(EventKind.BALANCE, event)
    if update is None:
        return
    assert isinstance(update, BalanceUpdate)
    partition = event.message.partition
    engine = await runtime.engine_for(partition)
    try:
        transitions = await apply_with_sync(lambda: engine.apply_balance(update))
    except InternalError:
        return
    except RejectedEvent as exc:
        await reject(EventKind.BALANCE, event, exc.rejection)
        return
    balances_table[update.account] = {
        "partition": partition,
        "balance": update.model_dump(mode="json"),
    }
    runtime.accepted(EventKind.BALANCE, update.ts_event)
    await runtime.emit(list(transitions or ()), partition)


@app.agent(balances_topic, name="riskmon-balances")
async def balances_agent(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await handle(event)
