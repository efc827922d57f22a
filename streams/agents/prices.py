"""``prices`` (key instrument): validated and counted by the group; applied by every worker.

The price STATE is not a table: every worker needs every mark, so each worker's group-less
reader (:mod:`streams.agents.reference`) fans ticks out to all its engines. This agent is the
exactly-once-per-message side: validation, dead letters (including ``unknown_instrument``) and
``riskmon_events_total{topic="prices"}``.
"""

from __future__ import annotations

import faust

from streams.agents._inputs import reference_input
from streams.app import app, prices_topic
from streams.engine.wire import EventKind


@app.agent(prices_topic, name="riskmon-prices")
async def prices_agent(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await reference_input(EventKind.PRICE, event)
